//! Property-based fuzzing of everything a client's input reaches in the engine: the FEEL parser and
//! evaluator, the BPMN parser, and the processor fed arbitrary command sequences. Whatever the input,
//! each must end in a value, a rejection or an incident, never in a panic: on a broker a panic while
//! processing is a rejected command at best, and a stack overflow takes the node down.
//!
//! The inputs are mutations of the seeds in `fuzz/corpus/` and `engine/tests/fixtures/bpmn/`.
//! `cargo test` runs a few hundred cases per property; `scripts/fuzz.sh` runs many more
//! (`PROPTEST_CASES`) within a time bound.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::json;
use waggle_engine::feel::{Environment, Expression};
use waggle_engine::processor::{Engine, Input};
use waggle_engine::state::{MemKv, Overlay};
use waggle_protocol::command::{ActivateJobs, AwaitResult, ClientCommand, CreateProcessInstance, PublishMessage};
use waggle_protocol::key;
use waggle_protocol::record::DeploymentResource;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn feel_seeds() -> &'static [String] {
    static SEEDS: OnceLock<Vec<String>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let text = std::fs::read_to_string(repo().join("fuzz/corpus/feel.txt")).expect("the FEEL corpus is readable");
        text.lines().filter(|l| !l.trim().is_empty()).map(String::from).collect()
    })
}

fn bpmn_seeds() -> &'static [(String, Vec<u8>)] {
    static SEEDS: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut seeds = Vec::new();
        for dir in [repo().join("fuzz/corpus/bpmn"), repo().join("engine/tests/fixtures/bpmn")] {
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
                let path = entry.expect("a readable directory entry").path();
                if path.extension().is_some_and(|e| e == "bpmn") {
                    let name = path.file_name().expect("a file name").to_string_lossy().into_owned();
                    seeds.push((name, std::fs::read(&path).expect("a readable seed")));
                }
            }
        }
        seeds.sort();
        seeds
    })
}

/// One change to a seed: replace, insert or remove a byte, cut the rest, or repeat a slice.
#[derive(Clone, Debug)]
enum Mutation {
    Replace(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
    Repeat(usize, usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Replace(at, b)),
        (any::<usize>(), prop::sample::select(b"()[]{}.,:\"'<>=-+*/ 019azAZ&;".to_vec()))
            .prop_map(|(at, b)| Mutation::Insert(at, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1..64usize, 1..8u8).prop_map(|(at, len, times)| Mutation::Repeat(at, len, times)),
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
            Mutation::Repeat(at, n, times) if !bytes.is_empty() => {
                let start = at % len;
                let slice: Vec<u8> = bytes[start..(start + n).min(bytes.len())].to_vec();
                for _ in 0..times {
                    bytes.splice(start..start, slice.iter().copied());
                }
            }
            _ => {}
        }
    }
    bytes
}

fn feel_input() -> impl Strategy<Value = String> {
    (0..feel_seeds().len(), 0..feel_seeds().len(), prop::collection::vec(mutation(), 0..6)).prop_map(
        |(first, second, mutations)| {
            let seeds = feel_seeds();
            // Sometimes splice two seeds, so that constructs meet that no seed combines.
            let joined = if mutations.len() % 2 == 0 {
                format!("{} + ({})", seeds[first], seeds[second])
            } else {
                seeds[first].clone()
            };
            String::from_utf8_lossy(&mutate(joined.into_bytes(), &mutations)).into_owned()
        },
    )
}

/// `PROPTEST_CASES` if set (as `scripts/fuzz.sh` does), else the quick default for `cargo test`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), ..ProptestConfig::default() })]

    #[test]
    fn feel_parsing_and_evaluation_end_in_a_value_or_an_error(source in feel_input()) {
        if let Ok(expression) = Expression::parse(&source) {
            let scope = json!({"x": 3, "s": "abc", "l": [1, 2, 3], "key": "k", "depth": 10});
            let serde_json::Value::Object(scope) = scope else { unreachable!() };
            let _ = expression.evaluate(&scope, &Environment::at(1_710_498_600_000));
        }
    }

    #[test]
    fn bpmn_parsing_ends_in_models_or_an_error(
        seed in 0..bpmn_seeds().len(),
        mutations in prop::collection::vec(mutation(), 0..8),
    ) {
        let (name, bytes) = &bpmn_seeds()[seed];
        let _ = waggle_engine::bpmn::parse_processes(name, &mutate(bytes.clone(), &mutations));
    }
}

/// Numbers as clients send them: ordinary, at the edges of their type, and keys that exist.
fn number() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        Just(-1),
        Just(i64::MAX),
        Just(i64::MIN),
        -5i64..100_000,
        (0i64..64).prop_map(|n| key::encode(1, n)),
        any::<i64>(),
    ]
}

fn small() -> impl Strategy<Value = i32> {
    prop_oneof![Just(0i32), Just(-1), Just(i32::MAX), Just(i32::MIN), -3i32..50]
}

fn variables() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("{}".to_string()),
        Just(r#"{"n": 0, "until": 1e300, "depth": 100000, "key": "k"}"#.to_string()),
        Just(r#"{"depth": 3, "key": "k"}"#.to_string()),
        Just("[1, 2]".to_string()),
        Just("{\"a\": ".to_string()),
        Just(format!("{}1{}", "[".repeat(200), "]".repeat(200))),
    ]
}

fn process_id() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["endless", "recursion", "", "missing"]).prop_map(String::from)
}

fn command() -> impl Strategy<Value = ClientCommand> {
    prop_oneof![
        (process_id(), small(), variables(), any::<bool>()).prop_map(|(id, version, variables, await_result)| {
            ClientCommand::CreateProcessInstance(CreateProcessInstance {
                process_definition_key: 0,
                bpmn_process_id: id,
                version,
                variables,
                tenant_id: "<default>".into(),
                await_result: await_result.then(|| AwaitResult { fetch_variables: vec![] }),
            })
        }),
        number().prop_map(|process_instance_key| ClientCommand::CancelProcessInstance { process_instance_key }),
        (number(), small()).prop_map(|(timeout, max)| ClientCommand::ActivateJobs(ActivateJobs {
            job_type: "work".into(),
            worker: "fuzz".into(),
            timeout,
            max_jobs_to_activate: max,
            fetch_variables: vec![],
            tenant_ids: vec![],
        })),
        (number(), variables()).prop_map(|(job_key, variables)| ClientCommand::CompleteJob { job_key, variables }),
        (number(), small(), number(), variables()).prop_map(|(job_key, retries, retry_backoff, variables)| {
            ClientCommand::FailJob { job_key, retries, error_message: "fuzz".into(), retry_backoff, variables }
        }),
        (number(), variables()).prop_map(|(job_key, variables)| ClientCommand::ThrowError {
            job_key,
            error_code: "E".into(),
            error_message: String::new(),
            variables
        }),
        (number(), small()).prop_map(|(job_key, retries)| ClientCommand::UpdateJobRetries { job_key, retries }),
        (number(), number()).prop_map(|(job_key, timeout)| ClientCommand::UpdateJobTimeout { job_key, timeout }),
        (number(), variables()).prop_map(|(time_to_live, variables)| ClientCommand::PublishMessage(PublishMessage {
            name: "go".into(),
            correlation_key: "k".into(),
            time_to_live,
            message_id: String::new(),
            variables,
            tenant_id: "<default>".into(),
        })),
        (number(), variables(), any::<bool>()).prop_map(|(element_instance_key, variables, local)| {
            ClientCommand::SetVariables { element_instance_key, variables, local }
        }),
        number().prop_map(|incident_key| ClientCommand::ResolveIncident { incident_key }),
    ]
}

/// Processes one input like a leader, then commits its writes.
fn process(engine: &mut Engine, state: &mut MemKv, input: Input, now: i64) {
    let writes = {
        let mut overlay = Overlay::new(&*state);
        engine.process(&mut overlay, input, now);
        overlay.into_writes()
    };
    state.commit(writes);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), ..ProptestConfig::default() })]

    #[test]
    fn any_sequence_of_client_commands_is_processed_without_a_panic(
        commands in prop::collection::vec((command(), 0i64..10_000_000, any::<bool>()), 1..24),
    ) {
        let mut engine = Engine::new(1, 1);
        let mut state = MemKv::new();
        let mut now = 1_710_498_600_000;
        let resources = ["endless-loop.bpmn", "recursion.bpmn"]
            .iter()
            .map(|name| DeploymentResource {
                name: name.to_string(),
                content: std::fs::read(repo().join("fuzz/corpus/bpmn").join(name)).expect("a readable seed"),
            })
            .collect();
        process(&mut engine, &mut state, Input::Client(ClientCommand::Deploy { resources, tenant_id: "<default>".into() }), now);
        for (command, elapsed, tick) in commands {
            now += elapsed;
            process(&mut engine, &mut state, Input::Client(command), now);
            if tick {
                process(&mut engine, &mut state, Input::Tick, now);
            }
        }
    }
}
