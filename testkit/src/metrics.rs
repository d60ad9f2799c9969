//! Reading Prometheus text. A sample that is absent is not zero: [`metric_value`] says `None`,
//! and the `metric()` helpers of [`Node`](crate::Node) and [`Lb`](crate::Lb) fail the test.

/// The value of the sample named exactly `name` (with its labels) in a Prometheus text body.
pub fn metric_value(body: &str, name: &str) -> Option<f64> {
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == name).then(|| v.parse().ok()).flatten()
    })
}

/// The value of `name`, failing the test when the sample is absent.
pub fn require_metric(body: &str, name: &str, who: &str) -> f64 {
    metric_value(body, name).unwrap_or_else(|| {
        panic!("metric {name} is absent from {who}'s /metrics (absent is not zero)")
    })
}
