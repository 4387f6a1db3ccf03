//! Steady client load through the gateway, with a ledger of everything the cluster acknowledged.
//!
//! The failover tests judge the cluster by its promises: whatever it acknowledged must hold after
//! any fault. So the load keeps a precise record of acknowledgements and nothing else. Errors are
//! expected while leaders change and are only counted: an unacknowledged command may or may not
//! have taken effect, and the cluster promised nothing about it.
//!
//! - A creator starts instances of a two-task process (`a` then `b`) and records each acknowledged
//!   process instance key.
//! - Workers activate and complete jobs of both types. They record every activation with the time
//!   the activation was requested, and every acknowledged completion with the time it was
//!   acknowledged: a job activated by a request sent after its completion was acknowledged was
//!   brought back to life, which must never happen.
//! - An instance has finished once the completion of its `b` job is acknowledged. If a completion's
//!   answer is lost (the broker died after committing it), the worker asks again; NOT_FOUND then
//!   means the job is gone, so the instance is recorded as finished on that evidence, which the test
//!   later confirms by asking to cancel the instance (NOT_FOUND again means it no longer runs). The
//!   gateway itself may repeat a command whose answer it lost, so even a first attempt can meet
//!   NOT_FOUND.
//! - Every instance whose `a` job is activated is noted. An instance that no acknowledged creation
//!   named can only stem from a creation that failed (its outcome unknown to the client), so there
//!   are never more of them than failed creations: more would mean that a retried creation was
//!   applied twice.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use waggle_protocol::gateway::gateway_client::GatewayClient;
use waggle_protocol::gateway::{
    ActivateJobsRequest, ActivatedJob, CancelProcessInstanceRequest, CompleteJobRequest, CreateProcessInstanceRequest,
    DeployResourceRequest, Resource,
};

use super::{Cluster, PARTITIONS};

const PROCESS_ID: &str = "two-tasks";
const MODEL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d" targetNamespace="t">
  <bpmn:process id="two-tasks" isExecutable="true">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="a" />
    <bpmn:serviceTask id="a"><bpmn:extensionElements><zeebe:taskDefinition type="a" /></bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:sequenceFlow id="f2" sourceRef="a" targetRef="b" />
    <bpmn:serviceTask id="b"><bpmn:extensionElements><zeebe:taskDefinition type="b" /></bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:sequenceFlow id="f3" sourceRef="b" targetRef="end" />
    <bpmn:endEvent id="end" />
  </bpmn:process>
</bpmn:definitions>"#;

/// Concurrent creators and workers per job type.
const CREATORS: usize = 2;
const WORKERS_PER_TYPE: usize = 2;
/// Short, so that jobs activated on a leader that died come back quickly.
const JOB_TIMEOUT: Duration = Duration::from_secs(3);
const LONG_POLL: Duration = Duration::from_secs(1);
const MAX_JOBS_PER_ACTIVATION: i32 = 16;
/// Deadline of each request; the gateway retries on the current leader within it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a worker keeps asking to complete a job whose answer was lost.
const COMPLETION_PERSISTENCE: Duration = Duration::from_secs(15);
/// Pause after a failed request, so that a cluster without a leader is not hammered.
const ERROR_PAUSE: Duration = Duration::from_millis(50);
const DEPLOY_LIMIT: Duration = Duration::from_secs(30);
/// How long after the load starts every partition must have acknowledged a creation.
const FIRST_CREATIONS_LIMIT: Duration = Duration::from_secs(15);
/// Acknowledged creations the load adds before a fault and after recovery, so that faults hit work
/// in flight and recovery is shown under load.
pub const LOAD_STEP: usize = 300;
/// How long the load may take for one step.
pub const LOAD_STEP_LIMIT: Duration = Duration::from_secs(30);

/// The partition a key belongs to: keys are `(partition_id << 51) + counter`.
pub fn partition_of(key: i64) -> u32 {
    (key >> 51) as u32
}

/// Deploys the two-task process, retrying while the cluster settles.
pub async fn deploy(client: &GatewayClient<Channel>, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let mut request = Request::new(DeployResourceRequest {
            resources: vec![Resource { name: "two-tasks.bpmn".into(), content: MODEL.as_bytes().to_vec() }],
            tenant_id: String::new(),
        });
        request.set_timeout(REQUEST_TIMEOUT);
        match client.clone().deploy_resource(request).await {
            Ok(_) => return,
            Err(status) if Instant::now() < deadline => {
                eprintln!("deploying failed, retrying: {status}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("deploying the two-task process failed for {limit:?}: {status}"),
        }
    }
}

/// Deploys the process and starts the load; returns once every partition acknowledged creations and
/// the load ran for a while.
pub async fn start_load(cluster: &Cluster) -> Workload {
    let client = cluster.client();
    deploy(&client, DEPLOY_LIMIT).await;
    cluster.clock.note("deployed the two-task process");
    let started = Instant::now();
    let workload = Workload::start(&client);
    let all = workload.wait_for_creations_on_every_partition(started, PARTITIONS, FIRST_CREATIONS_LIMIT).await;
    cluster.clock.note(format!("creations acknowledged on every partition {all:?} after the load started"));
    workload.wait_for_more_creations(LOAD_STEP, LOAD_STEP_LIMIT).await;
    cluster.clock.note(format!("under load: {}", workload.summary()));
    workload
}

/// How the test knows that an instance's `b` job was completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Finish {
    /// The completion was acknowledged.
    Acknowledged,
    /// A completion's answer was lost and asking again found the job gone.
    JobGone,
}

#[derive(Default)]
struct Ledger {
    /// Acknowledged process instance keys, in order, with the time of acknowledgement.
    created: Vec<(i64, Instant)>,
    /// Every activation: job key and when the activation was requested.
    activations: Vec<(i64, Instant)>,
    /// Acknowledged job completions: job key and when the acknowledgement arrived.
    completed: HashMap<i64, Instant>,
    finished: HashMap<i64, Finish>,
    /// Every process instance whose `a` job was activated.
    ran: HashSet<i64>,
    /// Failed requests by RPC and status code: how many, and the first one's message.
    errors: BTreeMap<String, (usize, String)>,
}

impl Ledger {
    fn error(&mut self, rpc: &str, status: &Status) {
        let entry = self.errors.entry(format!("{rpc} {:?}", status.code())).or_insert((0, status.message().into()));
        entry.0 += 1;
    }
}

/// The creator and workers, running until stopped.
pub struct Workload {
    ledger: Arc<Mutex<Ledger>>,
    creating: CancellationToken,
    creators: Vec<JoinHandle<()>>,
    working: CancellationToken,
    workers: Vec<JoinHandle<()>>,
}

impl Workload {
    pub fn start(client: &GatewayClient<Channel>) -> Workload {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let creating = CancellationToken::new();
        let working = CancellationToken::new();
        let creators = (0..CREATORS)
            .map(|_| tokio::spawn(create_instances(client.clone(), ledger.clone(), creating.clone())))
            .collect();
        let workers = ["a", "b"]
            .into_iter()
            .flat_map(|job_type| std::iter::repeat_n(job_type, WORKERS_PER_TYPE).enumerate())
            .map(|(n, job_type)| {
                let worker = Worker {
                    client: client.clone(),
                    ledger: ledger.clone(),
                    job_type,
                    name: format!("{job_type}-{n}"),
                };
                tokio::spawn(worker.run(working.clone()))
            })
            .collect();
        Workload { ledger, creating, creators, working, workers }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().expect("no task panics while holding the ledger")
    }

    /// Stops creating instances; returns once no creation can be acknowledged any more.
    pub async fn stop_creating(&mut self) {
        self.creating.cancel();
        for creator in self.creators.drain(..) {
            creator.await.expect("the creator does not panic");
        }
    }

    /// Stops the workers.
    pub async fn stop(mut self) {
        self.stop_creating().await;
        self.working.cancel();
        for worker in self.workers.drain(..) {
            worker.await.expect("a worker does not panic");
        }
    }

    pub fn created(&self) -> usize {
        self.ledger().created.len()
    }

    /// Failed requests so far, by RPC and status code (such as `CreateProcessInstance Unavailable`).
    pub fn failed_requests(&self) -> BTreeMap<String, usize> {
        self.ledger().errors.iter().map(|(kind, (count, _))| (kind.clone(), *count)).collect()
    }

    /// The partitions on which a creation was acknowledged after `since`.
    pub fn partitions_creating_since(&self, since: Instant) -> BTreeSet<u32> {
        self.ledger().created.iter().filter(|(_, at)| *at > since).map(|(key, _)| partition_of(*key)).collect()
    }

    /// Waits until creations were acknowledged on every partition after `since`; returns how long
    /// after `since` the last partition got its first one.
    pub async fn wait_for_creations_on_every_partition(
        &self,
        since: Instant,
        partitions: u32,
        limit: Duration,
    ) -> Duration {
        self.try_wait_for_creations_on_every_partition(since, partitions, limit).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Workload::wait_for_creations_on_every_partition`], returning what went wrong instead of
    /// panicking.
    pub async fn try_wait_for_creations_on_every_partition(
        &self,
        since: Instant,
        partitions: u32,
        limit: Duration,
    ) -> Result<Duration, String> {
        let deadline = since + limit;
        loop {
            let firsts = self.first_creations_since(since);
            if firsts.len() as u32 == partitions {
                return Ok(firsts.values().max().expect("there are partitions").duration_since(since));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "within {limit:?}, creations were acknowledged only on partitions {:?} (of 1..={partitions}); \
                     errors so far: {:?}",
                    firsts.keys().collect::<Vec<_>>(),
                    self.ledger().errors
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// When each partition first acknowledged a creation after `since`.
    pub fn first_creations_since(&self, since: Instant) -> BTreeMap<u32, Instant> {
        // Creations are recorded in the order of their acknowledgement: the newest ones suffice, and a
        // long run's ledger is not walked from its start every time.
        self.ledger().created.iter().rev().take_while(|(_, at)| *at > since).fold(
            BTreeMap::new(),
            |mut firsts, (key, at)| {
                firsts.insert(partition_of(*key), *at);
                firsts
            },
        )
    }

    /// Waits until `count` more creations than now are acknowledged, so that what follows happens
    /// with work in flight.
    pub async fn wait_for_more_creations(&self, count: usize, limit: Duration) {
        let target = self.created() + count;
        let deadline = Instant::now() + limit;
        while self.created() < target {
            assert!(
                Instant::now() < deadline,
                "within {limit:?}, only {} of {count} further creations were acknowledged; errors so far: {:?}",
                count - (target - self.created()),
                self.ledger().errors
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every acknowledged instance has finished; returns the ones that did not.
    /// Waits until every acknowledged instance has finished, or until none has finished for `stall`
    /// (stuck work), or `limit` has passed; returns those still unfinished. A long campaign on a
    /// slow machine leaves a backlog that takes minutes to work off, so slow progress is waited
    /// for and only a standstill fails fast.
    pub async fn wait_until_all_finished(&self, stall: Duration, limit: Duration) -> Vec<i64> {
        let deadline = Instant::now() + limit;
        let mut last_progress = (Instant::now(), usize::MAX);
        loop {
            let unfinished = self.unfinished();
            if unfinished.len() < last_progress.1 {
                last_progress = (Instant::now(), unfinished.len());
            }
            if unfinished.is_empty() || Instant::now() >= deadline || last_progress.0.elapsed() >= stall {
                return unfinished;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn unfinished(&self) -> Vec<i64> {
        let ledger = self.ledger();
        ledger.created.iter().map(|(key, _)| *key).filter(|key| !ledger.finished.contains_key(key)).collect()
    }

    /// Acknowledged instance keys that were handed out more than once.
    pub fn duplicate_instance_keys(&self) -> Vec<i64> {
        let mut seen = BTreeSet::new();
        self.ledger().created.iter().map(|(key, _)| *key).filter(|key| !seen.insert(*key)).collect()
    }

    /// Jobs activated by a request sent after their completion had been acknowledged.
    pub fn reactivated_after_completion(&self) -> Vec<i64> {
        let ledger = self.ledger();
        ledger
            .activations
            .iter()
            .filter(|(job, requested)| ledger.completed.get(job).is_some_and(|acknowledged| acknowledged < requested))
            .map(|(job, _)| *job)
            .collect()
    }

    /// Instances recorded as finished because their `b` job was gone; see the module docs.
    pub fn finished_by_job_gone(&self) -> Vec<i64> {
        self.ledger().finished.iter().filter(|(_, how)| **how == Finish::JobGone).map(|(key, _)| *key).collect()
    }

    /// One line on what happened so far.
    /// Instances that ran without any acknowledged creation naming them, and how many creations failed.
    pub fn unacknowledged_instances(&self) -> (Vec<i64>, usize) {
        let ledger = self.ledger();
        let acknowledged: HashSet<i64> = ledger.created.iter().map(|(key, _)| *key).collect();
        let unacknowledged = ledger.ran.iter().filter(|key| !acknowledged.contains(key)).copied().collect();
        let failed = ledger
            .errors
            .iter()
            .filter(|(rpc, _)| rpc.starts_with("CreateProcessInstance "))
            .map(|(_, (count, _))| *count)
            .sum();
        (unacknowledged, failed)
    }

    pub fn summary(&self) -> String {
        let ledger = self.ledger();
        let finished: Vec<Finish> =
            ledger.created.iter().filter_map(|(key, _)| ledger.finished.get(key).copied()).collect();
        format!(
            "{} instances acknowledged, {} of them finished ({} known by their b job being gone), {} activations, \
             {} completions acknowledged; failed requests (count, first message): {:?}",
            ledger.created.len(),
            finished.len(),
            finished.iter().filter(|how| **how == Finish::JobGone).count(),
            ledger.activations.len(),
            ledger.completed.len(),
            ledger.errors
        )
    }
}

/// Asks to cancel each instance and returns those that were still running (the cancellation was
/// accepted) or whose state could not be learned.
pub async fn still_running(client: &GatewayClient<Channel>, instances: &[i64]) -> Vec<(i64, String)> {
    let mut running = Vec::new();
    for &key in instances {
        let mut request =
            Request::new(CancelProcessInstanceRequest { process_instance_key: key, ..Default::default() });
        request.set_timeout(REQUEST_TIMEOUT);
        match client.clone().cancel_process_instance(request).await {
            Err(status) if status.code() == Code::NotFound => {}
            Ok(_) => running.push((key, "it was still running (cancelled now)".to_string())),
            Err(status) => running.push((key, format!("cancelling it failed: {status}"))),
        }
    }
    running
}

async fn create_instances(mut client: GatewayClient<Channel>, ledger: Arc<Mutex<Ledger>>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let mut request = Request::new(CreateProcessInstanceRequest {
            bpmn_process_id: PROCESS_ID.into(),
            version: -1,
            variables: "{}".into(),
            ..Default::default()
        });
        request.set_timeout(REQUEST_TIMEOUT);
        let answer = client.create_process_instance(request).await;
        let failed = {
            let mut ledger = ledger.lock().expect("no task panics while holding the ledger");
            match answer {
                Ok(created) => {
                    ledger.created.push((created.into_inner().process_instance_key, Instant::now()));
                    false
                }
                Err(status) => {
                    ledger.error("CreateProcessInstance", &status);
                    true
                }
            }
        };
        if failed {
            tokio::time::sleep(ERROR_PAUSE).await;
        }
    }
}

struct Worker {
    client: GatewayClient<Channel>,
    ledger: Arc<Mutex<Ledger>>,
    job_type: &'static str,
    name: String,
}

impl Worker {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().expect("no task panics while holding the ledger")
    }

    async fn run(mut self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            let jobs = tokio::select! {
                jobs = self.activate() => jobs,
                _ = stop.cancelled() => return,
            };
            for job in jobs {
                self.complete(&job).await;
            }
        }
    }

    async fn activate(&mut self) -> Vec<ActivatedJob> {
        let requested = Instant::now();
        let mut request = Request::new(ActivateJobsRequest {
            r#type: self.job_type.into(),
            worker: self.name.clone(),
            timeout: JOB_TIMEOUT.as_millis() as i64,
            max_jobs_to_activate: MAX_JOBS_PER_ACTIVATION,
            request_timeout: LONG_POLL.as_millis() as i64,
            ..Default::default()
        });
        request.set_timeout(LONG_POLL + REQUEST_TIMEOUT);
        let mut jobs = Vec::new();
        let failure = match self.client.activate_jobs(request).await {
            Err(status) => Some(status),
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(batch)) => jobs.extend(batch.jobs),
                        Ok(None) => break None,
                        Err(status) => break Some(status),
                    }
                }
            }
        };
        {
            // Jobs that arrived before a stream failed were activated all the same.
            let mut ledger = self.ledger();
            ledger.activations.extend(jobs.iter().map(|job| (job.key, requested)));
            if self.job_type == "a" {
                ledger.ran.extend(jobs.iter().map(|job| job.process_instance_key));
            }
            if let Some(status) = &failure {
                ledger.error("ActivateJobs", status);
            }
        }
        if failure.is_some() {
            tokio::time::sleep(ERROR_PAUSE).await;
        }
        jobs
    }

    /// Completes a job, asking again while the outcome is unknown.
    async fn complete(&mut self, job: &ActivatedJob) {
        let deadline = Instant::now() + COMPLETION_PERSISTENCE;
        loop {
            let mut request = Request::new(CompleteJobRequest { job_key: job.key, variables: "{}".into() });
            request.set_timeout(REQUEST_TIMEOUT);
            let answer = self.client.complete_job(request).await;
            let retry = {
                let mut ledger = self.ledger();
                match answer {
                    Ok(_) => {
                        ledger.completed.insert(job.key, Instant::now());
                        if self.job_type == "b" {
                            ledger.finished.insert(job.process_instance_key, Finish::Acknowledged);
                        }
                        false
                    }
                    // The job no longer exists: an earlier attempt whose answer was lost (here or in
                    // the gateway, which retries on the new leader) completed it, or another worker
                    // did after the job timed out here.
                    Err(status) if status.code() == Code::NotFound => {
                        ledger.error("CompleteJob", &status);
                        if self.job_type == "b" {
                            ledger.finished.entry(job.process_instance_key).or_insert(Finish::JobGone);
                        }
                        false
                    }
                    Err(status) => {
                        ledger.error("CompleteJob", &status);
                        let worth_retrying = matches!(
                            status.code(),
                            Code::Unavailable
                                | Code::DeadlineExceeded
                                | Code::Cancelled
                                | Code::Unknown
                                | Code::Internal
                                | Code::ResourceExhausted
                        );
                        worth_retrying && Instant::now() < deadline
                    }
                }
            };
            if !retry {
                return;
            }
            tokio::time::sleep(ERROR_PAUSE).await;
        }
    }
}
