//! Prometheus metrics of a broker, served on the management port.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

pub struct Metrics {
    pub registry: Registry,
    /// Commands processed, by partition, command and outcome (accepted or rejected).
    pub commands: IntCounterVec,
    /// Time from a command's arrival at the partition to the end of its processing, including the
    /// raft commit of its batch.
    pub processing_seconds: HistogramVec,
    /// Records per appended raft entry.
    pub batch_records: HistogramVec,
    /// Commands refused because a partition's queue was full.
    pub backpressure: IntCounterVec,
    /// Synchronous (fsynced) writes of the raft log: one per appended group of entries.
    pub log_fsyncs: IntCounterVec,
    /// Position of the last applied record.
    pub applied_position: IntGaugeVec,
    /// Raft role: 0 follower, 1 candidate, 2 leader, 3 learner, 4 shut down.
    pub raft_role: IntGaugeVec,
    pub raft_term: IntGaugeVec,
    pub raft_last_log_index: IntGaugeVec,
    pub raft_applied_index: IntGaugeVec,
    pub raft_commit_index: IntGaugeVec,
    /// Last log index covered by the latest snapshot, and the index the log is compacted up to.
    pub raft_snapshot_index: IntGaugeVec,
    pub raft_purged_index: IntGaugeVec,
    /// Partition messages (commands and acknowledgements) sent to other partitions, by target.
    pub partition_messages: IntCounterVec,
    /// Commands whose processing panicked: rejected, their writes undone.
    pub processing_failures: IntCounterVec,
    /// Element activations a processing run deferred to a later run because it ran out of steps.
    pub deferred_activations: IntCounterVec,
    /// Incidents raised on instances that ran too long without a wait state (likely endless loops).
    pub loop_incidents: IntCounterVec,
    /// Replicas restarted in the broker's process after their raft stopped on a fatal error.
    pub replica_restarts: IntCounterVec,
    /// Bytes free on the disk of the data directory.
    pub disk_free_bytes: prometheus::IntGauge,
    /// CPU time of the whole process to the nanosecond, set on each render. A gauge so that
    /// concurrent scrapes can only set it, never count a delta twice.
    cpu_seconds: prometheus::Gauge,
}

/// User and system CPU time of this process so far, in seconds, to the nanosecond.
///
/// The standard `process_cpu_seconds_total` counts whole seconds only, which makes a benchmark's CPU
/// time per instance uncertain by a second's worth divided by the run's length (10 % in a 10-second
/// run at one core); this is the figure `waggle bench` reads instead.
fn process_cpu_seconds() -> f64 {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut time) } != 0 {
        return 0.0;
    }
    time.tv_sec as f64 + time.tv_nsec as f64 * 1e-9
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let partition = &["partition"];
        let commands = IntCounterVec::new(
            Opts::new("waggle_commands_total", "Commands processed by the engine"),
            &["partition", "command", "outcome"],
        )
        .expect("valid metric");
        let processing_seconds = HistogramVec::new(
            HistogramOpts::new("waggle_command_processing_seconds", "Time from a command's arrival to its commit")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            partition,
        )
        .expect("valid metric");
        let batch_records = HistogramVec::new(
            HistogramOpts::new("waggle_batch_records", "Records per appended raft entry")
                .buckets(vec![1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0]),
            partition,
        )
        .expect("valid metric");
        let backpressure = IntCounterVec::new(
            Opts::new("waggle_backpressure_rejections_total", "Commands refused because a partition was busy"),
            partition,
        )
        .expect("valid metric");
        let log_fsyncs = IntCounterVec::new(
            Opts::new("waggle_log_fsyncs_total", "Synchronous writes (fsyncs) of the raft log"),
            partition,
        )
        .expect("valid metric");
        let gauge = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), partition).expect("valid metric");
        let metrics = Metrics {
            commands,
            processing_seconds,
            batch_records,
            backpressure,
            log_fsyncs,
            applied_position: gauge("waggle_applied_position", "Position of the last applied record"),
            raft_role: gauge(
                "waggle_raft_role",
                "Raft role: 0 follower, 1 candidate, 2 leader, 3 learner, 4 shut down",
            ),
            raft_term: gauge("waggle_raft_term", "Current raft term"),
            raft_last_log_index: gauge("waggle_raft_last_log_index", "Index of the last raft entry in the local log"),
            raft_applied_index: gauge("waggle_raft_applied_index", "Index of the last applied raft entry"),
            raft_commit_index: gauge("waggle_raft_commit_index", "Index of the last committed raft entry"),
            raft_snapshot_index: gauge("waggle_raft_snapshot_index", "Last raft index covered by the latest snapshot"),
            raft_purged_index: gauge("waggle_raft_purged_index", "Raft index the log is compacted up to"),
            partition_messages: IntCounterVec::new(
                Opts::new("waggle_partition_messages_total", "Messages sent to other partitions"),
                &["partition", "target"],
            )
            .expect("valid metric"),
            processing_failures: IntCounterVec::new(
                Opts::new("waggle_processing_failures_total", "Commands rejected because processing them failed"),
                &["partition", "command"],
            )
            .expect("valid metric"),
            deferred_activations: IntCounterVec::new(
                Opts::new(
                    "waggle_deferred_activations_total",
                    "Element activations deferred to a later processing run because a run used up its steps",
                ),
                partition,
            )
            .expect("valid metric"),
            loop_incidents: IntCounterVec::new(
                Opts::new(
                    "waggle_endless_loop_incidents_total",
                    "Incidents raised on instances that took too many steps without a wait state",
                ),
                partition,
            )
            .expect("valid metric"),
            replica_restarts: IntCounterVec::new(
                Opts::new(
                    "waggle_replica_restarts_total",
                    "Partition replicas restarted in place after their raft stopped on a fatal error",
                ),
                partition,
            )
            .expect("valid metric"),
            disk_free_bytes: prometheus::IntGauge::new(
                "waggle_disk_free_bytes",
                "Bytes free on the disk that holds the data directory",
            )
            .expect("valid metric"),
            cpu_seconds: prometheus::Gauge::new(
                "waggle_process_cpu_seconds",
                "User and system CPU time the process has used so far, in seconds, to the nanosecond",
            )
            .expect("valid metric"),
            registry,
        };
        for collector in [
            Box::new(metrics.commands.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.processing_seconds.clone()),
            Box::new(metrics.batch_records.clone()),
            Box::new(metrics.backpressure.clone()),
            Box::new(metrics.log_fsyncs.clone()),
            Box::new(metrics.applied_position.clone()),
            Box::new(metrics.raft_role.clone()),
            Box::new(metrics.raft_term.clone()),
            Box::new(metrics.raft_last_log_index.clone()),
            Box::new(metrics.raft_applied_index.clone()),
            Box::new(metrics.raft_commit_index.clone()),
            Box::new(metrics.raft_snapshot_index.clone()),
            Box::new(metrics.raft_purged_index.clone()),
            Box::new(metrics.partition_messages.clone()),
            Box::new(metrics.processing_failures.clone()),
            Box::new(metrics.deferred_activations.clone()),
            Box::new(metrics.loop_incidents.clone()),
            Box::new(metrics.replica_restarts.clone()),
            Box::new(metrics.disk_free_bytes.clone()),
            Box::new(metrics.cpu_seconds.clone()),
        ] {
            metrics.registry.register(collector).expect("metric names are unique");
        }
        // CPU time, memory and file descriptors of the broker process (process_cpu_seconds_total, ...).
        metrics
            .registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("the process collector registers once");
        metrics
    }

    /// The registry in Prometheus' text format.
    pub fn render(&self) -> String {
        self.cpu_seconds.set(process_cpu_seconds());
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut text)
            .expect("encoding metrics to a string cannot fail");
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
