//! Servers under test: the `iogate-node` binary and plain Node.js socket.io servers.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::http::http_get_at;
use crate::js_dir;
use crate::metrics::require_metric;
use crate::process::{Proc, bin_command, wait_for};

/// A running `iogate-node`.
pub struct Node {
    pub id: String,
    /// The IP address it listens on (127.0.0.1 unless started with [`Node::start_at`]).
    pub host: String,
    pub port: u16,
    child: Proc,
    _config: Option<tempfile::NamedTempFile>,
}

impl Node {
    /// Start a node with `--listen 127.0.0.1:0`, the given id and extra args; wait for `/readyz`.
    pub fn start(id: &str, args: &[&str]) -> Node {
        Self::start_with_config(id, args, None)
    }

    /// Like [`start`](Self::start) with a YAML config written to a temp file.
    pub fn start_with_config(id: &str, args: &[&str], yaml: Option<&str>) -> Node {
        Self::start_full(id, 0, args, yaml)
    }

    /// Start on a given port (0 = any), e.g. to restart a killed node where it was.
    pub fn start_on(id: &str, port: u16, args: &[&str]) -> Node {
        Self::start_full(id, port, args, None)
    }

    fn start_full(id: &str, port: u16, args: &[&str], yaml: Option<&str>) -> Node {
        Self::start_at(id, "127.0.0.1", port, args, yaml)
    }

    /// Start on `host:port` (another loopback address such as 127.0.0.2, so several nodes share
    /// one port the way pods behind one DNS name do).
    pub fn start_at(id: &str, host: &str, port: u16, args: &[&str], yaml: Option<&str>) -> Node {
        Self::start_program(
            bin_command("iogate-node", "warn,fred=error"),
            id,
            (host, port),
            args,
            yaml,
        )
    }

    /// A node built on the iogate-node library (an example's binary at `exe`, as Cargo's
    /// `CARGO_BIN_EXE_<name>` gives it), started like `iogate-node`: same flags, same readiness.
    pub fn start_exe(exe: &std::path::Path, id: &str, args: &[&str], yaml: Option<&str>) -> Node {
        let mut cmd = Command::new(exe);
        cmd.env("RUST_LOG", "warn,fred=error");
        Self::start_program(cmd, id, ("127.0.0.1", 0), args, yaml)
    }

    fn start_program(
        mut cmd: Command,
        id: &str,
        (host, port): (&str, u16),
        args: &[&str],
        yaml: Option<&str>,
    ) -> Node {
        let config = yaml.map(|y| {
            let mut f = tempfile::NamedTempFile::new().expect("temp config");
            f.write_all(y.as_bytes()).expect("write config");
            f
        });
        cmd.args(["--listen", &format!("{host}:{port}"), "--node-id", id])
            .args(args);
        if let Some(f) = &config {
            cmd.arg("--config").arg(f.path());
        }
        let mut node = Self::spawn_announced(id, host, cmd, ("/readyz", 200));
        node._config = config;
        node
    }

    /// A plain Node.js socket.io server (`testkit/js/server.mjs`) as a backend.
    pub fn start_js(id: &str) -> Node {
        Self::start_js_with(id, &[])
    }

    /// A Node.js socket.io server with `testkit/js/server.mjs` flags: `--plain` (no route but
    /// socket.io's), `--sid-tag TAG` (session ids `TAG.<random>`). Readiness is an Engine.IO
    /// answer (a 400 to an unknown sid: socket.io is attached, and no session is left behind).
    pub fn start_js_with(id: &str, flags: &[&str]) -> Node {
        Self::start_js_script("server.mjs", id, flags)
    }

    /// A Node.js server from `testkit/js/{script}` (`node SCRIPT ID 0 FLAGS…`) that prints
    /// "… listening on HOST:PORT"; ready once socket.io answers.
    pub fn start_js_script(script: &str, id: &str, flags: &[&str]) -> Node {
        let mut cmd = Command::new("node");
        cmd.arg(script)
            .arg(id)
            .arg("0")
            .args(flags)
            .current_dir(js_dir());
        Self::spawn_announced(
            id,
            "127.0.0.1",
            cmd,
            ("/socket.io/?EIO=4&transport=polling&sid=none", 400),
        )
    }

    /// Spawn a server that prints "... listening on HOST:PORT" first on stdout; wait until
    /// `ready.0` answers `ready.1`.
    fn spawn_announced(id: &str, host: &str, mut cmd: Command, ready: (&str, u16)) -> Node {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("server printed its address");
        let port: u16 = line
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        let node = Node {
            id: id.to_string(),
            host: host.to_string(),
            port,
            child: Proc(child),
            _config: None,
        };
        wait_for(Duration::from_secs(20), "server ready", || {
            http_get_at(host, port, ready.0)
                .filter(|(s, _)| *s == ready.1)
                .map(|_| ())
        });
        node
    }

    pub fn url(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get_at(&self.host, self.port, path)
            .unwrap_or_else(|| panic!("GET {path} on {}", self.id))
    }

    /// Value of a metric line, e.g. `iogate_node_bus_dropped_total{reason="bus_down"}`.
    pub fn metric(&self, name: &str) -> f64 {
        require_metric(&self.get("/metrics").1, name, &self.id)
    }

    /// The sum of `name{label="v"}` over `values`, each of which must be present (e.g. every
    /// reason of `iogate_node_bus_dropped_total`).
    pub fn metric_sum(&self, name: &str, label: &str, values: &[&str]) -> f64 {
        let body = self.get("/metrics").1;
        values
            .iter()
            .map(|v| require_metric(&body, &format!("{name}{{{label}=\"{v}\"}}"), &self.id))
            .sum()
    }

    /// Send a signal by name (TERM, INT, KILL).
    pub fn signal(&self, sig: &str) {
        self.child.signal(sig);
    }

    /// The node's resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.child.rss_kib()
    }

    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait()
    }
}

/// Wait until every node's Redis bus is up (cross-node delivery needs the subscriptions).
pub fn wait_bus_up<'a>(nodes: impl IntoIterator<Item = &'a Node>) {
    let nodes: Vec<&Node> = nodes.into_iter().collect();
    wait_for(Duration::from_secs(15), "bus up on every node", || {
        nodes
            .iter()
            .all(|n| n.metric("iogate_node_bus_up") == 1.0)
            .then_some(())
    });
}
