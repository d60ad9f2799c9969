//! Test harness shared by the iogate crates: real `redis-server` processes (standalone and a
//! 3-master cluster), real `iogate-node` / `iogate-lb` processes and a fleet of official
//! socket.io-client sockets (`js/fleet.mjs`), all on free ports, all killed on drop. Readiness
//! is polled, never slept for.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A child process owned by a test: signalled by name, polled for exit, killed on drop.
pub struct Proc(Child);

impl Proc {
    /// Send a signal by name (TERM, INT, KILL, HUP, QUIT).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.0.id().to_string()])
            .status();
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Poll `f` every 20 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

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
            if redis_cmd(self.port, "PING").is_some_and(|r| r.starts_with("+PONG")) {
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

/// A 3-master Redis Cluster built with `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<Redis> = (0..3)
            .map(|_| {
                Redis::start_with(&["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed (apt-get install redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for n in &nodes {
            wait_for(Duration::from_secs(20), "cluster_state:ok", || {
                redis_cmd(n.port, "CLUSTER INFO")
                    .filter(|r| r.contains("cluster_state:ok"))
                    .map(|_| ())
            });
        }
        RedisCluster { nodes }
    }

    pub fn seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }
}

/// Path of a workspace binary (`iogate-node`, `iogate-lb`) next to the running test, built with
/// `cargo build -p NAME` first if it is not there (e.g. `cargo test -p iogate-lb` alone).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .map(Path::to_path_buf)
        .expect("target dir");
    let path = dir.join(name);
    if !path.exists() {
        let release = dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", name]);
        if release {
            cmd.arg("--release");
        }
        let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
        assert!(ok && path.exists(), "could not build {name}");
    }
    path
}

/// Path of the `iogate-node` binary.
pub fn node_bin() -> PathBuf {
    bin("iogate-node")
}

/// A running `iogate-node`.
pub struct Node {
    pub id: String,
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
        let config = yaml.map(|y| {
            let mut f = tempfile::NamedTempFile::new().expect("temp config");
            f.write_all(y.as_bytes()).expect("write config");
            f
        });
        let mut cmd = Command::new(node_bin());
        cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--node-id", id])
            .args(args);
        if let Some(f) = &config {
            cmd.arg("--config").arg(f.path());
        }
        cmd.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,fred=error".into()),
        );
        let mut node = Self::spawn_announced(id, cmd);
        node._config = config;
        node
    }

    /// A plain Node.js socket.io server (`testkit/js/server.mjs`) as a backend.
    pub fn start_js(id: &str) -> Node {
        let mut cmd = Command::new("node");
        cmd.arg("server.mjs").arg(id).arg("0").current_dir(js_dir());
        Self::spawn_announced(id, cmd)
    }

    /// Spawn a server that prints "... listening on HOST:PORT" first on stdout; wait for /readyz.
    fn spawn_announced(id: &str, mut cmd: Command) -> Node {
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
            port,
            child: Proc(child),
            _config: None,
        };
        wait_for(Duration::from_secs(20), "server /readyz", || {
            http_get(port, "/readyz")
                .filter(|(s, _)| *s == 200)
                .map(|_| ())
        });
        node
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.port, path).unwrap_or_else(|| panic!("GET {path} on {}", self.id))
    }

    /// Value of a metric line, e.g. `iogate_node_bus_dropped_total{reason="bus_down"}`.
    pub fn metric(&self, name: &str) -> f64 {
        metric_value(&self.get("/metrics").1, name)
    }

    /// Send a signal by name (TERM, INT, KILL).
    pub fn signal(&self, sig: &str) {
        self.child.signal(sig);
    }

    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait()
    }
}

/// The value of the sample named exactly `name` (with its labels) in a Prometheus text body;
/// 0 when absent (a labelled series that was never touched).
pub fn metric_value(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name).then(|| v.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// Wait until every node's Redis bus is up (cross-node delivery needs the subscriptions).
pub fn wait_bus_up(nodes: &[Node]) {
    wait_for(Duration::from_secs(15), "bus up on every node", || {
        nodes
            .iter()
            .all(|n| n.metric("iogate_node_bus_up") == 1.0)
            .then_some(())
    });
}

/// A plain HTTP/1.1 GET; returns status and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let raw = http_raw(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    );
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Directory of the JavaScript test clients (`testkit/js`).
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// Official socket.io-client sockets in one Node.js process (testkit/js/fleet.mjs).
pub struct Fleet {
    /// Held for its Drop: the Node.js process dies with the fleet.
    _child: Proc,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    next_id: u64,
}

impl Fleet {
    pub fn start() -> Fleet {
        let dir = js_dir();
        assert!(
            dir.join("node_modules/socket.io-client").exists(),
            "run `npm ci` in {} first (.ci/run does)",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg("fleet.mjs")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node must be installed");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Fleet {
            _child: Proc(child),
            stdin,
            lines,
            next_id: 1,
        }
    }

    /// Send a command and wait for its reply (panics on error replies).
    pub fn cmd(&mut self, mut msg: Value) -> Value {
        let r = self.try_cmd(&mut msg, Duration::from_secs(30));
        assert!(
            r["ok"].as_bool() == Some(true),
            "fleet command {msg} failed: {r}"
        );
        r
    }

    pub fn try_cmd(&mut self, msg: &mut Value, timeout: Duration) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        msg["id"] = json!(id);
        writeln!(self.stdin, "{msg}").expect("write to fleet");
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("fleet did not answer {msg} in {timeout:?}"));
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if v["id"] == json!(id) {
                return v;
            }
        }
    }

    /// Connect `count` clients named `name#i` to `url`.
    pub fn connect(&mut self, name: &str, url: &str, count: usize, transports: &[&str]) -> Value {
        self.cmd(
            json!({"cmd": "connect", "name": name, "url": url, "count": count,
                        "transports": transports}),
        )
    }

    pub fn emit(&mut self, client: &str, event: &str, args: Value) {
        self.cmd(json!({"cmd": "emit", "client": client, "event": event, "args": args}));
    }

    pub fn emit_ack(&mut self, client: &str, event: &str, args: Value, timeout_ms: u64) -> Value {
        let r = self.cmd(
            json!({"cmd": "emit", "client": client, "event": event, "args": args,
                                "ack": true, "timeoutMs": timeout_ms}),
        );
        r["ack"].clone()
    }

    /// `{client: [[args...], ...]}` for `event`.
    pub fn events(&mut self, event: &str) -> serde_json::Map<String, Value> {
        let r = self.cmd(json!({"cmd": "events", "event": event}));
        r["events"].as_object().cloned().unwrap_or_default()
    }

    pub fn clear(&mut self) {
        self.cmd(json!({"cmd": "clear"}));
    }

    pub fn status(&mut self) -> serde_json::Map<String, Value> {
        let r = self.cmd(json!({"cmd": "status"}));
        r["clients"].as_object().cloned().unwrap_or_default()
    }
}

/// A plain HTTP/1.1 POST with a text body; returns status and body.
pub fn http_post(port: u16, path: &str, body: &str) -> Option<(u16, String)> {
    let raw = http_raw(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// A running `iogate-lb` with its config in a temp file (edit it with [`Lb::rewrite`]).
pub struct Lb {
    pub port: u16,
    pub admin_port: u16,
    child: Proc,
    config: tempfile::NamedTempFile,
}

/// The YAML of a LB config with `upstreams` (`(id, port)`) and extra top-level YAML.
pub fn lb_yaml(port: u16, admin_port: u16, upstreams: &[(&str, u16)], extra: &str) -> String {
    let mut y = format!(
        "listeners:\n  - address: 127.0.0.1:{port}\nadmin:\n  listen: 127.0.0.1:{admin_port}\nhealth:\n  active:\n    interval: 200ms\n    timeout: 500ms\n    fall: 1\nupstreams:\n"
    );
    if upstreams.is_empty() {
        y.push_str("  []\n");
    }
    for (id, p) in upstreams {
        y.push_str(&format!("  - id: {id}\n    address: 127.0.0.1:{p}\n"));
    }
    y.push_str(extra);
    y
}

impl Lb {
    /// Start with the given YAML (which must use `port`/`admin_port`); waits until every
    /// configured backend is up (or `wait_up` is false).
    pub fn start(port: u16, admin_port: u16, yaml: &str, wait_up: bool) -> Lb {
        let mut config = tempfile::Builder::new()
            .suffix(".yaml")
            .tempfile()
            .expect("temp config");
        config.write_all(yaml.as_bytes()).expect("write config");
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let child = Command::new(bin("iogate-lb"))
            .arg("--config")
            .arg(config.path())
            .arg("--pid-file")
            .arg(dir.join("lb.pid"))
            .arg("--upgrade-sock")
            .arg(dir.join("upgrade.sock"))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn iogate-lb");
        let lb = Lb {
            port,
            admin_port,
            child: Proc(child),
            config,
        };
        wait_for(Duration::from_secs(20), "iogate-lb admin API", || {
            // Any answer (a 401 with a token configured) means the admin listener is up.
            http_get(admin_port, "/api/backends").map(|_| ())
        });
        wait_for(Duration::from_secs(20), "iogate-lb listener", || {
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        if wait_up {
            lb.wait_all_up(Duration::from_secs(20));
        }
        lb
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `GET /api/backends` as JSON.
    pub fn backends(&self) -> Value {
        let (_, body) = http_get(self.admin_port, "/api/backends").expect("admin API");
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }

    /// `{id: backend json}`.
    pub fn backend(&self, id: &str) -> Value {
        self.backends()["backends"]
            .as_array()
            .and_then(|a| a.iter().find(|b| b["id"] == json!(id)).cloned())
            .unwrap_or(Value::Null)
    }

    pub fn wait_all_up(&self, timeout: Duration) {
        wait_for(timeout, "every backend up", || {
            let b = self.backends();
            b["backends"]
                .as_array()
                .is_some_and(|a| a.iter().all(|x| x["state"] == json!("up")))
                .then_some(())
        });
    }

    /// A metric from the admin `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let (_, body) = http_get(self.admin_port, "/metrics").expect("metrics");
        metric_value(&body, name)
    }

    /// Replace the config file (the LB reloads it by itself).
    pub fn rewrite(&self, yaml: &str) {
        let tmp = self.config.path().with_extension("new");
        std::fs::write(&tmp, yaml).expect("write new config");
        std::fs::rename(&tmp, self.config.path()).expect("replace config");
    }

    pub fn signal(&self, sig: &str) {
        self.child.signal(sig);
    }

    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait()
    }
}

/// Send a raw HTTP request and return the raw response: the head, and the body as far as its
/// Content-Length (or the connection's end) says — servers that keep the connection open
/// despite `Connection: close` do not make this wait.
pub fn http_raw(port: u16, request: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(request.as_bytes());
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(len) = len
                && buf.len() >= end + 4 + len
            {
                buf.truncate(end + 4 + len);
                break;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Serialise tests that start hundreds of sockets: on a 2-core machine, two of them at once
/// measure the machine, not the code. Hold the guard for the whole test.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Run a workspace binary to completion with `args`; returns (exit code, stdout, stderr).
pub fn run_bin(name: &str, args: &[&str], timeout: Duration) -> (i32, String, String) {
    let mut cmd = Command::new(bin(name));
    cmd.args(args).env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
    );
    run_cmd(cmd, timeout)
}

/// Run a command to completion (panics when it takes longer than `timeout`, i.e. hangs);
/// returns (exit code, stdout, stderr).
pub fn run_cmd(mut cmd: Command, timeout: Duration) -> (i32, String, String) {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {timeout:?} (a hang)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        t_out.join().unwrap_or_default(),
        t_err.join().unwrap_or_default(),
    )
}
