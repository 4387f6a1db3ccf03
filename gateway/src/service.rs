//! The `gateway_protocol.Gateway` gRPC service: validate, route, dispatch, answer.
//!
//! Each RPC picks the partition that owns its request, which is what makes the gateway
//! stateless: deployments go to the deployment partition (which distributes them), new
//! instances round-robin over all partitions, anything carrying a key goes to the partition encoded
//! in the key, and messages go to the partition chosen by hashing their correlation key, so that a
//! message and the subscriptions waiting for it always meet on one partition.

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use waggle_protocol::{
    command::{AwaitResult, BrokerError, ClientCommand, CommandResult},
    gateway::{self as pb, gateway_server::Gateway, partition},
    key::{message_partition, partition_of},
    topology::{PartitionHealth, PartitionRole},
};

use crate::{
    cluster::{split_host_port, Cluster},
    dispatch::{DispatchError, Dispatcher},
    jobs::{JobActivator, JobSignals, STREAM_BATCH},
    translate, GatewayConfig,
};

/// The partition that receives deployments and distributes them to the others.
pub const DEPLOYMENT_PARTITION: u32 = 1;
/// The partition that receives signal broadcasts.
pub const SIGNAL_PARTITION: u32 = 1;
/// How long a command may take, including retries while leadership moves (Zeebe's default).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait a client can ask for; longer `requestTimeout`s are capped to it.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 60 * 60);
/// How long the Topology RPC waits for the first answers from the brokers after start-up.
const FIRST_TOPOLOGY_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Translate(#[from] translate::TranslateError),
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    #[error("no {entity} with key {key} exists: the key belongs to no partition of this cluster (it has {partitions} partitions)")]
    UnknownKey { entity: &'static str, key: i64, partitions: u32 },
    #[error("{rpc} is not supported by Waggle yet")]
    Unimplemented { rpc: &'static str },
    #[error("the process instance did not complete within the requestTimeout of {} ms; it was created and keeps running", .after.as_millis())]
    ResultTimeout { after: Duration },
}

type ServiceResult<T> = Result<Response<T>, Status>;

pub struct GatewayService {
    version: String,
    default_long_poll: Duration,
    dispatcher: Dispatcher,
    jobs: Arc<JobActivator>,
    next_partition: AtomicU32,
}

impl GatewayService {
    pub fn new(
        config: GatewayConfig,
        cluster: Arc<Cluster>,
        signals: Arc<JobSignals>,
        shutdown: CancellationToken,
    ) -> GatewayService {
        let dispatcher = Dispatcher::new(cluster, shutdown.clone());
        GatewayService {
            version: config.version,
            default_long_poll: config.default_long_poll,
            jobs: JobActivator::new(dispatcher.clone(), signals, shutdown),
            dispatcher,
            next_partition: AtomicU32::new(0),
        }
    }

    async fn run(
        &self,
        partition: u32,
        command: &ClientCommand,
        deadline: Instant,
    ) -> Result<CommandResult, ServiceError> {
        Ok(self.dispatcher.execute(partition, command, deadline).await?)
    }

    /// The partition that owns `key`, or NOT_FOUND naming the key when no partition could have
    /// issued it.
    async fn key_partition(&self, entity: &'static str, key: i64, deadline: Instant) -> Result<u32, ServiceError> {
        let partitions = self.dispatcher.partitions_count(deadline).await?;
        match partition_of(key) {
            Some(partition) if partition <= partitions => Ok(partition),
            _ => Err(ServiceError::UnknownKey { entity, key, partitions }),
        }
    }

    async fn run_keyed(
        &self,
        entity: &'static str,
        key: i64,
        command: ClientCommand,
        deadline: Instant,
    ) -> Result<CommandResult, ServiceError> {
        let partition = self.key_partition(entity, key, deadline).await?;
        self.run(partition, &command, deadline).await
    }

    /// The next partition in turn that has a known leader, so that new instances keep being
    /// created on the healthy partitions while one partition elects a new leader.
    async fn round_robin_partition(&self, deadline: Instant) -> Result<u32, ServiceError> {
        let partitions = self.dispatcher.partitions_count(deadline).await?;
        let view = self.dispatcher.cluster().view();
        let first = self.next_partition.fetch_add(1, Ordering::Relaxed);
        let led = (0..partitions)
            .map(|offset| first.wrapping_add(offset) % partitions + 1)
            .find(|&partition| view.leader(partition).is_some());
        Ok(led.unwrap_or(first % partitions + 1))
    }

    async fn topology_response(&self) -> pb::TopologyResponse {
        let cluster = self.dispatcher.cluster();
        // Topology is rare and clients act on it (e.g. wait for a leader at start-up), so it answers
        // from a fresh view rather than one up to a refresh interval old.
        let mut views = cluster.subscribe();
        views.borrow_and_update();
        cluster.request_refresh();
        let _ = tokio::time::timeout(FIRST_TOPOLOGY_WAIT, views.changed()).await;
        let view = cluster.view();
        let brokers = view
            .brokers
            .iter()
            .zip(cluster.brokers())
            .filter_map(|(state, conn)| {
                let state = state.as_ref()?;
                let addr = if state.info.command_addr.is_empty() { &conn.addr } else { &state.info.command_addr };
                let (host, port) = split_host_port(addr).unwrap_or((addr.as_str(), 0));
                let partitions = state
                    .info
                    .partitions
                    .iter()
                    .map(|p| {
                        let (role, health) = if state.reachable {
                            (role(p.role), health(p.health))
                        } else {
                            // What an unreachable broker last said no longer holds.
                            (partition::PartitionBrokerRole::Inactive, partition::PartitionBrokerHealth::Dead)
                        };
                        pb::Partition { partition_id: p.partition_id as i32, role: role as i32, health: health as i32 }
                    })
                    .collect();
                Some(pb::BrokerInfo {
                    node_id: state.info.node_id as i32,
                    host: host.to_owned(),
                    port: i32::from(port),
                    partitions,
                    version: state.info.version.clone(),
                })
            })
            .collect();
        pb::TopologyResponse {
            brokers,
            cluster_size: view.cluster_size as i32,
            partitions_count: view.partitions_count as i32,
            replication_factor: view.replication_factor as i32,
            gateway_version: self.version.clone(),
        }
    }

    fn unimplemented<T>(rpc: &'static str) -> ServiceResult<T> {
        Err(ServiceError::Unimplemented { rpc }.into())
    }
}

fn role(role: PartitionRole) -> partition::PartitionBrokerRole {
    match role {
        PartitionRole::Leader => partition::PartitionBrokerRole::Leader,
        PartitionRole::Follower => partition::PartitionBrokerRole::Follower,
        PartitionRole::Inactive => partition::PartitionBrokerRole::Inactive,
    }
}

fn health(health: PartitionHealth) -> partition::PartitionBrokerHealth {
    match health {
        PartitionHealth::Healthy => partition::PartitionBrokerHealth::Healthy,
        PartitionHealth::Unhealthy => partition::PartitionBrokerHealth::Unhealthy,
        PartitionHealth::Dead => partition::PartitionBrokerHealth::Dead,
    }
}

/// When to give up on a request: after `limit`, or a little before the deadline the client set
/// (gRPC's `grpc-timeout` header), so that the client learns why rather than only that time ran out.
fn request_deadline<T>(request: &Request<T>, limit: Duration) -> Instant {
    let client = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map(|t| t - t / 20);
    Instant::now() + client.map_or(limit, |t| t.min(limit))
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// A client-supplied wait in ms as a duration, capped to [`MAX_WAIT`].
fn wait(millis: i64) -> Duration {
    Duration::from_millis(millis.unsigned_abs()).min(MAX_WAIT)
}

fn ok<T>(result: Result<T, ServiceError>) -> ServiceResult<T> {
    result.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl Gateway for GatewayService {
    type ActivateJobsStream = ReceiverStream<Result<pb::ActivateJobsResponse, Status>>;
    type StreamActivatedJobsStream = ReceiverStream<Result<pb::ActivatedJob, Status>>;

    async fn activate_jobs(
        &self,
        request: Request<pb::ActivateJobsRequest>,
    ) -> ServiceResult<Self::ActivateJobsStream> {
        let request = request.into_inner();
        let long_poll = match request.request_timeout {
            0 => Some(self.default_long_poll),
            t if t < 0 => None,
            t => Some(wait(t)),
        };
        let command = translate::activate_jobs(request)?;
        Ok(Response::new(self.jobs.activate_jobs(command, long_poll)))
    }

    async fn stream_activated_jobs(
        &self,
        request: Request<pb::StreamActivatedJobsRequest>,
    ) -> ServiceResult<Self::StreamActivatedJobsStream> {
        let command = translate::stream_activated_jobs(request.into_inner(), STREAM_BATCH)?;
        Ok(Response::new(self.jobs.stream_jobs(command)))
    }

    async fn cancel_process_instance(
        &self,
        request: Request<pb::CancelProcessInstanceRequest>,
    ) -> ServiceResult<pb::CancelProcessInstanceResponse> {
        let deadline = request_deadline(&request, REQUEST_TIMEOUT);
        let key = request.into_inner().process_instance_key;
        let command = ClientCommand::CancelProcessInstance { process_instance_key: key };
        ok(async {
            let result = self.run_keyed("process instance", key, command, deadline).await?;
            translate::done("CancelProcessInstance", result)?;
            Ok(pb::CancelProcessInstanceResponse {})
        }
        .await)
    }

    async fn complete_job(&self, request: Request<pb::CompleteJobRequest>) -> ServiceResult<pb::CompleteJobResponse> {
        let deadline = request_deadline(&request, REQUEST_TIMEOUT);
        let request = request.into_inner();
        let key = request.job_key;
        let command = translate::complete_job(request)?;
        ok(async {
            let result = self.run_keyed("job", key, command, deadline).await?;
            translate::done("CompleteJob", result)?;
            Ok(pb::CompleteJobResponse {})
        }
        .await)
    }

    async fn create_process_instance(
        &self,
        request: Request<pb::CreateProcessInstanceRequest>,
    ) -> ServiceResult<pb::CreateProcessInstanceResponse> {
        let deadline = request_deadline(&request, REQUEST_TIMEOUT);
        let command = ClientCommand::CreateProcessInstance(translate::create_process_instance(
            "CreateProcessInstance",
            request.into_inner(),
            None,
        )?);
        ok(async {
            let partition = self.round_robin_partition(deadline).await?;
            let result = self.run(partition, &command, deadline).await?;
            Ok(translate::create_process_instance_response(result)?)
        }
        .await)
    }

    async fn create_process_instance_with_result(
        &self,
        request: Request<pb::CreateProcessInstanceWithResultRequest>,
    ) -> ServiceResult<pb::CreateProcessInstanceWithResultResponse> {
        const RPC: &str = "CreateProcessInstanceWithResult";
        let timeout = translate::result_timeout(RPC, request.get_ref().request_timeout)?.map_or(REQUEST_TIMEOUT, wait);
        let deadline = request_deadline(&request, timeout);
        let request = request.into_inner();
        let command = ClientCommand::CreateProcessInstance(translate::create_process_instance(
            RPC,
            request.request.unwrap_or_default(),
            Some(AwaitResult { fetch_variables: request.fetch_variables }),
        )?);
        ok(async {
            let partition = self.round_robin_partition(deadline).await?;
            let result = match self.run(partition, &command, deadline).await {
                Err(ServiceError::Dispatch(
                    DispatchError::Timeout { .. } | DispatchError::Broker(BrokerError::Timeout { .. }),
                )) => return Err(ServiceError::ResultTimeout { after: timeout }),
                other => other?,
            };
            Ok(translate::create_process_instance_with_result_response(result)?)
        }
        .await)
    }

    async fn evaluate_decision(
        &self,
        _: Request<pb::EvaluateDecisionRequest>,
    ) -> ServiceResult<pb::EvaluateDecisionResponse> {
        Self::unimplemented("EvaluateDecision")
    }

    async fn deploy_process(
        &self,
        request: Request<pb::DeployProcessRequest>,
    ) -> ServiceResult<pb::DeployProcessResponse> {
        let deadline = request_deadline(&request, REQUEST_TIMEOUT);
        let command = translate::deploy_process(request.into_inner())?;
        ok(async {
            let result = self.run(DEPLOYMENT_PARTITION, &command, deadline).await?;
            Ok(translate::deploy_process_response(result)?)
        }
        .await)
    }

    async fn deploy_resource(
        &self,
        request: Request<pb::DeployResourceRequest>,
    ) -> ServiceResult<pb::DeployResourceResponse> {
        let deadline = request_deadline(&request, REQUEST_TIMEOUT);
        let command = translate::deploy_resource(request.into_inner())?;
        ok(async {
            let result = self.run(DEPLOYMENT_PARTITION, &command, deadline).await?;
            Ok(translate::deploy_resource_response(result)?)
        }
        .await)
    }

    async fn fail_job(&self, request: Request<pb::FailJobRequest>) -> ServiceResult<pb::FailJobResponse> {
        let deadline = request_deadline(&request, REQUEST_TIMEOUT);
        let request = request.into_inner();
        let key = request.job_key;
        let command = translate::fail_job(request)?;
        ok(async {
            let result = self.run_keyed("job", key, command, deadline).await?;
            translate::done("FailJob", result)?;
            Ok(pb::FailJobResponse {})
        }
        .await)
    }

    async fn throw_error(&self, request: Request<pb::ThrowErrorRequest>) -> ServiceResult<pb::ThrowErrorResponse> {
        let deadline = request_deadline(&request, REQUEST_TIMEOUT);
        let request = request.into_inner();
        let key = request.job_key;
        let command = translate::throw_error(request)?;
        ok(async {
            let result = self.run_keyed("job", key, command, deadline).await?;
            translate::done("ThrowError", result)?;
            Ok(pb::ThrowErrorResponse {})
        }
        .await)
    }

    async fn publish_message(
        &self,
        request: Request<pb::PublishMessageRequest>,
    ) -> ServiceResult<pb::PublishMessageResponse> {
        let deadline = request_deadline(&request, REQUEST_TIMEOUT);
        let message = translate::publish_message(request.into_inner())?;
        ok(async {
            let partitions = self.dispatcher.partitions_count(deadline).await?;
            let partition = message_partition(&message.correlation_key, partitions);
            let tenant_id = message.tenant_id.clone();
            let command = ClientCommand::PublishMessage(message);
            let result = self.run(partition, &command, deadline).await?;
            let key = translate::done("PublishMessage", result)?;
            Ok(pb::PublishMessageResponse { key, tenant_id })
        }
        .await)
    }

    async fn resolve_incident(
        &self,
        request: Request<pb::ResolveIncidentRequest>,
    ) -> ServiceResult<pb::ResolveIncidentResponse> {
        let deadline = request_deadline(&request, REQUEST_TIMEOUT);
        let key = request.into_inner().incident_key;
        let command = ClientCommand::ResolveIncident { incident_key: key };
        ok(async {
            let result = self.run_keyed("incident", key, command, deadline).await?;
            translate::done("ResolveIncident", result)?;
            Ok(pb::ResolveIncidentResponse {})
        }
        .await)
    }

    async fn set_variables(
        &self,
        request: Request<pb::SetVariablesRequest>,
    ) -> ServiceResult<pb::SetVariablesResponse> {
        let deadline = request_deadline(&request, REQUEST_TIMEOUT);
        let request = request.into_inner();
        let key = request.element_instance_key;
        let command = translate::set_variables(request)?;
        ok(async {
            let result = self.run_keyed("element instance", key, command, deadline).await?;
            let key = translate::done("SetVariables", result)?;
            Ok(pb::SetVariablesResponse { key })
        }
        .await)
    }

    async fn topology(&self, _: Request<pb::TopologyRequest>) -> ServiceResult<pb::TopologyResponse> {
        Ok(Response::new(self.topology_response().await))
    }

    async fn update_job_retries(
        &self,
        request: Request<pb::UpdateJobRetriesRequest>,
    ) -> ServiceResult<pb::UpdateJobRetriesResponse> {
        let deadline = request_deadline(&request, REQUEST_TIMEOUT);
        let request = request.into_inner();
        let key = request.job_key;
        let command = translate::update_job_retries(request)?;
        ok(async {
            let result = self.run_keyed("job", key, command, deadline).await?;
            translate::done("UpdateJobRetries", result)?;
            Ok(pb::UpdateJobRetriesResponse {})
        }
        .await)
    }

    async fn modify_process_instance(
        &self,
        _: Request<pb::ModifyProcessInstanceRequest>,
    ) -> ServiceResult<pb::ModifyProcessInstanceResponse> {
        Self::unimplemented("ModifyProcessInstance")
    }

    async fn migrate_process_instance(
        &self,
        _: Request<pb::MigrateProcessInstanceRequest>,
    ) -> ServiceResult<pb::MigrateProcessInstanceResponse> {
        Self::unimplemented("MigrateProcessInstance")
    }

    async fn update_job_timeout(
        &self,
        request: Request<pb::UpdateJobTimeoutRequest>,
    ) -> ServiceResult<pb::UpdateJobTimeoutResponse> {
        let deadline = request_deadline(&request, REQUEST_TIMEOUT);
        let request = request.into_inner();
        let key = request.job_key;
        let command = translate::update_job_timeout(request)?;
        ok(async {
            let result = self.run_keyed("job", key, command, deadline).await?;
            translate::done("UpdateJobTimeout", result)?;
            Ok(pb::UpdateJobTimeoutResponse {})
        }
        .await)
    }

    async fn delete_resource(
        &self,
        _: Request<pb::DeleteResourceRequest>,
    ) -> ServiceResult<pb::DeleteResourceResponse> {
        Self::unimplemented("DeleteResource")
    }

    async fn broadcast_signal(
        &self,
        request: Request<pb::BroadcastSignalRequest>,
    ) -> ServiceResult<pb::BroadcastSignalResponse> {
        let deadline = request_deadline(&request, REQUEST_TIMEOUT);
        let request = request.into_inner();
        let tenant_id = translate::tenant(request.tenant_id.clone());
        let command = translate::broadcast_signal(request)?;
        ok(async {
            let result = self.run(SIGNAL_PARTITION, &command, deadline).await?;
            let key = translate::done("BroadcastSignal", result)?;
            Ok(pb::BroadcastSignalResponse { key, tenant_id })
        }
        .await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_header_values_are_parsed() {
        assert_eq!(parse_grpc_timeout("15S"), Some(Duration::from_secs(15)));
        assert_eq!(parse_grpc_timeout("2500m"), Some(Duration::from_millis(2500)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }

    #[test]
    fn client_deadline_shortens_but_never_extends_the_request() {
        let mut request = Request::new(());
        request.set_timeout(Duration::from_secs(2));
        let until = request_deadline(&request, REQUEST_TIMEOUT) - Instant::now();
        assert!(until <= Duration::from_millis(1900) && until > Duration::from_millis(1500), "{until:?}");
        request.set_timeout(Duration::from_secs(600));
        let until = request_deadline(&request, REQUEST_TIMEOUT) - Instant::now();
        assert!(until <= REQUEST_TIMEOUT && until > REQUEST_TIMEOUT - Duration::from_secs(1));
        let until = request_deadline(&Request::new(()), REQUEST_TIMEOUT) - Instant::now();
        assert!(until > REQUEST_TIMEOUT - Duration::from_secs(1));
    }
}
