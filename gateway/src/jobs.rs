//! Job activation across partitions: long-polling `ActivateJobs` and push-style
//! `StreamActivatedJobs`.
//!
//! Jobs of one type may wait on any partition, so a worker's request visits the partitions' leaders
//! in turn, starting at a different partition each time so that no partition's jobs are always
//! served last. When none has a job, the request is parked instead of answered empty: workers would
//! otherwise poll in a tight loop. Parked requests wake when a broker reports (over its
//! `JobAvailability` stream) that jobs of their type became activatable, so a worker gets a new job
//! within one round trip of its creation. A periodic re-check guards against a lost notification.
//!
//! Notifications are fanned out in-process through one [`Notify`] per job type that somebody is
//! waiting for: a notification wakes only the requests for its type, and costs nothing when
//! nobody waits.

use std::{
    collections::HashMap,
    pin::pin,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{
    sync::{mpsc, Notify},
    time::Instant,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};
use waggle_protocol::{
    broker_rpc::JobAvailabilityQuery,
    command::{ActivateJobs, ClientCommand},
    gateway as pb,
};

use crate::{cluster::Cluster, dispatch::Dispatcher, translate};

/// How long one partition may take to answer an activation before the round moves on, so that
/// one partition without a leader does not hold back jobs waiting on the others.
const PARTITION_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a waiting request looks again even without a notification.
const RECHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How many jobs `StreamActivatedJobs` activates per partition and round.
pub const STREAM_BATCH: i32 = 32;
/// Reconnect delays for the brokers' notification streams.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Wakes requests waiting for jobs of a type. Shared by every request of a gateway.
#[derive(Debug, Default)]
pub struct JobSignals {
    waiting: Mutex<HashMap<String, Arc<Notify>>>,
}

/// A request's registration for one job type; unregisters when dropped.
pub struct JobSignal {
    signals: Arc<JobSignals>,
    job_type: String,
    notify: Arc<Notify>,
}

impl JobSignals {
    pub fn subscribe(self: &Arc<Self>, job_type: &str) -> JobSignal {
        let mut waiting = self.waiting.lock().expect("job signal map poisoned");
        let notify = waiting.entry(job_type.to_owned()).or_default().clone();
        JobSignal { signals: self.clone(), job_type: job_type.to_owned(), notify }
    }

    /// Wakes every request waiting for `job_type`.
    pub fn notify(&self, job_type: &str) {
        let waiting = self.waiting.lock().expect("job signal map poisoned");
        if let Some(notify) = waiting.get(job_type) {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiting request, for when notifications may have been missed.
    pub fn notify_all(&self) {
        let waiting = self.waiting.lock().expect("job signal map poisoned");
        for notify in waiting.values() {
            notify.notify_waiters();
        }
    }

    #[cfg(test)]
    fn waiting_types(&self) -> usize {
        self.waiting.lock().expect("job signal map poisoned").len()
    }
}

impl Drop for JobSignal {
    fn drop(&mut self) {
        let mut waiting = self.signals.waiting.lock().expect("job signal map poisoned");
        // The map holds one reference and this signal another; nobody else waits for the type.
        if Arc::strong_count(&self.notify) == 2 {
            waiting.remove(&self.job_type);
        }
    }
}

/// Keeps one `JobAvailability` subscription per broker, for as long as the gateway runs.
pub fn spawn_availability_listeners(cluster: &Arc<Cluster>, signals: &Arc<JobSignals>, shutdown: &CancellationToken) {
    for index in 0..cluster.brokers().len() {
        tokio::spawn(listen(cluster.clone(), index, signals.clone(), shutdown.clone()));
    }
}

async fn listen(cluster: Arc<Cluster>, index: usize, signals: Arc<JobSignals>, shutdown: CancellationToken) {
    let broker = cluster.broker(index);
    let mut backoff = RECONNECT_FIRST;
    loop {
        let mut client = broker.client.clone();
        let subscribed = tokio::select! {
            subscribed = client.job_availability(JobAvailabilityQuery {}) => subscribed,
            _ = shutdown.cancelled() => return,
        };
        match subscribed {
            Ok(response) => {
                tracing::debug!(broker = %broker.addr, "subscribed to job notifications");
                backoff = RECONNECT_FIRST;
                // Jobs may have appeared while the subscription was down.
                signals.notify_all();
                let mut stream = response.into_inner();
                loop {
                    let message = tokio::select! {
                        message = stream.message() => message,
                        _ = shutdown.cancelled() => return,
                    };
                    match message {
                        Ok(Some(available)) => signals.notify(&available.job_type),
                        Ok(None) => break,
                        Err(status) => {
                            tracing::debug!(broker = %broker.addr, %status, "job notification stream failed");
                            break;
                        }
                    }
                }
                signals.notify_all();
            }
            Err(status) => {
                tracing::debug!(broker = %broker.addr, %status, "cannot subscribe to job notifications");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

/// What one pass over all partitions achieved.
enum Round {
    /// Jobs were activated and handed to the client.
    Activated,
    /// Every partition answered, none had a job (or some failed, but not all).
    Empty,
    /// Every partition failed; the first failure.
    Failed(Status),
    /// The client went away.
    ClientGone,
}

/// Activates jobs for `ActivateJobs` and `StreamActivatedJobs` requests.
#[derive(Debug)]
pub struct JobActivator {
    dispatcher: Dispatcher,
    signals: Arc<JobSignals>,
    next_partition: AtomicU32,
    shutdown: CancellationToken,
}

impl JobActivator {
    pub fn new(dispatcher: Dispatcher, signals: Arc<JobSignals>, shutdown: CancellationToken) -> Arc<JobActivator> {
        Arc::new(JobActivator { dispatcher, signals, next_partition: AtomicU32::new(0), shutdown })
    }

    /// Serves one `ActivateJobs` request: one response per partition that had jobs. With
    /// `long_poll`, waits up to that long for the first job; the stream ends without messages if
    /// none appears.
    pub fn activate_jobs(
        self: &Arc<Self>,
        command: ActivateJobs,
        long_poll: Option<Duration>,
    ) -> ReceiverStream<Result<pb::ActivateJobsResponse, Status>> {
        let (tx, rx) = mpsc::channel(4);
        let this = self.clone();
        tokio::spawn(async move {
            let poll_until = long_poll.map(|d| Instant::now() + d);
            let signal = this.signals.subscribe(&command.job_type);
            let wanted = command.max_jobs_to_activate;
            let mut command = ClientCommand::ActivateJobs(command);
            loop {
                let mut notified = pin!(signal.notify.notified());
                notified.as_mut().enable();
                let round = this
                    .round("ActivateJobs", &mut command, wanted, |jobs| {
                        let tx = &tx;
                        async move { tx.send(Ok(pb::ActivateJobsResponse { jobs })).await.is_ok() }
                    })
                    .await;
                match round {
                    Round::Activated | Round::ClientGone => return,
                    Round::Failed(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                    Round::Empty => {}
                }
                let Some(until) = poll_until else { return };
                if Instant::now() >= until {
                    return;
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(RECHECK_INTERVAL) => {}
                    _ = tokio::time::sleep_until(until) => return,
                    _ = tx.closed() => return,
                    _ = this.shutdown.cancelled() => return,
                }
            }
        });
        ReceiverStream::new(rx)
    }

    /// Serves one `StreamActivatedJobs` request: pushes jobs one by one for as long as the
    /// client listens. Transient failures (no leader, backpressure) are waited out; only a failure
    /// that retrying cannot fix ends the stream.
    pub fn stream_jobs(self: &Arc<Self>, command: ActivateJobs) -> ReceiverStream<Result<pb::ActivatedJob, Status>> {
        let (tx, rx) = mpsc::channel(STREAM_BATCH as usize);
        let this = self.clone();
        tokio::spawn(async move {
            let signal = this.signals.subscribe(&command.job_type);
            let wanted = command.max_jobs_to_activate;
            let mut command = ClientCommand::ActivateJobs(command);
            loop {
                let mut notified = pin!(signal.notify.notified());
                notified.as_mut().enable();
                let round = this
                    .round("StreamActivatedJobs", &mut command, wanted, |jobs| {
                        let tx = &tx;
                        async move {
                            for job in jobs {
                                if tx.send(Ok(job)).await.is_err() {
                                    return false;
                                }
                            }
                            true
                        }
                    })
                    .await;
                match round {
                    Round::Activated => continue,
                    Round::ClientGone => return,
                    Round::Failed(status) if is_final(&status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                    Round::Failed(status) => {
                        tracing::debug!(%status, "job stream waits for the cluster to recover");
                    }
                    Round::Empty => {}
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(RECHECK_INTERVAL) => {}
                    _ = tx.closed() => return,
                    _ = this.shutdown.cancelled() => return,
                }
            }
        });
        ReceiverStream::new(rx)
    }

    /// Asks each partition's leader in turn for up to the jobs still wanted and hands every
    /// non-empty batch to `deliver`, which answers false once the client is gone.
    async fn round<F, Fut>(&self, rpc: &'static str, command: &mut ClientCommand, wanted: i32, mut deliver: F) -> Round
    where
        F: FnMut(Vec<pb::ActivatedJob>) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let count = match self.dispatcher.partitions_count(Instant::now() + PARTITION_ATTEMPT_TIMEOUT).await {
            Ok(count) => count,
            Err(e) => return Round::Failed(e.into()),
        };
        let start = self.next_partition.fetch_add(1, Ordering::Relaxed) % count;
        let mut remaining = wanted;
        let mut activated = 0;
        let mut failures = 0;
        let mut first_failure = None;
        for offset in 0..count {
            let partition = (start + offset) % count + 1;
            limit(command, remaining);
            let deadline = Instant::now() + PARTITION_ATTEMPT_TIMEOUT;
            let jobs = match self.dispatcher.execute(partition, command, deadline).await {
                Ok(result) => translate::activated_jobs(rpc, result).map_err(Status::from),
                Err(e) => Err(Status::from(e)),
            };
            match jobs {
                Ok(jobs) if jobs.is_empty() => {}
                Ok(jobs) => {
                    let len = jobs.len();
                    if !deliver(jobs).await {
                        tracing::info!(
                            partition,
                            jobs = len,
                            "client left before receiving activated jobs; they become activatable again after their timeout"
                        );
                        return Round::ClientGone;
                    }
                    activated += len;
                    remaining -= i32::try_from(len).unwrap_or(i32::MAX);
                    if remaining <= 0 {
                        break;
                    }
                }
                Err(status) => {
                    tracing::debug!(partition, %status, "job activation failed on a partition");
                    failures += 1;
                    first_failure.get_or_insert(status);
                }
            }
        }
        limit(command, wanted);
        match first_failure {
            _ if activated > 0 => Round::Activated,
            Some(status) if failures == count => Round::Failed(status),
            _ => Round::Empty,
        }
    }
}

/// Sets how many jobs an activation command asks for.
fn limit(command: &mut ClientCommand, max_jobs_to_activate: i32) {
    if let ClientCommand::ActivateJobs(activation) = command {
        activation.max_jobs_to_activate = max_jobs_to_activate;
    }
}

/// Failures that the same request will meet again however long it waits.
fn is_final(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::Unimplemented
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notification_wakes_only_requests_for_its_job_type() {
        let signals = Arc::new(JobSignals::default());
        let pay = signals.subscribe("pay");
        let ship = signals.subscribe("ship");
        let mut pay_woken = pin!(pay.notify.notified());
        pay_woken.as_mut().enable();
        let mut ship_woken = pin!(ship.notify.notified());
        ship_woken.as_mut().enable();
        signals.notify("pay");
        tokio::time::timeout(Duration::from_secs(5), pay_woken).await.expect("the pay request wakes");
        let ship_result = tokio::time::timeout(Duration::from_millis(50), ship_woken).await;
        assert!(ship_result.is_err(), "the ship request keeps waiting");
    }

    #[test]
    fn job_type_is_forgotten_when_its_last_waiter_leaves() {
        let signals = Arc::new(JobSignals::default());
        let first = signals.subscribe("pay");
        let second = signals.subscribe("pay");
        assert_eq!(signals.waiting_types(), 1);
        drop(first);
        assert_eq!(signals.waiting_types(), 1);
        drop(second);
        assert_eq!(signals.waiting_types(), 0);
    }
}
