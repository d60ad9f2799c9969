//! DNS discovery: an upstream given as `NAME:port` or `srv: NAME` stands for every backend DNS
//! names, and follows DNS as nginx's `server … resolve` and HAProxy's `server-template` with
//! `resolvers` do.
//!
//! Contract:
//! - every A and AAAA record of NAME is a backend at that port; for SRV, every target of the
//!   records with the lowest priority value, at the record's port and weight ([`dns`]);
//! - names are re-resolved as their TTLs run out, within `resolver.min_interval` ..
//!   `resolver.interval`; DNS trouble keeps the last good set; a name gone or without records
//!   keeps it for `resolver.hold_empty` ([`name`]);
//! - the registry is only ever given [`expand`] of the configuration in force and the sets in
//!   force, under one lock ([`Discovered::lock`]), so a reload and a DNS change cannot undo each
//!   other. A new address is added like a backend added to the config — pending, probed at
//!   once, taking new sessions when its check passes — and a vanished one drains like a removed
//!   backend: its live sessions stay until they end.
//!
//! Discovered backends are named `IP:port`, or `ID/IP:port` when the upstream has an `id`; a
//! fixed upstream with the same id wins, and an address two names share is one backend.

pub mod dns;
pub mod name;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

use crate::backends::{Applied, BadAddress};
use crate::config::{LbConfig, Upstream};
use crate::state::Lb;
use name::{Answer, NameState, Verdict};

/// The sets found for every DNS-named upstream, keyed by [`key`].
pub type Sets = HashMap<String, NameState>;

/// The key of a DNS-named upstream: its id and what it names (a reload that points an id at
/// another name starts that name afresh).
pub fn key(u: &Upstream) -> String {
    format!("{}={}", u.id(), u.srv.as_deref().unwrap_or(&u.address))
}

/// The discovered sets, and the lock every change of the registry's upstream list takes.
#[derive(Debug, Default)]
pub struct Discovered {
    sets: Mutex<Sets>,
    wake: Notify,
}

impl Discovered {
    /// Lock the sets; hold the guard while applying a list to the registry.
    pub fn lock(&self) -> MutexGuard<'_, Sets> {
        // Every change under this lock is one map operation or one NameState::observe, so a
        // poisoned lock still holds consistent sets.
        self.sets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ask the discovery task to look at the configuration again (after a reload).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// The concrete upstream list: the fixed upstreams as configured, each DNS-named one replaced
/// by the addresses in its set (none before its first answer).
pub fn expand(upstreams: &[Upstream], sets: &Sets) -> Vec<Upstream> {
    let mut ids: HashSet<String> = upstreams
        .iter()
        .filter(|u| !u.is_dns())
        .map(|u| u.id().to_string())
        .collect();
    let mut out = Vec::with_capacity(upstreams.len());
    for u in upstreams {
        if !u.is_dns() {
            out.push(u.clone());
            continue;
        }
        let found = sets.get(&key(u)).map(NameState::set).unwrap_or_default();
        for (addr, weight) in found {
            let id = match &u.id {
                Some(prefix) => format!("{prefix}/{addr}"),
                None => addr.to_string(),
            };
            if ids.insert(id.clone()) {
                out.push(Upstream {
                    id: Some(id),
                    address: addr.to_string(),
                    srv: None,
                    weight: *weight,
                    sid_tag: None,
                });
            }
        }
    }
    out
}

/// Give the registry the list of `cfg` and `sets` (hold [`Discovered::lock`] for `sets`). New
/// backends are probed at once.
pub fn apply_upstreams(lb: &Lb, cfg: &LbConfig, sets: &mut Sets) -> Result<Applied, BadAddress> {
    let applied = lb
        .registry
        .apply(&expand(&cfg.upstreams, sets), !cfg.health.active.enabled)?;
    // Applied: the names no longer configured are forgotten (a refused list changes nothing),
    // and so are the series of ids no DNS-named upstream has any more.
    let keys: HashSet<String> = cfg.upstreams.iter().map(key).collect();
    let ids: HashSet<&str> = cfg
        .upstreams
        .iter()
        .filter(|u| u.is_dns())
        .map(Upstream::id)
        .collect();
    for gone in sets.keys().filter(|k| !keys.contains(*k)) {
        // A key is `{id}={name}`; a DNS name has no `=`.
        if let Some((id, _)) = gone.rsplit_once('=')
            && !ids.contains(id)
        {
            lb.metrics.forget_dns(id);
        }
    }
    sets.retain(|k, _| keys.contains(k));
    if !applied.added.is_empty() {
        lb.probe_now.notify_one();
    }
    Ok(applied)
}

/// The discovery task: resolve every DNS-named upstream of the configuration in force when it
/// is due, and apply what changed.
pub async fn run(lb: Arc<Lb>) {
    let mut resolver: Option<(crate::config::Resolver, hickory_resolver::TokioResolver)> = None;
    loop {
        let cfg = lb.config.load_full();
        let names: Vec<Upstream> = cfg
            .upstreams
            .iter()
            .filter(|u| u.is_dns())
            .cloned()
            .collect();
        if names.is_empty() {
            lb.discovered.wake.notified().await;
            continue;
        }
        if resolver.as_ref().is_none_or(|(r, _)| *r != cfg.resolver) {
            match dns::build(&cfg.resolver) {
                Ok(built) => resolver = Some((cfg.resolver.clone(), built)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the DNS resolver; DNS-named upstreams keep their addresses");
                    for u in &names {
                        lb.metrics.dns_result(u.id(), "error");
                    }
                    wait(&lb, Some(Instant::now() + cfg.resolver.min_interval)).await;
                    continue;
                }
            }
        }
        let Some((_, client)) = resolver.as_ref() else {
            continue;
        };
        let now = Instant::now();
        let due: Vec<Upstream> = {
            let sets = lb.discovered.lock();
            names
                .iter()
                .filter(|u| sets.get(&key(u)).is_none_or(|s| s.due(now)))
                .cloned()
                .collect()
        };
        let mut asks = tokio::task::JoinSet::new();
        for u in due {
            let client = client.clone();
            let timeout = cfg.resolver.timeout;
            asks.spawn(async move {
                let answer = dns::resolve(&client, &u, timeout).await;
                (u, answer)
            });
        }
        let answers = asks.join_all().await;
        record(&lb, answers);
        let next = {
            let sets = lb.discovered.lock();
            names
                .iter()
                .filter_map(|u| sets.get(&key(u)).and_then(NameState::next))
                .min()
        };
        wait(&lb, next).await;
    }
}

/// Sleep until `until` (at once when `None`) or a reload wakes the task.
async fn wait(lb: &Lb, until: Option<Instant>) {
    let Some(until) = until else { return };
    tokio::select! {
        _ = tokio::time::sleep_until(until.into()) => {}
        _ = lb.discovered.wake.notified() => {}
    }
}

/// Take the answers, log and count them, and apply the sets if one changed.
fn record(lb: &Lb, answers: Vec<(Upstream, Answer)>) {
    let mut sets = lb.discovered.lock();
    // The configuration in force now (a reload may have happened while resolving): only its
    // names are kept, and its list is what the registry gets.
    let cfg = lb.config.load_full();
    let current: HashSet<String> = cfg.upstreams.iter().map(key).collect();
    let mut changed = false;
    for (u, answer) in answers {
        let k = key(&u);
        if !current.contains(&k) {
            continue;
        }
        let result = match &answer {
            Answer::Records { .. } => "ok",
            Answer::Empty(_) => "empty",
            Answer::Failed(_) => "error",
        };
        lb.metrics.dns_result(u.id(), result);
        let state = sets.entry(k).or_default();
        let streak_before = state.streak();
        let detail = match &answer {
            Answer::Empty(why) | Answer::Failed(why) => why.clone(),
            Answer::Records { .. } => String::new(),
        };
        match state.observe(answer, Instant::now(), &cfg.resolver) {
            Verdict::Changed => changed = true,
            Verdict::Unchanged => {}
            Verdict::Kept { streak } => {
                if streak == 1 {
                    tracing::warn!(upstream = u.id(), result, error = %detail,
                        kept = state.set().len(),
                        "DNS gave no addresses; the last good ones stay in force");
                }
            }
        }
        if streak_before > 0 && state.streak() == 0 {
            tracing::info!(
                upstream = u.id(),
                after = streak_before,
                "DNS answers again"
            );
        }
        lb.metrics.dns_addresses(u.id(), state.set().len());
    }
    if !changed {
        return;
    }
    match apply_upstreams(lb, &cfg, &mut sets) {
        Ok(applied) => {
            drop(sets);
            lb.rebuild_tags();
            tracing::info!(added = ?applied.added, draining = ?applied.removed,
                "backends changed by DNS");
        }
        Err(e) => tracing::error!(error = %e, "a DNS answer gave an address that does not parse"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Resolver;
    use std::time::Duration;

    fn name(id: Option<&str>, address: &str) -> Upstream {
        Upstream {
            id: id.map(str::to_string),
            ..Upstream::fixed(address)
        }
    }

    fn found(ports: &[u16]) -> Answer {
        Answer::Records {
            addrs: ports
                .iter()
                .map(|p| (std::net::SocketAddr::from(([10, 0, 0, 1], *p)), 2))
                .collect(),
            ttl: Duration::from_secs(5),
        }
    }

    #[test]
    fn expand_replaces_names_by_their_addresses() {
        let ups = vec![
            Upstream::fixed("10.0.0.1:1"),
            name(None, "nodes.local:3000"),
            name(Some("srv-nodes"), "other.local:3000"),
            Upstream::fixed("10.0.0.9:9"),
        ];
        let mut sets = Sets::new();
        // Before any answer the names stand for nothing.
        let ids: Vec<String> = expand(&ups, &sets).iter().map(|u| u.id().into()).collect();
        assert_eq!(ids, ["10.0.0.1:1", "10.0.0.9:9"]);
        let now = Instant::now();
        let r = Resolver::default();
        sets.entry(key(&ups[1]))
            .or_default()
            .observe(found(&[1, 2]), now, &r);
        sets.entry(key(&ups[2]))
            .or_default()
            .observe(found(&[2]), now, &r);
        let out = expand(&ups, &sets);
        let ids: Vec<&str> = out.iter().map(|u| u.id()).collect();
        // 10.0.0.1:1 is the fixed upstream's id already: the fixed one wins.
        assert_eq!(
            ids,
            [
                "10.0.0.1:1",
                "10.0.0.1:2",
                "srv-nodes/10.0.0.1:2",
                "10.0.0.9:9"
            ]
        );
        assert!(out.iter().all(|u| !u.is_dns()));
        assert_eq!(out[1].weight, 2);
        assert_eq!(out[1].address, "10.0.0.1:2");
    }

    #[test]
    fn keys_follow_what_an_id_names() {
        let a = name(Some("nodes"), "a.local:3000");
        let b = name(Some("nodes"), "b.local:3000");
        assert_ne!(key(&a), key(&b));
        let srv = Upstream {
            srv: Some("_sio._tcp.local".into()),
            ..Upstream::fixed("")
        };
        assert!(srv.is_dns());
        assert_eq!(key(&srv), "_sio._tcp.local=_sio._tcp.local");
    }
}
