//! Client requests to engine commands and engine results to client responses, field for field.
//!
//! Everything a gateway can check without state is checked here, before a request costs a
//! round trip and a log entry: required fields, ranges, and that variables are JSON objects. The
//! messages name the RPC, the field and what a valid value looks like, because they are what a
//! user sees in their client's exception. Strings and byte buffers are moved out of the request,
//! never copied.

use serde::de::IgnoredAny;
use waggle_protocol::{
    command::{
        self, ActivateJobs, AwaitResult, ClientCommand, CommandResult, CreateProcessInstance, PublishMessage,
        DEFAULT_TENANT,
    },
    gateway as pb,
    record::{DeploymentResource, ProcessMetadata, RejectionType},
};

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum TranslateError {
    /// The client sent a value the gateway can tell is wrong.
    #[error("{rpc}.{field} {reason}")]
    Invalid { rpc: &'static str, field: &'static str, reason: String },
    /// The client asked for something Waggle does not do yet.
    #[error("{rpc}.{field} is not supported by Waggle yet; {hint}")]
    Unsupported { rpc: &'static str, field: &'static str, hint: &'static str },
    /// The engine refused the command.
    #[error("{reason}")]
    Rejected { kind: RejectionType, reason: String },
    /// The broker answered with a result that does not belong to the command.
    #[error("the broker answered {rpc} with an unexpected result: {result}")]
    UnexpectedResult { rpc: &'static str, result: String },
}

type Result<T, E = TranslateError> = std::result::Result<T, E>;

fn invalid(rpc: &'static str, field: &'static str, reason: impl Into<String>) -> TranslateError {
    TranslateError::Invalid { rpc, field, reason: reason.into() }
}

/// Checks that `value` holds a JSON object and returns it, with blank meaning "no variables".
pub fn variables(rpc: &'static str, field: &'static str, value: String) -> Result<String> {
    let trimmed = value.trim_start();
    if trimmed.trim_end().is_empty() {
        return Ok("{}".to_owned());
    }
    if let Err(e) = serde_json::from_str::<IgnoredAny>(&value) {
        return Err(invalid(
            rpc,
            field,
            format!("must be a JSON object such as {{\"amount\": 42}}, but is not valid JSON: {e}"),
        ));
    }
    if !trimmed.starts_with('{') {
        let kind = match trimmed.as_bytes()[0] {
            b'[' => "an array",
            b'"' => "a string",
            b'n' => "null",
            b't' | b'f' => "a boolean",
            _ => "a number",
        };
        return Err(invalid(rpc, field, format!("must be a JSON object such as {{\"amount\": 42}}, but is {kind}")));
    }
    Ok(value)
}

/// The tenant a request names, Zeebe's default tenant when it names none.
pub fn tenant(tenant_id: String) -> String {
    if tenant_id.is_empty() {
        DEFAULT_TENANT.to_owned()
    } else {
        tenant_id
    }
}

fn tenants(tenant_ids: Vec<String>) -> Vec<String> {
    if tenant_ids.is_empty() {
        vec![DEFAULT_TENANT.to_owned()]
    } else {
        tenant_ids.into_iter().map(tenant).collect()
    }
}

fn non_empty(rpc: &'static str, field: &'static str, value: &str, what: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(invalid(rpc, field, format!("must not be empty: {what}")));
    }
    Ok(())
}

fn resources(rpc: &'static str, resources: Vec<DeploymentResource>) -> Result<Vec<DeploymentResource>> {
    if resources.is_empty() {
        return Err(invalid(rpc, "resources", "must contain at least one resource (e.g. a .bpmn file)"));
    }
    for resource in &resources {
        non_empty(rpc, "resources.name", &resource.name, "give every resource a file name such as order.bpmn")?;
        if resource.content.is_empty() {
            return Err(invalid(rpc, "resources.content", format!("of resource '{}' is empty", resource.name)));
        }
    }
    Ok(resources)
}

pub fn deploy_resource(request: pb::DeployResourceRequest) -> Result<ClientCommand> {
    let resources =
        request.resources.into_iter().map(|r| DeploymentResource { name: r.name, content: r.content }).collect();
    Ok(ClientCommand::Deploy {
        resources: self::resources("DeployResource", resources)?,
        tenant_id: tenant(request.tenant_id),
    })
}

pub fn deploy_process(request: pb::DeployProcessRequest) -> Result<ClientCommand> {
    let resources =
        request.processes.into_iter().map(|p| DeploymentResource { name: p.name, content: p.definition }).collect();
    Ok(ClientCommand::Deploy {
        resources: self::resources("DeployProcess", resources)?,
        tenant_id: DEFAULT_TENANT.to_owned(),
    })
}

pub fn create_process_instance(
    rpc: &'static str,
    request: pb::CreateProcessInstanceRequest,
    await_result: Option<AwaitResult>,
) -> Result<CreateProcessInstance> {
    if !request.start_instructions.is_empty() {
        return Err(TranslateError::Unsupported {
            rpc,
            field: "startInstructions",
            hint: "omit them to start at the process's none start event",
        });
    }
    if request.process_definition_key <= 0 && request.bpmn_process_id.trim().is_empty() {
        return Err(invalid(
            rpc,
            "bpmnProcessId",
            "must be set when processDefinitionKey is not: name the process to start",
        ));
    }
    if request.process_definition_key <= 0 && request.version < -1 {
        return Err(invalid(
            rpc,
            "version",
            format!("is {}; use -1 for the latest version or a deployed version number", request.version),
        ));
    }
    Ok(CreateProcessInstance {
        process_definition_key: request.process_definition_key,
        bpmn_process_id: request.bpmn_process_id,
        version: request.version,
        variables: variables(rpc, "variables", request.variables)?,
        tenant_id: tenant(request.tenant_id),
        await_result,
    })
}

/// `CreateProcessInstanceWithResult.requestTimeout`: `None` asks for the gateway's default.
pub fn result_timeout(rpc: &'static str, request_timeout: i64) -> Result<Option<i64>> {
    match request_timeout {
        0 => Ok(None),
        t if t < 0 => Err(invalid(
            rpc,
            "requestTimeout",
            format!(
                "must not be negative, but is {t} (ms to wait for the instance to complete; 0 uses the gateway's default)"
            ),
        )),
        t => Ok(Some(t)),
    }
}

pub fn activate_jobs(request: pb::ActivateJobsRequest) -> Result<ActivateJobs> {
    const RPC: &str = "ActivateJobs";
    if request.max_jobs_to_activate < 1 {
        return Err(invalid(
            RPC,
            "maxJobsToActivate",
            format!("must be at least 1, but is {}", request.max_jobs_to_activate),
        ));
    }
    job_activation(
        RPC,
        request.r#type,
        request.worker,
        request.timeout,
        request.max_jobs_to_activate,
        request.fetch_variable,
        request.tenant_ids,
    )
}

/// The activation command that `StreamActivatedJobs` repeats, asking for `batch` jobs at a time.
pub fn stream_activated_jobs(request: pb::StreamActivatedJobsRequest, batch: i32) -> Result<ActivateJobs> {
    job_activation(
        "StreamActivatedJobs",
        request.r#type,
        request.worker,
        request.timeout,
        batch,
        request.fetch_variable,
        request.tenant_ids,
    )
}

fn job_activation(
    rpc: &'static str,
    job_type: String,
    worker: String,
    timeout: i64,
    max_jobs_to_activate: i32,
    fetch_variables: Vec<String>,
    tenant_ids: Vec<String>,
) -> Result<ActivateJobs> {
    non_empty(rpc, "type", &job_type, "name the job type the worker handles (zeebe:taskDefinition type)")?;
    if timeout < 1 {
        return Err(invalid(
            rpc,
            "timeout",
            format!(
                "must be greater than 0 ms (how long an activated job stays locked to this worker), but is {timeout}"
            ),
        ));
    }
    Ok(ActivateJobs {
        job_type,
        worker,
        timeout,
        max_jobs_to_activate,
        fetch_variables,
        tenant_ids: tenants(tenant_ids),
    })
}

pub fn complete_job(request: pb::CompleteJobRequest) -> Result<ClientCommand> {
    Ok(ClientCommand::CompleteJob {
        job_key: request.job_key,
        variables: variables("CompleteJob", "variables", request.variables)?,
    })
}

pub fn fail_job(request: pb::FailJobRequest) -> Result<ClientCommand> {
    const RPC: &str = "FailJob";
    if request.retries < 0 {
        return Err(invalid(
            RPC,
            "retries",
            format!("must not be negative, but is {}; use 0 to raise an incident", request.retries),
        ));
    }
    if request.retry_back_off < 0 {
        return Err(invalid(
            RPC,
            "retryBackOff",
            format!(
                "must not be negative, but is {} (ms to wait before the job can be retried)",
                request.retry_back_off
            ),
        ));
    }
    Ok(ClientCommand::FailJob {
        job_key: request.job_key,
        retries: request.retries,
        error_message: request.error_message,
        retry_backoff: request.retry_back_off,
        variables: variables(RPC, "variables", request.variables)?,
    })
}

pub fn throw_error(request: pb::ThrowErrorRequest) -> Result<ClientCommand> {
    const RPC: &str = "ThrowError";
    non_empty(RPC, "errorCode", &request.error_code, "it is matched against the error events' error codes")?;
    Ok(ClientCommand::ThrowError {
        job_key: request.job_key,
        error_code: request.error_code,
        error_message: request.error_message,
        variables: variables(RPC, "variables", request.variables)?,
    })
}

pub fn update_job_retries(request: pb::UpdateJobRetriesRequest) -> Result<ClientCommand> {
    if request.retries < 1 {
        return Err(invalid("UpdateJobRetries", "retries", format!("must be at least 1, but is {}", request.retries)));
    }
    Ok(ClientCommand::UpdateJobRetries { job_key: request.job_key, retries: request.retries })
}

pub fn update_job_timeout(request: pb::UpdateJobTimeoutRequest) -> Result<ClientCommand> {
    if request.timeout < 0 {
        return Err(invalid(
            "UpdateJobTimeout",
            "timeout",
            format!("must not be negative, but is {} (ms from now until the job's new deadline)", request.timeout),
        ));
    }
    Ok(ClientCommand::UpdateJobTimeout { job_key: request.job_key, timeout: request.timeout })
}

pub fn publish_message(request: pb::PublishMessageRequest) -> Result<PublishMessage> {
    const RPC: &str = "PublishMessage";
    non_empty(RPC, "name", &request.name, "give the message name the catch events wait for")?;
    if request.time_to_live < 0 {
        return Err(invalid(
            RPC,
            "timeToLive",
            format!(
                "must not be negative, but is {} (ms the message stays buffered; 0 = not buffered)",
                request.time_to_live
            ),
        ));
    }
    Ok(PublishMessage {
        name: request.name,
        correlation_key: request.correlation_key,
        time_to_live: request.time_to_live,
        message_id: request.message_id,
        variables: variables(RPC, "variables", request.variables)?,
        tenant_id: tenant(request.tenant_id),
    })
}

pub fn broadcast_signal(request: pb::BroadcastSignalRequest) -> Result<ClientCommand> {
    const RPC: &str = "BroadcastSignal";
    non_empty(RPC, "signalName", &request.signal_name, "give the signal name the catch events wait for")?;
    Ok(ClientCommand::BroadcastSignal {
        signal_name: request.signal_name,
        variables: variables(RPC, "variables", request.variables)?,
        tenant_id: tenant(request.tenant_id),
    })
}

pub fn set_variables(request: pb::SetVariablesRequest) -> Result<ClientCommand> {
    Ok(ClientCommand::SetVariables {
        element_instance_key: request.element_instance_key,
        variables: variables("SetVariables", "variables", request.variables)?,
        local: request.local,
    })
}

/// Turns an engine rejection into an error and any other result into `Ok`.
fn accepted(result: CommandResult) -> Result<CommandResult> {
    match result {
        CommandResult::Rejected { kind, reason } => Err(TranslateError::Rejected { kind, reason }),
        other => Ok(other),
    }
}

fn unexpected(rpc: &'static str, result: CommandResult) -> TranslateError {
    let result = match result {
        CommandResult::Rejected { .. } => "a rejection",
        CommandResult::Deployed { .. } => "a deployment",
        CommandResult::ProcessInstanceCreated(_) => "a created process instance",
        CommandResult::ProcessInstanceCompleted { .. } => "a completed process instance",
        CommandResult::JobsActivated { .. } => "activated jobs",
        CommandResult::Done { .. } => "a plain acknowledgement",
    };
    TranslateError::UnexpectedResult { rpc, result: result.to_owned() }
}

fn process_metadata(process: ProcessMetadata, tenant_id: &str) -> pb::ProcessMetadata {
    pb::ProcessMetadata {
        bpmn_process_id: process.bpmn_process_id,
        version: process.version,
        process_definition_key: process.process_definition_key,
        resource_name: process.resource_name,
        tenant_id: tenant_id.to_owned(),
    }
}

pub fn deploy_resource_response(result: CommandResult) -> Result<pb::DeployResourceResponse> {
    match accepted(result)? {
        CommandResult::Deployed { key, processes, tenant_id } => Ok(pb::DeployResourceResponse {
            key,
            deployments: processes
                .into_iter()
                .map(|p| pb::Deployment {
                    metadata: Some(pb::deployment::Metadata::Process(process_metadata(p, &tenant_id))),
                })
                .collect(),
            tenant_id,
        }),
        other => Err(unexpected("DeployResource", other)),
    }
}

pub fn deploy_process_response(result: CommandResult) -> Result<pb::DeployProcessResponse> {
    match accepted(result)? {
        CommandResult::Deployed { key, processes, tenant_id } => Ok(pb::DeployProcessResponse {
            key,
            processes: processes.into_iter().map(|p| process_metadata(p, &tenant_id)).collect(),
        }),
        other => Err(unexpected("DeployProcess", other)),
    }
}

pub fn create_process_instance_response(result: CommandResult) -> Result<pb::CreateProcessInstanceResponse> {
    match accepted(result)? {
        CommandResult::ProcessInstanceCreated(created) => Ok(pb::CreateProcessInstanceResponse {
            process_definition_key: created.process_definition_key,
            bpmn_process_id: created.bpmn_process_id,
            version: created.version,
            process_instance_key: created.process_instance_key,
            tenant_id: created.tenant_id,
        }),
        other => Err(unexpected("CreateProcessInstance", other)),
    }
}

pub fn create_process_instance_with_result_response(
    result: CommandResult,
) -> Result<pb::CreateProcessInstanceWithResultResponse> {
    match accepted(result)? {
        CommandResult::ProcessInstanceCompleted { instance, variables } => {
            Ok(pb::CreateProcessInstanceWithResultResponse {
                process_definition_key: instance.process_definition_key,
                bpmn_process_id: instance.bpmn_process_id,
                version: instance.version,
                process_instance_key: instance.process_instance_key,
                variables,
                tenant_id: instance.tenant_id,
            })
        }
        other => Err(unexpected("CreateProcessInstanceWithResult", other)),
    }
}

/// The activated jobs of one partition's answer.
pub fn activated_jobs(rpc: &'static str, result: CommandResult) -> Result<Vec<pb::ActivatedJob>> {
    match accepted(result)? {
        CommandResult::JobsActivated { jobs } => Ok(jobs.into_iter().map(activated_job).collect()),
        other => Err(unexpected(rpc, other)),
    }
}

fn activated_job(job: command::ActivatedJob) -> pb::ActivatedJob {
    pb::ActivatedJob {
        key: job.key,
        r#type: job.job_type,
        process_instance_key: job.process_instance_key,
        bpmn_process_id: job.bpmn_process_id,
        process_definition_version: job.process_definition_version,
        process_definition_key: job.process_definition_key,
        element_id: job.element_id,
        element_instance_key: job.element_instance_key,
        custom_headers: job.custom_headers,
        worker: job.worker,
        retries: job.retries,
        deadline: job.deadline,
        variables: job.variables,
        tenant_id: job.tenant_id,
    }
}

/// The key of a command that the engine simply applied.
pub fn done(rpc: &'static str, result: CommandResult) -> Result<i64> {
    match accepted(result)? {
        CommandResult::Done { key } => Ok(key),
        other => Err(unexpected(rpc, other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_variables_mean_an_empty_object() {
        assert_eq!(variables("CompleteJob", "variables", String::new()).unwrap(), "{}");
        assert_eq!(variables("CompleteJob", "variables", " \n".into()).unwrap(), "{}");
    }

    #[test]
    fn object_variables_pass_through_unchanged() {
        let json = r#" {"a": [1, 2], "b": {"c": null}} "#.to_owned();
        assert_eq!(variables("CompleteJob", "variables", json.clone()).unwrap(), json);
    }

    #[test]
    fn variables_that_are_not_an_object_name_the_field_and_what_they_are() {
        let err = variables("CompleteJob", "variables", "[1]".into()).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"CompleteJob.variables must be a JSON object such as {"amount": 42}, but is an array"#
        );
        let err = variables("PublishMessage", "variables", "null".into()).unwrap_err();
        assert!(err.to_string().ends_with("but is null"), "{err}");
        let err = variables("SetVariables", "variables", "{\"a\": ".into()).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "SetVariables.variables must be a JSON object such as {\"amount\": 42}, but is not valid JSON: "
            ),
            "{err}"
        );
        assert!(variables("X", "variables", "{} trailing".into()).is_err());
    }

    #[test]
    fn empty_tenant_becomes_the_default_tenant() {
        let command = broadcast_signal(pb::BroadcastSignalRequest {
            signal_name: "stop".into(),
            variables: String::new(),
            tenant_id: String::new(),
        })
        .unwrap();
        assert_eq!(
            command,
            ClientCommand::BroadcastSignal {
                signal_name: "stop".into(),
                variables: "{}".into(),
                tenant_id: DEFAULT_TENANT.into(),
            }
        );
        let jobs = activate_jobs(pb::ActivateJobsRequest {
            r#type: "pay".into(),
            timeout: 1000,
            max_jobs_to_activate: 5,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(jobs.tenant_ids, vec![DEFAULT_TENANT.to_owned()]);
    }

    #[test]
    fn activate_jobs_is_translated_field_for_field() {
        let jobs = activate_jobs(pb::ActivateJobsRequest {
            r#type: "pay".into(),
            worker: "w1".into(),
            timeout: 30_000,
            max_jobs_to_activate: 7,
            fetch_variable: vec!["amount".into()],
            request_timeout: 5,
            tenant_ids: vec!["acme".into()],
        })
        .unwrap();
        assert_eq!(
            jobs,
            ActivateJobs {
                job_type: "pay".into(),
                worker: "w1".into(),
                timeout: 30_000,
                max_jobs_to_activate: 7,
                fetch_variables: vec!["amount".into()],
                tenant_ids: vec!["acme".into()],
            }
        );
    }

    #[test]
    fn job_activation_rejects_empty_type_bad_maximum_and_bad_timeout() {
        let base = pb::ActivateJobsRequest {
            r#type: "pay".into(),
            timeout: 1000,
            max_jobs_to_activate: 1,
            ..Default::default()
        };
        let field = |request: pb::ActivateJobsRequest| match activate_jobs(request).unwrap_err() {
            TranslateError::Invalid { field, .. } => field,
            other => panic!("{other}"),
        };
        assert_eq!(field(pb::ActivateJobsRequest { r#type: " ".into(), ..base.clone() }), "type");
        assert_eq!(field(pb::ActivateJobsRequest { max_jobs_to_activate: 0, ..base.clone() }), "maxJobsToActivate");
        assert_eq!(field(pb::ActivateJobsRequest { timeout: -1, ..base.clone() }), "timeout");
        let streamed = stream_activated_jobs(
            pb::StreamActivatedJobsRequest { r#type: String::new(), timeout: 1000, ..Default::default() },
            32,
        );
        assert!(matches!(streamed, Err(TranslateError::Invalid { field: "type", .. })));
    }

    #[test]
    fn create_instance_needs_a_process_and_rejects_start_instructions() {
        let request = pb::CreateProcessInstanceRequest {
            bpmn_process_id: "order".into(),
            version: -1,
            variables: r#"{"id": 1}"#.into(),
            ..Default::default()
        };
        let created = create_process_instance(
            "CreateProcessInstanceWithResult",
            request.clone(),
            Some(AwaitResult { fetch_variables: vec!["id".into()] }),
        )
        .unwrap();
        assert_eq!(
            created,
            CreateProcessInstance {
                process_definition_key: 0,
                bpmn_process_id: "order".into(),
                version: -1,
                variables: r#"{"id": 1}"#.into(),
                tenant_id: DEFAULT_TENANT.into(),
                await_result: Some(AwaitResult { fetch_variables: vec!["id".into()] }),
            }
        );
        let missing =
            create_process_instance("CreateProcessInstance", pb::CreateProcessInstanceRequest::default(), None);
        assert!(matches!(missing, Err(TranslateError::Invalid { field: "bpmnProcessId", .. })));
        let with_start = pb::CreateProcessInstanceRequest {
            start_instructions: vec![pb::ProcessInstanceCreationStartInstruction { element_id: "task".into() }],
            ..request
        };
        assert!(matches!(
            create_process_instance("CreateProcessInstance", with_start, None),
            Err(TranslateError::Unsupported { field: "startInstructions", .. })
        ));
    }

    #[test]
    fn negative_durations_and_counts_are_invalid() {
        assert!(fail_job(pb::FailJobRequest { retries: -1, ..Default::default() }).is_err());
        assert!(fail_job(pb::FailJobRequest { retry_back_off: -1, ..Default::default() }).is_err());
        assert!(fail_job(pb::FailJobRequest::default()).is_ok());
        assert!(update_job_retries(pb::UpdateJobRetriesRequest { retries: 0, ..Default::default() }).is_err());
        assert!(update_job_timeout(pb::UpdateJobTimeoutRequest { timeout: -5, ..Default::default() }).is_err());
        let message = pb::PublishMessageRequest { name: "paid".into(), time_to_live: -1, ..Default::default() };
        let err = publish_message(message).unwrap_err();
        assert!(err.to_string().starts_with("PublishMessage.timeToLive must not be negative"), "{err}");
        assert!(publish_message(pb::PublishMessageRequest::default()).is_err());
    }

    #[test]
    fn deployments_need_named_non_empty_resources() {
        let err = deploy_resource(pb::DeployResourceRequest::default()).unwrap_err();
        assert!(matches!(err, TranslateError::Invalid { field: "resources", .. }));
        let empty = pb::DeployResourceRequest {
            resources: vec![pb::Resource { name: "a.bpmn".into(), content: vec![] }],
            tenant_id: String::new(),
        };
        assert_eq!(
            deploy_resource(empty).unwrap_err().to_string(),
            "DeployResource.resources.content of resource 'a.bpmn' is empty"
        );
        let old = deploy_process(pb::DeployProcessRequest {
            processes: vec![pb::ProcessRequestObject { name: "a.bpmn".into(), definition: b"<x/>".to_vec() }],
        })
        .unwrap();
        assert_eq!(
            old,
            ClientCommand::Deploy {
                resources: vec![DeploymentResource { name: "a.bpmn".into(), content: b"<x/>".to_vec() }],
                tenant_id: DEFAULT_TENANT.into(),
            }
        );
    }

    #[test]
    fn deployment_result_lists_every_process_with_the_tenant() {
        let result = CommandResult::Deployed {
            key: 7,
            processes: vec![ProcessMetadata {
                bpmn_process_id: "order".into(),
                version: 2,
                process_definition_key: 9,
                resource_name: "order.bpmn".into(),
                ..Default::default()
            }],
            tenant_id: DEFAULT_TENANT.into(),
        };
        let response = deploy_resource_response(result.clone()).unwrap();
        assert_eq!(response.key, 7);
        assert_eq!(
            response.deployments[0].metadata,
            Some(pb::deployment::Metadata::Process(pb::ProcessMetadata {
                bpmn_process_id: "order".into(),
                version: 2,
                process_definition_key: 9,
                resource_name: "order.bpmn".into(),
                tenant_id: DEFAULT_TENANT.into(),
            }))
        );
        assert_eq!(deploy_process_response(result).unwrap().processes.len(), 1);
    }

    #[test]
    fn rejections_and_mismatched_results_become_errors() {
        let rejected = CommandResult::Rejected { kind: RejectionType::NotFound, reason: "no job with key 5".into() };
        assert_eq!(
            done("CompleteJob", rejected),
            Err(TranslateError::Rejected { kind: RejectionType::NotFound, reason: "no job with key 5".into() })
        );
        assert!(matches!(
            done("CompleteJob", CommandResult::JobsActivated { jobs: vec![] }),
            Err(TranslateError::UnexpectedResult { rpc: "CompleteJob", .. })
        ));
        assert_eq!(done("CompleteJob", CommandResult::Done { key: 5 }), Ok(5));
    }
}
