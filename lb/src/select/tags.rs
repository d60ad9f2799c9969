//! Session-id tags: `{tag}.{random}` sids name the node that minted them, so any LB process — a
//! fresh one after an upgrade or restart, a second replica — routes a session it has never seen.
//!
//! A backend's tag comes from the config (`upstreams[].sid_tag`) or is learned from the session
//! id of its health probe (the `engineio` check performs a real handshake) or from the `sid_tag`
//! field of an `http` check's JSON answer (iogate-node's `/readyz`). The map is rebuilt from the
//! registry after every check round and reload; lookups are one atomic load and a hash lookup.
//!
//! A tag claimed by two backends is ambiguous: a configured backend wins over a removed one
//! (the same node re-added under a new address); otherwise the tag maps to nothing and the
//! conflict is reported, so those sessions fall back to the learned table.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::backends::Backend;

pub use iogate_shared::sid::tag_of;

/// Tag → backend.
#[derive(Debug, Default)]
pub struct TagMap {
    /// ahash-keyed: looked up with every sid a request names.
    map: ArcSwap<HashMap<String, Arc<Backend>, ahash::RandomState>>,
    conflicts: ArcSwap<Vec<String>>,
}

impl TagMap {
    /// The backend that owns `tag`.
    pub fn lookup(&self, tag: &str) -> Option<Arc<Backend>> {
        self.map.load().get(tag).cloned()
    }

    /// Tags claimed by more than one backend, as of the last rebuild.
    pub fn conflicts(&self) -> Arc<Vec<String>> {
        self.conflicts.load_full()
    }

    /// Rebuild from every known backend. Returns the tags that became ambiguous with this
    /// rebuild (for logging once).
    pub fn rebuild(&self, backends: &[Arc<Backend>]) -> Vec<String> {
        let mut claims: HashMap<String, Vec<Arc<Backend>>> = HashMap::new();
        for b in backends {
            if let Some(tag) = b.sid_tag() {
                claims.entry(tag).or_default().push(b.clone());
            }
        }
        let mut map = HashMap::with_capacity_and_hasher(claims.len(), ahash::RandomState::new());
        let mut conflicts = Vec::new();
        for (tag, owners) in claims {
            let configured: Vec<&Arc<Backend>> =
                owners.iter().filter(|b| !b.is_removed()).collect();
            let owner = match (owners.len(), configured.as_slice()) {
                (1, _) => owners.first(),
                (_, [one]) => Some(*one),
                _ => None,
            };
            match owner {
                Some(b) => {
                    map.insert(tag, b.clone());
                }
                None => conflicts.push(tag),
            }
        }
        conflicts.sort();
        let before = self.conflicts.load_full();
        let new: Vec<String> = conflicts
            .iter()
            .filter(|t| !before.contains(t))
            .cloned()
            .collect();
        self.map.store(Arc::new(map));
        self.conflicts.store(Arc::new(conflicts));
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::Registry;
    use crate::config::Upstream;

    fn registry(tags: &[Option<&str>]) -> Registry {
        let ups: Vec<Upstream> = tags
            .iter()
            .enumerate()
            .map(|(i, t)| Upstream {
                id: Some(format!("b{i}")),
                address: format!("127.0.0.1:{}", 5000 + i),
                srv: None,
                weight: 1,
                sid_tag: t.map(str::to_string),
            })
            .collect();
        Registry::new(&ups, true).expect("valid")
    }

    #[test]
    fn configured_and_learned_tags_map_to_backends() {
        let r = registry(&[Some("a"), None, None]);
        let m = TagMap::default();
        let all = r.all();
        all[1].learn_tag(Some("bee"));
        assert!(m.rebuild(&all).is_empty());
        assert_eq!(m.lookup("a").map(|b| b.id.clone()), Some("b0".into()));
        assert_eq!(m.lookup("bee").map(|b| b.id.clone()), Some("b1".into()));
        assert!(m.lookup("c").is_none());
        // A restarted node with a new tag: the old tag is gone.
        all[1].learn_tag(Some("bee2"));
        m.rebuild(&all);
        assert!(m.lookup("bee").is_none());
        // Two backends claim one tag: nobody gets it, reported once.
        all[2].learn_tag(Some("a"));
        assert_eq!(m.rebuild(&all), vec!["a".to_string()]);
        assert!(m.rebuild(&all).is_empty());
        assert!(m.lookup("a").is_none());
        assert_eq!(*m.conflicts(), vec!["a".to_string()]);
    }

    #[test]
    fn a_configured_backend_wins_over_a_removed_one() {
        let r = registry(&[Some("x")]);
        let old = r.get("b0").expect("b0");
        // Re-added under a new address with the same tag: the old one drains.
        r.apply(
            &[Upstream {
                id: Some("b0".into()),
                address: "127.0.0.1:6000".into(),
                srv: None,
                weight: 1,
                sid_tag: Some("x".into()),
            }],
            true,
        )
        .expect("valid");
        let m = TagMap::default();
        assert!(m.rebuild(&r.all()).is_empty());
        let owner = m.lookup("x").expect("owner");
        assert!(!Arc::ptr_eq(&owner, &old));
        assert_eq!(owner.addr.port(), 6000);
    }
}
