//! Prometheus metrics of the operator, served on `/metrics`.
//!
//! Per resource kind: how many reconciles ran, how long they took, and how many failed and why. A
//! gauge says whether this replica currently leads, so a dashboard can tell the active one.

use std::time::Instant;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// Errors while registering or encoding metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics registry: {0}")]
    Prometheus(#[from] prometheus::Error),
    #[error("metrics are not valid UTF-8: {0}")]
    Utf8(#[from] std::string::FromUtf8Error),
}

/// The operator's metrics, in their own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    failures: IntCounterVec,
    duration: HistogramVec,
    leader: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new_custom(Some("waggle_operator".to_owned()), None)?;
        let reconciles =
            IntCounterVec::new(Opts::new("reconciles_total", "Reconciles started, per resource kind"), &["kind"])?;
        let failures = IntCounterVec::new(
            Opts::new("reconcile_errors_total", "Reconciles that failed, per resource kind and error"),
            &["kind", "error"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new("reconcile_duration_seconds", "Time a reconcile took, per resource kind")
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["kind"],
        )?;
        let leader = IntGauge::new("leader", "1 while this replica holds the leader lease")?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        Ok(Metrics { registry, reconciles, failures, duration, leader })
    }

    /// Counts a reconcile of `kind` and times it until the returned guard is dropped.
    pub fn start_reconcile(&self, kind: &str) -> ReconcileTimer {
        self.reconciles.with_label_values(&[kind]).inc();
        ReconcileTimer { histogram: self.duration.with_label_values(&[kind]), started: Instant::now() }
    }

    pub fn reconcile_failed(&self, kind: &str, error: &str) {
        self.failures.with_label_values(&[kind, error]).inc();
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        Ok(String::from_utf8(buffer)?)
    }
}

/// Observes the duration of one reconcile when dropped.
pub struct ReconcileTimer {
    histogram: prometheus::Histogram,
    started: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_count_duration_and_errors_are_exported_per_kind() {
        let metrics = Metrics::new().unwrap();
        drop(metrics.start_reconcile("Cluster"));
        metrics.reconcile_failed("Gateway", "conflict");
        metrics.set_leader(true);
        let text = metrics.render().unwrap();
        assert!(text.contains("waggle_operator_reconciles_total{kind=\"Cluster\"} 1"), "{text}");
        assert!(text.contains("waggle_operator_reconcile_duration_seconds_count{kind=\"Cluster\"} 1"), "{text}");
        assert!(
            text.contains("waggle_operator_reconcile_errors_total{error=\"conflict\",kind=\"Gateway\"} 1"),
            "{text}"
        );
        assert!(text.contains("waggle_operator_leader 1"), "{text}");
    }
}
