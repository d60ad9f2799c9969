//! `iogate-loadtest` runs in the background of a test, with its exact accounting read back from
//! its JSON summary when it ends.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::{Proc, bin_command};

/// A load generator run started by [`Loadtest::spawn`].
pub struct Loadtest {
    child: Proc,
    json: tempfile::NamedTempFile,
    what: String,
}

impl Loadtest {
    /// Start `iogate-loadtest ARGS --json FILE --quiet` (stderr inherited).
    pub fn spawn(args: &[&str]) -> Loadtest {
        let json = tempfile::NamedTempFile::new().expect("temp");
        let child = bin_command("iogate-loadtest", "warn")
            .args(args)
            .arg("--json")
            .arg(json.path())
            .arg("--quiet")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn iogate-loadtest");
        Loadtest {
            child: Proc(child),
            json,
            what: args.join(" "),
        }
    }

    /// Wait for the run to end (at most `timeout`); its summary (the first phase's).
    pub fn finish(self, timeout: Duration) -> Value {
        self.finish_with_status(timeout).1
    }

    /// [`Loadtest::finish`] with the exit status (1: an `--assert` failed).
    pub fn finish_with_status(mut self, timeout: Duration) -> (std::process::ExitStatus, Value) {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait() {
                break s;
            }
            assert!(
                start.elapsed() < timeout,
                "iogate-loadtest {} did not end within {timeout:?}",
                self.what
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let text = std::fs::read_to_string(self.json.path()).unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(
            !v[0].is_null(),
            "iogate-loadtest {} wrote no summary (exit {status:?})",
            self.what
        );
        (status, v[0].clone())
    }
}

/// An accounting figure of a summary (`sent`, `lost`, …); fails the test when absent.
pub fn accounting(summary: &Value, key: &str) -> u64 {
    summary["accounting"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("summary has no accounting.{key}: {summary}"))
}
