//! Scenario tests of the processor. Every scenario runs through [`Partition`], which processes like a
//! leader (on an overlay) and applies like a follower, and checks after each command that both give the
//! same state: the determinism the log depends on.

use serde_json::{json, Value as Json};
use waggle_protocol::command::{
    ActivateJobs, ActivatedJob, AwaitResult, ClientCommand, CommandResult, CreateProcessInstance, PublishMessage,
    DEFAULT_TENANT,
};
use waggle_protocol::record::{
    DeploymentResource, ErrorType, IncidentIntent, IncidentRecord, Intent, JobIntent, MessageIntent,
    ProcessInstanceIntent, Record, RecordValue, RejectionType,
};

use super::{Due, Engine, Input, Involved, Output};
use crate::state::tables::{elements, incidents, jobs};
use crate::state::{MemKv, Overlay};

struct Partition {
    leader: Engine,
    follower: Engine,
    state: MemKv,
    now: i64,
    log: Vec<Record>,
}

impl Partition {
    fn new() -> Self {
        Partition {
            leader: Engine::new(1, 1),
            follower: Engine::new(1, 1),
            state: MemKv::new(),
            now: 1_000_000,
            log: vec![],
        }
    }

    fn process(&mut self, input: Input) -> Output {
        let output = process_and_apply(&mut self.leader, &mut self.follower, &mut self.state, input, self.now);
        self.log.extend(output.records.iter().cloned());
        output
    }

    /// What the partition does after processing a command that names `involved` panicked.
    fn processing_failed(&mut self, involved: Involved, message: &str) -> Output {
        let now = self.now;
        let output = lead_and_follow(&mut self.leader, &mut self.follower, &mut self.state, |leader, overlay| {
            leader.record_processing_failure(overlay, involved, message.to_owned(), now)
        });
        self.log.extend(output.records.iter().cloned());
        output
    }

    fn command(&mut self, command: ClientCommand) -> CommandResult {
        self.process(Input::Client(command)).result.expect("client commands are answered")
    }

    fn deploy(&mut self, name: &str, xml: &str) -> CommandResult {
        self.command(ClientCommand::Deploy {
            resources: vec![DeploymentResource { name: name.into(), content: xml.as_bytes().to_vec() }],
            tenant_id: DEFAULT_TENANT.into(),
        })
    }

    fn create(&mut self, process_id: &str, variables: Json) -> i64 {
        match self.command(create_command(process_id, variables, None)) {
            CommandResult::ProcessInstanceCreated(created) => created.process_instance_key,
            other => panic!("expected an instance, got {other:?}"),
        }
    }

    fn activate(&mut self, job_type: &str, max: i32) -> Vec<ActivatedJob> {
        let command = ClientCommand::ActivateJobs(ActivateJobs {
            job_type: job_type.into(),
            worker: "test".into(),
            timeout: 30_000,
            max_jobs_to_activate: max,
            fetch_variables: vec![],
            tenant_ids: vec![],
        });
        match self.command(command) {
            CommandResult::JobsActivated { jobs } => jobs,
            other => panic!("expected jobs, got {other:?}"),
        }
    }

    fn complete(&mut self, job_key: i64, variables: Json) -> CommandResult {
        self.command(ClientCommand::CompleteJob { job_key, variables: variables.to_string() })
    }

    fn publish(
        &mut self,
        name: &str,
        correlation_key: &str,
        ttl: i64,
        message_id: &str,
        variables: Json,
    ) -> CommandResult {
        self.command(ClientCommand::PublishMessage(PublishMessage {
            name: name.into(),
            correlation_key: correlation_key.into(),
            time_to_live: ttl,
            message_id: message_id.into(),
            variables: variables.to_string(),
            tenant_id: DEFAULT_TENANT.into(),
        }))
    }

    fn is_active(&self, key: i64) -> bool {
        elements::get(&self.state, key).is_some()
    }

    fn completed(&self, key: i64) -> bool {
        self.log
            .iter()
            .any(|r| r.key == key && r.intent == Intent::ProcessInstance(ProcessInstanceIntent::ElementCompleted))
    }

    fn element_completed(&self, element_id: &str) -> bool {
        self.log.iter().any(|r| {
            r.intent == Intent::ProcessInstance(ProcessInstanceIntent::ElementCompleted)
                && matches!(&r.value, RecordValue::ProcessInstance(pi) if pi.element_id == element_id)
        })
    }

    fn open_incidents(&self) -> Vec<(i64, IncidentRecord)> {
        let mut found: Vec<(i64, IncidentRecord)> = Vec::new();
        for r in &self.log {
            if let RecordValue::Incident(incident) = &r.value {
                match r.intent {
                    Intent::Incident(IncidentIntent::Created) => found.push((r.key, incident.clone())),
                    Intent::Incident(IncidentIntent::Resolved) => found.retain(|(k, _)| *k != r.key),
                    _ => {}
                }
            }
        }
        found.retain(|(k, _)| incidents::get(&self.state, *k).is_some());
        found
    }

    fn variable(&self, scope_key: i64, name: &str) -> Option<Json> {
        crate::state::tables::variables::get(&self.state, scope_key, name)
            .map(|v| serde_json::from_str(&v.value).unwrap())
    }
}

/// Processes `input` like a leader (on an overlay), applies the records like a follower, and checks
/// that both give the same state: the determinism the log depends on.
fn process_and_apply(leader: &mut Engine, follower: &mut Engine, state: &mut MemKv, input: Input, now: i64) -> Output {
    lead_and_follow(leader, follower, state, |leader, overlay| leader.process(overlay, input, now))
}

/// Runs `lead` like a leader (on an overlay), applies its records like a follower, and checks that
/// both give the same state.
fn lead_and_follow(
    leader: &mut Engine,
    follower: &mut Engine,
    state: &mut MemKv,
    lead: impl FnOnce(&mut Engine, &mut Overlay<'_>) -> Output,
) -> Output {
    let (output, processed) = {
        let mut overlay = Overlay::new(&*state);
        let output = lead(leader, &mut overlay);
        (output, overlay.into_writes())
    };
    let mut leader_view = state.clone();
    leader_view.commit(processed);
    for record in &output.records {
        follower.apply(state, record);
    }
    assert_eq!(
        leader_view.iter().collect::<Vec<_>>(),
        state.iter().collect::<Vec<_>>(),
        "applying the records must give the state that processing saw"
    );
    output
}

fn create_command(process_id: &str, variables: Json, await_result: Option<AwaitResult>) -> ClientCommand {
    ClientCommand::CreateProcessInstance(CreateProcessInstance {
        process_definition_key: 0,
        bpmn_process_id: process_id.into(),
        version: -1,
        variables: variables.to_string(),
        tenant_id: DEFAULT_TENANT.into(),
        await_result,
    })
}

/// A BPMN document with one executable process.
fn bpmn(process_id: &str, body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d" targetNamespace="http://bpmn.io/schema/bpmn">
  <bpmn:process id="{process_id}" isExecutable="true">{body}</bpmn:process>
</bpmn:definitions>"#
    )
}

fn task(id: &str, job_type: &str, extra: &str) -> String {
    format!(
        r#"<bpmn:serviceTask id="{id}"><bpmn:extensionElements><zeebe:taskDefinition type="{job_type}" />{extra}</bpmn:extensionElements></bpmn:serviceTask>"#
    )
}

fn flow(id: &str, from: &str, to: &str) -> String {
    format!(r#"<bpmn:sequenceFlow id="{id}" sourceRef="{from}" targetRef="{to}" />"#)
}

fn conditional_flow(id: &str, from: &str, to: &str, condition: &str) -> String {
    format!(
        r#"<bpmn:sequenceFlow id="{id}" sourceRef="{from}" targetRef="{to}"><bpmn:conditionExpression>{condition}</bpmn:conditionExpression></bpmn:sequenceFlow>"#
    )
}

fn one_task(process_id: &str, job_type: &str) -> String {
    bpmn(
        process_id,
        &format!(
            r#"<bpmn:startEvent id="start" />{}<bpmn:endEvent id="end" />{}{}"#,
            task("work", job_type, ""),
            flow("f1", "start", "work"),
            flow("f2", "work", "end")
        ),
    )
}

#[test]
fn one_task_instance_completes_when_its_job_completes() {
    let mut p = Partition::new();
    let deployed = p.deploy("one.bpmn", &one_task("one", "work"));
    assert!(matches!(deployed, CommandResult::Deployed { ref processes, .. } if processes[0].version == 1));
    let instance = p.create("one", json!({"order": 7}));
    let jobs = p.activate("work", 10);
    assert_eq!(jobs.len(), 1);
    assert_eq!(serde_json::from_str::<Json>(&jobs[0].variables).unwrap(), json!({"order": 7}));
    assert_eq!(jobs[0].bpmn_process_id, "one");
    assert!(matches!(p.complete(jobs[0].key, json!({"paid": true})), CommandResult::Done { .. }));
    assert!(p.completed(instance));
    assert!(!p.is_active(instance));
    assert!(p.activate("work", 10).is_empty());
}

#[test]
fn redeploying_an_unchanged_resource_keeps_its_version() {
    let mut p = Partition::new();
    let first = p.deploy("one.bpmn", &one_task("one", "work"));
    let again = p.deploy("one.bpmn", &one_task("one", "work"));
    let changed = p.deploy("one.bpmn", &one_task("one", "other"));
    let version = |r: &CommandResult| match r {
        CommandResult::Deployed { processes, .. } => {
            (processes[0].version, processes[0].process_definition_key, processes[0].duplicate)
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(version(&first).0, 1);
    assert_eq!(version(&again), (1, version(&first).1, true));
    assert_eq!(version(&changed).0, 2);
}

#[test]
fn an_invalid_model_rejects_the_whole_deployment_naming_the_element() {
    let mut p = Partition::new();
    let broken = bpmn(
        "broken",
        r#"<bpmn:startEvent id="start" /><bpmn:serviceTask id="pay" /><bpmn:sequenceFlow id="f" sourceRef="start" targetRef="pay" />"#,
    );
    match p.deploy("broken.bpmn", &broken) {
        CommandResult::Rejected { kind: RejectionType::InvalidArgument, reason } => {
            assert!(reason.contains("broken.bpmn") && reason.contains("'pay'"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    match p.command(create_command("broken", json!({}), None)) {
        CommandResult::Rejected { kind: RejectionType::NotFound, .. } => {}
        other => panic!("nothing of a rejected deployment may remain: {other:?}"),
    }
}

#[test]
fn creating_with_result_reports_the_instance_variables_when_it_completes() {
    let mut p = Partition::new();
    p.deploy("one.bpmn", &one_task("one", "work"));
    let output =
        p.process(Input::Client(create_command("one", json!({"a": 1}), Some(AwaitResult { fetch_variables: vec![] }))));
    let Some(CommandResult::ProcessInstanceCreated(created)) = output.result else { panic!() };
    let job = p.activate("work", 1).remove(0);
    let output = p.process(Input::Client(ClientCommand::CompleteJob {
        job_key: job.key,
        variables: json!({"b": 2}).to_string(),
    }));
    let (key, result) = &output.finished_instances[0];
    assert_eq!(*key, created.process_instance_key);
    let CommandResult::ProcessInstanceCompleted { variables, .. } = result else { panic!("{result:?}") };
    assert_eq!(serde_json::from_str::<Json>(variables).unwrap(), json!({"a": 1, "b": 2}));
}

fn gateway_model() -> String {
    bpmn(
        "route",
        &[
            r#"<bpmn:startEvent id="start" /><bpmn:exclusiveGateway id="split" default="toSmall" />"#.to_string(),
            task("big", "big", ""),
            task("small", "small", ""),
            r#"<bpmn:endEvent id="endBig" /><bpmn:endEvent id="endSmall" />"#.to_string(),
            flow("f0", "start", "split"),
            conditional_flow("toBig", "split", "big", "= amount &gt; 100"),
            flow("toSmall", "split", "small"),
            flow("f3", "big", "endBig"),
            flow("f4", "small", "endSmall"),
        ]
        .concat(),
    )
}

#[test]
fn exclusive_gateway_takes_the_true_condition_or_else_the_default_flow() {
    let mut p = Partition::new();
    p.deploy("route.bpmn", &gateway_model());
    p.create("route", json!({"amount": 500}));
    p.create("route", json!({"amount": 5}));
    p.create("route", json!({}));
    assert_eq!(p.activate("big", 10).len(), 1);
    assert_eq!(p.activate("small", 10).len(), 2, "a missing variable is null, so the condition is not true");
}

#[test]
fn exclusive_gateway_without_a_matching_flow_raises_an_incident_resolved_after_set_variables() {
    let mut p = Partition::new();
    let model = bpmn(
        "strict",
        &[
            r#"<bpmn:startEvent id="start" /><bpmn:exclusiveGateway id="split" /><bpmn:endEvent id="yes" /><bpmn:endEvent id="no" />"#.to_string(),
            flow("f0", "start", "split"),
            conditional_flow("toYes", "split", "yes", "= approved = true"),
            conditional_flow("toNo", "split", "no", "= approved = false"),
        ]
        .concat(),
    );
    p.deploy("strict.bpmn", &model);
    let instance = p.create("strict", json!({}));
    let incidents = p.open_incidents();
    assert_eq!(incidents.len(), 1);
    let (incident_key, incident) = &incidents[0];
    assert_eq!(incident.error_type, ErrorType::ConditionError);
    assert_eq!(incident.element_id, "split");
    assert!(matches!(
        p.command(ClientCommand::ResolveIncident { incident_key: *incident_key }),
        CommandResult::Done { .. }
    ));
    assert_eq!(p.open_incidents().len(), 1, "resolving without fixing the data raises the incident again");
    let (incident_key, _) = p.open_incidents()[0].clone();
    p.command(ClientCommand::SetVariables {
        element_instance_key: instance,
        variables: json!({"approved": false}).to_string(),
        local: false,
    });
    p.command(ClientCommand::ResolveIncident { incident_key });
    assert!(p.open_incidents().is_empty());
    assert!(p.element_completed("no"));
    assert!(p.completed(instance));
}

#[test]
fn parallel_gateway_waits_for_every_branch_before_joining() {
    let mut p = Partition::new();
    let model = bpmn(
        "fork",
        &[
            r#"<bpmn:startEvent id="start" /><bpmn:parallelGateway id="split" /><bpmn:parallelGateway id="join" /><bpmn:endEvent id="end" />"#.to_string(),
            task("a", "a", ""),
            task("b", "b", ""),
            task("after", "after", ""),
            flow("f0", "start", "split"),
            flow("f1", "split", "a"),
            flow("f2", "split", "b"),
            flow("f3", "a", "join"),
            flow("f4", "b", "join"),
            flow("f5", "join", "after"),
            flow("f6", "after", "end"),
        ]
        .concat(),
    );
    p.deploy("fork.bpmn", &model);
    let instance = p.create("fork", json!({}));
    let a = p.activate("a", 1).remove(0);
    let b = p.activate("b", 1).remove(0);
    p.complete(a.key, json!({"fromA": 1}));
    assert!(p.activate("after", 1).is_empty(), "the join waits for the second branch");
    p.complete(b.key, json!({"fromB": 2}));
    let after = p.activate("after", 1).remove(0);
    assert_eq!(serde_json::from_str::<Json>(&after.variables).unwrap(), json!({"fromA": 1, "fromB": 2}));
    p.complete(after.key, json!({}));
    assert!(p.completed(instance));
    assert_eq!(
        p.log
            .iter()
            .filter(|r| r.intent == Intent::ProcessInstance(ProcessInstanceIntent::ElementCompleted)
                && matches!(&r.value, RecordValue::ProcessInstance(pi) if pi.element_id == "join"))
            .count(),
        1
    );
}

#[test]
fn embedded_subprocess_scopes_its_input_variables_and_maps_outputs_out() {
    let mut p = Partition::new();
    let inner = [
        r#"<bpmn:startEvent id="innerStart" /><bpmn:endEvent id="innerEnd" />"#.to_string(),
        task("inner", "inner", ""),
        flow("i1", "innerStart", "inner"),
        flow("i2", "inner", "innerEnd"),
    ]
    .concat();
    let model = bpmn(
        "nested",
        &format!(
            r#"<bpmn:startEvent id="start" /><bpmn:subProcess id="sub"><bpmn:extensionElements><zeebe:ioMapping><zeebe:input source="=base * 2" target="doubled" /><zeebe:output source="=result" target="out.value" /></zeebe:ioMapping></bpmn:extensionElements>{inner}</bpmn:subProcess><bpmn:endEvent id="end" />{}{}"#,
            flow("f1", "start", "sub"),
            flow("f2", "sub", "end")
        ),
    );
    p.deploy("nested.bpmn", &model);
    let instance = p.create("nested", json!({"base": 21, "out": {"kept": true}}));
    let job = p.activate("inner", 1).remove(0);
    assert_eq!(serde_json::from_str::<Json>(&job.variables).unwrap()["doubled"], json!(42));
    p.complete(job.key, json!({"result": "done"}));
    assert!(p.element_completed("sub"));
    assert!(p.completed(instance));
    let created: Vec<_> = p
        .log
        .iter()
        .filter_map(|r| match &r.value {
            RecordValue::Variable(v) if v.scope_key == instance && v.name == "out" => {
                Some(serde_json::from_str::<Json>(&v.value).unwrap())
            }
            _ => None,
        })
        .collect();
    assert_eq!(created.last().unwrap(), &json!({"kept": true, "value": "done"}));
}

fn message_model() -> String {
    bpmn(
        "wait",
        &[
            r#"<bpmn:startEvent id="start" /><bpmn:intermediateCatchEvent id="catch"><bpmn:messageEventDefinition messageRef="m" /></bpmn:intermediateCatchEvent><bpmn:endEvent id="end" />"#.to_string(),
            flow("f1", "start", "catch"),
            flow("f2", "catch", "end"),
            r#"</bpmn:process><bpmn:message id="m" name="paid"><bpmn:extensionElements><zeebe:subscription correlationKey="=orderId" /></bpmn:extensionElements></bpmn:message><bpmn:process id="unused" isExecutable="false">"#.to_string(),
        ]
        .concat(),
    )
}

#[test]
fn message_published_later_correlates_to_the_waiting_instance_and_sets_its_variables() {
    let mut p = Partition::new();
    p.deploy("wait.bpmn", &message_model());
    let first = p.create("wait", json!({"orderId": "o-1"}));
    let second = p.create("wait", json!({"orderId": 2}));
    p.publish("paid", "o-1", 0, "", json!({"amount": 10}));
    assert!(p.completed(first));
    assert!(!p.completed(second));
    assert_eq!(p.variable(first, "amount"), None, "variables go away with the completed instance");
    assert!(p
        .log
        .iter()
        .any(|r| matches!(&r.value, RecordValue::Variable(v) if v.scope_key == first && v.name == "amount")));
    p.publish("paid", "2", 0, "", json!({}));
    assert!(p.completed(second), "a numeric correlation key matches its string form");
}

#[test]
fn buffered_message_correlates_once_to_an_instance_that_arrives_within_its_time_to_live() {
    let mut p = Partition::new();
    p.deploy("wait.bpmn", &message_model());
    p.publish("paid", "o-9", 60_000, "msg-1", json!({}));
    match p.publish("paid", "o-9", 60_000, "msg-1", json!({})) {
        CommandResult::Rejected { kind: RejectionType::AlreadyExists, reason } => assert!(reason.contains("msg-1")),
        other => panic!("{other:?}"),
    }
    let first = p.create("wait", json!({"orderId": "o-9"}));
    assert!(p.completed(first));
    let second = p.create("wait", json!({"orderId": "o-9"}));
    assert!(!p.completed(second), "a message correlates at most once per process");
}

#[test]
fn buffered_message_expires_after_its_time_to_live() {
    let mut p = Partition::new();
    p.deploy("wait.bpmn", &message_model());
    p.publish("paid", "late", 1_000, "", json!({}));
    p.now += 1_001;
    p.process(Input::Tick);
    let instance = p.create("wait", json!({"orderId": "late"}));
    assert!(!p.completed(instance));
}

/// A partition with one timed-out job, one job past its back-off and one expired message, and their
/// keys in that order.
fn partition_with_due_work() -> (Partition, i64, i64, i64) {
    let mut p = Partition::new();
    p.deploy("one.bpmn", &one_task("one", "work"));
    p.create("one", json!({}));
    p.create("one", json!({}));
    let jobs = p.activate("work", 2);
    p.command(ClientCommand::FailJob {
        job_key: jobs[1].key,
        retries: 2,
        error_message: String::new(),
        retry_backoff: 5_000,
        variables: String::new(),
    });
    let CommandResult::Done { key: message } = p.publish("paid", "late", 1_000, "", json!({})) else {
        panic!("a message is published");
    };
    p.now += 60_000;
    (p, jobs[0].key, jobs[1].key, message)
}

#[test]
fn each_piece_of_a_tick_taken_up_on_its_own_does_what_the_tick_does() {
    let (mut p, timed_out, backed_off, message) = partition_with_due_work();
    let due = p.leader.due_work(&p.state, p.now);
    assert_eq!(due, vec![Due::JobTimeOut(timed_out), Due::JobBackoff(backed_off), Due::MessageExpiry(message)]);
    for piece in due {
        p.process(Input::Due(piece));
    }
    assert!(p.leader.due_work(&p.state, p.now).is_empty());
    assert_eq!(p.leader.next_due(&p.state), None);
    let mut again: Vec<i64> = p.activate("work", 2).iter().map(|job| job.key).collect();
    again.sort();
    assert_eq!(again, vec![timed_out, backed_off]);
    assert!(p.log.iter().any(|r| r.key == message && r.intent == Intent::Message(MessageIntent::Expired)));
}

#[test]
fn a_job_whose_time_out_failed_fails_into_an_incident_and_is_due_no_more() {
    let (mut p, timed_out, ..) = partition_with_due_work();
    let involved = Involved::of(&Input::Due(Due::JobTimeOut(timed_out))).expect("a time-out names its job");
    assert_eq!(involved, Involved::Job(timed_out));
    p.processing_failed(involved, "Processing the JobTimeOut work failed (boom)");
    assert!(!p.leader.due_work(&p.state, p.now).contains(&Due::JobTimeOut(timed_out)));
    let (_, incident) = p.open_incidents().remove(0);
    assert_eq!(incident.job_key, timed_out);
    assert_eq!(Involved::of(&Input::Due(Due::MessageExpiry(1))), None, "a message marks no instance");
}

#[test]
fn cancelling_an_instance_terminates_it_with_its_jobs() {
    let mut p = Partition::new();
    p.deploy("one.bpmn", &one_task("one", "work"));
    let instance = p.create("one", json!({}));
    assert!(matches!(
        p.command(ClientCommand::CancelProcessInstance { process_instance_key: instance }),
        CommandResult::Done { .. }
    ));
    assert!(!p.is_active(instance));
    assert!(p.activate("work", 10).is_empty());
    assert!(p.log.iter().any(|r| r.intent == Intent::Job(JobIntent::Canceled)));
    match p.command(ClientCommand::CancelProcessInstance { process_instance_key: instance }) {
        CommandResult::Rejected { kind: RejectionType::NotFound, .. } => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn failing_a_job_without_retries_raises_an_incident_that_resolves_after_retries_are_updated() {
    let mut p = Partition::new();
    p.deploy("one.bpmn", &one_task("one", "work"));
    let instance = p.create("one", json!({}));
    let job = p.activate("work", 1).remove(0);
    p.command(ClientCommand::FailJob {
        job_key: job.key,
        retries: 0,
        error_message: "printer on fire".into(),
        retry_backoff: 0,
        variables: String::new(),
    });
    let (incident_key, incident) = p.open_incidents().remove(0);
    assert_eq!(incident.error_type, ErrorType::JobNoRetries);
    assert_eq!(incident.error_message, "printer on fire");
    match p.command(ClientCommand::ResolveIncident { incident_key }) {
        CommandResult::Rejected { kind: RejectionType::InvalidState, reason } => assert!(reason.contains("retries")),
        other => panic!("{other:?}"),
    }
    p.command(ClientCommand::UpdateJobRetries { job_key: job.key, retries: 2 });
    p.command(ClientCommand::ResolveIncident { incident_key });
    let again = p.activate("work", 1).remove(0);
    assert_eq!((again.key, again.retries), (job.key, 2));
    p.complete(again.key, json!({}));
    assert!(p.completed(instance));
}

#[test]
fn a_command_whose_processing_failed_fails_its_job_into_an_incident_that_a_person_can_resolve() {
    let mut p = Partition::new();
    p.deploy("one.bpmn", &one_task("one", "work"));
    let instance = p.create("one", json!({}));
    let job = p.activate("work", 1).remove(0);
    let complete = Input::Client(ClientCommand::CompleteJob { job_key: job.key, variables: "{}".into() });
    let involved = Involved::of(&complete).expect("a completion names its job");
    p.processing_failed(involved, "Processing the CompleteJob command failed (boom)");

    let (incident_key, incident) = p.open_incidents().remove(0);
    assert_eq!(incident.job_key, job.key);
    assert_eq!(incident.process_instance_key, instance);
    assert_eq!(incident.error_message, "Processing the CompleteJob command failed (boom)");
    assert!(p.activate("work", 1).is_empty(), "the job is held by the incident, not re-offered");
    assert_eq!(jobs::get(&p.state, job.key).unwrap().record.retries, 0);

    p.command(ClientCommand::UpdateJobRetries { job_key: job.key, retries: 1 });
    assert!(matches!(p.command(ClientCommand::ResolveIncident { incident_key }), CommandResult::Done { .. }));
    let again = p.activate("work", 1).remove(0);
    p.complete(again.key, json!({}));
    assert!(p.completed(instance));
}

#[test]
fn a_failed_command_on_an_element_raises_one_incident_there_however_often_it_fails() {
    let mut p = Partition::new();
    p.deploy("one.bpmn", &one_task("one", "work"));
    let instance = p.create("one", json!({}));
    let set = Input::Client(ClientCommand::SetVariables {
        element_instance_key: instance,
        variables: r#"{"a": 1}"#.into(),
        local: false,
    });
    let involved = Involved::of(&set).unwrap();
    assert_eq!(involved, Involved::ElementInstance(instance));
    p.processing_failed(involved, "Processing the SetVariables command failed (boom)");
    p.processing_failed(involved, "Processing the SetVariables command failed (boom)");
    let open = p.open_incidents();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].1.element_instance_key, instance);
    assert_eq!(open[0].1.error_type, ErrorType::Unknown);

    let gone = Input::Client(ClientCommand::CompleteJob { job_key: 999_999, variables: String::new() });
    assert!(
        p.processing_failed(Involved::of(&gone).unwrap(), "boom").records.is_empty(),
        "an unknown job marks nothing"
    );
}

#[test]
fn a_failed_job_with_backoff_is_activatable_only_after_the_backoff() {
    let mut p = Partition::new();
    p.deploy("one.bpmn", &one_task("one", "work"));
    p.create("one", json!({}));
    let job = p.activate("work", 1).remove(0);
    p.command(ClientCommand::FailJob {
        job_key: job.key,
        retries: 2,
        error_message: String::new(),
        retry_backoff: 5_000,
        variables: String::new(),
    });
    assert!(p.activate("work", 1).is_empty());
    p.now += 5_000;
    let output = p.process(Input::Tick);
    assert_eq!(output.jobs_available, vec!["work".to_string()]);
    assert_eq!(p.activate("work", 1)[0].retries, 2);
}

#[test]
fn an_activated_job_times_out_and_becomes_activatable_again() {
    let mut p = Partition::new();
    p.deploy("one.bpmn", &one_task("one", "work"));
    p.create("one", json!({}));
    let job = p.activate("work", 1).remove(0);
    assert!(p.activate("work", 1).is_empty());
    p.now += 30_000;
    p.process(Input::Tick);
    assert_eq!(p.activate("work", 1)[0].key, job.key);
    assert_eq!(jobs::get(&p.state, job.key).unwrap().state, jobs::JobState::Activated);
}

#[test]
fn completing_a_job_twice_is_rejected_without_harm() {
    let mut p = Partition::new();
    p.deploy("one.bpmn", &one_task("one", "work"));
    let instance = p.create("one", json!({}));
    let job = p.activate("work", 1).remove(0);
    p.complete(job.key, json!({}));
    match p.complete(job.key, json!({})) {
        CommandResult::Rejected { kind: RejectionType::NotFound, reason } => {
            assert!(reason.contains(&job.key.to_string()))
        }
        other => panic!("{other:?}"),
    }
    match p.command(ClientCommand::CompleteJob { job_key: 12345, variables: "[1]".into() }) {
        CommandResult::Rejected { kind: RejectionType::NotFound, .. } => {}
        other => panic!("{other:?}"),
    }
    assert!(p.completed(instance));
}

#[test]
fn thrown_error_is_caught_by_a_matching_boundary_event_and_uncaught_errors_raise_incidents() {
    let mut p = Partition::new();
    let model = bpmn(
        "risky",
        &[
            r#"<bpmn:startEvent id="start" /><bpmn:endEvent id="ok" /><bpmn:endEvent id="handled" />"#.to_string(),
            task("charge", "charge", ""),
            r#"<bpmn:boundaryEvent id="declined" attachedToRef="charge"><bpmn:errorEventDefinition errorRef="e1" /></bpmn:boundaryEvent>"#.to_string(),
            flow("f1", "start", "charge"),
            flow("f2", "charge", "ok"),
            flow("f3", "declined", "handled"),
            r#"</bpmn:process><bpmn:error id="e1" errorCode="CARD_DECLINED" /><bpmn:process id="unused" isExecutable="false">"#.to_string(),
        ]
        .concat(),
    );
    p.deploy("risky.bpmn", &model);
    let caught = p.create("risky", json!({}));
    let job = p.activate("charge", 1).remove(0);
    p.command(ClientCommand::ThrowError {
        job_key: job.key,
        error_code: "CARD_DECLINED".into(),
        error_message: "no funds".into(),
        variables: json!({"reason": "funds"}).to_string(),
    });
    assert!(p.element_completed("handled"));
    assert!(p.completed(caught));

    let uncaught = p.create("risky", json!({}));
    let job = p.activate("charge", 1).remove(0);
    p.command(ClientCommand::ThrowError {
        job_key: job.key,
        error_code: "OTHER".into(),
        error_message: String::new(),
        variables: String::new(),
    });
    let (_, incident) = p.open_incidents().remove(0);
    assert_eq!(incident.error_type, ErrorType::UnhandledErrorEvent);
    assert!(incident.error_message.contains("OTHER"));
    assert!(p.is_active(uncaught));
}

#[test]
fn a_failing_expression_raises_an_incident_naming_it_that_resolves_after_set_variables() {
    let mut p = Partition::new();
    let model = bpmn(
        "dyn",
        &[
            r#"<bpmn:startEvent id="start" /><bpmn:endEvent id="end" />"#.to_string(),
            task("work", "=upper case(kind)", ""),
            flow("f1", "start", "work"),
            flow("f2", "work", "end"),
        ]
        .concat(),
    );
    p.deploy("dyn.bpmn", &model);
    let instance = p.create("dyn", json!({}));
    let (incident_key, incident) = p.open_incidents().remove(0);
    assert_eq!(incident.error_type, ErrorType::ExtractValueError);
    assert!(incident.error_message.contains("upper case(kind)"), "{}", incident.error_message);
    p.command(ClientCommand::SetVariables {
        element_instance_key: instance,
        variables: json!({"kind": "mail"}).to_string(),
        local: false,
    });
    p.command(ClientCommand::ResolveIncident { incident_key });
    assert_eq!(p.activate("MAIL", 1).len(), 1);
}

#[test]
fn message_start_event_creates_an_instance_per_message() {
    let mut p = Partition::new();
    let model = bpmn(
        "onOrder",
        &[
            r#"<bpmn:startEvent id="start"><bpmn:messageEventDefinition messageRef="m" /></bpmn:startEvent><bpmn:endEvent id="end" />"#.to_string(),
            task("work", "work", ""),
            flow("f1", "start", "work"),
            flow("f2", "work", "end"),
            r#"</bpmn:process><bpmn:message id="m" name="order-placed" /><bpmn:process id="unused" isExecutable="false">"#.to_string(),
        ]
        .concat(),
    );
    p.deploy("start.bpmn", &model);
    p.publish("order-placed", "a", 0, "", json!({"item": "book"}));
    p.publish("order-placed", "b", 0, "", json!({"item": "pen"}));
    let jobs = p.activate("work", 10);
    assert_eq!(jobs.len(), 2);
    assert_eq!(serde_json::from_str::<Json>(&jobs[0].variables).unwrap(), json!({"item": "book"}));
    match p.command(create_command("onOrder", json!({}), None)) {
        CommandResult::Rejected { kind: RejectionType::InvalidState, reason } => {
            assert!(reason.contains("none start event"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_variables_are_rejected_with_the_reason() {
    let mut p = Partition::new();
    p.deploy("one.bpmn", &one_task("one", "work"));
    let command = ClientCommand::CreateProcessInstance(CreateProcessInstance {
        process_definition_key: 0,
        bpmn_process_id: "one".into(),
        version: -1,
        variables: "{not json".into(),
        tenant_id: DEFAULT_TENANT.into(),
        await_result: None,
    });
    match p.command(command) {
        CommandResult::Rejected { kind: RejectionType::InvalidArgument, reason } => {
            assert!(reason.contains("JSON"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn replaying_the_log_rebuilds_the_same_state() {
    let mut p = Partition::new();
    p.deploy("route.bpmn", &gateway_model());
    p.deploy("wait.bpmn", &message_model());
    for amount in [1, 200, 3] {
        p.create("route", json!({"amount": amount}));
    }
    p.create("wait", json!({"orderId": "x"}));
    let job = p.activate("big", 1).remove(0);
    p.complete(job.key, json!({"done": true}));
    p.publish("paid", "x", 10_000, "", json!({}));
    let mut replayed = MemKv::new();
    let mut engine = Engine::new(1, 1);
    for record in &p.log {
        engine.apply(&mut replayed, record);
    }
    assert_eq!(replayed.iter().collect::<Vec<_>>(), p.state.iter().collect::<Vec<_>>());
}

/// Several partitions talking through a network that loses, duplicates and reorders messages, and
/// leaders that change (a new engine on the same state): what crosses partitions arrives exactly once.
mod cluster {
    use std::collections::{BTreeMap, VecDeque};

    use waggle_protocol::key;
    use waggle_protocol::record::{ProcessMessageSubscriptionIntent, ProcessMessageSubscriptionRecord};

    use super::*;
    use crate::processor::distribution::RETRY_INTERVAL_MS;
    use crate::processor::PartitionMessage;
    use crate::state::tables::distribution;

    struct Replica {
        leader: Engine,
        follower: Engine,
        state: MemKv,
        log: Vec<Record>,
    }

    /// A deterministic network fault schedule (xorshift), so failures reproduce.
    struct Faults {
        seed: u64,
        drop_percent: u64,
        duplicate_percent: u64,
    }

    impl Faults {
        fn roll(&mut self) -> u64 {
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            self.seed % 100
        }
    }

    struct Cluster {
        partitions: BTreeMap<u32, Replica>,
        in_flight: VecDeque<(u32, PartitionMessage)>,
        faults: Faults,
        now: i64,
        finished_distributions: Vec<i64>,
    }

    impl Cluster {
        fn new(count: u32, faults: Faults) -> Self {
            let partitions = (1..=count)
                .map(|id| {
                    let replica = Replica {
                        leader: Engine::new(id, count),
                        follower: Engine::new(id, count),
                        state: MemKv::new(),
                        log: vec![],
                    };
                    (id, replica)
                })
                .collect();
            Cluster { partitions, in_flight: VecDeque::new(), faults, now: 1_000_000, finished_distributions: vec![] }
        }

        fn process(&mut self, partition_id: u32, input: Input) -> Output {
            let replica = self.partitions.get_mut(&partition_id).expect("partition exists");
            let mut output =
                process_and_apply(&mut replica.leader, &mut replica.follower, &mut replica.state, input, self.now);
            replica.log.extend(output.records.iter().cloned());
            self.route(&mut output);
            output
        }

        /// What a partition does after processing `message` panicked with `cause` (see the broker's
        /// partition driver).
        fn fail(&mut self, partition_id: u32, message: PartitionMessage, cause: &str) -> Output {
            let PartitionMessage::Command { source_partition, sequence, command } = message else {
                panic!("only commands are processed");
            };
            let failure =
                format!("Processing the {} command from partition {source_partition} failed ({cause})", command.name());
            let now = self.now;
            let replica = self.partitions.get_mut(&partition_id).expect("partition exists");
            let mut output =
                lead_and_follow(&mut replica.leader, &mut replica.follower, &mut replica.state, |leader, overlay| {
                    leader.hold_failed_partition_command(overlay, source_partition, sequence, command, &failure, now)
                });
            replica.log.extend(output.records.iter().cloned());
            self.route(&mut output);
            output
        }

        /// Puts what an output sends in flight, through the fault schedule.
        fn route(&mut self, output: &mut Output) {
            self.finished_distributions.append(&mut output.distributions_finished);
            for (target, message) in std::mem::take(&mut output.sends) {
                if self.faults.roll() < self.faults.drop_percent {
                    continue;
                }
                if self.faults.roll() < self.faults.duplicate_percent {
                    self.in_flight.push_back((target, message.clone()));
                }
                self.in_flight.push_back((target, message));
            }
        }

        /// Takes the first message in flight to `target` that is a command of this name.
        fn intercept(&mut self, target: u32, name: &str) -> PartitionMessage {
            let at = self
                .in_flight
                .iter()
                .position(|(to, message)| *to == target && message.name() == name)
                .unwrap_or_else(|| panic!("no {name} in flight to partition {target}"));
            self.in_flight.remove(at).expect("found above").1
        }

        fn open_incidents(&self, partition_id: u32) -> Vec<(i64, IncidentRecord)> {
            let replica = &self.partitions[&partition_id];
            let mut open: Vec<(i64, IncidentRecord)> = replica
                .log
                .iter()
                .filter_map(|r| match (&r.intent, &r.value) {
                    (Intent::Incident(IncidentIntent::Created), RecordValue::Incident(i)) => Some((r.key, i.clone())),
                    _ => None,
                })
                .collect();
            open.retain(|(key, _)| incidents::get(&replica.state, *key).is_some());
            open
        }

        fn command(&mut self, partition_id: u32, command: ClientCommand) -> CommandResult {
            self.process(partition_id, Input::Client(command)).result.expect("client commands are answered")
        }

        /// Delivers what is in flight, in a shuffled order, until nothing is.
        fn settle(&mut self) {
            while !self.in_flight.is_empty() {
                let pick = self.faults.roll() as usize % self.in_flight.len();
                let (target, message) = self.in_flight.remove(pick).expect("picked within bounds");
                self.process(target, Input::Partition(message));
            }
        }

        /// Lets time pass until every partition's outbox is empty.
        fn run_until_quiet(&mut self) {
            for _ in 0..200 {
                self.settle();
                let pending = self.partitions.values().any(|r| distribution::has_pending(&r.state));
                if !pending {
                    return;
                }
                self.now += RETRY_INTERVAL_MS;
                for id in 1..=self.partitions.len() as u32 {
                    self.process(id, Input::Tick);
                }
            }
            panic!("partitions still have unacknowledged commands after 200 retries");
        }

        /// A new leader takes over every partition: same state, fresh engine, nothing in flight.
        fn change_leaders(&mut self) {
            let count = self.partitions.len() as u32;
            for (id, replica) in self.partitions.iter_mut() {
                replica.leader = Engine::new(*id, count);
            }
            self.in_flight.clear();
        }

        fn completed(&self, process_instance_key: i64) -> bool {
            let partition = key::partition_of(process_instance_key).expect("a partition key");
            self.partitions[&partition].log.iter().any(|r| {
                r.key == process_instance_key
                    && r.intent == Intent::ProcessInstance(ProcessInstanceIntent::ElementCompleted)
            })
        }
    }

    fn deploy(cluster: &mut Cluster, name: &str, xml: &str) -> i64 {
        let command = ClientCommand::Deploy {
            resources: vec![DeploymentResource { name: name.into(), content: xml.as_bytes().to_vec() }],
            tenant_id: DEFAULT_TENANT.into(),
        };
        let output = cluster.process(1, Input::Client(command));
        let deployment = output.distributing.expect("a new version is distributed to the other partitions");
        assert!(matches!(output.result, Some(CommandResult::Deployed { key, .. }) if key == deployment));
        deployment
    }

    fn create(cluster: &mut Cluster, partition_id: u32, process_id: &str, variables: Json) -> i64 {
        match cluster.command(partition_id, create_command(process_id, variables, None)) {
            CommandResult::ProcessInstanceCreated(created) => created.process_instance_key,
            other => panic!("expected an instance on partition {partition_id}, got {other:?}"),
        }
    }

    #[test]
    fn a_deployment_reaches_every_partition_so_instances_start_anywhere() {
        let mut cluster = Cluster::new(3, Faults { seed: 7, drop_percent: 0, duplicate_percent: 0 });
        let deployment = deploy(&mut cluster, "one.bpmn", &one_task("one", "work"));
        let before = cluster.command(2, create_command("one", json!({}), None));
        assert!(
            matches!(before, CommandResult::Rejected { kind: RejectionType::NotFound, .. }),
            "partition 2 knows nothing before the deployment arrives: {before:?}"
        );
        cluster.run_until_quiet();
        assert_eq!(cluster.finished_distributions, vec![deployment], "every partition acknowledged it once");
        for partition in 1..=3 {
            let instance = create(&mut cluster, partition, "one", json!({}));
            assert_eq!(key::partition_of(instance), Some(partition));
        }
        let redeployed = cluster.command(
            1,
            ClientCommand::Deploy {
                resources: vec![DeploymentResource {
                    name: "one.bpmn".into(),
                    content: one_task("one", "work").into_bytes(),
                }],
                tenant_id: DEFAULT_TENANT.into(),
            },
        );
        assert!(matches!(redeployed, CommandResult::Deployed { .. }));
        assert!(cluster.in_flight.is_empty(), "an unchanged resource creates no version to distribute");
    }

    #[test]
    fn a_deployment_survives_lost_and_duplicated_sends_and_a_leader_change() {
        let mut cluster = Cluster::new(4, Faults { seed: 99, drop_percent: 60, duplicate_percent: 40 });
        deploy(&mut cluster, "one.bpmn", &one_task("one", "work"));
        cluster.change_leaders();
        let second = one_task("one", "other-work");
        deploy(&mut cluster, "one.bpmn", &second);
        cluster.run_until_quiet();
        for partition in 1..=4 {
            let versions: Vec<i32> = cluster.partitions[&partition]
                .log
                .iter()
                .filter_map(|r| match (&r.intent, &r.value) {
                    (Intent::Process(_), RecordValue::Process(p)) => Some(p.version),
                    _ => None,
                })
                .collect();
            assert_eq!(versions, vec![1, 2], "partition {partition} created each version once, in order");
            create(&mut cluster, partition, "one", json!({}));
        }
    }

    #[test]
    fn messages_correlate_across_partitions_exactly_once_despite_a_faulty_network_and_leader_changes() {
        let mut cluster = Cluster::new(3, Faults { seed: 2024, drop_percent: 30, duplicate_percent: 30 });
        deploy(&mut cluster, "wait.bpmn", &message_model());
        cluster.run_until_quiet();
        let mut instances = Vec::new();
        for i in 0..30u32 {
            let partition = i % 3 + 1;
            let order = format!("order-{i}");
            instances.push(create(&mut cluster, partition, "wait", json!({ "orderId": order })));
            if i % 7 == 0 {
                cluster.change_leaders();
            }
        }
        cluster.settle();
        for i in 0..30u32 {
            let order = format!("order-{i}");
            let partition = key::message_partition(&order, 3);
            let publish = ClientCommand::PublishMessage(PublishMessage {
                name: "paid".into(),
                correlation_key: order,
                time_to_live: 600_000,
                message_id: String::new(),
                variables: json!({ "paid": i }).to_string(),
                tenant_id: DEFAULT_TENANT.into(),
            });
            assert!(matches!(cluster.command(partition, publish), CommandResult::Done { .. }));
            if i % 5 == 0 {
                cluster.change_leaders();
            }
        }
        cluster.run_until_quiet();
        for instance in &instances {
            assert!(cluster.completed(*instance), "instance {instance} got its message");
        }
        let mut correlations: BTreeMap<i64, usize> = BTreeMap::new();
        for replica in cluster.partitions.values() {
            for record in &replica.log {
                if let (
                    Intent::ProcessMessageSubscription(ProcessMessageSubscriptionIntent::Correlated),
                    RecordValue::ProcessMessageSubscription(ProcessMessageSubscriptionRecord {
                        process_instance_key,
                        ..
                    }),
                ) = (&record.intent, &record.value)
                {
                    *correlations.entry(*process_instance_key).or_default() += 1;
                }
            }
        }
        assert_eq!(correlations.len(), instances.len());
        assert!(correlations.values().all(|n| *n == 1), "each instance correlated exactly once: {correlations:?}");
    }

    /// Correlation keys whose messages live on partition `partition` of `count`.
    fn orders_on(partition: u32, count: u32, how_many: usize) -> Vec<String> {
        (0..)
            .map(|i| format!("order-{i}"))
            .filter(|order| key::message_partition(order, count) == partition)
            .take(how_many)
            .collect()
    }

    fn publish(cluster: &mut Cluster, order: &str, variables: Json) {
        let publish = ClientCommand::PublishMessage(PublishMessage {
            name: "paid".into(),
            correlation_key: order.into(),
            time_to_live: 600_000,
            message_id: String::new(),
            variables: variables.to_string(),
            tenant_id: DEFAULT_TENANT.into(),
        });
        let partition = key::message_partition(order, 2);
        assert!(matches!(cluster.command(partition, publish), CommandResult::Done { .. }));
    }

    #[test]
    fn a_correlation_whose_processing_failed_is_held_by_an_incident_while_the_channel_goes_on() {
        let mut cluster = Cluster::new(2, Faults { seed: 5, drop_percent: 0, duplicate_percent: 0 });
        deploy(&mut cluster, "wait.bpmn", &message_model());
        cluster.run_until_quiet();
        let orders = orders_on(2, 2, 2);
        let failing = create(&mut cluster, 1, "wait", json!({ "orderId": orders[0] }));
        let passing = create(&mut cluster, 1, "wait", json!({ "orderId": orders[1] }));
        cluster.settle();

        publish(&mut cluster, &orders[0], json!({ "paid": 1 }));
        let correlate = cluster.intercept(1, "CorrelateProcessSubscription");
        cluster.fail(1, correlate, "boom");
        publish(&mut cluster, &orders[1], json!({ "paid": 2 }));
        cluster.run_until_quiet();

        assert!(cluster.completed(passing), "the command behind the failed one was processed");
        assert!(!cluster.completed(failing), "the failed correlation changed nothing");
        let open = cluster.open_incidents(1);
        assert_eq!(open.len(), 1, "{open:?}");
        let (incident_key, incident) = open[0].clone();
        assert_eq!((incident.process_instance_key, incident.element_id.as_str()), (failing, "catch"));
        assert!(
            incident.error_message.starts_with(
                "Processing the CorrelateProcessSubscription command from partition 2 failed (boom); it changed \
                 nothing and this incident holds it"
            ),
            "{}",
            incident.error_message
        );

        let resolved = cluster.command(1, ClientCommand::ResolveIncident { incident_key });
        assert!(matches!(resolved, CommandResult::Done { .. }), "{resolved:?}");
        cluster.run_until_quiet();
        assert!(cluster.completed(failing), "resolving the incident processed the held correlation");
        let paid: Vec<&str> = cluster.partitions[&1]
            .log
            .iter()
            .filter_map(|r| match &r.value {
                RecordValue::Variable(v) if v.process_instance_key == failing && v.name == "paid" => {
                    Some(v.value.as_str())
                }
                _ => None,
            })
            .collect();
        assert_eq!(paid, vec!["1"], "the message's variables reached the instance once");
        assert!(cluster.open_incidents(1).is_empty());
        assert!(
            crate::state::tables::held::get(&cluster.partitions[&1].state, incident_key).is_none(),
            "a resolved incident holds nothing"
        );
    }

    #[test]
    fn a_subscription_that_failed_on_the_message_partition_raises_an_incident_on_the_waiting_instance() {
        let mut cluster = Cluster::new(2, Faults { seed: 5, drop_percent: 0, duplicate_percent: 0 });
        deploy(&mut cluster, "wait.bpmn", &message_model());
        cluster.run_until_quiet();
        let order = orders_on(2, 2, 1).remove(0);
        let waiting = create(&mut cluster, 1, "wait", json!({ "orderId": order }));
        let open = cluster.intercept(2, "OpenMessageSubscription");
        cluster.fail(2, open, "boom");
        cluster.run_until_quiet();

        let open = cluster.open_incidents(1);
        assert_eq!(open.len(), 1, "{open:?}");
        let (_, incident) = &open[0];
        assert_eq!((incident.process_instance_key, incident.element_id.as_str()), (waiting, "catch"));
        assert!(
            incident.error_message.starts_with(
                "Processing the OpenMessageSubscription command from partition 1 failed (boom) on partition 2; \
                 it was rejected there"
            ),
            "{}",
            incident.error_message
        );
        assert!(incident.error_message.contains("cancel its process instance"), "{}", incident.error_message);
        assert!(cluster.open_incidents(2).is_empty());
        let cancel = cluster.command(1, ClientCommand::CancelProcessInstance { process_instance_key: waiting });
        assert!(matches!(cancel, CommandResult::Done { .. }), "{cancel:?}");
        cluster.run_until_quiet();
        assert!(cluster.open_incidents(1).is_empty(), "cancelling resolves the incident");
    }

    #[test]
    fn a_failed_command_about_nothing_on_its_partition_is_rejected_and_acknowledged() {
        let mut cluster = Cluster::new(2, Faults { seed: 5, drop_percent: 0, duplicate_percent: 0 });
        deploy(&mut cluster, "one.bpmn", &one_task("one", "work"));
        let distribute = cluster.intercept(2, "DistributeDeployment");
        let output = cluster.fail(2, distribute, "boom");
        let rejection = output.records.iter().find_map(|r| r.rejection.as_ref()).expect("the command is rejected");
        assert_eq!(rejection.kind, RejectionType::ProcessingError);
        assert!(rejection.reason.contains("DistributeDeployment command from partition 1 failed (boom)"));
        assert_eq!(distribution::last_received(&cluster.partitions[&2].state, 1), 1);
        cluster.run_until_quiet();
        assert!(!distribution::has_pending(&cluster.partitions[&1].state), "the source got its acknowledgement");
        assert!(cluster.open_incidents(2).is_empty());
    }
}

/// A loop without a wait state: `count` adds one to `n` and the gateway goes round again while
/// `= n < until` holds.
fn counting_loop(until: &str) -> String {
    bpmn(
        "counter",
        &[
            r#"<bpmn:startEvent id="start" /><bpmn:exclusiveGateway id="again" default="done" /><bpmn:endEvent id="end" />"#.to_string(),
            r#"<bpmn:intermediateThrowEvent id="count"><bpmn:extensionElements><zeebe:ioMapping><zeebe:output source="= n + 1" target="n" /></zeebe:ioMapping></bpmn:extensionElements></bpmn:intermediateThrowEvent>"#.to_string(),
            flow("f0", "start", "count"),
            flow("f1", "count", "again"),
            conditional_flow("loop", "again", "count", &format!("= n &lt; {until}")),
            flow("done", "again", "end"),
        ]
        .concat(),
    )
}

fn small_runs() -> super::ProcessingLimits {
    super::ProcessingLimits { max_steps_per_run: 50, max_deferrals_without_wait: 10, ..Default::default() }
}

impl Partition {
    /// The activations waiting for a later run, as a tick would take them up.
    fn deferred(&self) -> Vec<i64> {
        self.leader
            .due_work(&self.state, self.now)
            .into_iter()
            .filter_map(|due| match due {
                Due::FollowUp(key) => Some(key),
                _ => None,
            })
            .collect()
    }

    fn with_limits(limits: super::ProcessingLimits) -> Self {
        let mut p = Partition::new();
        p.leader = Engine::new(1, 1).with_limits(limits);
        p
    }

    /// Ticks until no deferred activation is left, at most `max` times; how many ticks it took.
    fn tick_until_settled(&mut self, max: usize) -> usize {
        for ticks in 0..max {
            if self.leader.next_due(&self.state) != Some(i64::MIN) {
                return ticks;
            }
            self.process(Input::Tick);
        }
        panic!("deferred activations were still pending after {max} ticks");
    }
}

#[test]
fn a_long_run_without_wait_states_yields_to_later_runs_and_still_completes() {
    let mut p = Partition::with_limits(super::ProcessingLimits { max_deferrals_without_wait: 1_000, ..small_runs() });
    p.deploy("counter.bpmn", &counting_loop("100"));
    let instance = p.create("counter", json!({"n": 0}));
    assert!(!p.completed(instance), "100 rounds take more than one run of 50 steps");
    let deferred = p.log.iter().filter(|r| r.intent == Intent::ProcessInstance(ProcessInstanceIntent::ActivateElement));
    assert!(deferred.count() >= 1, "the run wrote its remaining activations to the log");

    // Other commands interleave with the long run: the next one is processed before it ends.
    p.deploy("one.bpmn", &one_task("one", "pay"));
    let other = p.create("one", json!({}));
    assert_eq!(p.activate("pay", 1).len(), 1);
    assert!(!p.completed(instance));

    let ticks = p.tick_until_settled(100);
    assert!(ticks >= 2, "the loop needed several runs, took {ticks}");
    assert!(p.completed(instance));
    assert_eq!(p.variable(instance, "n"), None, "variables go with the completed instance");
    assert!(p.is_active(other));
    assert!(p.open_incidents().is_empty());
}

#[test]
fn an_endless_loop_raises_an_incident_after_the_configured_deferrals_instead_of_wedging() {
    let mut p = Partition::with_limits(small_runs());
    p.deploy("counter.bpmn", &counting_loop("until"));
    let instance = p.create("counter", json!({"n": 0, "until": 1e15}));
    let mut loop_incidents = 0;
    for _ in 0..50 {
        if p.leader.next_due(&p.state) != Some(i64::MIN) {
            break;
        }
        loop_incidents += p.process(Input::Tick).loop_incidents;
    }
    assert_eq!(loop_incidents, 1);
    let incidents = p.open_incidents();
    assert_eq!(incidents.len(), 1);
    let (incident_key, incident) = &incidents[0];
    assert!(incident.error_message.contains("max_deferrals_without_wait"), "{}", incident.error_message);
    assert!(incident.error_message.contains("500 element steps"), "{}", incident.error_message);
    assert_eq!(p.leader.next_due(&p.state), None, "nothing is left to run: the partition is idle");
    assert!(p.is_active(instance));

    // Fixing the loop's data and resolving the incident lets the instance finish.
    p.command(ClientCommand::SetVariables {
        element_instance_key: instance,
        variables: json!({"until": 0}).to_string(),
        local: false,
    });
    p.command(ClientCommand::ResolveIncident { incident_key: *incident_key });
    p.tick_until_settled(10);
    assert!(p.completed(instance));
}

#[test]
fn a_deferred_activation_taken_up_on_its_own_goes_on_like_a_tick_would() {
    let mut p = Partition::with_limits(super::ProcessingLimits { max_deferrals_without_wait: 1_000, ..small_runs() });
    p.deploy("counter.bpmn", &counting_loop("100"));
    let instance = p.create("counter", json!({"n": 0}));
    for _ in 0..100 {
        let deferred = p.deferred();
        let Some(&key) = deferred.first() else { break };
        assert_eq!(Involved::of(&Input::Due(Due::FollowUp(key))), Some(Involved::FollowUp(key)));
        p.process(Input::Due(Due::FollowUp(key)));
        assert!(!p.deferred().contains(&key), "activation {key} was taken up");
    }
    assert!(p.completed(instance));
    assert!(p.open_incidents().is_empty());
}

#[test]
fn a_deferred_activation_whose_processing_failed_is_held_by_an_incident_until_resolved() {
    let mut p = Partition::with_limits(super::ProcessingLimits { max_deferrals_without_wait: 1_000, ..small_runs() });
    p.deploy("counter.bpmn", &counting_loop("100"));
    let instance = p.create("counter", json!({"n": 0}));
    let deferred = p.deferred();
    assert_eq!(deferred.len(), 1, "one activation waits for the next run");
    let key = deferred[0];

    p.processing_failed(Involved::FollowUp(key), "index out of bounds");
    assert!(p.deferred().is_empty(), "the failed activation is no longer taken up");
    assert_eq!(p.leader.next_due(&p.state), None, "the partition's ticks go on without it");
    let incidents = p.open_incidents();
    assert_eq!(incidents.len(), 1);
    let (incident_key, incident) = &incidents[0];
    assert_eq!(incident.element_instance_key, key, "the incident holds the element it was activating");
    assert_eq!(incident.error_message, "index out of bounds");
    assert!(p.is_active(instance));

    p.command(ClientCommand::ResolveIncident { incident_key: *incident_key });
    p.tick_until_settled(100);
    assert!(p.completed(instance), "resolving the incident goes on with the activation");
}

#[test]
fn a_failure_naming_a_deferred_activation_that_is_gone_changes_nothing() {
    let mut p = Partition::with_limits(small_runs());
    p.deploy("counter.bpmn", &counting_loop("100"));
    p.create("counter", json!({"n": 0}));
    let key = p.deferred()[0];
    p.tick_until_settled(100);
    assert!(p.processing_failed(Involved::FollowUp(key), "boom").records.is_empty());
}

#[test]
fn cancelling_an_instance_drops_its_deferred_activations() {
    let mut p = Partition::with_limits(small_runs());
    p.deploy("counter.bpmn", &counting_loop("n + 1"));
    let instance = p.create("counter", json!({"n": 0}));
    assert!(matches!(
        p.command(ClientCommand::CancelProcessInstance { process_instance_key: instance }),
        CommandResult::Done { .. }
    ));
    assert!(!p.is_active(instance));
    p.tick_until_settled(2);
    assert!(p
        .log
        .iter()
        .any(|r| r.rejection.is_some() && r.intent == Intent::ProcessInstance(ProcessInstanceIntent::ActivateElement)));
    assert!(p.open_incidents().is_empty());
}

#[test]
fn a_recursive_feel_function_raises_an_incident_naming_the_expression_and_the_depth_limit() {
    // The query of death of issue 9: a function that recurses a million times. Run on a thread with
    // the stack of a tokio worker (2 MiB) to prove the limit comes before the stack runs out.
    let incident = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(|| {
            let mut p = Partition::new();
            let mapping = r#"<zeebe:ioMapping><zeebe:input source="= {f: function(g, n) if n = 0 then 0 else 1 + g(g, n - 1), r: f(f, 1000000)}.r" target="depth" /></zeebe:ioMapping>"#;
            let model = bpmn(
                "deep",
                &[
                    r#"<bpmn:startEvent id="start" /><bpmn:endEvent id="end" />"#.to_string(),
                    task("work", "work", mapping),
                    flow("f1", "start", "work"),
                    flow("f2", "work", "end"),
                ]
                .concat(),
            );
            p.deploy("deep.bpmn", &model);
            p.create("deep", json!({}));
            p.open_incidents().remove(0).1
        })
        .unwrap()
        .join()
        .expect("the evaluation stops before the stack overflows");
    assert_eq!(incident.error_type, ErrorType::IoMappingError);
    assert!(incident.error_message.contains("f(f, 1000000)"), "{}", incident.error_message);
    assert!(incident.error_message.contains("nesting depth (max_depth"), "{}", incident.error_message);
}

#[test]
fn a_feel_expression_that_iterates_or_allocates_too_much_raises_an_incident_naming_the_limit() {
    let cases = [
        ("= count(for x in 1..1000, y in 1..1000, z in 1..1000 return x)", "iteration count (max_iterations)"),
        (
            "= {f: function(g, s, n) if n = 0 then string length(s) else g(g, s + s, n - 1), r: f(f, \"ab\", 40)}.r",
            "allocation size (max_allocation_bytes",
        ),
    ];
    for (source, limit) in cases {
        let mut p = Partition::new();
        let mapping = format!(
            r#"<zeebe:ioMapping><zeebe:input source="{}" target="x" /></zeebe:ioMapping>"#,
            source.replace('"', "&quot;")
        );
        let model = bpmn(
            "big",
            &[
                r#"<bpmn:startEvent id="start" /><bpmn:endEvent id="end" />"#.to_string(),
                task("work", "work", &mapping),
                flow("f1", "start", "work"),
                flow("f2", "work", "end"),
            ]
            .concat(),
        );
        p.deploy("big.bpmn", &model);
        p.create("big", json!({}));
        let (_, incident) = p.open_incidents().remove(0);
        assert!(incident.error_message.contains(&source[2..]), "{}", incident.error_message);
        assert!(incident.error_message.contains(limit), "{source}: {}", incident.error_message);
    }
}

#[test]
fn the_largest_timeouts_back_offs_and_time_to_live_saturate_instead_of_overflowing() {
    let mut p = Partition::new();
    p.deploy("one.bpmn", &one_task("one", "pay"));
    p.create("one", json!({}));
    p.create("one", json!({}));
    let command = ClientCommand::ActivateJobs(ActivateJobs {
        job_type: "pay".into(),
        worker: "test".into(),
        timeout: i64::MAX,
        max_jobs_to_activate: 2,
        fetch_variables: vec![],
        tenant_ids: vec![],
    });
    let CommandResult::JobsActivated { jobs } = p.command(command) else { panic!("expected jobs") };
    assert_eq!(jobs.len(), 2);
    assert!(
        jobs.iter().all(|job| job.deadline == i64::MAX),
        "{:?}",
        jobs.iter().map(|j| j.deadline).collect::<Vec<_>>()
    );
    p.process(Input::Tick);
    assert!(p.activate("pay", 2).is_empty(), "a job locked until the end of time does not time out");

    let result = p.command(ClientCommand::UpdateJobTimeout { job_key: jobs[0].key, timeout: i64::MAX });
    assert!(matches!(result, CommandResult::Done { .. }), "{result:?}");
    assert_eq!(jobs::get(&p.state, jobs[0].key).unwrap().record.deadline, i64::MAX);

    let result = p.command(ClientCommand::FailJob {
        job_key: jobs[1].key,
        retries: 2,
        error_message: "later".into(),
        retry_backoff: i64::MAX,
        variables: String::new(),
    });
    assert!(matches!(result, CommandResult::Done { .. }), "{result:?}");
    assert_eq!(jobs::get(&p.state, jobs[1].key).unwrap().record.recurring_time, i64::MAX);

    let result = p.publish("ping", "k", i64::MAX, "", json!({}));
    assert!(matches!(result, CommandResult::Done { .. }), "{result:?}");
    p.process(Input::Tick);
    assert_eq!(p.leader.next_due(&p.state), Some(i64::MAX));
}
