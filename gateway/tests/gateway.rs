//! The gateway over real sockets, in front of scripted brokers.
//!
//! The brokers here are a small in-test implementation of the broker-internal `Broker` service:
//! each leads the partitions the test says, answers `NotLeader` for the others, records every
//! command it receives, hands out jobs the test gives it, and pushes `JobAvailable` notifications
//! on demand. That is enough to observe routing, retries, long polling and error mapping from the
//! outside, through a real Zeebe-protocol client.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    net::TcpListener,
    sync::mpsc,
    time::{timeout, Instant},
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{
    transport::{server::TcpIncoming, Channel},
    Code, Request, Response, Status,
};
use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};
use waggle_gateway::GatewayConfig;
use waggle_protocol::{
    broker_rpc::{
        broker_server::{Broker, BrokerServer},
        BrokerTopology, CommandEnvelope, DeliveryEnvelope, DeliveryReceipt, JobAvailabilityQuery, JobAvailable,
        RaftEnvelope, ResultEnvelope, TopologyQuery,
    },
    command::{
        decode, encode, ActivatedJob, BrokerError, BrokerReply, ClientCommand, CommandResult, ProcessInstanceCreated,
    },
    gateway::{self as pb, gateway_client::GatewayClient},
    key::{self, message_partition},
    topology::{BrokerInfo, PartitionHealth, PartitionInfo, PartitionRole},
};

const WAIT: Duration = Duration::from_secs(10);

/// What a scripted broker does and what it saw.
#[derive(Default)]
struct Script {
    partitions_count: u32,
    /// Partitions this broker leads, with the raft term of its leadership.
    leads: HashMap<u32, u64>,
    backpressure: bool,
    /// Commands that reached this broker's engine, with their partition.
    executed: Vec<(u32, ClientCommand)>,
    /// How many commands this broker refused as `NotLeader`.
    not_leader_answers: usize,
    /// The request id of every command that reached this broker, whatever became of it.
    request_ids: Vec<u64>,
    /// Activatable jobs by partition and type.
    jobs: HashMap<(u32, String), Vec<ActivatedJob>>,
    subscribers: Vec<mpsc::Sender<Result<JobAvailable, Status>>>,
    /// Creating an instance of `query-of-death` kills this broker's connection mid-call, as a
    /// broker process that crashes while processing it would; it then leads nothing.
    crashes: usize,
}

#[derive(Clone)]
struct ScriptedBroker {
    node_id: u32,
    addr: String,
    script: Arc<Mutex<Script>>,
    /// The tasks that carry this broker's connections: aborting them is the broker dying.
    lifelines: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl ScriptedBroker {
    async fn start(node_id: u32, partitions_count: u32, leads: &[u32]) -> ScriptedBroker {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        // Gateways connect through a forwarder, so that the test can cut every connection at once.
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = front.local_addr().unwrap().to_string();
        let broker = ScriptedBroker {
            node_id,
            addr,
            script: Arc::new(Mutex::new(Script {
                partitions_count,
                leads: leads.iter().map(|&p| (p, 1)).collect(),
                ..Script::default()
            })),
            lifelines: Arc::default(),
        };
        let service = BrokerServer::new(broker.clone());
        tokio::spawn(
            tonic::transport::Server::builder().add_service(service).serve_with_incoming(TcpIncoming::from(server)),
        );
        let lifelines = broker.lifelines.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut outer, _)) = front.accept().await {
                let Ok(mut inner) = tokio::net::TcpStream::connect(server_addr).await else { continue };
                let forward = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut outer, &mut inner).await;
                });
                lifelines.lock().unwrap().push(forward);
            }
        });
        broker.lifelines.lock().unwrap().push(accept);
        broker
    }

    /// Drops every connection and refuses new ones, as a broker process that was killed.
    fn die(&self) {
        for lifeline in self.lifelines.lock().unwrap().drain(..) {
            lifeline.abort();
        }
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap()
    }

    fn executed(&self) -> Vec<(u32, ClientCommand)> {
        self.script().executed.clone()
    }

    /// Makes a job of `job_type` activatable on `partition` and tells subscribed gateways.
    async fn add_job(&self, partition: u32, job_type: &str, key: i64) {
        let subscribers = {
            let mut script = self.script();
            script.jobs.entry((partition, job_type.to_owned())).or_default().push(job(job_type, key));
            script.subscribers.clone()
        };
        for subscriber in subscribers {
            let _ = subscriber.send(Ok(JobAvailable { job_type: job_type.to_owned(), partition_id: partition })).await;
        }
    }

    fn engine_answer(script: &mut Script, partition: u32, command: &ClientCommand) -> BrokerReply {
        let counter = script.executed.len() as i64 + 1;
        Ok(match command {
            ClientCommand::CreateProcessInstance(create) => {
                let instance = ProcessInstanceCreated {
                    process_definition_key: key::encode(1, 1),
                    bpmn_process_id: create.bpmn_process_id.clone(),
                    version: 1,
                    process_instance_key: key::encode(partition, counter),
                    tenant_id: create.tenant_id.clone(),
                };
                match &create.await_result {
                    Some(_) => {
                        CommandResult::ProcessInstanceCompleted { instance, variables: create.variables.clone() }
                    }
                    None => CommandResult::ProcessInstanceCreated(instance),
                }
            }
            ClientCommand::ActivateJobs(activation) => {
                let pending = script.jobs.entry((partition, activation.job_type.clone())).or_default();
                let take = pending.len().min(activation.max_jobs_to_activate as usize);
                CommandResult::JobsActivated { jobs: pending.drain(..take).collect() }
            }
            ClientCommand::CompleteJob { job_key, .. } => CommandResult::Done { key: *job_key },
            _ => CommandResult::Done { key: key::encode(partition, counter) },
        })
    }
}

fn job(job_type: &str, key: i64) -> ActivatedJob {
    ActivatedJob {
        key,
        job_type: job_type.to_owned(),
        process_instance_key: key - 1,
        bpmn_process_id: "order".into(),
        process_definition_version: 1,
        process_definition_key: key::encode(1, 1),
        element_id: "pay".into(),
        element_instance_key: key - 2,
        custom_headers: "{}".into(),
        worker: "w".into(),
        retries: 3,
        deadline: 1,
        variables: "{}".into(),
        tenant_id: "<default>".into(),
    }
}

#[tonic::async_trait]
impl Broker for ScriptedBroker {
    async fn execute(&self, request: Request<CommandEnvelope>) -> Result<Response<ResultEnvelope>, Status> {
        let envelope = request.into_inner();
        let partition = envelope.partition_id;
        let command: ClientCommand = decode(&envelope.payload).map_err(|e| Status::internal(e.to_string()))?;
        self.script().request_ids.push(envelope.request_id);
        if let ClientCommand::CreateProcessInstance(create) = &command {
            if create.bpmn_process_id == "query-of-death" {
                let crashed = {
                    let mut script = self.script();
                    let leading = script.leads.remove(&partition).is_some();
                    script.crashes += usize::from(leading);
                    leading
                };
                if crashed {
                    self.die();
                    std::future::pending::<()>().await;
                }
            }
            if create.await_result.is_some() && create.bpmn_process_id == "never-ends" {
                // The instance waits forever; only the gateway's deadline ends the request.
                std::future::pending::<()>().await;
            }
        }
        let mut script = self.script();
        let reply: BrokerReply = if !script.leads.contains_key(&partition) {
            script.not_leader_answers += 1;
            Err(BrokerError::NotLeader { partition_id: partition, leader: None })
        } else if script.backpressure {
            Err(BrokerError::Backpressure { partition_id: partition })
        } else {
            let reply = Self::engine_answer(&mut script, partition, &command);
            script.executed.push((partition, command));
            reply
        };
        Ok(Response::new(ResultEnvelope { payload: encode(&reply) }))
    }

    async fn raft(&self, _: Request<RaftEnvelope>) -> Result<Response<RaftEnvelope>, Status> {
        Err(Status::unimplemented("the scripted broker does not replicate"))
    }

    async fn deliver(&self, _: Request<DeliveryEnvelope>) -> Result<Response<DeliveryReceipt>, Status> {
        Err(Status::unimplemented("the scripted broker has no other partitions to hear from"))
    }

    async fn topology(&self, _: Request<TopologyQuery>) -> Result<Response<BrokerTopology>, Status> {
        let script = self.script();
        let info = BrokerInfo {
            node_id: self.node_id,
            command_addr: self.addr.clone(),
            version: "test".into(),
            cluster_size: 2,
            partitions_count: script.partitions_count,
            replication_factor: 2,
            partitions: (1..=script.partitions_count)
                .map(|partition_id| {
                    let term = script.leads.get(&partition_id);
                    PartitionInfo {
                        partition_id,
                        role: if term.is_some() { PartitionRole::Leader } else { PartitionRole::Follower },
                        health: PartitionHealth::Healthy,
                        problem: None,
                        leader: None,
                        term: term.copied().unwrap_or(0),
                    }
                })
                .collect(),
        };
        Ok(Response::new(BrokerTopology { payload: encode(&info) }))
    }

    type JobAvailabilityStream = ReceiverStream<Result<JobAvailable, Status>>;

    async fn job_availability(
        &self,
        _: Request<JobAvailabilityQuery>,
    ) -> Result<Response<Self::JobAvailabilityStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        self.script().subscribers.push(tx);
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Gateway {
    addr: SocketAddr,
    client: GatewayClient<Channel>,
    shutdown: CancellationToken,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn config(brokers: &[&ScriptedBroker]) -> GatewayConfig {
    GatewayConfig {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        brokers: brokers.iter().map(|b| b.addr.clone()).collect(),
        default_long_poll: Duration::from_secs(10),
        max_message_size: 4 * 1024 * 1024,
        version: "test-gateway".into(),
        management_addr: None,
    }
}

async fn start_gateway(config: GatewayConfig) -> Gateway {
    let shutdown = CancellationToken::new();
    let (addr, server) = waggle_gateway::bind(config, shutdown.clone()).await.unwrap();
    tokio::spawn(server);
    let client = GatewayClient::connect(format!("http://{addr}")).await.unwrap();
    Gateway { addr, client, shutdown }
}

/// Waits until `condition` holds, failing the test after [`WAIT`].
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn complete(job_key: i64) -> pb::CompleteJobRequest {
    pb::CompleteJobRequest { job_key, variables: r#"{"paid": true}"#.into() }
}

fn activate(job_type: &str, request_timeout: i64) -> pb::ActivateJobsRequest {
    pb::ActivateJobsRequest {
        r#type: job_type.into(),
        worker: "worker-1".into(),
        timeout: 30_000,
        max_jobs_to_activate: 10,
        fetch_variable: vec![],
        request_timeout,
        tenant_ids: vec![],
    }
}

#[tokio::test]
async fn commands_carrying_a_key_reach_the_partition_encoded_in_the_key() {
    let one = ScriptedBroker::start(0, 2, &[1]).await;
    let two = ScriptedBroker::start(1, 2, &[2]).await;
    let mut gateway = start_gateway(config(&[&one, &two])).await;

    gateway.client.complete_job(complete(key::encode(2, 5))).await.unwrap();
    gateway.client.complete_job(complete(key::encode(1, 7))).await.unwrap();
    gateway
        .client
        .resolve_incident(pb::ResolveIncidentRequest { incident_key: key::encode(2, 9), operation_reference: None })
        .await
        .unwrap();

    let on_two = two.executed();
    assert_eq!(on_two.len(), 2, "{on_two:?}");
    assert_eq!(
        on_two[0],
        (2, ClientCommand::CompleteJob { job_key: key::encode(2, 5), variables: r#"{"paid": true}"#.into() })
    );
    assert_eq!(on_two[1], (2, ClientCommand::ResolveIncident { incident_key: key::encode(2, 9) }));
    assert_eq!(one.executed().len(), 1);
    assert_eq!(one.executed()[0].0, 1);
}

#[tokio::test]
async fn key_of_no_partition_is_not_found_naming_the_key() {
    let one = ScriptedBroker::start(0, 2, &[1, 2]).await;
    let mut gateway = start_gateway(config(&[&one])).await;

    for bad in [42, key::encode(7, 1)] {
        let status = gateway.client.complete_job(complete(bad)).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert!(status.message().contains(&format!("job with key {bad}")), "{status:?}");
    }
    assert!(one.executed().is_empty());
}

#[tokio::test]
async fn messages_go_to_the_partition_of_their_correlation_key_and_instances_round_robin() {
    let one = ScriptedBroker::start(0, 2, &[1]).await;
    let two = ScriptedBroker::start(1, 2, &[2]).await;
    let mut gateway = start_gateway(config(&[&one, &two])).await;

    for correlation_key in ["order-1", "order-2", "order-3", "order-4"] {
        let response = gateway
            .client
            .publish_message(pb::PublishMessageRequest {
                name: "paid".into(),
                correlation_key: correlation_key.into(),
                time_to_live: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let expected = message_partition(correlation_key, 2);
        assert_eq!(key::partition_of(response.key), Some(expected));
        assert_eq!(response.tenant_id, "<default>");
    }

    let mut partitions = Vec::new();
    for _ in 0..4 {
        let created = gateway
            .client
            .create_process_instance(pb::CreateProcessInstanceRequest {
                bpmn_process_id: "order".into(),
                version: -1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        partitions.push(key::partition_of(created.process_instance_key).unwrap());
    }
    partitions.sort();
    assert_eq!(partitions, vec![1, 1, 2, 2], "new instances alternate between partitions");
}

#[tokio::test]
async fn new_instances_skip_a_partition_without_leader() {
    let one = ScriptedBroker::start(0, 2, &[1]).await;
    let mut gateway = start_gateway(config(&[&one])).await;
    for _ in 0..4 {
        let mut request = Request::new(pb::CreateProcessInstanceRequest {
            bpmn_process_id: "order".into(),
            version: -1,
            ..Default::default()
        });
        request.set_timeout(Duration::from_secs(5));
        let created = gateway.client.create_process_instance(request).await.unwrap().into_inner();
        assert_eq!(key::partition_of(created.process_instance_key), Some(1));
    }
}

#[tokio::test]
async fn request_reaching_a_deposed_leader_is_retried_on_the_new_leader() {
    let one = ScriptedBroker::start(0, 1, &[1]).await;
    let two = ScriptedBroker::start(1, 1, &[]).await;
    let mut gateway = start_gateway(config(&[&one, &two])).await;
    gateway.client.complete_job(complete(key::encode(1, 1))).await.unwrap();

    // Leadership moves; the gateway still believes broker one leads.
    one.script().leads.clear();
    two.script().leads.insert(1, 2);
    gateway.client.complete_job(complete(key::encode(1, 2))).await.unwrap();

    assert_eq!(one.executed().len(), 1);
    assert_eq!(two.executed().len(), 1);
    assert_eq!(two.executed()[0].0, 1);
    assert!(one.script().not_leader_answers >= 1, "the request first went to the deposed leader");
}

#[tokio::test]
async fn every_retry_of_a_request_carries_the_id_of_its_first_attempt() {
    let one = ScriptedBroker::start(0, 1, &[1]).await;
    let two = ScriptedBroker::start(1, 1, &[]).await;
    let mut gateway = start_gateway(config(&[&one, &two])).await;
    gateway.client.complete_job(complete(key::encode(1, 1))).await.unwrap();
    gateway.client.complete_job(complete(key::encode(1, 2))).await.unwrap();
    let first_two = one.script().request_ids.clone();
    assert_eq!(first_two.len(), 2);
    assert!(first_two[0] != 0 && first_two[0] != first_two[1], "each request has its own id: {first_two:?}");

    // Refused by a deposed leader, then applied by the new one: one request, one id.
    one.script().leads.clear();
    two.script().leads.insert(1, 2);
    gateway.client.complete_job(complete(key::encode(1, 3))).await.unwrap();
    let refused = one.script().request_ids[2..].to_vec();
    let applied = two.script().request_ids.clone();
    assert!(!refused.is_empty() && applied.len() == 1, "{refused:?} {applied:?}");
    assert!(refused.iter().all(|id| *id == applied[0]), "{refused:?} {applied:?}");
    assert!(!first_two.contains(&applied[0]));
}

#[tokio::test]
async fn a_command_lost_with_its_broker_is_retried_under_the_same_id() {
    let first = ScriptedBroker::start(0, 1, &[1]).await;
    let second = ScriptedBroker::start(1, 1, &[1]).await;
    first.script().leads.insert(1, 2);
    let mut gateway = start_gateway(config(&[&first, &second])).await;
    let request = pb::CreateProcessInstanceRequest { bpmn_process_id: "query-of-death".into(), ..Default::default() };
    gateway.client.create_process_instance(request).await.unwrap_err();
    let (lost, retried) = (first.script().request_ids.clone(), second.script().request_ids.clone());
    assert_eq!((lost.len(), retried.len()), (1, 1));
    assert_eq!(lost[0], retried[0], "the retry after the lost attempt is recognisably the same request");
}

#[tokio::test]
async fn partition_without_any_leader_answers_unavailable_after_retrying() {
    let one = ScriptedBroker::start(0, 1, &[]).await;
    let mut gateway = start_gateway(config(&[&one])).await;
    let mut request = Request::new(complete(key::encode(1, 1)));
    request.set_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let status = gateway.client.complete_job(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("no reachable broker currently leads partition 1"), "{status:?}");
    assert!(started.elapsed() >= Duration::from_secs(1), "retried until shortly before the client's deadline");
    assert!(one.executed().is_empty());
}

fn with_result(bpmn_process_id: &str, request_timeout: i64) -> pb::CreateProcessInstanceWithResultRequest {
    pb::CreateProcessInstanceWithResultRequest {
        request: Some(pb::CreateProcessInstanceRequest {
            bpmn_process_id: bpmn_process_id.into(),
            version: -1,
            variables: r#"{"total": 3}"#.into(),
            ..Default::default()
        }),
        request_timeout,
        fetch_variables: vec!["total".into()],
    }
}

#[tokio::test]
async fn instance_with_result_answers_its_variables_or_deadline_exceeded() {
    let one = ScriptedBroker::start(0, 1, &[1]).await;
    let mut gateway = start_gateway(config(&[&one])).await;

    let done = gateway.client.create_process_instance_with_result(with_result("order", 0)).await.unwrap().into_inner();
    assert_eq!(done.bpmn_process_id, "order");
    assert_eq!(done.variables, r#"{"total": 3}"#);
    match &one.executed()[0].1 {
        ClientCommand::CreateProcessInstance(create) => {
            assert_eq!(create.await_result.as_ref().unwrap().fetch_variables, vec!["total".to_owned()])
        }
        other => panic!("{other:?}"),
    }

    let started = Instant::now();
    let status = gateway.client.create_process_instance_with_result(with_result("never-ends", 300)).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("requestTimeout of 300 ms"), "{status:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn backpressure_answers_resource_exhausted() {
    let one = ScriptedBroker::start(0, 1, &[1]).await;
    one.script().backpressure = true;
    let mut gateway = start_gateway(config(&[&one])).await;
    let status = gateway.client.complete_job(complete(key::encode(1, 1))).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("partition 1 is busy"), "{status:?}");
}

#[tokio::test]
async fn long_poll_answers_as_soon_as_a_job_becomes_available() {
    let one = ScriptedBroker::start(0, 2, &[1, 2]).await;
    let mut gateway = start_gateway(config(&[&one])).await;
    eventually("the gateway subscribed to job notifications", || !one.script().subscribers.is_empty()).await;

    let mut stream = gateway.client.activate_jobs(activate("pay", 60_000)).await.unwrap().into_inner();
    eventually("both partitions were asked for jobs", || {
        one.executed().iter().filter(|(_, c)| matches!(c, ClientCommand::ActivateJobs(_))).count() >= 2
    })
    .await;

    one.add_job(2, "other-type", key::encode(2, 50)).await;
    one.add_job(2, "pay", key::encode(2, 99)).await;
    let notified = Instant::now();
    let response = timeout(WAIT, stream.message())
        .await
        .expect("answered before the long poll ends")
        .unwrap()
        .expect("one batch of jobs");
    assert!(
        notified.elapsed() < Duration::from_secs(3),
        "woken by the notification, not a periodic re-check ({:?})",
        notified.elapsed()
    );
    assert_eq!(response.jobs.len(), 1);
    assert_eq!(response.jobs[0].key, key::encode(2, 99));
    assert_eq!(response.jobs[0].r#type, "pay");
    assert!(stream.message().await.unwrap().is_none(), "the request is done");
}

#[tokio::test]
async fn long_poll_without_jobs_ends_empty_after_request_timeout() {
    let one = ScriptedBroker::start(0, 1, &[1]).await;
    let mut gateway = start_gateway(config(&[&one])).await;

    let started = Instant::now();
    let mut stream = gateway.client.activate_jobs(activate("pay", 400)).await.unwrap().into_inner();
    assert!(stream.message().await.unwrap().is_none());
    assert!(started.elapsed() >= Duration::from_millis(400));

    let started = Instant::now();
    let mut stream = gateway.client.activate_jobs(activate("pay", -1)).await.unwrap().into_inner();
    assert!(stream.message().await.unwrap().is_none());
    assert!(started.elapsed() < Duration::from_secs(5), "a negative requestTimeout means no long polling");
}

#[tokio::test]
async fn activation_stops_at_max_jobs_across_partitions() {
    let one = ScriptedBroker::start(0, 2, &[1, 2]).await;
    for n in 0..3 {
        one.add_job(1, "pay", key::encode(1, 10 + n)).await;
        one.add_job(2, "pay", key::encode(2, 10 + n)).await;
    }
    let mut gateway = start_gateway(config(&[&one])).await;
    let mut request = activate("pay", -1);
    request.max_jobs_to_activate = 4;
    let mut stream = gateway.client.activate_jobs(request).await.unwrap().into_inner();
    let mut jobs = Vec::new();
    while let Some(batch) = stream.message().await.unwrap() {
        assert!(!batch.jobs.is_empty(), "no empty batches are sent");
        jobs.extend(batch.jobs);
    }
    assert_eq!(jobs.len(), 4);
}

#[tokio::test]
async fn streamed_jobs_are_pushed_one_by_one_as_they_appear() {
    let one = ScriptedBroker::start(0, 1, &[1]).await;
    let mut gateway = start_gateway(config(&[&one])).await;
    eventually("the gateway subscribed to job notifications", || !one.script().subscribers.is_empty()).await;
    let mut stream = gateway
        .client
        .stream_activated_jobs(pb::StreamActivatedJobsRequest {
            r#type: "pay".into(),
            worker: "w".into(),
            timeout: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    eventually("the stream asked for jobs", || !one.executed().is_empty()).await;

    one.add_job(1, "pay", key::encode(1, 1)).await;
    one.add_job(1, "pay", key::encode(1, 2)).await;
    let mut keys = Vec::new();
    while keys.len() < 2 {
        let job = timeout(WAIT, stream.message()).await.unwrap().unwrap().unwrap();
        keys.push(job.key);
    }
    keys.sort();
    assert_eq!(keys, vec![key::encode(1, 1), key::encode(1, 2)]);
}

#[tokio::test]
async fn invalid_requests_are_rejected_before_reaching_a_broker() {
    let one = ScriptedBroker::start(0, 1, &[1]).await;
    let mut gateway = start_gateway(config(&[&one])).await;

    let status = gateway
        .client
        .complete_job(pb::CompleteJobRequest { job_key: key::encode(1, 1), variables: "[1, 2]".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("CompleteJob.variables must be a JSON object"), "{status:?}");

    let mut empty_type = activate("", 0);
    empty_type.r#type.clear();
    let status = gateway.client.activate_jobs(empty_type).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("ActivateJobs.type"), "{status:?}");

    let status = gateway
        .client
        .create_process_instance_with_result(pb::CreateProcessInstanceWithResultRequest {
            request: Some(pb::CreateProcessInstanceRequest { bpmn_process_id: "order".into(), ..Default::default() }),
            request_timeout: -5,
            fetch_variables: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("requestTimeout"), "{status:?}");
    assert!(one.executed().is_empty());
}

#[tokio::test]
async fn oversized_request_answers_resource_exhausted_and_gateway_keeps_serving() {
    let one = ScriptedBroker::start(0, 1, &[1]).await;
    let mut config = config(&[&one]);
    config.max_message_size = 64 * 1024;
    let mut gateway = start_gateway(config).await;

    let huge = format!(r#"{{"blob": "{}"}}"#, "x".repeat(100 * 1024));
    let status = gateway
        .client
        .complete_job(pb::CompleteJobRequest { job_key: key::encode(1, 1), variables: huge })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("max_message_size"), "{status:?}");
    gateway.client.complete_job(complete(key::encode(1, 1))).await.unwrap();
}

#[tokio::test]
async fn unsupported_rpcs_answer_unimplemented_naming_the_rpc() {
    let one = ScriptedBroker::start(0, 1, &[1]).await;
    let mut gateway = start_gateway(config(&[&one])).await;
    let status = gateway.client.evaluate_decision(pb::EvaluateDecisionRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert_eq!(status.message(), "EvaluateDecision is not supported by Waggle yet");
    let status = gateway.client.delete_resource(pb::DeleteResourceRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(status.message().starts_with("DeleteResource"), "{status:?}");
}

#[tokio::test]
async fn health_check_reports_serving() {
    let one = ScriptedBroker::start(0, 1, &[1]).await;
    let gateway = start_gateway(config(&[&one])).await;
    let channel = Channel::from_shared(format!("http://{}", gateway.addr)).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "gateway_protocol.Gateway"] {
        let answer = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(answer.status(), ServingStatus::Serving, "service {service:?}");
    }
}

#[tokio::test]
async fn topology_reports_every_broker_with_its_partitions() {
    let one = ScriptedBroker::start(0, 2, &[1]).await;
    let two = ScriptedBroker::start(1, 2, &[2]).await;
    let mut gateway = start_gateway(config(&[&one, &two])).await;
    let topology = gateway.client.topology(pb::TopologyRequest {}).await.unwrap().into_inner();
    assert_eq!(topology.cluster_size, 2);
    assert_eq!(topology.partitions_count, 2);
    assert_eq!(topology.replication_factor, 2);
    assert_eq!(topology.gateway_version, "test-gateway");
    assert_eq!(topology.brokers.len(), 2);
    let second = &topology.brokers[1];
    assert_eq!(second.node_id, 1);
    assert_eq!(format!("{}:{}", second.host, second.port), two.addr);
    let roles: Vec<_> = second.partitions.iter().map(|p| (p.partition_id, p.role())).collect();
    use pb::partition::PartitionBrokerRole::*;
    assert_eq!(roles, vec![(1, Follower), (2, Leader)]);
}

#[tokio::test]
async fn gateway_stops_cleanly_on_shutdown_even_with_open_job_streams() {
    let one = ScriptedBroker::start(0, 1, &[1]).await;
    let shutdown = CancellationToken::new();
    let (addr, server) = waggle_gateway::bind(config(&[&one]), shutdown.clone()).await.unwrap();
    let server = tokio::spawn(server);
    let mut client = GatewayClient::connect(format!("http://{addr}")).await.unwrap();
    let mut stream = client
        .stream_activated_jobs(pb::StreamActivatedJobsRequest {
            r#type: "pay".into(),
            timeout: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    eventually("the stream asked for jobs", || !one.executed().is_empty()).await;
    shutdown.cancel();
    timeout(WAIT, server).await.expect("the gateway stops promptly").unwrap().unwrap();
    assert!(stream.message().await.map(|m| m.is_none()).unwrap_or(true));
}

#[test]
fn configuration_without_brokers_is_refused_naming_the_key() {
    let config = GatewayConfig {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        brokers: vec![],
        default_long_poll: Duration::from_secs(10),
        max_message_size: 4 * 1024 * 1024,
        version: "x".into(),
        management_addr: None,
    };
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("`brokers`"), "{err}");
    let config = GatewayConfig { brokers: vec!["http://broker:26501".into()], ..config };
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("`brokers`") && err.contains("http://broker:26501"), "{err}");
}

/// A codec that sends request bytes as given and ignores any answer: for requests that are not
/// valid protobuf, which no generated client can produce.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = ();
    type Error = Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<()>, Status> {
        let remaining = bytes::Buf::remaining(src);
        bytes::Buf::advance(src, remaining);
        Ok(Some(()))
    }
}

#[tokio::test]
async fn undecodable_requests_answer_invalid_argument_on_every_rpc() {
    let one = ScriptedBroker::start(0, 1, &[1]).await;
    let mut gateway = start_gateway(config(&[&one])).await;
    let channel = Channel::from_shared(format!("http://{}", gateway.addr)).unwrap().connect().await.unwrap();
    let mut raw = tonic::client::Grpc::new(channel);
    let rpcs = [
        "ActivateJobs",
        "StreamActivatedJobs",
        "CancelProcessInstance",
        "CompleteJob",
        "CreateProcessInstance",
        "CreateProcessInstanceWithResult",
        "EvaluateDecision",
        "DeployProcess",
        "DeployResource",
        "FailJob",
        "ThrowError",
        "PublishMessage",
        "ResolveIncident",
        "SetVariables",
        "Topology",
        "UpdateJobRetries",
        "ModifyProcessInstance",
        "MigrateProcessInstance",
        "UpdateJobTimeout",
        "DeleteResource",
        "BroadcastSignal",
    ];
    // Field 1 as a varint whose continuation bit promises a byte that never comes: no message type
    // of any RPC can decode it, not even an empty one (unknown fields are still parsed to skip them).
    let truncated_varint = vec![0x08, 0xff];
    // Field 1 as length-delimited bytes that are not UTF-8 and not a valid nested message.
    let not_utf8 = vec![0x0a, 0x02, 0xff, 0xfe];
    for rpc in rpcs {
        let path: tonic::codegen::http::uri::PathAndQuery = format!("/gateway_protocol.Gateway/{rpc}").parse().unwrap();
        raw.ready().await.unwrap();
        let status = if rpc == "StreamActivatedJobs" {
            raw.server_streaming(Request::new(truncated_varint.clone()), path, RawCodec).await.map(|_| ())
        } else {
            raw.unary(Request::new(truncated_varint.clone()), path, RawCodec).await.map(|_| ())
        }
        .expect_err(rpc);
        assert_eq!(status.code(), Code::InvalidArgument, "{rpc}: {status:?}");
        assert!(status.message().contains("not a valid message"), "{rpc}: {status:?}");
    }
    raw.ready().await.unwrap();
    let status = raw
        .unary(Request::new(not_utf8), "/gateway_protocol.Gateway/PublishMessage".parse().unwrap(), RawCodec)
        .await
        .expect_err("a name that is not UTF-8");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(one.executed().is_empty());
    gateway.client.complete_job(complete(key::encode(1, 1))).await.unwrap();
}

#[tokio::test]
async fn a_command_that_two_leaders_in_a_row_die_on_is_not_retried_on_a_third() {
    let first = ScriptedBroker::start(0, 1, &[1]).await;
    let second = ScriptedBroker::start(1, 1, &[1]).await;
    let third = ScriptedBroker::start(2, 1, &[1]).await;
    // All three claim partition 1; the gateway believes the highest term: first, then second, then third.
    first.script().leads.insert(1, 3);
    second.script().leads.insert(1, 2);
    let mut gateway = start_gateway(config(&[&first, &second, &third])).await;
    let request = pb::CreateProcessInstanceRequest { bpmn_process_id: "query-of-death".into(), ..Default::default() };
    let status = gateway.client.create_process_instance(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(status.message().contains("not retried"), "{status:?}");
    assert_eq!((first.script().crashes, second.script().crashes), (1, 1));
    assert_eq!(third.script().crashes, 0, "the third leader never saw the command");
    // Other commands go on to the broker that still leads.
    gateway.client.complete_job(complete(key::encode(1, 1))).await.unwrap();
    assert_eq!(third.executed().len(), 1);
}

#[tokio::test]
async fn a_command_whose_only_leader_died_holding_it_answers_that_its_outcome_is_unknown() {
    let only = ScriptedBroker::start(0, 1, &[1]).await;
    let mut gateway = start_gateway(config(&[&only])).await;
    let request = pb::CreateProcessInstanceRequest { bpmn_process_id: "query-of-death".into(), ..Default::default() };
    let mut request = Request::new(request);
    request.set_timeout(Duration::from_secs(2));
    let status = gateway.client.create_process_instance(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    assert!(status.message().contains("outcome is unknown"), "{status:?}");
}
