//! A real Prometheus (Debian's `prometheus`) on a free port, with its TSDB in a temp dir, and
//! its HTTP query API.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::http::http_get;
use crate::process::{Proc, free_port, wait_for};

/// A running Prometheus; killed on drop.
pub struct Prometheus {
    /// Its web port.
    pub port: u16,
    _child: Proc,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Start with `config` (prometheus.yml text; `rule_files` may name absolute paths) and
    /// wait until it is ready.
    pub fn start(config: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, config).expect("write prometheus.yml");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus must be installed (apt-get install prometheus)");
        let p = Prometheus {
            port,
            _child: Proc(child),
            _dir: dir,
        };
        wait_for(Duration::from_secs(30), "Prometheus ready", || {
            (http_get(port, "/-/ready")?.0 == 200).then_some(())
        });
        p
    }

    /// `GET /api/v1/<path>` as JSON (`Null` when it did not answer). Through curl: Prometheus
    /// answers large bodies chunked.
    pub fn api(&self, path_and_query: &str) -> Value {
        let r = crate::tls::curl(
            &format!("http://127.0.0.1:{}/api/v1/{path_and_query}", self.port),
            None,
            None,
            &[],
        );
        serde_json::from_str(&r.body).unwrap_or(Value::Null)
    }

    /// The result vector of an instant query.
    pub fn query(&self, expr: &str) -> Vec<Value> {
        let q: String = url_encode(expr);
        self.api(&format!("query?query={q}"))["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
