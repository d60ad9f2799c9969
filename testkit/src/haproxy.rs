//! HAProxy from Debian as an L4 (`mode tcp`) round-robin in front of several iogate-lb replicas:
//! what a cloud TCP load balancer does, spreading each client's TCP connections over them.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{Proc, free_port, wait_for};

/// A running `haproxy -db` in TCP mode.
pub struct Haproxy {
    /// The client-facing port.
    pub port: u16,
    _child: Proc,
    _config: tempfile::NamedTempFile,
}

impl Haproxy {
    /// Round-robin over `127.0.0.1:{backend}` for each port in `backends`.
    pub fn tcp_round_robin(backends: &[u16]) -> Haproxy {
        let port = free_port();
        let mut cfg = format!(
            "global\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 600s\n  timeout server 600s\nfrontend fe\n  bind 127.0.0.1:{port}\n  default_backend lbs\nbackend lbs\n  balance roundrobin\n"
        );
        for (i, b) in backends.iter().enumerate() {
            cfg.push_str(&format!("  server lb{i} 127.0.0.1:{b}\n"));
        }
        let mut config = tempfile::Builder::new()
            .suffix(".cfg")
            .tempfile()
            .expect("temp config");
        config.write_all(cfg.as_bytes()).expect("write config");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(config.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("haproxy must be installed (apt-get install haproxy)");
        let h = Haproxy {
            port,
            _child: Proc(child),
            _config: config,
        };
        wait_for(Duration::from_secs(10), "haproxy listening", || {
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        h
    }

    /// `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
