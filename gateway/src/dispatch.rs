//! Sends one command to one partition's leader, following the leader when it moves.
//!
//! Leadership changes are routine in a replicated cluster (a broker restarts, an election
//! happens), so a request that reaches a broker that no longer leads, or cannot reach its broker at
//! all, is not failed: the gateway asks for a fresh topology, backs off briefly and tries the
//! leader it then knows, until the request's deadline. Only then does the client see UNAVAILABLE.
//!
//! Retrying after a transport failure means a command may, rarely, reach a broker twice (the first
//! attempt was processed but its answer lost). Zeebe's gateway accepts the same trade-off. Two
//! things keep that honest and safe:
//!
//! - A command whose broker died while holding it is retried on the next leader at most once. If
//!   that one dies holding it too, the command itself is the likely cause (a "query of death" that
//!   crashes whichever broker processes it), and retrying it would take the whole cluster down, one
//!   leader after the other; the gateway stops and says so.
//! - When the gateway gives up after an attempt that may have reached the engine (the connection
//!   broke mid-call, or the leader did not answer in time), the client is told that the outcome is
//!   unknown rather than that the partition was unavailable.
//!
//! And one thing keeps it from applying a command twice: every client request gets a request id
//! when its dispatch starts, and every attempt of it carries that same id. The partition remembers
//! for a while which ids it has answered and how (replicated, so a new leader knows it too), and
//! answers a retry of an applied command with the first answer instead of applying it again.

use std::{
    hash::{BuildHasher, Hasher},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use waggle_protocol::{
    broker_rpc::CommandEnvelope,
    command::{decode, encode, BrokerError, BrokerReply, ClientCommand, CommandResult, RequestId},
};

use crate::cluster::Cluster;

/// First pause between attempts; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// Retried until the deadline without reaching a leader.
    #[error("partition {partition} is unavailable: {cause}")]
    Unavailable { partition: u32, cause: String },
    /// The leader did not answer in time; it may have applied the command.
    #[error(
        "partition {partition} did not answer within {} ms; the command may or may not have been applied",
        .after.as_millis()
    )]
    Timeout { partition: u32, after: Duration },
    /// The gateway gave up after an attempt whose broker may have applied the command.
    #[error("the outcome is unknown: partition {partition} may or may not have applied the command ({cause})")]
    OutcomeUnknown { partition: u32, cause: String },
    /// Two brokers in a row failed while processing the command; it is not tried on a third.
    #[error(
        "the command was not retried further: brokers {first} and {second} both failed while processing it for \
         partition {partition}, so the command itself may crash brokers"
    )]
    FailedTwice { partition: u32, first: String, second: String },
    /// The broker refused the command for a reason retrying cannot fix.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The broker's gRPC layer failed the call in an unexpected way.
    #[error("broker {broker} failed the call: {status}")]
    Rpc { broker: String, status: Box<tonic::Status> },
    #[error("no broker has reported the cluster topology yet (configured brokers: {brokers})")]
    NoTopology { brokers: String },
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

/// Sends commands to partition leaders. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Dispatcher {
    cluster: Arc<Cluster>,
    shutdown: CancellationToken,
    ids: Arc<RequestIds>,
}

/// Hands out request ids: a count from a random start, so that ids of one gateway never repeat
/// and those of two gateways (or of one before and after a restart) only meet if their ranges
/// overlap, which 64 random bits make vanishingly unlikely. One atomic add per request.
#[derive(Debug)]
struct RequestIds {
    start: u64,
    count: AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        // The standard library seeds every `RandomState` from the operating system's randomness.
        let mut random = std::collections::hash_map::RandomState::new().build_hasher();
        random.write_u128(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
        );
        RequestIds { start: random.finish(), count: AtomicU64::new(0) }
    }

    /// The next id; never 0, which on the wire means "no id".
    fn next(&self) -> RequestId {
        loop {
            let id = self.start.wrapping_add(self.count.fetch_add(1, Ordering::Relaxed));
            if id != 0 {
                return id;
            }
        }
    }
}

/// The outcome of one attempt that may be worth repeating elsewhere.
enum Attempt {
    Done(Result<CommandResult, DispatchError>),
    /// The command did not reach an engine (no leader, connection refused, not the leader).
    Retry(String),
    /// The connection to `broker` broke while it held the command: it may have been applied.
    Lost {
        broker: String,
        cause: String,
    },
}

impl Dispatcher {
    pub fn new(cluster: Arc<Cluster>, shutdown: CancellationToken) -> Dispatcher {
        Dispatcher { cluster, shutdown, ids: Arc::new(RequestIds::new()) }
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Runs `command` on `partition`, retrying on the current leader until `deadline`.
    pub async fn execute(
        &self,
        partition: u32,
        command: &ClientCommand,
        deadline: Instant,
    ) -> Result<CommandResult, DispatchError> {
        tokio::select! {
            result = self.execute_until(partition, command, deadline) => result,
            _ = self.shutdown.cancelled() => Err(DispatchError::ShuttingDown),
        }
    }

    /// The partition count, waiting for the first topology until `deadline` if need be.
    pub async fn partitions_count(&self, deadline: Instant) -> Result<u32, DispatchError> {
        let mut views = self.cluster.subscribe();
        loop {
            let count = views.borrow_and_update().partitions_count;
            if count > 0 {
                return Ok(count);
            }
            self.cluster.request_refresh();
            let changed = tokio::select! {
                changed = tokio::time::timeout_at(deadline, views.changed()) => changed,
                _ = self.shutdown.cancelled() => return Err(DispatchError::ShuttingDown),
            };
            if !matches!(changed, Ok(Ok(()))) {
                let brokers = self.cluster.brokers().iter().map(|b| b.addr.as_str()).collect::<Vec<_>>().join(", ");
                return Err(DispatchError::NoTopology { brokers });
            }
        }
    }

    async fn execute_until(
        &self,
        partition: u32,
        command: &ClientCommand,
        deadline: Instant,
    ) -> Result<CommandResult, DispatchError> {
        let mut backoff = FIRST_BACKOFF;
        // The broker that last died holding the command, if the command may have been applied.
        let mut lost_on: Option<String> = None;
        // One id for every attempt: a partition that applied an earlier one answers as it did then.
        let request_id = self.ids.next();
        loop {
            let cause = match self.attempt(partition, command, request_id, deadline).await {
                Attempt::Done(result) => return result,
                Attempt::Retry(cause) => cause,
                Attempt::Lost { broker, cause } => {
                    if let Some(first) = lost_on.take().filter(|first| *first != broker) {
                        tracing::warn!(partition, %first, second = %broker, command = command.name(), "not retrying a command that two brokers failed on");
                        return Err(DispatchError::FailedTwice { partition, first, second: broker });
                    }
                    lost_on = Some(broker);
                    cause
                }
            };
            self.cluster.request_refresh();
            if Instant::now() + backoff >= deadline {
                return Err(match lost_on {
                    Some(_) => DispatchError::OutcomeUnknown { partition, cause },
                    None => DispatchError::Unavailable { partition, cause },
                });
            }
            tracing::debug!(partition, %cause, ?backoff, "retrying on the current leader");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn attempt(
        &self,
        partition: u32,
        command: &ClientCommand,
        request_id: RequestId,
        deadline: Instant,
    ) -> Attempt {
        let view = self.cluster.view();
        let Some(index) = view.leader(partition) else {
            return Attempt::Retry(if view.partitions_count == 0 {
                "no broker has answered the gateway's topology queries yet".into()
            } else {
                format!("no reachable broker currently leads partition {partition}")
            });
        };
        let broker = self.cluster.broker(index);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut request = tonic::Request::new(CommandEnvelope {
            partition_id: partition,
            // Encoded per attempt, straight into the envelope the generated client takes by
            // value: one copy of large payloads (resources, variables) per attempt, no more.
            payload: encode(command),
            request_id,
        });
        request.set_timeout(remaining);
        let mut client = broker.client.clone();
        let answer = match tokio::time::timeout_at(deadline, client.execute(request)).await {
            Err(_) => return Attempt::Done(Err(DispatchError::Timeout { partition, after: remaining })),
            Ok(answer) => answer,
        };
        match answer {
            Ok(response) => match decode::<BrokerReply>(&response.into_inner().payload) {
                Ok(Ok(result)) => Attempt::Done(Ok(result)),
                Ok(Err(error)) => classify_broker_error(error, &broker.addr),
                Err(malformed) => Attempt::Done(Err(malformed.into())),
            },
            Err(status) => classify_status(partition, status, &broker.addr, remaining),
        }
    }
}

fn classify_broker_error(error: BrokerError, broker: &str) -> Attempt {
    match error {
        BrokerError::NotLeader { .. } | BrokerError::PartitionNotFound { .. } | BrokerError::ShuttingDown => {
            Attempt::Retry(format!("broker {broker}: {error}"))
        }
        other => Attempt::Done(Err(other.into())),
    }
}

fn classify_status(partition: u32, status: tonic::Status, broker: &str, remaining: Duration) -> Attempt {
    match status.code() {
        // Connection refused or reset, broker restarting: the command may go elsewhere.
        tonic::Code::Unavailable => Attempt::Retry(format!("cannot reach broker {broker}: {}", status.message())),
        // The connection broke mid-call (the broker died): tonic reports the transport error as
        // UNKNOWN with its cause attached, which a broker's own answers never carry.
        tonic::Code::Unknown if std::error::Error::source(&status).is_some() => Attempt::Lost {
            broker: broker.to_owned(),
            cause: format!("lost the connection to broker {broker}: {}", status.message()),
        },
        // A tonic broker answers CANCELLED ("Timeout expired") when the deadline this gateway
        // sent along in `grpc-timeout` passes, usually just before the gateway's own timer fires.
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            Attempt::Done(Err(DispatchError::Timeout { partition, after: remaining }))
        }
        tonic::Code::ResourceExhausted => {
            Attempt::Done(Err(BrokerError::Backpressure { partition_id: partition }.into()))
        }
        _ => Attempt::Done(Err(DispatchError::Rpc { broker: broker.to_owned(), status: Box::new(status) })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_distinct_and_never_zero_even_when_the_count_wraps() {
        let ids = RequestIds { start: u64::MAX - 1, count: AtomicU64::new(0) };
        assert_eq!([ids.next(), ids.next(), ids.next()], [u64::MAX - 1, u64::MAX, 1]);
        let (one, two) = (RequestIds::new(), RequestIds::new());
        assert_ne!(one.start, two.start, "every dispatcher starts counting somewhere else");
    }

    #[test]
    fn a_connection_lost_mid_call_is_retried_but_a_broker_answering_unknown_is_not() {
        let lost = tonic::Status::from_error(Box::new(std::fmt::Error));
        assert_eq!(lost.code(), tonic::Code::Unknown);
        assert!(matches!(classify_status(1, lost, "b0", Duration::from_secs(1)), Attempt::Lost { .. }));
        let answered = tonic::Status::unknown("the broker said so");
        assert!(matches!(classify_status(1, answered, "b0", Duration::from_secs(1)), Attempt::Done(Err(_))));
    }
}
