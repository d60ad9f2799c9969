//! Processes owned by tests: [`Proc`] (signalled by name, killed on drop), readiness polling
//! ([`wait_for`]), free ports, workspace binaries ([`bin`]) and one-shot commands ([`run_cmd`]).

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process owned by a test: signalled by name, polled for exit, killed on drop.
pub struct Proc(pub(crate) Child);

impl Proc {
    /// Send a signal by name (TERM, INT, KILL, HUP, QUIT).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.0.id().to_string()])
            .status();
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Resident memory (VmRSS) in KiB, from /proc; 0 once the process is gone.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0)
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

static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Serialise tests that start hundreds of sockets: on a 2-core machine, two of them at once
/// measure the machine, not the code. Hold the guard for the whole test.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// A command for workspace binary `name` whose log filter is the test's `RUST_LOG`, or
/// `default_log`.
pub fn bin_command(name: &str, default_log: &str) -> Command {
    let mut cmd = Command::new(bin(name));
    cmd.env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| default_log.into()),
    );
    cmd
}

/// Run a workspace binary to completion with `args`; returns (exit code, stdout, stderr).
pub fn run_bin(name: &str, args: &[&str], timeout: Duration) -> (i32, String, String) {
    let mut cmd = bin_command(name, "warn");
    cmd.args(args);
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
