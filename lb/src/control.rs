//! The control plane, one pingora background service: active health checks, the sid-table
//! sweeper, gauges, reaping drained backends, hot reload (SIGHUP and file changes), the sid-table
//! handover of a binary upgrade (receiving it in a new process, sending it from the old one), and
//! an early exit once a graceful shutdown has nothing left to wait for.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use pingora_core::server::{ExecutionPhase, ShutdownWatch};
use pingora_core::services::background::BackgroundService;

use crate::config::LbConfig;
use crate::handover;
use crate::state::Lb;

/// The background service.
pub struct Control {
    /// Shared state.
    pub lb: Arc<Lb>,
    /// The config file to reload (none in the quick command-line form).
    pub config_path: Option<PathBuf>,
    /// Where an upgrading process waits for the sid table, and where this one sends it when it
    /// shuts down.
    pub handover_path: PathBuf,
    /// This process was started with `-u`: the listener bound for the old process's table.
    pub handover_listener: std::sync::Mutex<Option<std::os::unix::net::UnixListener>>,
    /// pingora's execution phases: `SIGQUIT` starts the sid-table handover.
    pub phases: std::sync::Mutex<Option<tokio::sync::broadcast::Receiver<ExecutionPhase>>>,
    /// Idle client connections the proxy keeps open after shutdown started, waiting for their
    /// next request (`shutdown.idle_wait`, the vendored pingora-proxy's count).
    pub parked_idle: Arc<AtomicUsize>,
}

/// Send the sid table when pingora starts handing the listeners to a new process.
async fn hand_over_on_upgrade(
    lb: Arc<Lb>,
    path: PathBuf,
    mut phases: tokio::sync::broadcast::Receiver<ExecutionPhase>,
) {
    loop {
        match phases.recv().await {
            Ok(ExecutionPhase::GracefulUpgradeTransferringFds) => {
                // pingora keeps serving for 5 s, then starts its shutdown. From now on every
                // response says `Connection: close`; a connection idle when the shutdown starts
                // waits `shutdown.idle_wait` for its next request (the vendored pingora-proxy),
                // so no client request races a close.
                lb.start_closing();
                handover::send(lb, path).await;
                return;
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[async_trait]
impl BackgroundService for Control {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let _health = tokio::spawn(crate::health::run(self.lb.clone()));
        let _discovery = tokio::spawn(crate::discovery::run(self.lb.clone()));
        let listener = self
            .handover_listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let phases = self.phases.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(phases) = phases {
            tokio::spawn(hand_over_on_upgrade(
                self.lb.clone(),
                self.handover_path.clone(),
                phases,
            ));
        }
        if let Some(l) = listener {
            tokio::spawn(handover::receive(
                self.lb.clone(),
                l,
                self.handover_path.clone(),
            ));
        }
        let _reload = tokio::spawn(watch_config(self.lb.clone(), self.config_path.clone()));
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut last_sweep = Instant::now();
        let mut trimmer = crate::memory::Trimmer::default();
        let mut shutting_down = false;
        // Ticks in a row with nothing left to wait for (see the exit below).
        let mut quiet_ticks = 0u32;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                r = shutdown.changed(), if !shutting_down => {
                    // Err: the server dropped the sender, which only happens when it stops.
                    if r.is_err() || *shutdown.borrow() {
                        shutting_down = true;
                        self.lb.start_closing();
                        tracing::info!(grace = ?self.lb.config.load().shutdown.grace,
                            "shutting down: listeners closed, live sessions continue until they end or the grace period passes");
                    }
                }
            }
            if last_sweep.elapsed() >= Duration::from_secs(1) {
                sweep(&self.lb);
                last_sweep = Instant::now();
                let open = self.lb.metrics.client_connections.get();
                if trimmer.observe(open) {
                    crate::memory::trim();
                    tracing::debug!(
                        open,
                        "connections fell well below their peak: freed memory returned to the OS"
                    );
                }
            }
            refresh_gauges(&self.lb);
            // A parked connection whose request arrives stops being parked a moment before the
            // request takes its connection slot: two quiet ticks in a row (250 ms apart) rule
            // that moment out.
            if shutting_down
                && self.lb.conns.total() == 0
                && self.parked_idle.load(Ordering::Acquire) == 0
            {
                quiet_ticks += 1;
                if quiet_ticks >= 2 {
                    tracing::info!("no live or idle client connections left; exiting");
                    std::process::exit(0);
                }
            } else {
                quiet_ticks = 0;
            }
        }
    }
}

/// Expire idle sids and reap drained backends (once a second).
pub fn sweep(lb: &Lb) {
    lb.sids.expire(Instant::now());
    let reaped = lb.registry.reap();
    for b in &reaped {
        tracing::info!(backend = %b.id, addr = %b.addr, "removed backend drained; forgetting it");
        // A backend re-added under the same id keeps its series.
        if lb.registry.get(&b.id).is_none() {
            lb.metrics.forget_backend(&b.id);
        }
    }
    if !reaped.is_empty() {
        lb.rebuild_tags();
    }
}

/// Bring the per-backend gauges and the sid-table gauge up to date (cheap: one pass over the
/// backends).
pub fn refresh_gauges(lb: &Lb) {
    for b in lb.registry.all() {
        lb.metrics
            .sessions
            .with_label_values(&[&b.id])
            .set(b.live());
        lb.metrics.set_backend_state(&b.id, b.state());
        lb.metrics.touch_backend(&b.id);
    }
    lb.metrics.sid_table_entries.set(lb.sids.len() as i64);
}

/// Parse, validate and apply `path`. On error the old config stays whole.
pub fn reload(lb: &Lb, path: &std::path::Path) -> bool {
    match LbConfig::load(path) {
        Err(e) => {
            lb.metrics.reloads.with_label_values(&["error"]).inc();
            for fe in &e.errors {
                tracing::error!(
                    file = %path.display(),
                    line = fe.line,
                    column = fe.column,
                    field = %fe.field,
                    "config reload rejected: {}", fe.message
                );
            }
            tracing::error!("config reload rejected; the previous configuration stays in force");
            false
        }
        Ok(new) => match apply(lb, new) {
            Ok(()) => {
                lb.metrics.reloads.with_label_values(&["ok"]).inc();
                true
            }
            Err(e) => {
                lb.metrics.reloads.with_label_values(&["error"]).inc();
                tracing::error!(file = %path.display(), error = %e,
                    "config reload rejected; the previous configuration stays in force");
                false
            }
        },
    }
}

/// Why a validated config could not be applied (nothing changed).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// An upstream address does not parse.
    #[error(transparent)]
    Address(#[from] crate::backends::BadAddress),
    /// A certificate of a TLS listener does not load.
    #[error(transparent)]
    Tls(#[from] crate::tls::ListenerTlsError),
}

/// Apply a validated config in-process. Live sockets are never touched; on error nothing
/// changed. The TLS listeners' certificates are loaded first and put in force last.
pub fn apply(lb: &Lb, mut new: LbConfig) -> Result<(), ApplyError> {
    let old = lb.config.load_full();
    if old.upstream_tls != new.upstream_tls {
        // pingora's connector and the health checks' client were built with the old one.
        tracing::warn!(
            "upstream_tls changes only on restart or binary upgrade; keeping the old one"
        );
        new.upstream_tls = old.upstream_tls.clone();
    }
    let listeners_changed = old.listeners.len() != new.listeners.len()
        || old
            .listeners
            .iter()
            .zip(&new.listeners)
            .any(|(a, b)| a.restart_key() != b.restart_key());
    if listeners_changed
        || old.admin.listen != new.admin.listen
        || old.threads != new.threads
        || old.shutdown != new.shutdown
        || old.timeouts.client_header != new.timeouts.client_header
        || old.limits.per_ip_rate_buckets != new.limits.per_ip_rate_buckets
    {
        tracing::warn!(
            "listeners (other than their certificates), admin.listen, threads, shutdown, timeouts.client_header and limits.per_ip_rate_buckets change only on restart or binary upgrade; keeping the old ones"
        );
    }
    let certificates = lb.tls.prepare(&new.listeners)?;
    // The discovery lock is held until the new config is in force, so a DNS change applied
    // meanwhile cannot put the old upstream list back.
    let mut sets = lb.discovered.lock();
    let applied = crate::discovery::apply_upstreams(lb, &new, &mut sets)?;
    certificates.commit();
    lb.metrics.set_certificates(&lb.tls);
    lb.sids.set_max(new.engineio.sid_table_max);
    lb.upstream_pool.configure(&new.upstream_keepalive);
    lb.metrics.set_limits(&new);
    lb.config.store(Arc::new(new));
    drop(sets);
    lb.discovered.wake();
    lb.rebuild_tags();
    tracing::info!(added = ?applied.added, removed = ?applied.removed, "configuration reloaded");
    Ok(())
}

/// Reload only the certificates of the configuration in force (the quick form has no file;
/// a certificate or key file changed).
pub fn reload_certificates(lb: &Lb) -> bool {
    if lb.tls.all().is_empty() {
        tracing::info!("nothing to reload: no config file and no TLS listener");
        return false;
    }
    let cfg = lb.config.load_full();
    match lb.tls.prepare(&cfg.listeners) {
        Ok(p) => {
            p.commit();
            lb.metrics.set_certificates(&lb.tls);
            lb.metrics.reloads.with_label_values(&["ok"]).inc();
            tracing::info!("certificates reloaded");
            true
        }
        Err(e) => {
            lb.metrics.reloads.with_label_values(&["error"]).inc();
            tracing::error!(field = %e.field(), error = %e.error,
                "certificate reload rejected; the certificates in force stay");
            false
        }
    }
}

/// Reload on SIGHUP, and when the config file or a certificate/key file it names changes
/// (checked every 500 ms). Without a config file (the quick form) only certificates reload.
async fn watch_config(lb: Arc<Lb>, path: Option<PathBuf>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; only file changes trigger reloads");
            None
        }
    };
    let stamp = |p: &PathBuf| -> Option<(SystemTime, u64, u64)> {
        let m = std::fs::metadata(p).ok()?;
        let text = std::fs::read(p).ok()?;
        let sum = text
            .iter()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)));
        Some((m.modified().ok()?, m.len(), sum))
    };
    let watched = |lb: &Lb| -> Vec<PathBuf> {
        path.iter()
            .cloned()
            .chain(crate::tls::files(&lb.config.load().listeners))
            .collect()
    };
    let stamps = |files: &[PathBuf]| files.iter().map(stamp).collect::<Vec<_>>();
    let mut files = watched(&lb);
    let mut last = stamps(&files);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        let by_signal = tokio::select! {
            _ = tick.tick() => false,
            Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let now = stamps(&files);
        // A file that vanished is not a change to act on (an editor's rename, a rotation in
        // progress): the next stamp that reads it again is.
        let changed = now.iter().zip(&last).any(|(n, l)| n.is_some() && n != l);
        if by_signal || changed {
            match &path {
                Some(p) => {
                    tracing::info!(file = %p.display(), by_signal, "reloading configuration");
                    reload(&lb, p);
                }
                None => {
                    tracing::info!(by_signal, "reloading certificates");
                    reload_certificates(&lb);
                }
            }
            files = watched(&lb);
            last = stamps(&files);
        }
    }
}
