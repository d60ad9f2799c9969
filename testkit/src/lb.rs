//! A running `iogate-lb` with its config in a temp file.

use std::ffi::OsString;
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::http::http_get;
use crate::metrics::require_metric;
use crate::process::{Proc, bin_command, wait_for};

/// A running `iogate-lb`, from a config in a temp file (edit it with [`Lb::rewrite`]) or the
/// quick command-line form; [`Lb::upgrade`] replaces it with a new process the way operators do.
pub struct Lb {
    pub port: u16,
    pub admin_port: u16,
    child: Proc,
    config: Option<tempfile::NamedTempFile>,
    dir: tempfile::TempDir,
    args: Vec<OsString>,
}

/// The YAML of a LB config with `upstreams` (`(id, port)`) and extra top-level YAML.
pub fn lb_yaml(port: u16, admin_port: u16, upstreams: &[(&str, u16)], extra: &str) -> String {
    let mut y = format!(
        "listeners:\n  - address: 127.0.0.1:{port}\nadmin:\n  listen: 127.0.0.1:{admin_port}\nhealth:\n  active:\n    interval: 200ms\n    timeout: 1s\n    fall: 2\nupstreams:\n"
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

fn spawn(dir: &Path, args: &[OsString], upgrade: bool) -> Proc {
    let mut cmd = bin_command("iogate-lb", "warn");
    cmd.args(args)
        .arg("--pid-file")
        .arg(dir.join("lb.pid"))
        .arg("--upgrade-sock")
        .arg(dir.join("upgrade.sock"));
    if upgrade {
        cmd.arg("-u");
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn iogate-lb");
    Proc(child)
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
        let args = vec![OsString::from("--config"), config.path().into()];
        Self::launch(port, admin_port, args, Some(config), wait_up)
    }

    /// The quick form a new user types: `--listen … --upstream … --admin …`, nothing else.
    pub fn start_quick(port: u16, admin_port: u16, upstreams: &[u16]) -> Lb {
        Self::start_quick_with(port, admin_port, upstreams, &[])
    }

    /// The quick form with more flags (`--tls-cert`, `--tls-key`, …).
    pub fn start_quick_with(port: u16, admin_port: u16, upstreams: &[u16], extra: &[&str]) -> Lb {
        let mut args: Vec<OsString> = vec![
            "--listen".into(),
            format!("127.0.0.1:{port}").into(),
            "--admin".into(),
            format!("127.0.0.1:{admin_port}").into(),
        ];
        for p in upstreams {
            args.push("--upstream".into());
            args.push(format!("127.0.0.1:{p}").into());
        }
        args.extend(extra.iter().map(OsString::from));
        Self::launch(port, admin_port, args, None, true)
    }

    fn launch(
        port: u16,
        admin_port: u16,
        args: Vec<OsString>,
        config: Option<tempfile::NamedTempFile>,
        wait_up: bool,
    ) -> Lb {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = spawn(dir.path(), &args, false);
        let lb = Lb {
            port,
            admin_port,
            child,
            config,
            dir,
            args,
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

    /// The zero-downtime binary upgrade of the README: start a new process with `-u` (same
    /// config, pid file and upgrade socket), send SIGQUIT to the old one, wait until the new one
    /// owns the pid file. Returns the old process, which drains its live tunnels.
    pub fn upgrade(&mut self) -> Proc {
        let new = spawn(self.dir.path(), &self.args, true);
        // The new process listens for the old one's sid table before taking the listeners.
        let sids = self.dir.path().join("upgrade.sock.sids");
        wait_for(
            Duration::from_secs(20),
            "the new process's handover socket",
            || sids.exists().then_some(()),
        );
        self.child.signal("QUIT");
        let pid_file = self.dir.path().join("lb.pid");
        let new_pid = new.id().to_string();
        wait_for(
            Duration::from_secs(20),
            "the new process's pid file",
            || (std::fs::read_to_string(&pid_file).ok()?.trim() == new_pid).then_some(()),
        );
        std::mem::replace(&mut self.child, new)
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
        require_metric(&body, name, "iogate-lb")
    }

    /// Requests answered `400 Session ID unknown`, whatever the reason.
    pub fn sid_400s(&self) -> f64 {
        self.metric("iogate_lb_sid_unknown_total{reason=\"unknown\"}")
            + self.metric("iogate_lb_sid_unknown_total{reason=\"backend_down\"}")
    }

    /// Replace the config file (the LB reloads it by itself).
    pub fn rewrite(&self, yaml: &str) {
        let config = self
            .config
            .as_ref()
            .expect("an LB started from a config file");
        let tmp = config.path().with_extension("new");
        std::fs::write(&tmp, yaml).expect("write new config");
        std::fs::rename(&tmp, config.path()).expect("replace config");
    }

    pub fn signal(&self, sig: &str) {
        self.child.signal(sig);
    }

    /// The LB's resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.child.rss_kib()
    }

    /// The LB's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait()
    }
}
