//! Output: the final human table, the JSON summary, and a self-contained HTML report with inline
//! SVG charts (latency over time, latency distribution) — nothing loaded from the network.

use std::fmt::Write as _;

use serde::Serialize;

use crate::run::{Phase, Sample};
use crate::stats::Accounting;

/// Everything one phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Phase settings.
    pub phase: Phase,
    /// Server URL.
    pub url: String,
    /// Clients.
    pub clients: usize,
    /// Successful connects (first connects and reconnects).
    pub connects: u64,
    /// Most clients connected at once.
    pub connected_peak: u64,
    /// Reconnections.
    pub reconnects: u64,
    /// Reconnects whose session was recovered (`--recovery`).
    pub recovered: u64,
    /// Wall time of the phase, seconds.
    pub elapsed_s: f64,
    /// Storm: time until every client was back, ms.
    pub storm_recovery_ms: Option<f64>,
    /// Message accounting and latencies.
    pub accounting: Accounting,
    /// Deliveries (or acks) per second over the scenario.
    pub throughput_per_s: f64,
    /// The generator's CPU time during the phase, seconds.
    pub generator_cpu_s: f64,
    /// The generator's CPU use, % of one core.
    pub generator_cpu_pct: f64,
    /// The generator's RSS at the end, MiB.
    pub generator_rss_mib: f64,
    /// The generator's peak RSS, MiB.
    pub generator_peak_rss_mib: f64,
    /// Per-second samples.
    pub timeline: Vec<Sample>,
}

/// The human-readable table.
pub fn table(s: &Summary) -> String {
    let a = &s.accounting;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "iogate-loadtest — {:?} over {:?}, {} clients, {} ({:.1} s)",
        s.phase.scenario, s.phase.transport, s.clients, s.url, s.elapsed_s
    );
    let _ = writeln!(
        o,
        "  connections   connected peak {} / {} ({:.2} %), connects {}, reconnects {} (recovered {})",
        s.connected_peak,
        s.clients,
        s.connected_peak as f64 * 100.0 / s.clients.max(1) as f64,
        s.connects,
        s.reconnects,
        s.recovered
    );
    let fails: u64 = a.failures.values().sum();
    let _ = writeln!(o, "  failed        {fails} {:?}", a.failures);
    let _ = writeln!(o, "  disconnects   {:?}", a.disconnects);
    let c = &a.connect_ms;
    let _ = writeln!(
        o,
        "  connect ms    p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        c.p50, c.p90, c.p99, c.max
    );
    if a.reconnect_ms.count > 0 {
        let r = &a.reconnect_ms;
        let _ = writeln!(
            o,
            "  reconnect ms  p50 {:.1}  p99 {:.1}  max {:.1}",
            r.p50, r.p99, r.max
        );
    }
    if let Some(storm) = s.storm_recovery_ms {
        let _ = writeln!(
            o,
            "  storm         all {} clients back after {storm:.0} ms",
            s.clients
        );
    }
    if a.sent > 0 {
        let _ = writeln!(
            o,
            "  messages      sent {}  expected {}  received {} (late {})  lost {}  duplicated {}  out-of-order {}  unexpected {}",
            a.sent,
            a.expected,
            a.received,
            a.late,
            a.lost,
            a.duplicated,
            a.out_of_order,
            a.unexpected
        );
    }
    if a.acks_sent > 0 {
        let _ = writeln!(
            o,
            "  acks          sent {}  received {}  timed out {}",
            a.acks_sent, a.acks_received, a.acks_timed_out
        );
    }
    let l = &a.latency_ms;
    if l.count > 0 {
        let _ = writeln!(
            o,
            "  latency ms    p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  ({} samples, {:.0}/s)",
            l.p50, l.p90, l.p99, l.p999, l.max, l.count, s.throughput_per_s
        );
    }
    let _ = writeln!(
        o,
        "  generator     cpu {:.2} s ({:.1} % of a core), rss {:.1} MiB (peak {:.1} MiB)",
        s.generator_cpu_s, s.generator_cpu_pct, s.generator_rss_mib, s.generator_peak_rss_mib
    );
    o
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One named, coloured line of (x, y) points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// A line chart of (x, y) series as inline SVG.
fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series<'_>]) -> String {
    let (w, h, pad) = (720.0, 260.0, 48.0);
    let xs = series.iter().flat_map(|s| s.2.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.2.iter().map(|p| p.1));
    let xmax = xs.fold(0.0f64, f64::max).max(1e-9);
    let ymax = ys.fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let mut svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' viewBox='0 0 {w} {h}'>"
    );
    let _ = write!(
        svg,
        "<text x='{}' y='16' font-size='14' text-anchor='middle'>{}</text>",
        w / 2.0,
        esc(title)
    );
    let _ = write!(
        svg,
        "<line x1='{pad}' y1='{}' x2='{}' y2='{}' stroke='#333'/>",
        h - pad,
        w - 10.0,
        h - pad
    );
    let _ = write!(
        svg,
        "<line x1='{pad}' y1='24' x2='{pad}' y2='{}' stroke='#333'/>",
        h - pad
    );
    for i in 0..=4 {
        let y = 24.0 + (h - pad - 24.0) * (i as f64 / 4.0);
        let v = ymax * (1.0 - i as f64 / 4.0);
        let _ = write!(
            svg,
            "<text x='{}' y='{}' font-size='10' text-anchor='end'>{v:.1}</text><line x1='{pad}' y1='{y}' x2='{}' y2='{y}' stroke='#eee'/>",
            pad - 4.0,
            y + 3.0,
            w - 10.0
        );
    }
    let _ = write!(
        svg,
        "<text x='{}' y='{}' font-size='11' text-anchor='middle'>{}</text>",
        w / 2.0,
        h - 12.0,
        esc(x_label)
    );
    let _ = write!(
        svg,
        "<text x='12' y='{}' font-size='11' transform='rotate(-90 12 {})' text-anchor='middle'>{}</text>",
        h / 2.0,
        h / 2.0,
        esc(y_label)
    );
    let _ = write!(
        svg,
        "<text x='{}' y='{}' font-size='10' text-anchor='end'>{xmax:.1}</text>",
        w - 10.0,
        h - pad + 14.0
    );
    for (k, (name, color, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| {
                format!(
                    "{:.1},{:.1}",
                    pad + (w - pad - 10.0) * x / xmax,
                    (h - pad) - (h - pad - 24.0) * y / ymax
                )
            })
            .collect();
        let _ = write!(
            svg,
            "<polyline fill='none' stroke='{color}' stroke-width='2' points='{}'/>",
            path.join(" ")
        );
        let _ = write!(
            svg,
            "<text x='{}' y='{}' font-size='11' fill='{color}'>{}</text>",
            pad + 10.0 + 90.0 * k as f64,
            38.0,
            esc(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A bar chart of the latency distribution (log-scaled buckets).
fn histogram_chart(buckets: &[(f64, u64)]) -> String {
    let (w, h, pad) = (720.0, 260.0, 48.0);
    let max = buckets.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64;
    let n = buckets.len().max(1) as f64;
    let bw = (w - pad - 10.0) / n;
    let mut svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' viewBox='0 0 {w} {h}'>"
    );
    let _ = write!(
        svg,
        "<text x='{}' y='16' font-size='14' text-anchor='middle'>Latency distribution</text>",
        w / 2.0
    );
    for (i, (upper, count)) in buckets.iter().enumerate() {
        let bh = (h - pad - 24.0) * (*count as f64 / max);
        let x = pad + bw * i as f64;
        let _ = write!(
            svg,
            "<rect x='{x:.1}' y='{:.1}' width='{:.1}' height='{bh:.1}' fill='#4a7'><title>≤ {upper:.3} ms: {count}</title></rect>",
            (h - pad) - bh,
            (bw - 1.0).max(1.0)
        );
        if i % 2 == 0 {
            let _ = write!(
                svg,
                "<text x='{:.1}' y='{}' font-size='9' text-anchor='middle'>{upper:.2}</text>",
                x + bw / 2.0,
                h - pad + 12.0
            );
        }
    }
    let _ = write!(
        svg,
        "<text x='{}' y='{}' font-size='11' text-anchor='middle'>latency upper bound (ms, log buckets)</text>",
        w / 2.0,
        h - 12.0
    );
    svg.push_str("</svg>");
    svg
}

/// The self-contained HTML report for one or more phases.
pub fn html(summaries: &[Summary]) -> String {
    let mut o = String::from(
        "<!doctype html><html><head><meta charset='utf-8'><title>iogate-loadtest report</title><style>body{font-family:system-ui,sans-serif;margin:24px;max-width:800px}pre{background:#f6f6f6;padding:12px;overflow:auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style></head><body><h1>iogate-loadtest report</h1>",
    );
    for (i, s) in summaries.iter().enumerate() {
        let _ = write!(
            o,
            "<h2>Phase {}: {:?}</h2><pre>{}</pre>",
            i + 1,
            s.phase.scenario,
            esc(&table(s))
        );
        let p50: Vec<(f64, f64)> = s.timeline.iter().map(|t| (t.t, t.latency.p50)).collect();
        let p99: Vec<(f64, f64)> = s.timeline.iter().map(|t| (t.t, t.latency.p99)).collect();
        o.push_str(&line_chart(
            "Latency over time",
            "seconds",
            "ms",
            &[("p50", "#27a", p50), ("p99", "#c33", p99)],
        ));
        let conn: Vec<(f64, f64)> = s
            .timeline
            .iter()
            .map(|t| (t.t, t.connected as f64))
            .collect();
        let rate: Vec<(f64, f64)> = s.timeline.iter().map(|t| (t.t, t.rate)).collect();
        o.push_str(&line_chart(
            "Connected clients",
            "seconds",
            "clients",
            &[("connected", "#27a", conn)],
        ));
        o.push_str(&line_chart(
            "Deliveries / acks per second",
            "seconds",
            "per second",
            &[("rate", "#a72", rate)],
        ));
        o.push_str(&histogram_chart(&s.accounting.latency_histogram));
    }
    o.push_str("</body></html>\n");
    o
}
