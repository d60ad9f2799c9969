//! Redis Cluster under broadcast load, 3 masters + 3 replicas: the master that owns the bus's
//! broadcast channel is killed (its replica takes over), and in another run every slot of that
//! master is moved with `redis-cli --cluster reshard`. Cross-node delivery must come back by
//! itself, no node may fail, and every cross-node message that did not arrive must be counted in
//! `iogate_node_bus_dropped_total` — no more, no fewer.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use iogate_testkit::{Fleet, Node, RedisCluster, wait_for};
use serde_json::json;

/// The channel every node's broadcasts of namespace `/` go through (socketioxide-redis:
/// `{key_prefix}-request#{namespace}#`).
const BROADCAST_CHANNEL: &str = "iogate-request#/#";
/// Messages pumped, and how fast.
const COUNT: u64 = 600;
const RATE: u64 = 40;

/// `iogate_node_bus_dropped_total` per reason (every reason must be exported).
fn dropped_by_reason(n: &Node) -> Vec<(&'static str, f64)> {
    iogate_node::metrics::BUS_DROP_REASONS
        .iter()
        .map(|r| {
            (
                *r,
                n.metric_sum("iogate_node_bus_dropped_total", "reason", &[r]),
            )
        })
        .collect()
}

fn received(fleet: &mut Fleet, client: &str) -> Vec<u64> {
    fleet.events("chat:message")[client]
        .as_array()
        .map(|a| a.iter().filter_map(|args| args[0]["s"].as_u64()).collect())
        .unwrap_or_default()
}

fn pumped(fleet: &mut Fleet) -> u64 {
    fleet.cmd(json!({"cmd": "pumped", "client": "a#0", "event": "chat:message"}))["sent"]
        .as_u64()
        .unwrap_or(0)
}

struct Setup {
    cluster: RedisCluster,
    n1: Node,
    n2: Node,
    fleet: Fleet,
}

fn setup() -> Setup {
    let cluster = RedisCluster::start_with_replicas(1);
    let yaml = cluster.node_yaml();
    let n1 = Node::start_with_config("f1", &[], Some(&yaml));
    let n2 = Node::start_with_config("f2", &[], Some(&yaml));
    iogate_testkit::wait_bus_up([&n1, &n2]);
    let mut fleet = Fleet::start();
    fleet.connect("a", &n1.url(), 2, &["websocket"]);
    fleet.connect("b", &n2.url(), 1, &["websocket"]);
    // Baseline: a message crosses. It must have reached every client before the clear, the
    // sender's neighbour a#1 included: socketioxide-redis publishes before it delivers locally,
    // so b#0 can have its copy before a#1 — which, arriving after the clear, would be counted
    // as one of the pumped messages (a run once failed with "601 of 600", none missing).
    fleet.emit("a#1", "chat:message", json!([{"s": 1_000_000}]));
    wait_for(
        Duration::from_secs(10),
        "baseline delivery on both nodes",
        || {
            ["a#0", "a#1", "b#0"]
                .iter()
                .all(|c| received(&mut fleet, c) == [1_000_000])
                .then_some(())
        },
    );
    fleet.clear();
    Setup {
        cluster,
        n1,
        n2,
        fleet,
    }
}

/// Pump COUNT messages from a#0 (on f1) at RATE/s; `disrupt` runs once the stream crosses;
/// returns (time from the disruption to the first cross-node delivery of a message sent after
/// it, lost on f2, counted as dropped on f1).
fn under_load(
    s: &mut Setup,
    what: &str,
    disrupt: impl FnOnce(&mut RedisCluster),
) -> (Duration, u64, u64) {
    let reasons_before = dropped_by_reason(&s.n1);
    s.fleet.cmd(
        json!({"cmd": "pump", "client": "a#0", "event": "chat:message",
                       "rate": RATE, "count": COUNT}),
    );
    let fleet = &mut s.fleet;
    wait_for(Duration::from_secs(10), "the stream crossing", || {
        (received(fleet, "b#0").len() >= 40).then_some(())
    });
    let at = pumped(fleet);
    let t = Instant::now();
    disrupt(&mut s.cluster);
    let took = t.elapsed();
    let first = wait_for(
        Duration::from_secs(30),
        "a cross-node delivery after the disruption",
        || {
            received(fleet, "b#0")
                .iter()
                .any(|x| *x > at + 1)
                .then(|| t.elapsed())
        },
    );
    wait_for(Duration::from_secs(40), "the pump done", || {
        (pumped(fleet) == COUNT).then_some(())
    });
    // Local delivery is the reference for what was sent: every message reached a#1 within 10 s
    // (past that, the test fails saying which did not and how the clients stand).
    let since = Instant::now();
    let local = wait_for(Duration::from_secs(11), "local delivery", || {
        let local = received(fleet, "a#1");
        (local.len() as u64 >= COUNT || since.elapsed() > Duration::from_secs(10)).then_some(local)
    });
    if local.len() as u64 != COUNT {
        let have: BTreeSet<u64> = local.iter().copied().collect();
        let missing: Vec<u64> = (0..COUNT).filter(|x| !have.contains(x)).collect();
        let mut seen = BTreeSet::new();
        let twice: Vec<u64> = local.iter().copied().filter(|x| !seen.insert(*x)).collect();
        let foreign: Vec<u64> = have.iter().copied().filter(|x| *x >= COUNT).collect();
        let status = fleet.status();
        panic!(
            "{what}: {} of {COUNT} delivered locally (to a client on the sending node) after \
             10 s; missing {missing:?}; twice {twice:?}; not pumped {foreign:?}; clients: \
             {status:?}",
            local.len()
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    let got = received(fleet, "b#0");
    let distinct: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        got.len(),
        "{what}: duplicate cross-node delivery"
    );
    let lost = COUNT - distinct.len() as u64;
    let deltas: Vec<(&str, u64)> = dropped_by_reason(&s.n1)
        .iter()
        .zip(&reasons_before)
        .map(|((r, after), (_, before))| (*r, (after - before) as u64))
        .collect();
    let counted: u64 = deltas.iter().map(|(_, d)| d).sum();
    let reasons: Vec<String> = deltas
        .iter()
        .filter(|(_, d)| *d > 0)
        .map(|(r, d)| format!("{r} {d}"))
        .collect();
    eprintln!(
        "{what} (took {took:?}): first cross-node delivery {first:?} after it began; {lost} of \
         {COUNT} lost on the other node, {counted} counted as dropped ({})",
        reasons.join(", ")
    );
    assert!(
        s.n1.try_wait_alive() && s.n2.try_wait_alive(),
        "{what}: a node exited"
    );
    (first, lost, counted)
}

/// Every lost message counted and only those, delivery back in time, and both directions
/// crossing again.
fn assert_recovered(s: &mut Setup, what: &str, first: Duration, lost: u64, counted: u64) {
    assert_eq!(
        counted, lost,
        "{what}: every lost cross-node message counted, and only those"
    );
    assert!(
        first < Duration::from_secs(15),
        "{what}: delivery back after {first:?}"
    );
    s.fleet.clear();
    s.fleet.emit("b#0", "chat:message", json!([{"s": 7}]));
    let fleet = &mut s.fleet;
    wait_for(Duration::from_secs(10), "f2 -> f1", || {
        (received(fleet, "a#0") == [7]).then_some(())
    });
}

trait Alive {
    fn try_wait_alive(&self) -> bool;
}

impl Alive for Node {
    fn try_wait_alive(&self) -> bool {
        self.get("/healthz").0 == 200
    }
}

#[test]
fn the_bus_masters_death_is_failed_over_and_every_drop_counted() {
    let _serial = iogate_testkit::heavy();
    let mut s = setup();
    let slot = s.cluster.slot(BROADCAST_CHANNEL);
    let master = s.cluster.master_of(slot).expect("a master for the channel");
    let (first, lost, counted) = under_load(&mut s, "kill -9 of the channel's master", |c| {
        c.kill(master.port)
    });
    let now = s.cluster.master_of(slot).expect("a master again");
    assert_ne!(now.port, master.port, "the replica took over");
    assert!(
        lost > 0,
        "the outage cost messages (else this measured nothing)"
    );
    assert_recovered(&mut s, "after the failover", first, lost, counted);
}

#[test]
fn moving_the_bus_slots_under_load_loses_nothing_uncounted() {
    let _serial = iogate_testkit::heavy();
    let mut s = setup();
    let slot = s.cluster.slot(BROADCAST_CHANNEL);
    let from = s.cluster.master_of(slot).expect("the channel's master");
    let view = s.cluster.view(from.port).expect("cluster view");
    let to = view
        .iter()
        .find(|n| n.master && n.port != from.port)
        .cloned()
        .expect("another master");
    let (first, lost, counted) = under_load(&mut s, "reshard of the channel's slots", |c| {
        c.reshard_all(&from, &to)
    });
    assert_eq!(
        s.cluster.master_of(slot).map(|n| n.port),
        Some(to.port),
        "the slot moved"
    );
    assert_recovered(&mut s, "after the reshard", first, lost, counted);
}
