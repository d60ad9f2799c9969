//! The control plane, one pingora background service: active health checks, the sid-table
//! sweeper, gauges, reaping drained backends, hot reload (SIGHUP and file changes), and an early
//! exit once a graceful shutdown has nothing left to wait for.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use crate::config::LbConfig;
use crate::proxy::Lb;

/// The background service.
pub struct Control {
    /// Shared state.
    pub lb: Arc<Lb>,
    /// The config file to reload (none in the quick command-line form).
    pub config_path: Option<PathBuf>,
}

#[async_trait]
impl BackgroundService for Control {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let _health = tokio::spawn(crate::health::run(self.lb.clone()));
        let _reload = self
            .config_path
            .clone()
            .map(|p| tokio::spawn(watch_config(self.lb.clone(), p)));
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut last_sweep = Instant::now();
        let mut shutting_down = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                r = shutdown.changed(), if !shutting_down => {
                    // Err: the server dropped the sender, which only happens when it stops.
                    if r.is_err() || *shutdown.borrow() {
                        shutting_down = true;
                        tracing::info!(grace = ?self.lb.config.load().shutdown.grace,
                            "shutting down: listeners closed, live sessions continue until they end or the grace period passes");
                    }
                }
            }
            if last_sweep.elapsed() >= Duration::from_secs(1) {
                sweep(&self.lb);
                last_sweep = Instant::now();
            }
            refresh_gauges(&self.lb);
            if shutting_down && self.lb.conns.total() == 0 {
                tracing::info!("no live connections left; exiting");
                std::process::exit(0);
            }
        }
    }
}

/// Expire idle sids and reap drained backends (once a second).
pub fn sweep(lb: &Lb) {
    lb.sids.expire(Instant::now());
    for id in lb.registry.reap() {
        tracing::info!(backend = %id, "removed backend drained; forgetting it");
        let _ = lb.metrics.sessions.remove_label_values(&[&id]);
        let _ = lb.metrics.backend_up.remove_label_values(&[&id]);
        let _ = lb.metrics.websockets.remove_label_values(&[&id]);
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
        lb.metrics
            .backend_up
            .with_label_values(&[&b.id])
            .set(i64::from(b.ready()));
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
        Ok(new) => {
            apply(lb, new);
            lb.metrics.reloads.with_label_values(&["ok"]).inc();
            true
        }
    }
}

/// Apply a validated config in-process. Live sockets are never touched.
pub fn apply(lb: &Lb, new: LbConfig) {
    let old = lb.config.load_full();
    if old.listeners != new.listeners
        || old.admin.listen != new.admin.listen
        || old.threads != new.threads
    {
        tracing::warn!(
            "listeners, admin.listen and threads change only on restart or binary upgrade; keeping the old ones"
        );
    }
    let (added, removed) = lb
        .registry
        .apply(&new.upstreams, !new.health.active.enabled);
    lb.sids.set_max(new.engineio.sid_table_max);
    lb.config.store(Arc::new(new));
    tracing::info!(?added, ?removed, "configuration reloaded");
}

async fn watch_config(lb: Arc<Lb>, path: PathBuf) {
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
    let mut last = stamp(&path);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        let by_signal = tokio::select! {
            _ = tick.tick() => false,
            Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let now = stamp(&path);
        if by_signal || (now.is_some() && now != last) {
            tracing::info!(file = %path.display(), by_signal, "reloading configuration");
            reload(&lb, &path);
            last = now;
        }
    }
}
