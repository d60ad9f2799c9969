//! Prometheus helpers: metric constructors that enforce the `iogate_` naming conventions and
//! render a registry in the text exposition format.
//!
//! Conventions: every name starts with `iogate_`, counters end in `_total`, histograms of time end
//! in `_seconds`, and labels are low-cardinality (backend id, reason, transport — never a session
//! id or client address).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Errors from registering metrics.
pub type MetricsError = prometheus::Error;

/// Latency buckets in seconds, from 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

fn check(name: &str) {
    debug_assert!(name.starts_with("iogate_"), "metric {name} lacks iogate_");
}

/// Register an integer counter (name must end with `_total`).
pub fn counter(reg: &Registry, name: &str, help: &str) -> Result<IntCounter, MetricsError> {
    check(name);
    debug_assert!(name.ends_with("_total"));
    let c = IntCounter::with_opts(Opts::new(name, help))?;
    reg.register(Box::new(c.clone()))?;
    Ok(c)
}

/// Register a labelled integer counter (name must end with `_total`).
pub fn counter_vec(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, MetricsError> {
    check(name);
    debug_assert!(name.ends_with("_total"));
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    reg.register(Box::new(c.clone()))?;
    Ok(c)
}

/// Register an integer gauge.
pub fn gauge(reg: &Registry, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
    check(name);
    let g = IntGauge::with_opts(Opts::new(name, help))?;
    reg.register(Box::new(g.clone()))?;
    Ok(g)
}

/// Register a labelled integer gauge.
pub fn gauge_vec(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, MetricsError> {
    check(name);
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    reg.register(Box::new(g.clone()))?;
    Ok(g)
}

/// Register a latency histogram in seconds with [`LATENCY_BUCKETS`].
pub fn seconds_histogram(
    reg: &Registry,
    name: &str,
    help: &str,
) -> Result<Histogram, MetricsError> {
    check(name);
    debug_assert!(name.ends_with("_seconds"));
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()))?;
    reg.register(Box::new(h.clone()))?;
    Ok(h)
}

/// Register a labelled latency histogram in seconds with [`LATENCY_BUCKETS`].
pub fn seconds_histogram_vec(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<HistogramVec, MetricsError> {
    check(name);
    debug_assert!(name.ends_with("_seconds"));
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )?;
    reg.register(Box::new(h.clone()))?;
    Ok(h)
}

/// Render every metric of `reg` in the Prometheus text format.
pub fn render(reg: &Registry) -> String {
    let mut buf = Vec::new();
    if TextEncoder::new().encode(&reg.gather(), &mut buf).is_err() {
        return String::new();
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
