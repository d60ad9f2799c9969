//! The sid table handed from the old process to the new one during a binary upgrade, so that
//! sessions whose sids carry no node tag (plain Node.js socket.io backends) survive it too.
//!
//! pingora hands the listening sockets over on `SIGQUIT`; this module does the same for the sid
//! table, on a Unix socket next to pingora's (`{upgrade_sock}.sids`):
//!
//! 1. The new process (`-u`) binds that socket before it takes the listeners over, and until the
//!    old table has arrived (or `upgrade.handover_wait` has passed) a request naming a sid it does
//!    not know waits for it instead of getting a 400 ([`HandoverGate`]).
//! 2. The old process, as soon as `SIGQUIT` makes pingora hand its listeners over, connects to it,
//!    starts observing its table, sends a snapshot of every entry and an end marker, then streams
//!    every later change until it exits. pingora keeps the old process accepting on the shared
//!    listeners for 5 s after the hand-over, and its keep-alive connections finish their
//!    requests, so it still learns sessions after the snapshot.
//! 3. While that stream is open, a request naming a sid the new process does not know waits up
//!    to [`FOLLOW_WAIT`] for it: a client whose handshake the old process answered may send its
//!    next request over a new connection that the new process accepts first.
//!
//! The wire format is JSON lines: `{"op":"upsert",…}`, `{"op":"remove","sid":…}`, `{"op":"end"}`.
//! Observed changes are complete and ordered, so applying the snapshot and then every change gives
//! the old table's state whatever interleaving happened while the snapshot was read.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::sid_table::{Change, Exported, State};
use crate::state::Lb;

/// The handover socket's path for pingora's `upgrade_sock`.
pub fn socket_path(upgrade_sock: &str) -> PathBuf {
    PathBuf::from(format!("{upgrade_sock}.sids"))
}

/// How long a lookup of an unknown sid waits for the old process's stream of changes.
pub const FOLLOW_WAIT: Duration = Duration::from_millis(250);

/// Makes lookups of unknown sids wait while the old process's table is on its way.
#[derive(Debug)]
pub struct HandoverGate {
    done: watch::Sender<bool>,
    until: std::sync::Mutex<Option<Instant>>,
    /// Bumped for every change imported from the old process.
    changes: watch::Sender<u64>,
    /// The old process is still streaming its changes.
    following: std::sync::atomic::AtomicBool,
}

impl HandoverGate {
    /// Nothing to wait for.
    pub fn open() -> HandoverGate {
        HandoverGate {
            done: watch::Sender::new(true),
            until: std::sync::Mutex::new(None),
            changes: watch::Sender::new(0),
            following: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether the old process is still streaming changes.
    pub fn following(&self) -> bool {
        self.following.load(std::sync::atomic::Ordering::Acquire)
    }

    fn set_following(&self, on: bool) {
        self.following
            .store(on, std::sync::atomic::Ordering::Release);
        self.changes.send_modify(|n| *n += 1);
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Retry `lookup` while the old process streams changes, until it finds something or
    /// [`FOLLOW_WAIT`] has passed.
    pub async fn follow<T>(&self, mut lookup: impl FnMut() -> Option<T>) -> Option<T> {
        let deadline = tokio::time::Instant::now() + FOLLOW_WAIT;
        let mut rx = self.changes.subscribe();
        loop {
            if let Some(v) = lookup() {
                return Some(v);
            }
            if !self.following() {
                return None;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return lookup();
            }
        }
    }

    /// A table is expected within `wait`.
    pub fn expect(&self, wait: Duration) {
        *self.until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + wait);
        self.done.send_replace(false);
    }

    /// The table arrived (or will not).
    pub fn finish(&self) {
        self.done.send_replace(true);
    }

    /// Whether lookups should still wait.
    pub fn pending(&self) -> bool {
        !*self.done.borrow()
            && self
                .until
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|t| Instant::now() < t)
    }

    /// Wait until the table arrived or the wait is over.
    pub async fn wait(&self) {
        let until = *self.until.lock().unwrap_or_else(|p| p.into_inner());
        let Some(until) = until else { return };
        let mut rx = self.done.subscribe();
        let _ = tokio::time::timeout_at(until.into(), rx.wait_for(|d| *d)).await;
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Line {
    Upsert {
        sid: String,
        backend: String,
        state: char,
        ttl_ms: u64,
        idle_ms: u64,
    },
    Remove {
        sid: String,
    },
    End,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<&Exported> for Line {
    fn from(e: &Exported) -> Line {
        Line::Upsert {
            sid: e.sid.clone(),
            backend: e.backend.clone(),
            state: e.state.code(),
            ttl_ms: ms(e.ttl),
            idle_ms: ms(e.idle),
        }
    }
}

/// Why a handover did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// Socket I/O.
    #[error("handover socket: {0}")]
    Io(#[from] std::io::Error),
    /// A line that is not a handover message.
    #[error("handover line {line}: {error}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        error: String,
    },
}

/// New process: bind the handover socket (before taking the listeners over) and expect a table.
pub fn bind(lb: &Lb, path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    let _ = std::fs::remove_file(path);
    let l = std::os::unix::net::UnixListener::bind(path)?;
    l.set_nonblocking(true)?;
    lb.handover.expect(lb.config.load().upgrade.handover_wait);
    Ok(l)
}

/// New process: receive the old table (one connection), then stop listening.
pub async fn receive(lb: Arc<Lb>, listener: std::os::unix::net::UnixListener, path: PathBuf) {
    let wait = lb.config.load().upgrade.handover_wait;
    let listener = match UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "upgrade handover socket unusable; sessions without a node tag will get 400");
            lb.handover.finish();
            return;
        }
    };
    let stream = match tokio::time::timeout(wait, listener.accept()).await {
        Ok(Ok((s, _))) => s,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "upgrade handover: accept failed");
            lb.handover.finish();
            return;
        }
        Err(_) => {
            tracing::warn!(
                ?wait,
                "upgrade handover: the old process sent no sid table; sessions it learned without a node tag will get 400"
            );
            lb.handover.finish();
            let _ = std::fs::remove_file(&path);
            return;
        }
    };
    drop(listener);
    let _ = std::fs::remove_file(&path);
    match import(&lb, stream).await {
        Ok(n) => tracing::info!(entries = n, "upgrade handover finished"),
        Err(e) => tracing::error!(error = %e, "upgrade handover ended early"),
    }
    lb.handover.finish();
}

fn apply(lb: &Lb, line: Line) -> bool {
    match line {
        Line::Upsert {
            sid,
            backend,
            state,
            ttl_ms,
            idle_ms,
        } => {
            let (Some(state), Some(b)) = (State::from_code(state), lb.registry.get(&backend))
            else {
                tracing::debug!(%backend, "handover entry for an unknown backend or state; skipped");
                return false;
            };
            let e = Exported {
                sid,
                backend,
                state,
                ttl: Duration::from_millis(ttl_ms),
                idle: Duration::from_millis(idle_ms),
            };
            if lb.sids.import(&e, b).is_err() {
                lb.metrics
                    .rejected
                    .with_label_values(&["sid_table_full"])
                    .inc();
                return false;
            }
            lb.metrics
                .handover_entries
                .with_label_values(&["received"])
                .inc();
            true
        }
        Line::Remove { sid } => {
            lb.sids.remove(&sid);
            false
        }
        Line::End => false,
    }
}

async fn import(lb: &Lb, stream: UnixStream) -> Result<usize, HandoverError> {
    let mut lines = BufReader::new(stream).lines();
    let (mut n, mut line_no) = (0usize, 0usize);
    while let Some(text) = lines.next_line().await? {
        line_no += 1;
        let line: Line = serde_json::from_str(&text).map_err(|e| HandoverError::Malformed {
            line: line_no,
            error: e.to_string(),
        })?;
        if line == Line::End {
            tracing::info!(
                entries = n,
                "upgrade handover: snapshot received; following the old process's changes"
            );
            lb.handover.set_following(true);
            lb.handover.finish();
        }
        n += usize::from(apply(lb, line));
        lb.handover.changed();
    }
    lb.handover.set_following(false);
    Ok(n)
}

/// Old process: on `SIGQUIT`, hand the table to the new process that listens for it.
pub async fn send(lb: Arc<Lb>, path: PathBuf) {
    let Ok(mut stream) = UnixStream::connect(&path).await else {
        tracing::debug!(path = %path.display(), "no new process waits for the sid table");
        return;
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    lb.sids.observe(Some(tx));
    let snapshot = lb.sids.export();
    let result = async {
        let mut buf = Vec::with_capacity(snapshot.len() * 96);
        for e in &snapshot {
            write_line(&mut buf, &Line::from(e));
        }
        write_line(&mut buf, &Line::End);
        stream.write_all(&buf).await?;
        lb.metrics
            .handover_entries
            .with_label_values(&["sent"])
            .inc_by(snapshot.len() as u64);
        tracing::info!(
            entries = snapshot.len(),
            "sid table handed to the new process"
        );
        while let Some(change) = rx.recv().await {
            buf.clear();
            let line = match &change {
                Change::Upsert(e) => Line::from(e),
                Change::Remove(sid) => Line::Remove { sid: sid.clone() },
            };
            write_line(&mut buf, &line);
            stream.write_all(&buf).await?;
            lb.metrics
                .handover_entries
                .with_label_values(&["sent"])
                .inc();
        }
        Ok::<(), std::io::Error>(())
    }
    .await;
    lb.sids.observe(None);
    if let Err(e) = result {
        tracing::warn!(error = %e, "sid table handover stopped");
    }
}

fn write_line(buf: &mut Vec<u8>, line: &Line) {
    // Serialising these plain structs cannot fail.
    if serde_json::to_writer(&mut *buf, line).is_ok() {
        buf.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let e = Exported {
            sid: "a b\"c".into(),
            backend: "node-1".into(),
            state: State::Upgraded,
            ttl: Duration::from_secs(55),
            idle: Duration::from_millis(12),
        };
        let mut buf = Vec::new();
        write_line(&mut buf, &Line::from(&e));
        write_line(&mut buf, &Line::End);
        let text = String::from_utf8(buf).expect("utf-8");
        let lines: Vec<Line> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], Line::from(&e));
        assert_eq!(lines[1], Line::End);
        assert!(serde_json::from_str::<Line>(r#"{"op":"bogus"}"#).is_err());
    }

    #[tokio::test]
    async fn gate_waits_until_finished_or_deadline() {
        let g = HandoverGate::open();
        assert!(!g.pending());
        g.expect(Duration::from_millis(50));
        assert!(g.pending());
        let t = Instant::now();
        g.wait().await;
        assert!(t.elapsed() >= Duration::from_millis(40));
        assert!(!g.pending());
        g.expect(Duration::from_secs(30));
        g.finish();
        assert!(!g.pending());
        let t = Instant::now();
        g.wait().await;
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
