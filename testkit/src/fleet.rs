//! A fleet of official socket.io-client sockets in one Node.js process (`js/fleet.mjs`).

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::js_dir;
use crate::process::Proc;

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

    /// The string field `key` of the first argument of every `event` `client` received, in
    /// order (e.g. the `t` of chat messages `{"t": "..."}`).
    pub fn strings(&mut self, event: &str, client: &str, key: &str) -> Vec<String> {
        self.events(event)
            .get(client)
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|args| args[0][key].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
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
