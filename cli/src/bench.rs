//! The load generator: N one-task instances in flight against a running node, with its own worker.
//!
//! Each in-flight slot creates an instance with `CreateProcessInstanceWithResult` and starts the next
//! as soon as it returns, so the latency of that call is the instance's create-to-completion time. A
//! worker streams the jobs and completes them.
//!
//! With `--rate` the load is open instead of closed: instances are offered on a fixed schedule (at
//! most `--in-flight` at once), and each latency counts from the instance's scheduled start, not from
//! when a slot got round to sending it. A closed loop hides queueing (a slow answer delays the next
//! request instead of making it wait), so latency at a given rate, such as half the peak, is only
//! honest measured this way. `--runs N` repeats each measurement and adds a row of medians.
//!
//! A throughput figure is only worth what its conditions are, so every measurement also reports what
//! a reader needs to trust it: the server's CPU time per instance and the records and fsyncs it wrote
//! per instance (from the metrics of every process named with `--management`, read after the warm-up
//! and at the end), the machine's load while it ran, the node's resident memory, and an fsync probe
//! of the disk and a CPU speed probe taken just before (this kind of disk is noisy, an fsync sits on
//! every answer's path, and a shared machine's cores are not equally fast from hour to hour). `--interval` prints figures per interval during a long run, to show whether throughput or
//! CPU per instance drift as history accumulates; `--json` prints one JSON object per measurement.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};
use waggle_protocol::gateway::gateway_client::GatewayClient;
use waggle_protocol::gateway::{
    CompleteJobRequest, CreateProcessInstanceRequest, CreateProcessInstanceWithResultRequest, DeployResourceRequest,
    Resource, StreamActivatedJobsRequest,
};

const JOB_TYPE: &str = "waggle-bench-task";
const PROCESS_ID: &str = "waggle-bench";

#[derive(Args)]
pub struct BenchArgs {
    /// The gateway's gRPC address.
    #[arg(long, default_value = "127.0.0.1:26500")]
    gateway: String,
    /// Management addresses of every process to charge to the run (CPU time, records, fsyncs,
    /// memory), comma-separated: the node, or each broker and gateway of a cluster.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:9600")]
    management: Vec<String>,
    /// Instances in flight; several values run one after another (e.g. 1,32,128).
    #[arg(long, value_delimiter = ',', default_value = "1,32,128")]
    in_flight: Vec<usize>,
    /// How long each measurement runs, in seconds.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Warm-up before each measurement, in seconds.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Also print figures every this many seconds of a measurement (0: only at its end).
    #[arg(long, default_value_t = 0)]
    interval: u64,
    /// A directory on the disk the node writes to, for the fsync probe before each measurement.
    #[arg(long, default_value = ".")]
    probe_dir: PathBuf,
    /// Offer instances at this many per second (open loop, latency from each scheduled start)
    /// instead of starting the next as soon as a slot is free; `--in-flight` caps the concurrency.
    #[arg(long, value_parser = positive_rate)]
    rate: Option<f64>,
    /// Run each measurement this many times and add a row with the median of every figure.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Print one JSON object per measurement (and interval) instead of a table.
    #[arg(long)]
    json: bool,
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{s:?} is not a positive number of instances per second")),
    }
}

fn bench_model() -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="bench" targetNamespace="https://waggle.dev/bench">
  <bpmn:process id="{PROCESS_ID}" isExecutable="true">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="task" />
    <bpmn:serviceTask id="task"><bpmn:extensionElements><zeebe:taskDefinition type="{JOB_TYPE}" /></bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:sequenceFlow id="f2" sourceRef="task" targetRef="end" />
    <bpmn:endEvent id="end" />
  </bpmn:process>
</bpmn:definitions>"#
    )
}

/// Counters summed over every process the run is charged to; `None` where a process does not say.
#[derive(Clone, Copy, Debug, Default)]
struct ServerCounters {
    cpu_seconds: Option<f64>,
    records: Option<f64>,
    fsyncs: Option<f64>,
    resident_bytes: Option<f64>,
}

impl ServerCounters {
    async fn read(management: &[String]) -> ServerCounters {
        let mut total =
            ServerCounters { cpu_seconds: Some(0.0), records: Some(0.0), fsyncs: Some(0.0), resident_bytes: Some(0.0) };
        for addr in management {
            let text = http_get(addr, "/metrics").await.unwrap_or_default();
            let add = |sum: &mut Option<f64>, value: Option<f64>| *sum = sum.zip(value).map(|(a, b)| a + b);
            // Waggle's own CPU gauge is exact; the standard counter only counts whole seconds.
            let cpu = metric_sum(&text, "waggle_process_cpu_seconds")
                .or_else(|| metric_sum(&text, "process_cpu_seconds_total"));
            add(&mut total.cpu_seconds, cpu);
            add(&mut total.resident_bytes, metric_sum(&text, "process_resident_memory_bytes"));
            // A gateway writes no records: charge it nothing rather than making the sum unknown.
            let broker = text.contains("waggle_batch_records");
            if broker {
                add(&mut total.records, metric_sum(&text, "waggle_batch_records_sum"));
                add(&mut total.fsyncs, metric_sum(&text, "waggle_log_fsyncs_total"));
            }
        }
        total
    }
}

/// The sum of every sample of a metric (over all its label sets) in Prometheus' text format.
fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        if let Some(value) = rest.rsplit(' ').next().and_then(|v| v.trim().parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// A minimal HTTP/1.0 GET, enough for a metrics endpoint on loopback.
async fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body)
}

/// The middle value (the mean of the two middle ones for an even count); `None` for no values.
fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Milliseconds of a 4 KiB write plus fdatasync on `dir`'s disk: (median, p99) of 50 tries.
fn fsync_probe(dir: &std::path::Path) -> std::io::Result<(f64, f64)> {
    let path = dir.join(format!(".waggle-bench-fsync-probe-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(&path)?;
        let block = [0x5Au8; 4096];
        let mut times = Vec::with_capacity(50);
        for _ in 0..50 {
            let begun = Instant::now();
            file.write_all(&block)?;
            file.sync_data()?;
            times.push(begun.elapsed());
        }
        times.sort();
        Ok((percentile(&times, 0.5).as_secs_f64() * 1000.0, percentile(&times, 0.99).as_secs_f64() * 1000.0))
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// Milliseconds one core takes for a fixed amount of integer work (50 million rounds of a 64-bit
/// mixing function), the median of five tries: how fast this machine's CPU is right now. Shared
/// machines vary (the same work has taken 30 % longer from one hour to the next here), so a CPU
/// time per instance is only comparable between runs together with this figure.
fn cpu_probe() -> f64 {
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let begun = Instant::now();
            let mut state = std::hint::black_box(0x9E37_79B9_7F4A_7C15u64);
            for _ in 0..50_000_000u32 {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                state ^= z >> 31;
            }
            std::hint::black_box(state);
            begun.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[2]
}

/// Runnable tasks on the machine right now (`procs_running` of /proc/stat), the instantaneous
/// quantity the load average smooths; `None` off Linux.
fn runnable_tasks() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|l| l.strip_prefix("procs_running ")).and_then(|v| v.trim().parse().ok())
}

async fn worker(mut client: GatewayClient<Channel>) -> anyhow::Result<()> {
    let request = StreamActivatedJobsRequest {
        r#type: JOB_TYPE.into(),
        worker: "waggle-bench".into(),
        timeout: 60_000,
        ..Default::default()
    };
    let mut jobs = client.stream_activated_jobs(request).await?.into_inner();
    let mut completions = JoinSet::new();
    while let Some(job) = jobs.message().await? {
        let mut client = client.clone();
        completions.spawn(async move {
            client.complete_job(CompleteJobRequest { job_key: job.key, variables: "{}".into() }).await
        });
        while let Some(done) = completions.try_join_next() {
            done??;
        }
    }
    Ok(())
}

/// The figures of one measurement, or of one interval of it.
#[derive(Serialize)]
struct Figures {
    in_flight: usize,
    /// Instances offered per second (`--rate`); absent for a closed loop.
    #[serde(skip_serializing_if = "Option::is_none")]
    offered_per_second: Option<f64>,
    /// How many runs this row is the median of; absent for a single run.
    #[serde(skip_serializing_if = "Option::is_none")]
    median_of: Option<u32>,
    /// Seconds since the measurement began (after the warm-up); absent for a whole measurement.
    #[serde(skip_serializing_if = "Option::is_none")]
    interval_end_s: Option<f64>,
    instances: usize,
    instances_per_second: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    server_cpu_us_per_instance: Option<f64>,
    records_per_instance: Option<f64>,
    fsyncs_per_instance: Option<f64>,
    /// Mean of the machine's runnable tasks sampled during the run, and its 1-minute load average at
    /// the end.
    mean_runnable_tasks: Option<f64>,
    load_average_1m: Option<f64>,
    resident_mb: Option<f64>,
    fsync_probe_p50_ms: Option<f64>,
    fsync_probe_p99_ms: Option<f64>,
    /// See [`cpu_probe`]; taken just before the measurement.
    cpu_probe_ms: Option<f64>,
}

impl Figures {
    fn new(
        in_flight: usize,
        latencies: &mut [Duration],
        seconds: f64,
        before: ServerCounters,
        after: ServerCounters,
    ) -> Self {
        latencies.sort();
        let n = latencies.len();
        let per_instance = |a: Option<f64>, b: Option<f64>, scale: f64| {
            a.zip(b).filter(|_| n > 0).map(|(before, after)| (after - before) / n as f64 * scale)
        };
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Figures {
            in_flight,
            offered_per_second: None,
            median_of: None,
            interval_end_s: None,
            instances: n,
            instances_per_second: n as f64 / seconds,
            p50_ms: ms(percentile(latencies, 0.50)),
            p95_ms: ms(percentile(latencies, 0.95)),
            p99_ms: ms(percentile(latencies, 0.99)),
            max_ms: ms(latencies.last().copied().unwrap_or_default()),
            server_cpu_us_per_instance: per_instance(before.cpu_seconds, after.cpu_seconds, 1e6),
            records_per_instance: per_instance(before.records, after.records, 1.0),
            fsyncs_per_instance: per_instance(before.fsyncs, after.fsyncs, 1.0),
            mean_runnable_tasks: None,
            load_average_1m: None,
            resident_mb: after.resident_bytes.map(|b| b / 1e6),
            fsync_probe_p50_ms: None,
            fsync_probe_p99_ms: None,
            cpu_probe_ms: None,
        }
    }

    /// The median of every figure over several runs of the same measurement.
    fn median(runs: &[Figures]) -> Figures {
        let of = |figure: fn(&Figures) -> f64| median(runs.iter().map(figure)).unwrap_or_default();
        let of_known = |figure: fn(&Figures) -> Option<f64>| median(runs.iter().filter_map(figure));
        Figures {
            in_flight: runs[0].in_flight,
            offered_per_second: runs[0].offered_per_second,
            median_of: Some(runs.len() as u32),
            interval_end_s: None,
            instances: of(|f| f.instances as f64).round() as usize,
            instances_per_second: of(|f| f.instances_per_second),
            p50_ms: of(|f| f.p50_ms),
            p95_ms: of(|f| f.p95_ms),
            p99_ms: of(|f| f.p99_ms),
            max_ms: of(|f| f.max_ms),
            server_cpu_us_per_instance: of_known(|f| f.server_cpu_us_per_instance),
            records_per_instance: of_known(|f| f.records_per_instance),
            fsyncs_per_instance: of_known(|f| f.fsyncs_per_instance),
            mean_runnable_tasks: of_known(|f| f.mean_runnable_tasks),
            load_average_1m: of_known(|f| f.load_average_1m),
            resident_mb: of_known(|f| f.resident_mb),
            fsync_probe_p50_ms: of_known(|f| f.fsync_probe_p50_ms),
            fsync_probe_p99_ms: of_known(|f| f.fsync_probe_p99_ms),
            cpu_probe_ms: of_known(|f| f.cpu_probe_ms),
        }
    }

    fn print(&self, json: bool) {
        if json {
            println!("{}", serde_json::to_string(self).expect("figures serialize"));
            return;
        }
        let opt = |v: Option<f64>, digits: usize| v.map_or("n/a".to_string(), |v| format!("{v:.digits$}"));
        let load = match self.offered_per_second {
            Some(rate) => format!("{}@{rate:.0}/s", self.in_flight),
            None => self.in_flight.to_string(),
        };
        let label = match (self.median_of, self.interval_end_s) {
            (Some(runs), _) => format!("median/{runs}"),
            (None, Some(t)) => format!("{load}+{t:.0}s"),
            (None, None) => load,
        };
        println!(
            "{:>12} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9} {:>8} {:>8} {:>6} {:>7}",
            label,
            self.instances_per_second,
            self.p50_ms,
            self.p95_ms,
            self.p99_ms,
            self.max_ms,
            opt(self.server_cpu_us_per_instance, 0),
            opt(self.records_per_instance, 1),
            opt(self.fsyncs_per_instance, 3),
            opt(self.mean_runnable_tasks, 1),
            opt(self.resident_mb, 0),
        );
    }
}

fn print_header(json: bool) {
    if !json {
        println!(
            "{:>12} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>6} {:>7}",
            "in-flight",
            "inst/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "CPU us/i",
            "rec/i",
            "fsync/i",
            "run-q",
            "RSS MB"
        );
    }
}

/// When each instance starts: as soon as a slot is free (closed loop), or on a fixed timetable of
/// `rate` per second from the measurement's creation (open loop), whichever slot is free taking the
/// next start.
struct Schedule {
    rate: Option<f64>,
    origin: Instant,
    issued: std::sync::atomic::AtomicU64,
}

impl Schedule {
    fn new(rate: Option<f64>) -> Self {
        Schedule { rate, origin: Instant::now(), issued: std::sync::atomic::AtomicU64::new(0) }
    }

    /// Waits for the next start and returns it: the moment the instance's latency counts from.
    async fn next_start(&self) -> Instant {
        let Some(rate) = self.rate else { return Instant::now() };
        let ticket = self.issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let start = self.origin + Duration::from_nanos((ticket as f64 * 1e9 / rate).round() as u64);
        tokio::time::sleep_until(start.into()).await;
        start
    }
}

/// Latencies of the instances completed so far in the running measurement, shared by its slots
/// and the interval reporter.
#[derive(Default)]
struct Progress {
    latencies: std::sync::Mutex<Vec<Duration>>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let channel = Endpoint::from_shared(format!("http://{}", args.gateway))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot reach the gateway at {}", args.gateway))?;
    let mut client = GatewayClient::new(channel);
    client
        .deploy_resource(DeployResourceRequest {
            resources: vec![Resource { name: "waggle-bench.bpmn".into(), content: bench_model().into_bytes() }],
            ..Default::default()
        })
        .await
        .context("deploying the benchmark process failed")?;
    let workers: Vec<_> = (0..2).map(|_| tokio::spawn(worker(client.clone()))).collect();
    print_header(args.json);
    for &in_flight in &args.in_flight {
        let mut runs = Vec::with_capacity(args.runs as usize);
        for _ in 0..args.runs {
            let probe = fsync_probe(&args.probe_dir)
                .with_context(|| format!("the fsync probe in {} failed", args.probe_dir.display()))?;
            let cpu = cpu_probe();
            let mut figures = measure(&args, &client, in_flight).await?;
            figures.fsync_probe_p50_ms = Some(probe.0);
            figures.fsync_probe_p99_ms = Some(probe.1);
            figures.cpu_probe_ms = Some(cpu);
            figures.print(args.json);
            if !args.json {
                println!(
                    "{:>12} fsync probe p50 {:.2} ms, p99 {:.2} ms; CPU probe {cpu:.0} ms; load average (1 min) at \
                     the end {}",
                    "",
                    probe.0,
                    probe.1,
                    figures.load_average_1m.map_or("n/a".into(), |l| format!("{l:.2}"))
                );
            }
            runs.push(figures);
        }
        if runs.len() > 1 {
            Figures::median(&runs).print(args.json);
        }
    }
    for worker in workers {
        worker.abort();
    }
    Ok(())
}

async fn measure(args: &BenchArgs, client: &GatewayClient<Channel>, in_flight: usize) -> anyhow::Result<Figures> {
    let warmup = Duration::from_secs(args.warmup);
    let length = Duration::from_secs(args.duration);
    let measure_from = Instant::now() + warmup;
    let end = measure_from + length;
    let progress = Arc::new(Progress::default());
    let schedule = Arc::new(Schedule::new(args.rate));
    let mut slots = JoinSet::new();
    for _ in 0..in_flight {
        let mut client = client.clone();
        let progress = progress.clone();
        let schedule = schedule.clone();
        slots.spawn(async move {
            loop {
                let begun = schedule.next_start().await;
                if begun >= end {
                    break;
                }
                let request = CreateProcessInstanceWithResultRequest {
                    request: Some(CreateProcessInstanceRequest {
                        bpmn_process_id: PROCESS_ID.into(),
                        version: -1,
                        ..Default::default()
                    }),
                    request_timeout: 60_000,
                    ..Default::default()
                };
                client.create_process_instance_with_result(request).await?;
                if begun >= measure_from && Instant::now() <= end {
                    progress.latencies.lock().expect("latency list").push(begun.elapsed());
                }
            }
            anyhow::Ok(())
        });
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let before = ServerCounters::read(&args.management).await;
    let mut runnable = Vec::new();
    let mut interval_start = (Instant::now(), before, 0usize);
    let mut next_report = (args.interval > 0).then(|| Instant::now() + Duration::from_secs(args.interval));
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(250).min(end.saturating_duration_since(Instant::now()))).await;
        runnable.extend(runnable_tasks());
        if let Some(at) = next_report.filter(|at| Instant::now() >= *at) {
            let counters = ServerCounters::read(&args.management).await;
            let mut latencies = progress.latencies.lock().expect("latency list")[interval_start.2..].to_vec();
            let taken = interval_start.2 + latencies.len();
            let seconds = interval_start.0.elapsed().as_secs_f64();
            let mut figures = Figures::new(in_flight, &mut latencies, seconds, interval_start.1, counters);
            figures.offered_per_second = args.rate;
            figures.interval_end_s = Some(measure_from.elapsed().as_secs_f64());
            figures.print(args.json);
            interval_start = (Instant::now(), counters, taken);
            next_report = Some(at + Duration::from_secs(args.interval));
        }
    }
    let after = ServerCounters::read(&args.management).await;
    while let Some(slot) = slots.join_next().await {
        slot??;
    }
    let mut latencies = std::mem::take(&mut *progress.latencies.lock().expect("latency list"));
    let mut figures = Figures::new(in_flight, &mut latencies, length.as_secs_f64(), before, after);
    figures.offered_per_second = args.rate;
    figures.mean_runnable_tasks = (!runnable.is_empty()).then(|| runnable.iter().sum::<f64>() / runnable.len() as f64);
    figures.load_average_1m = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()));
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_value_or_the_mean_of_the_two_middle_ones() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), Some(2.0));
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), Some(2.5));
        assert_eq!(median(std::iter::empty()), None);
    }

    #[tokio::test]
    async fn an_open_loop_schedule_hands_out_starts_at_its_rate_and_a_closed_one_starts_now() {
        let open = Schedule::new(Some(1000.0));
        for ticket in 0..5u64 {
            assert_eq!(open.next_start().await, open.origin + Duration::from_millis(ticket));
        }
        let closed = Schedule::new(None);
        let before = Instant::now();
        assert!(closed.next_start().await >= before);
        assert_eq!(closed.issued.load(std::sync::atomic::Ordering::Relaxed), 0);
    }
}
