//! Backend choice, in one place and free of pingora's `Session` (so it is unit-tested here):
//!
//! - a request that names a sid: [`route_sid`] — the sid's tag, then the learned sid table, then
//!   the stickiness cookie, else unknown. A session whose backend is down is gone: the caller
//!   answers `400 Session ID unknown` at once. A draining backend still gets its sessions.
//! - a new session: [`pick_new`] — the stickiness cookie (cookie mode), else the balancing
//!   policy over the ready backends not tried yet: [`least_conn`], round-robin, or the ketama
//!   ring of [`hashing`].

pub mod hashing;
pub mod least_conn;
pub mod tags;

use std::sync::Arc;

use crate::backends::{Backend, Registry};
use crate::config::Policy;
use crate::sid_table::SidTable;
use hashing::HashRing;
use tags::{TagMap, tag_of};

/// How a request naming a sid found its backend (`iogate_lb_sid_routed_total{via}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The node tag in the sid.
    Tag,
    /// The sid table (learned from the handshake, or handed over on upgrade).
    Table,
    /// The stickiness cookie.
    Cookie,
}

impl Via {
    /// Every value, in metric label order.
    pub const ALL: [Via; 3] = [Via::Tag, Via::Table, Via::Cookie];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Tag => "tag",
            Via::Table => "table",
            Via::Cookie => "cookie",
        }
    }
}

/// Where a request naming a sid goes.
#[derive(Debug, Clone)]
pub enum SidRoute {
    /// To this backend.
    Bound {
        /// The backend holding the session.
        backend: Arc<Backend>,
        /// How it was found.
        via: Via,
    },
    /// Its backend is down: the session is gone (its table entry is forgotten).
    Gone(Arc<Backend>),
    /// Nobody knows it.
    Unknown,
}

/// What [`route_sid`] consults.
#[derive(Debug, Clone, Copy)]
pub struct SidRoutes<'a> {
    /// Tag → backend.
    pub tags: &'a TagMap,
    /// The learned table.
    pub sids: &'a SidTable,
    /// Backends by id (for the cookie).
    pub registry: &'a Registry,
}

/// Route a request naming `sid`: tag → learned table → cookie (its value, when cookie
/// stickiness is on) → unknown. Touches the table entry's idle timer.
pub fn route_sid(r: SidRoutes<'_>, sid: &str, websocket: bool, cookie: Option<&str>) -> SidRoute {
    let from_table = r.sids.lookup(sid, websocket);
    let found = match tag_of(sid).and_then(|t| r.tags.lookup(t)) {
        Some(b) => Some((b, Via::Tag)),
        None => from_table.map(|b| (b, Via::Table)),
    };
    if let Some((backend, via)) = found {
        if backend.reachable() {
            return SidRoute::Bound { backend, via };
        }
        r.sids.remove(sid);
        return SidRoute::Gone(backend);
    }
    match cookie.and_then(|id| r.registry.get(id)) {
        Some(backend) if backend.reachable() => SidRoute::Bound {
            backend,
            via: Via::Cookie,
        },
        _ => SidRoute::Unknown,
    }
}

/// What [`pick_new`] needs to know about one new-session request.
#[derive(Debug, Clone, Copy)]
pub struct NewSession<'a> {
    /// The balancing policy.
    pub policy: Policy,
    /// The stickiness cookie's value (cookie mode only).
    pub sticky_cookie: Option<&'a str>,
    /// The hash key's value in this request (hash policy only); without one, least-connections.
    pub hash_key: Option<&'a [u8]>,
    /// Backends already tried for this request.
    pub tried: &'a [String],
    /// Rotates ties and round-robin.
    pub turn: usize,
}

/// Pick a backend for a new session among the ready ones of `configured`.
pub fn pick_new(
    configured: &[Arc<Backend>],
    ring: &HashRing,
    req: NewSession<'_>,
) -> Option<Arc<Backend>> {
    let ready: Vec<Arc<Backend>> = configured
        .iter()
        .filter(|b| b.ready() && !req.tried.iter().any(|t| *t == b.id))
        .cloned()
        .collect();
    if ready.is_empty() {
        return None;
    }
    if let Some(id) = req.sticky_cookie
        && let Some(b) = ready.iter().find(|b| b.id == id)
    {
        return Some(b.clone());
    }
    match (req.policy, req.hash_key) {
        (Policy::RoundRobin, _) => ready.get(req.turn % ready.len()).cloned(),
        (Policy::Hash, Some(key)) => ring.pick(&ready, key),
        (Policy::LeastConn, _) | (Policy::Hash, None) => least_conn::pick(&ready, req.turn),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backends::ProbeOutcome;
    use crate::config::Upstream;

    fn registry() -> Registry {
        let ups: Vec<Upstream> = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, id)| Upstream {
                id: Some((*id).into()),
                address: format!("127.0.0.1:{}", 5000 + i),
                srv: None,
                weight: 1,
                sid_tag: Some(format!("t{id}")),
            })
            .collect();
        Registry::new(&ups, true).expect("valid")
    }

    /// Backends a, b, c tagged ta, tb, tc; their tag map; an empty sid table.
    fn world() -> (Registry, TagMap, SidTable) {
        let reg = registry();
        let tags = TagMap::default();
        tags.rebuild(&reg.all());
        (reg, tags, SidTable::new(100))
    }

    fn bound(r: SidRoute) -> Option<(String, Via)> {
        match r {
            SidRoute::Bound { backend, via } => Some((backend.id.clone(), via)),
            _ => None,
        }
    }

    #[test]
    fn lookup_order_is_tag_table_cookie() {
        let (reg, tags, sids) = world();
        let r = SidRoutes {
            tags: &tags,
            sids: &sids,
            registry: &reg,
        };
        let a = reg.get("a").expect("a");
        // The tag wins over a table entry naming another backend.
        sids.insert("tb.AAAAAAAAAAAAAAAA", a.clone(), Duration::from_secs(60))
            .expect("room");
        assert_eq!(
            bound(route_sid(r, "tb.AAAAAAAAAAAAAAAA", false, Some("c"))),
            Some(("b".into(), Via::Tag))
        );
        // Unknown tag or no tag: the table.
        sids.insert("zz.BBBBBBBBBBBBBBBB", a.clone(), Duration::from_secs(60))
            .expect("room");
        assert_eq!(
            bound(route_sid(r, "zz.BBBBBBBBBBBBBBBB", false, None)),
            Some(("a".into(), Via::Table))
        );
        // Nothing else: the cookie, then unknown.
        assert_eq!(
            bound(route_sid(r, "CCCCCCCCCCCCCCCC", false, Some("c"))),
            Some(("c".into(), Via::Cookie))
        );
        assert!(matches!(
            route_sid(r, "CCCCCCCCCCCCCCCC", false, Some("nope")),
            SidRoute::Unknown
        ));
        assert!(matches!(
            route_sid(r, "CCCCCCCCCCCCCCCC", false, None),
            SidRoute::Unknown
        ));
    }

    #[test]
    fn draining_keeps_sessions_down_loses_them() {
        let (reg, tags, sids) = world();
        let r = SidRoutes {
            tags: &tags,
            sids: &sids,
            registry: &reg,
        };
        let a = reg.get("a").expect("a");
        sids.insert("PPPPPPPPPPPPPPPP", a.clone(), Duration::from_secs(60))
            .expect("room");
        let mut streak = 0;
        a.record_probe(&ProbeOutcome::Draining, "503".into(), 1, 1, &mut streak);
        assert!(bound(route_sid(r, "PPPPPPPPPPPPPPPP", false, None)).is_some());
        assert!(bound(route_sid(r, "ta.PPPPPPPPPPPPPPPP", false, None)).is_some());
        a.record_probe(&ProbeOutcome::Failed, "refused".into(), 1, 1, &mut streak);
        assert!(matches!(
            route_sid(r, "PPPPPPPPPPPPPPPP", false, None),
            SidRoute::Gone(_)
        ));
        // The entry is forgotten.
        assert!(sids.is_empty());
        assert!(matches!(
            route_sid(r, "ta.PPPPPPPPPPPPPPPP", false, None),
            SidRoute::Gone(_)
        ));
    }

    #[test]
    fn new_sessions_go_to_ready_backends_only() {
        let reg = registry();
        let ring = HashRing::default();
        let list = reg.configured();
        let mut streak = 0;
        reg.get("a").expect("a").record_probe(
            &ProbeOutcome::Draining,
            "503".into(),
            1,
            1,
            &mut streak,
        );
        let tried = vec!["b".to_string()];
        let req = |policy, cookie, key, tried| NewSession {
            policy,
            sticky_cookie: cookie,
            hash_key: key,
            tried,
            turn: 0,
        };
        let pick = |r| pick_new(&list, &ring, r).map(|b| b.id.clone());
        assert_eq!(
            pick(req(Policy::LeastConn, None, None, &tried)),
            Some("c".into())
        );
        // A cookie naming a draining backend is ignored; one naming a ready backend wins.
        assert_eq!(
            pick(req(Policy::RoundRobin, Some("a"), None, &[]))
                .as_deref()
                .map(|s| s != "a"),
            Some(true)
        );
        assert_eq!(
            pick(req(Policy::LeastConn, Some("b"), None, &[])),
            Some("b".into())
        );
        // Hashing is stable for a key; without a key it falls back to least-connections.
        let k1 = pick(req(Policy::Hash, None, Some(b"room-1"), &[]));
        assert_eq!(k1, pick(req(Policy::Hash, None, Some(b"room-1"), &[])));
        assert!(pick(req(Policy::Hash, None, None, &[])).is_some());
        let all = vec!["b".to_string(), "c".to_string()];
        assert_eq!(pick(req(Policy::LeastConn, None, None, &all)), None);
    }
}
