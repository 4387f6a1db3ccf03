//! Runs every executable model of the shared fixtures through the engine, end to end.
//!
//! A generic driver deploys the file, starts an instance of each executable process (by its none
//! start event, or by publishing the message of its message start event), and then plays worker and
//! message sender: it completes every job that appears (or throws the error the table asks for) and
//! publishes every message an instance waits for, until the instance completes. Each model lists the
//! variables it starts with, so that its conditions have something to decide on.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value as Json};
use waggle_engine::bpmn::parse_processes;
use waggle_engine::model::{ProcessModel, ValueExpr};
use waggle_engine::processor::{Engine, Input};
use waggle_engine::state::{MemKv, Overlay};
use waggle_protocol::command::{
    ActivateJobs, ClientCommand, CommandResult, CreateProcessInstance, PublishMessage, DEFAULT_TENANT,
};
use waggle_protocol::record::{
    DeploymentResource, IncidentIntent, Intent, JobIntent, ProcessInstanceIntent, ProcessMessageSubscriptionIntent,
    Record, RecordValue,
};

struct Case {
    file: &'static str,
    variables: Json,
    /// Job type → error code to throw instead of completing the job.
    throw: &'static [(&'static str, &'static str)],
}

fn cases() -> Vec<Case> {
    let plain = |file| Case { file, variables: json!({}), throw: &[] };
    vec![
        plain("c8js__BpmnParser.bpmn"),
        plain("c8js__Client-MessageStart.bpmn"),
        Case {
            file: "c8js__Client-ThrowError.bpmn",
            variables: json!({}),
            throw: &[("throw-bpmn-error-task", "BUSINESS_ERROR")],
        },
        Case {
            file: "c8js__MigrateProcess-Version-1.bpmn",
            variables: json!({"messageCorrelationKey": "m-1"}),
            throw: &[],
        },
        Case {
            file: "c8js__MigrateProcess-Version-2.bpmn",
            variables: json!({"messageCorrelationKey": "m-2"}),
            throw: &[],
        },
        Case { file: "c8js__Worker-Failure-Retries.bpmn", variables: json!({"none": "train"}), throw: &[] },
        Case { file: "c8js__conditional-pathway.bpmn", variables: json!({"conditionVariable": true}), throw: &[] },
        plain("c8js__hello-world-complete.bpmn"),
        Case { file: "c8js__message-correlation-test.bpmn", variables: json!({"orderId": "o-7"}), throw: &[] },
        Case { file: "pyzeebe__test.bpmn", variables: json!({"input": "x", "should_throw": false}), throw: &[] },
        plain("zeebe__model.bpmn"),
        plain("zeebe__simple-process.bpmn"),
        plain("zeebe__start_event.bpmn"),
        Case { file: "zpt__looping-servicetask.bpmn", variables: json!({"totalLoops": 3}), throw: &[] },
        plain("zpt__message-start-event.bpmn"),
        plain("zpt__multiple-tasks.bpmn"),
        plain("zpt__start-end.bpmn"),
    ]
}

struct Node {
    engine: Engine,
    state: MemKv,
    now: i64,
    log: Vec<Record>,
}

impl Node {
    fn run(&mut self, command: ClientCommand) -> CommandResult {
        let (output, writes) = {
            let mut overlay = Overlay::new(&self.state);
            let output = self.engine.process(&mut overlay, Input::Client(command), self.now);
            (output, overlay.into_writes())
        };
        self.state.commit(writes);
        self.log.extend(output.records);
        self.now += 10;
        output.result.expect("client commands are answered")
    }
}

fn message_name(value: &ValueExpr) -> String {
    match value {
        ValueExpr::Static(name) => name.clone(),
        ValueExpr::Feel(e) => panic!("message start event with a FEEL name: {}", e.source()),
    }
}

fn drive(case: &Case, models: &[ProcessModel]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bpmn").join(case.file);
    let xml = std::fs::read(&path).unwrap();
    let mut node = Node { engine: Engine::new(1, 1), state: MemKv::new(), now: 1_000, log: vec![] };
    let deployed = node.run(ClientCommand::Deploy {
        resources: vec![DeploymentResource { name: case.file.into(), content: xml }],
        tenant_id: DEFAULT_TENANT.into(),
    });
    assert!(matches!(deployed, CommandResult::Deployed { .. }), "{}: {deployed:?}", case.file);
    let throw: HashMap<&str, &str> = case.throw.iter().copied().collect();
    for model in models {
        let started_from = node.log.len();
        if model.none_start_of(ProcessModel::ROOT).is_some() {
            let created = node.run(ClientCommand::CreateProcessInstance(CreateProcessInstance {
                process_definition_key: 0,
                bpmn_process_id: model.bpmn_process_id.clone(),
                version: -1,
                variables: case.variables.to_string(),
                tenant_id: DEFAULT_TENANT.into(),
                await_result: None,
            }));
            assert!(matches!(created, CommandResult::ProcessInstanceCreated(_)), "{}: {created:?}", case.file);
        } else {
            let (_, message) = model.message_start_events().next().expect("an executable process has a start event");
            node.run(ClientCommand::PublishMessage(PublishMessage {
                name: message_name(&message.name),
                correlation_key: String::new(),
                time_to_live: 0,
                message_id: String::new(),
                variables: case.variables.to_string(),
                tenant_id: DEFAULT_TENANT.into(),
            }));
        }
        let root_done = |log: &[Record]| {
            log[started_from..].iter().any(|r| {
                r.intent == Intent::ProcessInstance(ProcessInstanceIntent::ElementCompleted)
                    && matches!(&r.value, RecordValue::ProcessInstance(pi) if pi.flow_scope_key == -1 && pi.bpmn_process_id == model.bpmn_process_id)
            })
        };
        let mut published = 0;
        for _round in 0..50 {
            if root_done(&node.log) {
                break;
            }
            let incidents: Vec<_> = node.log[started_from..]
                .iter()
                .filter(|r| r.intent == Intent::Incident(IncidentIntent::Created))
                .collect();
            assert!(incidents.is_empty(), "{}: unexpected incident {:?}", case.file, incidents[0].value);
            let job_types: Vec<String> = node.log[started_from..]
                .iter()
                .filter_map(|r| match (&r.intent, &r.value) {
                    (Intent::Job(JobIntent::Created), RecordValue::Job(job)) => Some(job.job_type.clone()),
                    _ => None,
                })
                .collect();
            for job_type in job_types {
                let activated = node.run(ClientCommand::ActivateJobs(ActivateJobs {
                    job_type: job_type.clone(),
                    worker: "driver".into(),
                    timeout: 60_000,
                    max_jobs_to_activate: 100,
                    fetch_variables: vec![],
                    tenant_ids: vec![],
                }));
                let CommandResult::JobsActivated { jobs } = activated else { panic!("{activated:?}") };
                for job in jobs {
                    let answer = match throw.get(job_type.as_str()) {
                        Some(code) => node.run(ClientCommand::ThrowError {
                            job_key: job.key,
                            error_code: code.to_string(),
                            error_message: "thrown by the test driver".into(),
                            variables: String::new(),
                        }),
                        None => node.run(ClientCommand::CompleteJob { job_key: job.key, variables: "{}".into() }),
                    };
                    assert!(matches!(answer, CommandResult::Done { .. }), "{}: {answer:?}", case.file);
                }
            }
            let waiting: Vec<(String, String)> = node.log[started_from..]
                .iter()
                .filter_map(|r| match (&r.intent, &r.value) {
                    (
                        Intent::ProcessMessageSubscription(ProcessMessageSubscriptionIntent::Creating),
                        RecordValue::ProcessMessageSubscription(s),
                    ) => Some((s.message_name.clone(), s.correlation_key.clone())),
                    _ => None,
                })
                .collect();
            for (name, correlation_key) in waiting.into_iter().skip(published) {
                published += 1;
                node.run(ClientCommand::PublishMessage(PublishMessage {
                    name,
                    correlation_key,
                    time_to_live: 60_000,
                    message_id: String::new(),
                    variables: "{}".into(),
                    tenant_id: DEFAULT_TENANT.into(),
                }));
            }
        }
        assert!(root_done(&node.log), "{}: process '{}' did not complete", case.file, model.bpmn_process_id);
    }
}

#[test]
fn every_executable_shared_model_runs_to_completion() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bpmn");
    let cases = cases();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.ends_with(".bpmn") {
            continue;
        }
        let xml = std::fs::read(dir.join(&name)).unwrap();
        let executable = parse_processes(&name, &xml).is_ok();
        let listed = cases.iter().any(|c| c.file == name);
        assert_eq!(executable, listed, "{name}: every executable fixture has a case here, and only those");
    }
    for case in &cases {
        let xml = std::fs::read(dir.join(case.file)).unwrap();
        let models = parse_processes(case.file, &xml).unwrap();
        drive(case, &models);
    }
}
