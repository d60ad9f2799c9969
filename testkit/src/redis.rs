//! Real `redis-server` processes: standalone and a 3-master cluster.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{free_port, wait_for};

/// Send one RESP command (inline) and read the first reply line.
pub fn redis_cmd(port: u16, cmd: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A `redis-server` on a free port, without persistence, in a private temp dir.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl Redis {
    pub fn start() -> Redis {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Redis {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = Redis {
            port: 0,
            child: None,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        // Retry on the (rare) race where the free port got taken.
        for _ in 0..5 {
            r.port = free_port();
            if r.spawn() {
                return r;
            }
        }
        panic!("could not start redis-server");
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            // A server with requirepass answers NOAUTH: it is up all the same.
            if redis_cmd(self.port, "PING")
                .is_some_and(|r| r.starts_with("+PONG") || r.starts_with("-NOAUTH"))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Start on a given port (for "Redis appears later" tests).
    pub fn start_on(port: u16) -> Redis {
        let mut r = Redis {
            port,
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            extra: Vec::new(),
        };
        assert!(r.spawn(), "redis-server on port {port}");
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL the server (the port stays reserved for [`restart`](Self::restart)).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port.
    pub fn restart(&mut self) {
        assert!(
            self.spawn(),
            "redis-server restart on port {} failed",
            self.port
        );
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of 3 masters (and `replicas` replicas each) built with
/// `redis-cli --cluster create`; `cluster-node-timeout` 2 s, so a dead master is failed over
/// within a few seconds.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub id: String,
    pub port: u16,
    pub master: bool,
    /// Failed (`fail` flag) or not connected.
    pub failed: bool,
    /// The slot ranges it serves (`a-b` or `a`).
    pub slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// 3 masters, no replicas.
    pub fn start() -> RedisCluster {
        Self::start_with_replicas(0)
    }

    /// 3 masters with `replicas` replicas each, every replica in sync before this returns.
    pub fn start_with_replicas(replicas: usize) -> RedisCluster {
        let nodes: Vec<Redis> = (0..3 * (1 + replicas))
            .map(|_| {
                Redis::start_with(&["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
            })
            .collect();
        let cluster = RedisCluster { nodes };
        let mut args = vec!["--cluster".to_string(), "create".into()];
        args.extend(cluster.seeds());
        args.extend(["--cluster-replicas".into(), replicas.to_string()]);
        redis_cli(&args);
        for n in &cluster.nodes {
            wait_for(Duration::from_secs(20), "cluster_state:ok", || {
                redis_cmd(n.port, "CLUSTER INFO")
                    .filter(|r| r.contains("cluster_state:ok"))
                    .map(|_| ())
            });
        }
        wait_for(Duration::from_secs(20), "every replica in sync", || {
            let view = cluster.view(cluster.nodes[0].port)?;
            let replicas_seen = view.iter().filter(|n| !n.master).count();
            let synced = cluster
                .nodes
                .iter()
                .filter(|n| {
                    redis_cmd(n.port, "INFO replication")
                        .is_some_and(|r| r.contains("master_link_status:up"))
                })
                .count();
            (replicas_seen == 3 * replicas && synced == 3 * replicas).then_some(())
        });
        cluster
    }

    /// `host:port` of every node.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    /// An iogate-node config (YAML) whose bus is this cluster.
    pub fn node_yaml(&self) -> String {
        let seeds: Vec<String> = self
            .seeds()
            .iter()
            .map(|s| format!("    - \"{s}\""))
            .collect();
        format!("redis:\n  cluster_nodes:\n{}\n", seeds.join("\n"))
    }

    /// `CLUSTER NODES` as `port` sees it (`None` when it does not answer).
    pub fn view(&self, port: u16) -> Option<Vec<ClusterNode>> {
        let text = redis_cmd_full(port, "CLUSTER NODES")?;
        let nodes = text
            .lines()
            .filter(|l| l.contains('@'))
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let port = f
                    .get(1)?
                    .split('@')
                    .next()?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()?;
                let flags = f.get(2)?;
                let slots = f
                    .iter()
                    .skip(8)
                    .filter(|s| !s.starts_with('['))
                    .filter_map(|s| match s.split_once('-') {
                        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                        None => s.parse().ok().map(|a| (a, a)),
                    })
                    .collect();
                Some(ClusterNode {
                    id: f.first()?.to_string(),
                    port,
                    master: flags.contains("master"),
                    failed: flags.contains("fail") || f.get(7) != Some(&"connected"),
                    slots,
                })
            })
            .collect();
        Some(nodes)
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot(&self, key: &str) -> u16 {
        let port = self.live_port();
        let r = redis_cmd(port, &format!("CLUSTER KEYSLOT {key}")).expect("CLUSTER KEYSLOT");
        r.trim()
            .trim_start_matches(':')
            .parse()
            .expect("a slot number")
    }

    /// The master serving `slot`, as a live node sees it.
    pub fn master_of(&self, slot: u16) -> Option<ClusterNode> {
        self.view(self.live_port())?.into_iter().find(|n| {
            n.master && !n.failed && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
        })
    }

    fn live_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.child.is_some())
            .map(|n| n.port)
            .expect("a live cluster node")
    }

    /// SIGKILL the node on `port`.
    pub fn kill(&mut self, port: u16) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port == port) {
            n.kill();
        }
    }

    /// Move every slot `from` serves to `to` with `redis-cli --cluster reshard` (the way
    /// operators rebalance), waiting until it is done.
    pub fn reshard_all(&self, from: &ClusterNode, to: &ClusterNode) {
        let count: u32 = from
            .slots
            .iter()
            .map(|(a, b)| u32::from(*b) - u32::from(*a) + 1)
            .sum();
        redis_cli(&[
            "--cluster".into(),
            "reshard".into(),
            format!("127.0.0.1:{}", to.port),
            "--cluster-from".into(),
            from.id.clone(),
            "--cluster-to".into(),
            to.id.clone(),
            "--cluster-slots".into(),
            count.to_string(),
        ]);
    }
}

/// `redis-cli ARGS --cluster-yes`, failing the test with its output unless it succeeds.
fn redis_cli(args: &[String]) {
    let out = Command::new("redis-cli")
        .args(args)
        .arg("--cluster-yes")
        .output()
        .expect("redis-cli must be installed (apt-get install redis-tools)");
    assert!(
        out.status.success(),
        "redis-cli {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Like [`redis_cmd`], reading the whole reply (until the server pauses).
pub fn redis_cmd_full(port: u16, cmd: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
    s.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) if !out.is_empty() => break,
            Err(_) => return None,
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}
