//! The `waggle` command: a development node, a broker, a gateway, and the load generator.

mod bench;
mod config;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use waggle_broker::BrokerConfig;
use waggle_gateway::{GatewayConfig, LocalBroker};

#[derive(Parser)]
#[command(name = "waggle", version, about = "A distributed BPMN workflow engine that speaks Zeebe's client protocol")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "WAGGLE_LOG_FORMAT", value_enum, default_value = "human")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// One node for development: a broker with one partition and an embedded gateway.
    Dev(DevArgs),
    /// One broker of a cluster.
    Broker(BrokerArgs),
    /// A stateless gateway in front of the brokers.
    Gateway(GatewayArgs),
    /// Load generator: keeps instances of a one-task process in flight and reports throughput.
    Bench(bench::BenchArgs),
}

#[derive(Args)]
struct DevArgs {
    /// Where partition data lives.
    #[arg(long, env = "WAGGLE_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// gRPC address for Zeebe clients.
    #[arg(long, env = "WAGGLE_GRPC_ADDR", default_value = "127.0.0.1:26500")]
    grpc_addr: SocketAddr,
    /// Management HTTP address (health, metrics).
    #[arg(long, env = "WAGGLE_MANAGEMENT_ADDR", default_value = "127.0.0.1:9600")]
    management_addr: SocketAddr,
    /// The embedded broker's internal address (the gateway talks to it here).
    #[arg(long, env = "WAGGLE_COMMAND_ADDR", default_value = "127.0.0.1:26501")]
    command_addr: SocketAddr,
}

#[derive(Args)]
struct BrokerArgs {
    /// TOML configuration file; flags and WAGGLE_* variables override it.
    #[arg(long, env = "WAGGLE_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "WAGGLE_NODE_ID")]
    node_id: Option<u32>,
    #[arg(long, env = "WAGGLE_CLUSTER_SIZE")]
    cluster_size: Option<u32>,
    #[arg(long, env = "WAGGLE_PARTITIONS")]
    partitions: Option<u32>,
    #[arg(long, env = "WAGGLE_REPLICATION_FACTOR")]
    replication_factor: Option<u32>,
    /// Internal addresses of all brokers in node-id order, comma-separated.
    #[arg(long, env = "WAGGLE_PEERS", value_delimiter = ',')]
    peers: Option<Vec<String>>,
    #[arg(long, env = "WAGGLE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[arg(long, env = "WAGGLE_INTERNAL_ADDR")]
    internal_addr: Option<String>,
    #[arg(long, env = "WAGGLE_COMMAND_ADDR")]
    command_addr: Option<String>,
    /// The command address gateways should use, when it differs from the bound one.
    #[arg(long, env = "WAGGLE_ADVERTISED_COMMAND_ADDR")]
    advertised_command_addr: Option<String>,
    #[arg(long, env = "WAGGLE_MANAGEMENT_ADDR")]
    management_addr: Option<String>,
    /// Commands a partition queues before answering RESOURCE_EXHAUSTED.
    #[arg(long, env = "WAGGLE_QUEUE_CAPACITY")]
    queue_capacity: Option<usize>,
    /// Log entries between two state snapshots at least; the log is compacted below each snapshot
    /// (default 10000).
    #[arg(long, env = "WAGGLE_SNAPSHOT_INTERVAL")]
    snapshot_interval: Option<u64>,
    /// Seconds between two state snapshots at least (default 60; 0: a snapshot after every
    /// snapshot-interval entries, however soon).
    #[arg(long, env = "WAGGLE_SNAPSHOT_PERIOD")]
    snapshot_period: Option<u64>,
    /// Element steps one processing run takes before it defers the rest to a later run, so that
    /// other commands interleave with long runs (default 1000).
    #[arg(long, env = "WAGGLE_MAX_STEPS_PER_RUN")]
    max_steps_per_run: Option<u32>,
    /// Deferred runs in a row after which an instance that never waits gets an incident, as it
    /// probably loops endlessly (default 100).
    #[arg(long, env = "WAGGLE_MAX_DEFERRALS_WITHOUT_WAIT")]
    max_deferrals_without_wait: Option<u32>,
    /// Seconds a partition may go without progress before liveness reports it stuck (default 30).
    #[arg(long, env = "WAGGLE_STALL_TIMEOUT")]
    stall_timeout: Option<u64>,
    /// Free bytes on the data directory's disk below which the broker answers new commands with
    /// RESOURCE_EXHAUSTED (default 256 MiB; 0 turns the check off).
    #[arg(long, env = "WAGGLE_MIN_FREE_DISK_BYTES")]
    min_free_disk_bytes: Option<u64>,
    /// Free bytes below which the broker writes nothing more to its log, as leader or follower, so
    /// that raft never meets a full disk (default 64 MiB, at most min-free-disk-bytes; 0 turns it off).
    #[arg(long, env = "WAGGLE_REPLICATION_MIN_FREE_DISK_BYTES")]
    replication_min_free_disk_bytes: Option<u64>,
    /// Seconds a partition remembers its answer to a client request, so that a gateway's retry of
    /// a command that was applied is answered the same instead of applied twice (default 300).
    #[arg(long, env = "WAGGLE_DEDUP_WINDOW")]
    dedup_window: Option<u64>,
}

#[derive(Args)]
struct GatewayArgs {
    /// Command addresses of the brokers, comma-separated.
    #[arg(long, env = "WAGGLE_BROKERS", value_delimiter = ',', required = true)]
    brokers: Vec<String>,
    #[arg(long, env = "WAGGLE_GRPC_ADDR", default_value = "0.0.0.0:26500")]
    grpc_addr: SocketAddr,
    /// Default long-polling time of ActivateJobs, in milliseconds.
    #[arg(long, env = "WAGGLE_LONG_POLL_MS", default_value_t = 10_000)]
    long_poll_ms: u64,
    /// Largest request a client may send, in bytes.
    #[arg(long, env = "WAGGLE_MAX_MESSAGE_SIZE", default_value_t = 4 * 1024 * 1024)]
    max_message_size: usize,
    /// Management HTTP address (health probes, metrics).
    #[arg(long, env = "WAGGLE_MANAGEMENT_ADDR", default_value = "0.0.0.0:9600")]
    management_addr: SocketAddr,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WAGGLE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Cancels the token on SIGTERM or Ctrl-C.
fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail on Unix");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down");
        token.cancel();
    });
}

fn gateway_config(
    brokers: Vec<String>,
    grpc_addr: SocketAddr,
    long_poll: Duration,
    max_message_size: usize,
    management_addr: Option<SocketAddr>,
) -> GatewayConfig {
    GatewayConfig {
        grpc_addr,
        brokers,
        default_long_poll: long_poll,
        max_message_size,
        version: env!("CARGO_PKG_VERSION").to_string(),
        management_addr,
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    match command {
        Command::Dev(args) => {
            let broker = BrokerConfig::single_node(args.data_dir, args.command_addr, args.management_addr);
            let broker_addr = args.command_addr.to_string();
            let gateway = gateway_config(
                vec![broker_addr.clone()],
                args.grpc_addr,
                Duration::from_secs(10),
                4 * 1024 * 1024,
                None,
            );
            gateway.validate()?;
            cancel_on_signal(shutdown.clone());
            let running = waggle_broker::start(broker, shutdown.clone()).await?;
            // The embedded gateway calls the broker's service directly, not over loopback gRPC.
            let local = LocalBroker::new(broker_addr, running.commands.clone());
            waggle_gateway::serve_with(gateway, Some(local), shutdown.clone()).await?;
            running.stopped.await?;
        }
        Command::Broker(args) => {
            let file = match &args.config {
                Some(path) => config::read_file(path)?,
                None => config::BrokerSettings::default(),
            };
            let overrides = config::BrokerSettings {
                node_id: args.node_id,
                cluster_size: args.cluster_size,
                partitions: args.partitions,
                replication_factor: args.replication_factor,
                peers: args.peers,
                data_dir: args.data_dir,
                internal_addr: args.internal_addr,
                command_addr: args.command_addr,
                advertised_command_addr: args.advertised_command_addr,
                management_addr: args.management_addr,
                queue_capacity: args.queue_capacity,
                snapshot_interval: args.snapshot_interval,
                snapshot_period: args.snapshot_period,
                max_steps_per_run: args.max_steps_per_run,
                max_deferrals_without_wait: args.max_deferrals_without_wait,
                stall_timeout: args.stall_timeout,
                min_free_disk_bytes: args.min_free_disk_bytes,
                replication_min_free_disk_bytes: args.replication_min_free_disk_bytes,
                dedup_window: args.dedup_window,
                exporters: None,
            };
            let broker = config::broker_config(overrides, file)?;
            cancel_on_signal(shutdown.clone());
            let running = waggle_broker::start(broker, shutdown.clone()).await?;
            running.stopped.await?;
        }
        Command::Gateway(args) => {
            let gateway = gateway_config(
                args.brokers,
                args.grpc_addr,
                Duration::from_millis(args.long_poll_ms),
                args.max_message_size,
                Some(args.management_addr),
            );
            gateway.validate()?;
            cancel_on_signal(shutdown.clone());
            waggle_gateway::serve(gateway, shutdown).await?;
        }
        Command::Bench(args) => bench::run(args).await?,
    }
    Ok(())
}

/// The engine's hot path allocates many small, short-lived buffers (keys, records, encoded values);
/// glibc's allocator spent a quarter of a node's CPU on them under load (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Stack of each tokio worker thread.
const WORKER_STACK_BYTES: usize = 8 * 1024 * 1024;

fn main() {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // The engine evaluates FEEL recursively; its depth limit fits tokio's default 2 MiB stacks, and
    // larger ones leave room for whatever else a worker thread has on its stack at the time.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(WORKER_STACK_BYTES)
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    if let Err(error) = runtime.block_on(run(cli.command)) {
        tracing::error!("{error:#}");
        eprintln!("waggle: {error:#}");
        std::process::exit(1);
    }
}
