//! A real broker on loopback with RocksDB on disk, driven through its internal gRPC service.

mod common;

use std::time::{Duration, Instant};

use common::{create, creation, deploy, execute, execute_as, http_get};
use tokio_util::sync::CancellationToken;
use waggle_broker::{BrokerConfig, RunningBroker};
use waggle_protocol::broker_rpc::broker_client::BrokerClient;
use waggle_protocol::broker_rpc::CommandEnvelope;
use waggle_protocol::command::{self, ActivateJobs, AwaitResult, BrokerError, ClientCommand, CommandResult, RequestId};

async fn start(dir: &std::path::Path, shutdown: CancellationToken) -> RunningBroker {
    let any = "127.0.0.1:0".parse().unwrap();
    let config = BrokerConfig::single_node(dir.to_path_buf(), any, any);
    waggle_broker::start(config, shutdown).await.expect("broker starts")
}

/// Executes once the partition has a leader (after start or restart, an election takes a moment).
async fn execute_when_leading(addr: std::net::SocketAddr, command: &ClientCommand) -> CommandResult {
    execute_when_leading_as(addr, command, 0).await
}

async fn execute_when_leading_as(
    addr: std::net::SocketAddr,
    command: &ClientCommand,
    request_id: RequestId,
) -> CommandResult {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match execute_as(addr, command, request_id).await {
            Ok(result) => return result,
            Err(BrokerError::NotLeader { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn activate() -> ClientCommand {
    ClientCommand::ActivateJobs(activate_command())
}

fn activate_command() -> ActivateJobs {
    ActivateJobs {
        job_type: "work".into(),
        worker: "test".into(),
        timeout: 60_000,
        max_jobs_to_activate: 10,
        fetch_variables: vec![],
        tenant_ids: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_work_survives_a_restart_on_the_same_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let broker = start(dir.path(), shutdown.clone()).await;
    let deploy = deploy();
    assert!(matches!(execute_when_leading(broker.command_addr, &deploy).await, CommandResult::Deployed { .. }));
    for _ in 0..3 {
        assert!(matches!(
            execute_when_leading(broker.command_addr, &create()).await,
            CommandResult::ProcessInstanceCreated(_)
        ));
    }
    let CommandResult::JobsActivated { jobs } = execute_when_leading(broker.command_addr, &activate()).await else {
        panic!()
    };
    assert_eq!(jobs.len(), 3);
    let done = ClientCommand::CompleteJob { job_key: jobs[0].key, variables: "{}".into() };
    assert!(matches!(execute_when_leading(broker.command_addr, &done).await, CommandResult::Done { .. }));
    shutdown.cancel();
    broker.stopped.await.unwrap();

    let shutdown = CancellationToken::new();
    let broker = start(dir.path(), shutdown.clone()).await;
    for job in &jobs[1..] {
        let complete = ClientCommand::CompleteJob { job_key: job.key, variables: "{}".into() };
        assert!(
            matches!(execute_when_leading(broker.command_addr, &complete).await, CommandResult::Done { .. }),
            "an activated job from before the restart can still be completed"
        );
    }
    match execute_when_leading(broker.command_addr, &done).await {
        CommandResult::Rejected { .. } => {}
        other => panic!("a job completed before the restart stays completed: {other:?}"),
    }
    assert!(matches!(
        execute_when_leading(broker.command_addr, &create()).await,
        CommandResult::ProcessInstanceCreated(_)
    ));
    shutdown.cancel();
    broker.stopped.await.unwrap();
}

/// Due work (here a job's time-out) used to wait for a moment without commands: under steady load
/// a command was always ready before the timer, and time-driven work never ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_times_out_while_commands_keep_arriving() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let broker = start(dir.path(), shutdown.clone()).await;
    let addr = broker.command_addr;
    assert!(matches!(execute_when_leading(addr, &deploy()).await, CommandResult::Deployed { .. }));
    assert!(matches!(execute_when_leading(addr, &create()).await, CommandResult::ProcessInstanceCreated(_)));
    let short = |max_jobs_to_activate| {
        ClientCommand::ActivateJobs(ActivateJobs { timeout: 200, max_jobs_to_activate, ..activate_command() })
    };
    let CommandResult::JobsActivated { jobs } = execute_when_leading(addr, &short(1)).await else { panic!() };
    let timed_out = jobs[0].key;

    let load = CancellationToken::new();
    let mut creators = Vec::new();
    for _ in 0..16 {
        let load = load.clone();
        creators.push(tokio::spawn(async move {
            let mut client = BrokerClient::connect(format!("http://{addr}")).await.expect("broker answers");
            let payload = command::encode(&create());
            while !load.is_cancelled() {
                let envelope = CommandEnvelope { partition_id: 1, payload: payload.clone(), request_id: 0 };
                client.execute(envelope).await.expect("execute succeeds at the transport level");
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let reactivated = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Refusals for back-pressure are fine here: the load is meant to fill the queue.
        let activated = execute(addr, &short(1000)).await;
        if matches!(activated, Ok(CommandResult::JobsActivated { jobs }) if jobs.iter().any(|job| job.key == timed_out))
        {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    load.cancel();
    for creator in creators {
        creator.await.unwrap();
    }
    assert!(reactivated, "the job's 200 ms time-out passed 10 s ago, yet it was never activatable again");
    shutdown.cancel();
    broker.stopped.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_port_reports_readiness_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let broker = start(dir.path(), shutdown.clone()).await;
    execute_when_leading(broker.command_addr, &activate()).await;
    let ready = http_get(broker.management_addr, "/actuator/health/readiness").await;
    assert!(ready.starts_with("HTTP/1.0 200") || ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(ready.contains("\"partitionId\":1"), "{ready}");
    let metrics = http_get(broker.management_addr, "/metrics").await;
    assert!(metrics.contains("waggle_raft_role{partition=\"1\"} 2"), "{metrics}");
    assert!(metrics.contains("waggle_commands_total"), "{metrics}");
    shutdown.cancel();
    broker.stopped.await.unwrap();
}

/// Reads one partition-1 gauge from the metrics text.
fn gauge(metrics: &str, name: &str) -> i64 {
    let prefix = format!("{name}{{partition=\"1\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{name} is missing from the metrics"))
        .trim()
        .parse()
        .expect("an integer gauge")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_compacted_below_snapshots_and_a_restart_recovers_from_snapshot_plus_log() {
    const INTERVAL: u64 = 20;
    const INSTANCES: usize = 150;
    let dir = tempfile::tempdir().unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let config = BrokerConfig {
        snapshot_interval: INTERVAL,
        snapshot_period: Duration::ZERO,
        ..BrokerConfig::single_node(dir.path().into(), any, any)
    };
    let shutdown = CancellationToken::new();
    let broker = waggle_broker::start(config.clone(), shutdown.clone()).await.unwrap();
    let deploy = deploy();
    execute_when_leading(broker.command_addr, &deploy).await;
    for _ in 0..INSTANCES {
        assert!(matches!(
            execute_when_leading(broker.command_addr, &create()).await,
            CommandResult::ProcessInstanceCreated(_)
        ));
    }
    // Snapshots are built in the background; give the last one a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let metrics = http_get(broker.management_addr, "/metrics").await;
        let retained = gauge(&metrics, "waggle_raft_last_log_index") - gauge(&metrics, "waggle_raft_purged_index");
        if retained <= (INTERVAL + INTERVAL / 10 + 2) as i64 || Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (last, snapshot, purged) = (
        gauge(&metrics, "waggle_raft_last_log_index"),
        gauge(&metrics, "waggle_raft_snapshot_index"),
        gauge(&metrics, "waggle_raft_purged_index"),
    );
    assert!(last > INSTANCES as i64, "every command is a log entry: {last}");
    assert!(snapshot >= last - INTERVAL as i64 - 2, "a recent snapshot exists: snapshot {snapshot}, last {last}");
    assert!(
        last - purged <= (INTERVAL + INTERVAL / 10 + 2) as i64,
        "the log keeps only what follows the snapshot plus a margin: last {last}, compacted to {purged}"
    );
    shutdown.cancel();
    broker.stopped.await.unwrap();

    let shutdown = CancellationToken::new();
    let broker = waggle_broker::start(config, shutdown.clone()).await.unwrap();
    let mut activated = 0;
    while activated < INSTANCES {
        let CommandResult::JobsActivated { jobs } = execute_when_leading(broker.command_addr, &activate()).await else {
            panic!("activation answers with jobs")
        };
        assert!(!jobs.is_empty(), "only {activated} of {INSTANCES} jobs survived the restart");
        activated += jobs.len();
    }
    assert_eq!(activated, INSTANCES, "the restarted broker has exactly the state from before");
    shutdown.cancel();
    broker.stopped.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_snapshot_period_no_snapshot_comes_before_the_period_is_over() {
    const PERIOD: Duration = Duration::from_secs(2);
    let dir = tempfile::tempdir().unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let config = BrokerConfig {
        snapshot_interval: 10,
        snapshot_period: PERIOD,
        ..BrokerConfig::single_node(dir.path().into(), any, any)
    };
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let broker = waggle_broker::start(config, shutdown.clone()).await.unwrap();
    execute_when_leading(broker.command_addr, &deploy()).await;
    for _ in 0..50 {
        execute_when_leading(broker.command_addr, &create()).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = http_get(broker.management_addr, "/metrics").await;
        if gauge(&metrics, "waggle_raft_snapshot_index") > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "a snapshot follows once the period is over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() >= PERIOD, "the first snapshot waited for the period, although 50 entries were due");
    shutdown.cancel();
    broker.stopped.await.unwrap();
}

fn created_key(result: &CommandResult) -> i64 {
    match result {
        CommandResult::ProcessInstanceCreated(created) => created.process_instance_key,
        other => panic!("expected a created instance, got {other:?}"),
    }
}

async fn activated_jobs(addr: std::net::SocketAddr) -> Vec<i64> {
    match execute_when_leading(addr, &activate()).await {
        CommandResult::JobsActivated { jobs } => jobs.iter().map(|job| job.key).collect(),
        other => panic!("expected activated jobs, got {other:?}"),
    }
}

/// A gateway retries a command whose answer it lost; the retry carries the request id of the first
/// attempt and must get the first answer, not apply the command a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_request_id_gets_the_first_answer_and_applies_once_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    // Snapshots every 10 entries, so that the memory outlives the log entries that wrote it.
    let config = BrokerConfig {
        snapshot_interval: 10,
        snapshot_period: Duration::ZERO,
        ..BrokerConfig::single_node(dir.path().into(), any, any)
    };
    let shutdown = CancellationToken::new();
    let broker = waggle_broker::start(config.clone(), shutdown.clone()).await.unwrap();
    let addr = broker.command_addr;
    execute_when_leading_as(addr, &deploy(), 1).await;

    let first = execute_when_leading_as(addr, &create(), 2).await;
    assert_eq!(execute_as(addr, &create(), 2).await.unwrap(), first, "the retried create answers the first instance");
    let other = created_key(&execute_as(addr, &create(), 3).await.unwrap());
    assert_ne!(other, created_key(&first), "another request id is another request");
    let jobs = activated_jobs(addr).await;
    assert_eq!(jobs.len(), 2, "two requests, two instances, two jobs: {jobs:?}");

    let complete = ClientCommand::CompleteJob { job_key: jobs[0], variables: "{}".into() };
    let completed = execute_as(addr, &complete, 4).await.unwrap();
    assert!(matches!(completed, CommandResult::Done { .. }), "{completed:?}");
    assert_eq!(execute_as(addr, &complete, 4).await.unwrap(), completed, "not a NOT_FOUND rejection");
    let again = execute_as(addr, &complete, 5).await.unwrap();
    assert!(matches!(again, CommandResult::Rejected { .. }), "a new request is processed: {again:?}");
    for _ in 0..12 {
        execute_as(addr, &activate(), 0).await.unwrap();
        execute_as(addr, &ClientCommand::CancelProcessInstance { process_instance_key: -1 }, 0).await.unwrap();
    }
    shutdown.cancel();
    broker.stopped.await.unwrap();

    let shutdown = CancellationToken::new();
    let broker = waggle_broker::start(config, shutdown.clone()).await.unwrap();
    let addr = broker.command_addr;
    assert_eq!(execute_when_leading_as(addr, &create(), 2).await, first, "remembered across the restart");
    assert_eq!(execute_as(addr, &complete, 4).await.unwrap(), completed);
    assert!(activated_jobs(addr).await.is_empty(), "the retry after the restart created no instance");
    shutdown.cancel();
    broker.stopped.await.unwrap();
}

/// Copies of one request may be in flight at once (a gateway retried while the first was queued):
/// whether they land in one batch or in several, exactly one is processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_copies_of_a_request_are_processed_once_and_all_get_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let broker = start(dir.path(), shutdown.clone()).await;
    let addr = broker.command_addr;
    execute_when_leading(addr, &deploy()).await;
    let copies = (0..8).map(|_| tokio::spawn(async move { execute_as(addr, &create(), 77).await.unwrap() }));
    let answers: Vec<CommandResult> = futures::future::join_all(copies).await.into_iter().map(Result::unwrap).collect();
    assert!(answers.iter().all(|answer| *answer == answers[0]), "{answers:?}");
    created_key(&answers[0]);
    assert_eq!(activated_jobs(addr).await.len(), 1);
    shutdown.cancel();
    broker.stopped.await.unwrap();
}

/// A create that awaits its instance's result is answered when the instance completes; its retry
/// gets that result too, and creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_create_awaiting_its_result_gets_the_result_of_the_first_instance() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let broker = start(dir.path(), shutdown.clone()).await;
    let addr = broker.command_addr;
    execute_when_leading(addr, &deploy()).await;
    let awaiting = ClientCommand::CreateProcessInstance(creation(Some(AwaitResult { fetch_variables: vec![] })));
    let first = tokio::spawn({
        let awaiting = awaiting.clone();
        async move { execute_as(addr, &awaiting, 9).await.unwrap() }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let job = loop {
        if let Some(job) = activated_jobs(addr).await.first() {
            break *job;
        }
        assert!(Instant::now() < deadline, "the instance's job never became activatable");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let complete = ClientCommand::CompleteJob { job_key: job, variables: r#"{"done": true}"#.into() };
    execute_as(addr, &complete, 0).await.unwrap();
    let result = first.await.unwrap();
    assert!(matches!(result, CommandResult::ProcessInstanceCompleted { .. }), "{result:?}");
    assert_eq!(execute_as(addr, &awaiting, 9).await.unwrap(), result);
    assert!(activated_jobs(addr).await.is_empty(), "the retry created no instance");
    shutdown.cancel();
    broker.stopped.await.unwrap();
}
