//! The load generator: N one-task instances in flight against a running node, with its own worker.
//!
//! Each in-flight slot creates an instance with `CreateProcessInstanceWithResult` and starts the next
//! as soon as it returns, so the latency of that call is the instance's create-to-completion time. A
//! worker streams the jobs and completes them. The node's CPU time comes from its own
//! `process_cpu_seconds_total` metric, read before and after the run.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
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
    /// Management addresses of every process to charge CPU time to (`process_cpu_seconds_total`),
    /// comma-separated: the node, or each broker and gateway of a cluster.
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

/// CPU seconds used so far by all the given processes together; `None` if any does not say.
async fn cpu_seconds(management: &[String]) -> Option<f64> {
    let mut total = 0.0;
    for addr in management {
        let text = http_get(addr, "/metrics").await.ok()?;
        total += text.lines().find_map(|line| {
            line.strip_prefix("process_cpu_seconds_total ").and_then(|v| v.trim().parse::<f64>().ok())
        })?;
    }
    Some(total)
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
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
            client
                .complete_job(CompleteJobRequest { job_key: job.key, variables: "{}".into(), ..Default::default() })
                .await
        });
        while let Some(done) = completions.try_join_next() {
            done??;
        }
    }
    Ok(())
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
    println!(
        "{:>9} {:>12} {:>10} {:>10} {:>10} {:>16}",
        "in-flight", "instances/s", "p50 ms", "p99 ms", "max ms", "CPU s/1000 inst"
    );
    for &in_flight in &args.in_flight {
        let warmup = Duration::from_secs(args.warmup);
        let measure = Duration::from_secs(args.duration);
        let started = Instant::now();
        let measure_from = started + warmup;
        let end = measure_from + measure;
        let cpu_before = std::sync::Arc::new(tokio::sync::OnceCell::new());
        let mut slots = JoinSet::new();
        for _ in 0..in_flight {
            let mut client = client.clone();
            let cpu_before = cpu_before.clone();
            let management = args.management.clone();
            slots.spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < end {
                    if Instant::now() >= measure_from {
                        cpu_before.get_or_init(|| async { cpu_seconds(&management).await }).await;
                    }
                    let begun = Instant::now();
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
                        latencies.push(begun.elapsed());
                    }
                }
                anyhow::Ok(latencies)
            });
        }
        let mut latencies = Vec::new();
        while let Some(slot) = slots.join_next().await {
            latencies.extend(slot??);
        }
        let cpu_after = cpu_seconds(&args.management).await;
        latencies.sort();
        let rate = latencies.len() as f64 / measure.as_secs_f64();
        let cpu = match (cpu_before.get().copied().flatten(), cpu_after) {
            (Some(before), Some(after)) if !latencies.is_empty() => {
                format!("{:.3}", (after - before) / latencies.len() as f64 * 1000.0)
            }
            _ => "n/a".into(),
        };
        println!(
            "{:>9} {:>12.0} {:>10.2} {:>10.2} {:>10.2} {:>16}",
            in_flight,
            rate,
            percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
            percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
            latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
            cpu
        );
    }
    for worker in workers {
        worker.abort();
    }
    Ok(())
}
