//! Property-based fuzzing of the gateway's request handling before any broker sees a request: the
//! protobuf decoding of every RPC's request type and the translation into a broker command. Whatever
//! the bytes, decoding must end in a message or an error (which the gateway answers with
//! INVALID_ARGUMENT) and translation in a command or a rejection, never in a panic.
//!
//! The inputs are mutations of encodings of valid requests, so that most mutants still decode and
//! reach the translation with unusual field values. `scripts/fuzz.sh` runs more cases.

use proptest::prelude::*;
use prost::Message;
use waggle_gateway::translate;
use waggle_protocol::gateway as pb;

#[derive(Clone, Debug)]
enum Mutation {
    Replace(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Replace(at, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Insert(at, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match *m {
            Mutation::Replace(at, b) if !bytes.is_empty() => bytes[at % len] = b,
            Mutation::Insert(at, b) => bytes.insert(at % (bytes.len() + 1), b),
            Mutation::Remove(at) if !bytes.is_empty() => {
                bytes.remove(at % len);
            }
            Mutation::Truncate(at) => bytes.truncate(at % (bytes.len() + 1)),
            _ => {}
        }
    }
    bytes
}

/// Decodes the mutated encoding of `valid` and, if it decodes, hands it to `translate`.
fn check<M: Message + Default>(valid: M, mutations: &[Mutation], translate: impl FnOnce(M)) {
    if let Ok(request) = M::decode(mutate(valid.encode_to_vec(), mutations).as_slice()) {
        translate(request);
    }
}

const VARIABLES: &str = r#"{"a": 1, "b": [true, null, "x"], "c": {"d": 1.5e300}}"#;

fn create() -> pb::CreateProcessInstanceRequest {
    pb::CreateProcessInstanceRequest {
        process_definition_key: 2251799813685249,
        bpmn_process_id: "order".into(),
        version: -1,
        variables: VARIABLES.into(),
        tenant_id: "t".into(),
        ..Default::default()
    }
}

/// `PROPTEST_CASES` if set (as `scripts/fuzz.sh` does), else the quick default for `cargo test`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    #[test]
    fn every_request_decodes_and_translates_into_a_command_or_an_error(
        rpc in 0..16usize,
        mutations in prop::collection::vec(mutation(), 0..6),
    ) {
        let m = &mutations;
        match rpc {
            0 => check(create(), m, |r| drop(translate::create_process_instance("CreateProcessInstance", r, None))),
            1 => check(
                pb::CreateProcessInstanceWithResultRequest {
                    request: Some(create()),
                    request_timeout: 30_000,
                    fetch_variables: vec!["a".into()],
                },
                m,
                |r| drop(translate::result_timeout("CreateProcessInstanceWithResult", r.request_timeout)),
            ),
            2 => check(
                pb::ActivateJobsRequest {
                    r#type: "pay".into(),
                    worker: "w".into(),
                    timeout: 30_000,
                    max_jobs_to_activate: 10,
                    fetch_variable: vec!["a".into()],
                    request_timeout: 1_000,
                    tenant_ids: vec!["t".into()],
                },
                m,
                |r| drop(translate::activate_jobs(r)),
            ),
            3 => check(
                pb::StreamActivatedJobsRequest {
                    r#type: "pay".into(),
                    worker: "w".into(),
                    timeout: 30_000,
                    fetch_variable: vec!["a".into()],
                    tenant_ids: vec!["t".into()],
                },
                m,
                |r| drop(translate::stream_activated_jobs(r, 32)),
            ),
            4 => check(pb::CompleteJobRequest { job_key: 2251799813685250, variables: VARIABLES.into() }, m, |r| {
                drop(translate::complete_job(r))
            }),
            5 => check(
                pb::FailJobRequest {
                    job_key: 2251799813685250,
                    retries: 3,
                    error_message: "boom".into(),
                    retry_back_off: 1_000,
                    variables: VARIABLES.into(),
                },
                m,
                |r| drop(translate::fail_job(r)),
            ),
            6 => check(
                pb::ThrowErrorRequest {
                    job_key: 2251799813685250,
                    error_code: "E".into(),
                    error_message: "m".into(),
                    variables: VARIABLES.into(),
                },
                m,
                |r| drop(translate::throw_error(r)),
            ),
            7 => check(pb::UpdateJobRetriesRequest { job_key: 2251799813685250, retries: 3, ..Default::default() }, m, |r| {
                drop(translate::update_job_retries(r))
            }),
            8 => check(pb::UpdateJobTimeoutRequest { job_key: 2251799813685250, timeout: 60_000, ..Default::default() }, m, |r| {
                drop(translate::update_job_timeout(r))
            }),
            9 => check(
                pb::PublishMessageRequest {
                    name: "go".into(),
                    correlation_key: "k".into(),
                    time_to_live: 60_000,
                    message_id: "id".into(),
                    variables: VARIABLES.into(),
                    tenant_id: "t".into(),
                },
                m,
                |r| drop(translate::publish_message(r)),
            ),
            10 => check(
                pb::BroadcastSignalRequest { signal_name: "s".into(), variables: VARIABLES.into(), tenant_id: "t".into() },
                m,
                |r| drop(translate::broadcast_signal(r)),
            ),
            11 => check(
                pb::SetVariablesRequest {
                    element_instance_key: 2251799813685251,
                    variables: VARIABLES.into(),
                    local: true,
                    ..Default::default()
                },
                m,
                |r| drop(translate::set_variables(r)),
            ),
            12 => check(
                pb::DeployResourceRequest {
                    resources: vec![pb::Resource { name: "a.bpmn".into(), content: b"<definitions/>".to_vec() }],
                    tenant_id: "t".into(),
                },
                m,
                |r| drop(translate::deploy_resource(r)),
            ),
            13 => check(pb::CancelProcessInstanceRequest { process_instance_key: 2251799813685249, ..Default::default() }, m, drop),
            14 => check(pb::ResolveIncidentRequest { incident_key: 2251799813685252, ..Default::default() }, m, drop),
            _ => check(pb::TopologyRequest {}, m, drop),
        }
    }
}
