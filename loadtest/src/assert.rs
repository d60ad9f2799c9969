//! `--assert "loss=0,p99<50ms,connected>=99.9%"`: thresholds over the summary that set a
//! non-zero exit code when they fail, so a run can gate CI.
//!
//! Keys: `loss`, `duplicates`, `out_of_order`, `failed` (counts; `loss` also as a percentage of
//! expected with `%`), `p50`, `p90`, `p99`, `p999`, `max`, `mean` (latency), `connect_p99`,
//! `reconnect_p99`, `storm` (recovery time), `connected` (peak connected, count or `%` of clients),
//! `ack_timeouts`, `recovered` (recovered sessions, count or `%` of reconnects). Operators: `<`, `<=`, `>`, `>=`, `=`. Units: `ms`, `s`, `us`, `%`.

use crate::report::Summary;

/// One parsed threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// Key.
    pub key: String,
    /// Operator.
    pub op: String,
    /// Value (ms for times, percent when `percent`).
    pub value: f64,
    /// Given as a percentage.
    pub percent: bool,
    /// Original text.
    pub text: String,
}

/// Parse the comma-separated list.
pub fn parse(spec: &str) -> Result<Vec<Threshold>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_one)
        .collect()
}

fn parse_one(s: &str) -> Result<Threshold, String> {
    let ops = ["<=", ">=", "<", ">", "="];
    let (pos, op) = ops
        .iter()
        .filter_map(|op| s.find(op).map(|p| (p, *op)))
        .min_by_key(|(p, op)| (*p, std::cmp::Reverse(op.len())))
        .ok_or_else(|| format!("`{s}`: no operator (<, <=, >, >=, =)"))?;
    let key = s[..pos].trim().to_string();
    let raw = s[pos + op.len()..].trim();
    let (num, unit) = raw.split_at(
        raw.find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(raw.len()),
    );
    let mut value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}`: `{raw}` is not a number"))?;
    let percent = unit == "%";
    match unit {
        "" | "ms" | "%" => {}
        "s" => value *= 1000.0,
        "us" => value /= 1000.0,
        u => return Err(format!("`{s}`: unknown unit `{u}` (ms, s, us, %)")),
    }
    let known = [
        "loss",
        "duplicates",
        "out_of_order",
        "failed",
        "p50",
        "p90",
        "p99",
        "p999",
        "max",
        "mean",
        "connect_p99",
        "reconnect_p99",
        "storm",
        "connected",
        "ack_timeouts",
        "recovered",
    ];
    if !known.contains(&key.as_str()) {
        return Err(format!(
            "`{s}`: unknown key `{key}` (one of {})",
            known.join(", ")
        ));
    }
    Ok(Threshold {
        key,
        op: op.to_string(),
        value,
        percent,
        text: s.to_string(),
    })
}

/// `part` as a percentage of `whole`; `empty` when `whole` is 0.
fn percent(part: u64, whole: u64, empty: f64) -> f64 {
    if whole == 0 {
        empty
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Evaluate against a summary: the failed thresholds with the actual value.
pub fn check(ts: &[Threshold], s: &Summary) -> Vec<String> {
    let mut failed = Vec::new();
    for t in ts {
        let a = &s.accounting;
        let actual = match (t.key.as_str(), t.percent) {
            ("loss", true) => percent(a.lost, a.expected, 0.0),
            ("loss", false) => a.lost as f64,
            ("duplicates", _) => a.duplicated as f64,
            ("out_of_order", _) => a.out_of_order as f64,
            ("failed", _) => a.failures.values().sum::<u64>() as f64,
            ("ack_timeouts", _) => a.acks_timed_out as f64,
            ("p50", _) => a.latency_ms.p50,
            ("p90", _) => a.latency_ms.p90,
            ("p99", _) => a.latency_ms.p99,
            ("p999", _) => a.latency_ms.p999,
            ("max", _) => a.latency_ms.max,
            ("mean", _) => a.latency_ms.mean,
            ("connect_p99", _) => a.connect_ms.p99,
            ("reconnect_p99", _) => a.reconnect_ms.p99,
            ("storm", _) => s.storm_recovery_ms.unwrap_or(f64::INFINITY),
            ("connected", true) => s.connected_peak as f64 * 100.0 / s.clients.max(1) as f64,
            ("connected", false) => s.connected_peak as f64,
            // No reconnects: nothing failed to recover.
            ("recovered", true) => percent(s.recovered, s.reconnects, 100.0),
            ("recovered", false) => s.recovered as f64,
            _ => f64::NAN,
        };
        let ok = match t.op.as_str() {
            "<" => actual < t.value,
            "<=" => actual <= t.value,
            ">" => actual > t.value,
            ">=" => actual >= t.value,
            "=" => (actual - t.value).abs() < 1e-9,
            _ => false,
        };
        if !ok {
            failed.push(format!(
                "{} (actual {:.3}{})",
                t.text,
                actual,
                if t.percent { "%" } else { "" }
            ));
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_thresholds() {
        let t = parse("loss=0, p99<50ms,connected>=99.9%,storm<2s").expect("valid");
        assert_eq!(t.len(), 4);
        assert_eq!(
            (t[1].key.as_str(), t[1].op.as_str(), t[1].value),
            ("p99", "<", 50.0)
        );
        assert!(t[2].percent && t[2].op == ">=");
        assert_eq!(t[3].value, 2000.0);
        assert!(parse("p99<fast").is_err());
        assert!(parse("speed<5").is_err());
        assert!(parse("p99").is_err());
    }
}
