//! Runs the BPMN parser over every third-party model in `tests/fixtures/bpmn/` (see SOURCES.md
//! there for where each came from) and holds each file to its expected outcome: the process ids it
//! deploys as, or the exact problems it is rejected with. Real models written by other tools catch
//! what hand-written snippets miss (namespace prefixes, vendor extensions, odd ordering), and the
//! rejections pin down that unsupported constructs are named precisely rather than skipped.
//!
//! Every fixture must have a row in [`EXPECTATIONS`]: adding a model without deciding its outcome
//! fails the test.

use std::collections::BTreeSet;
use std::path::Path;

use waggle_engine::bpmn::{parse_processes, BpmnError};

enum Expected {
    /// Deploys; these are the ids of its executable processes, in document order.
    Parses(&'static [&'static str]),
    /// Rejected with exactly these problems: (element id, words the problem's message contains).
    Rejected(&'static [(&'static str, &'static str)]),
    /// Rejected with this many problems, among them these (for large design models whose full list
    /// would drown the table).
    RejectedAmong(usize, &'static [(&'static str, &'static str)]),
    /// Rejected because no process in it is marked executable.
    NoExecutableProcess,
    /// Rejected because it is not well-formed XML.
    MalformedXml,
}

use Expected::*;

const UNSUPPORTED: &str = "is not supported by this engine yet";

const EXPECTATIONS: &[(&str, Expected)] = &[
    ("c8js__BpmnParser.bpmn", Parses(&["msg-start-simple"])),
    (
        "c8js__Client-DeployWorkflow.bpmn",
        Rejected(&[
            ("ExclusiveGateway_0wne7eb", "(eventBasedGateway)"),
            ("IntermediateCatchEvent_04zcf15", "(intermediateCatchEvent with timerEventDefinition)"),
        ]),
    ),
    ("c8js__Client-MessageStart.bpmn", Parses(&["Process_1tbhm8x"])),
    ("c8js__Client-ThrowError.bpmn", Parses(&["throw-bpmn-error"])),
    ("c8js__MigrateProcess-Version-1.bpmn", Parses(&["migrant-work"])),
    ("c8js__MigrateProcess-Version-2.bpmn", Parses(&["migrant-work"])),
    ("c8js__Signal.bpmn", Rejected(&[("StartEvent_1", "(startEvent with signalEventDefinition)")])),
    ("c8js__Worker-Failure-Retries.bpmn", Parses(&["worker-failure-retries"])),
    (
        "c8js__await-outcome.bpmn",
        Rejected(&[("IntermediateCatchEvent_1y9tvcp", "(intermediateCatchEvent with timerEventDefinition)")]),
    ),
    ("c8js__conditional-pathway.bpmn", Parses(&["condition-test"])),
    (
        "c8js__grpc-state-machine.bpmn",
        RejectedAmong(
            43,
            &[
                ("StartEvent_1", "(startEvent with signalEventDefinition)"),
                ("IntermediateThrowEvent_17klzml", "(intermediateCatchEvent with timerEventDefinition)"),
                ("EndEvent_0srm2o2", "(endEvent with escalationEventDefinition)"),
                ("EndEvent_0o8v1jl", "(endEvent with messageEventDefinition)"),
                ("IntermediateThrowEvent_1kuokb3", "(intermediateThrowEvent with messageEventDefinition)"),
                ("IntermediateThrowEvent_0fkdada", "(boundaryEvent with timerEventDefinition)"),
                ("IntermediateThrowEvent_1sf86i9", "(boundaryEvent with signalEventDefinition)"),
                ("StartEvent_0qb8yvn", "an embedded subprocess can only have a none start event"),
                ("EndEvent_1f0bu2i", "an error end event must reference a bpmn:error (errorRef)"),
                ("IntermediateThrowEvent_1sjh2tq", "must reference a bpmn:message (messageRef)"),
                ("Process_0bf61fu", "has 2 none start events; at most one is allowed"),
                ("SequenceFlow_0w2ftre", "leaves exclusive gateway 'ExclusiveGateway_08jjs93' without a condition"),
            ],
        ),
    ),
    ("c8js__hello-world-complete.bpmn", Parses(&["hello-world-complete"])),
    ("c8js__message-correlation-test.bpmn", Parses(&["message-correlation-test"])),
    ("c8js__modeller7File.TRUNCATED.bpmn", MalformedXml),
    (
        "c8js__zeebe-user-task.bpmn",
        Rejected(&[("Activity_1d6heog", "(userTask with zeebe:userTask (a Camunda user task))")]),
    ),
    ("miwg__A.3.0.bpmn", NoExecutableProcess),
    ("miwg__B.2.0.bpmn", NoExecutableProcess),
    ("miwg__C.6.0.bpmn", NoExecutableProcess),
    (
        "miwg__C.9.0.bpmn",
        Rejected(&[
            ("Activity_1ke2ixr", "(subProcess with triggeredByEvent, i.e. an event subprocess)"),
            ("Activity_0vp33kx", "(subProcess with triggeredByEvent, i.e. an event subprocess)"),
            ("Activity_ManualCheck", "(callActivity)"),
            (
                "BusinessRuleTask_CheckApplicationAutomatically",
                "(businessRuleTask with zeebe:calledDecision (a DMN decision))",
            ),
        ]),
    ),
    (
        "miwg__C.9.1.bpmn",
        Rejected(&[
            ("BoundaryEvent_1", "(boundaryEvent with timerEventDefinition)"),
            ("BoundaryEvent_2", "(boundaryEvent with timerEventDefinition)"),
        ]),
    ),
    (
        "miwg__C.9.2.bpmn",
        Rejected(&[
            ("Activity_0uvp3cb", "(subProcess with triggeredByEvent, i.e. an event subprocess)"),
            ("Activity_1esx1s7", "(subProcess with triggeredByEvent, i.e. an event subprocess)"),
            ("Activity_02a6b2h", "(subProcess with triggeredByEvent, i.e. an event subprocess)"),
            ("TimerEvent_Timeout", "(boundaryEvent with timerEventDefinition)"),
        ]),
    ),
    ("pyzeebe__test.bpmn", Parses(&["test"])),
    (
        "zeebe__demo-process.bpmn",
        Rejected(&[
            ("taskA", "input mapping target '$.foo' is not a variable name"),
            ("taskA", "output mapping target '$.bar' is not a variable name"),
        ]),
    ),
    ("zeebe__model.bpmn", Parses(&["process"])),
    ("zeebe__signal_start_event.bpmn", Rejected(&[("StartEvent_1", "(startEvent with signalEventDefinition)")])),
    ("zeebe__simple-process.bpmn", Parses(&["simpleProcess"])),
    ("zeebe__start_event.bpmn", Parses(&["Process_01ltxrx"])),
    (
        "zpt__automated-tests.bpmn",
        Rejected(&[("Activity_1kq2g9a", "(subProcess with multiInstanceLoopCharacteristics)")]),
    ),
    ("zpt__call-activity.bpmn", Rejected(&[("callactivity", "(callActivity)")])),
    ("zpt__looping-servicetask.bpmn", Parses(&["looping-servicetask"])),
    ("zpt__message-start-event.bpmn", Parses(&["message-start-event"])),
    (
        "zpt__multiple-call-activity.bpmn",
        Rejected(&[("callactivityOne", "(callActivity)"), ("callactivityTwo", "(callActivity)")]),
    ),
    ("zpt__multiple-tasks.bpmn", Parses(&["multiple-tasks"])),
    (
        "zpt__pr-created.bpmn",
        Rejected(&[
            ("triggerTests", "(callActivity)"),
            ("Gateway_1wymgxc", "(eventBasedGateway)"),
            ("remindReviewerTimer", "(intermediateCatchEvent with timerEventDefinition)"),
        ]),
    ),
    ("zpt__start-end.bpmn", Parses(&["start-end"])),
    (
        "zpt__test_timer_events.bpmn",
        Rejected(&[
            ("TimerEvent_Wait1s", "(intermediateCatchEvent with timerEventDefinition)"),
            ("TimerEvent_Wait30d", "(intermediateCatchEvent with timerEventDefinition)"),
        ]),
    ),
    ("zpt__timer-start-event-daily.bpmn", Rejected(&[("timer", "(startEvent with timerEventDefinition)")])),
];

fn fixtures_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bpmn"))
}

#[test]
fn every_fixture_has_an_expectation_and_every_expectation_a_fixture() {
    let files: BTreeSet<String> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures directory is readable")
        .map(|entry| entry.expect("directory entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".bpmn"))
        .collect();
    let expected: BTreeSet<String> = EXPECTATIONS.iter().map(|(name, _)| name.to_string()).collect();
    assert_eq!(EXPECTATIONS.len(), expected.len(), "a fixture is listed twice in EXPECTATIONS");
    let missing: Vec<_> = files.difference(&expected).collect();
    assert!(missing.is_empty(), "fixtures without an expected outcome in EXPECTATIONS: {missing:?}");
    let stale: Vec<_> = expected.difference(&files).collect();
    assert!(stale.is_empty(), "EXPECTATIONS lists files that are not in the fixtures: {stale:?}");
}

#[test]
fn every_fixture_parses_or_is_rejected_as_expected() {
    let mut failures = Vec::new();
    for (file, expected) in EXPECTATIONS {
        let xml = std::fs::read(fixtures_dir().join(file)).unwrap_or_else(|err| panic!("reading {file}: {err}"));
        if let Err(failure) = check(file, &xml, expected) {
            failures.push(format!("{file}: {failure}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} fixture(s) did not meet expectations:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

fn check(file: &str, xml: &[u8], expected: &Expected) -> Result<(), String> {
    let result = parse_processes(file, xml);
    match (expected, result) {
        (Parses(ids), Ok(processes)) => {
            let actual: Vec<_> = processes.iter().map(|p| p.bpmn_process_id.as_str()).collect();
            if actual != *ids {
                return Err(format!("expected processes {ids:?}, got {actual:?}"));
            }
            for process in &processes {
                if process.element(0).id != process.bpmn_process_id {
                    return Err(format!("element 0 of '{}' is not the process", process.bpmn_process_id));
                }
            }
            Ok(())
        }
        (MalformedXml, Err(err @ BpmnError::MalformedXml { .. })) => {
            let message = err.to_string();
            if message.starts_with(&format!("'{file}': malformed XML at line ")) {
                Ok(())
            } else {
                Err(format!("malformed-XML message does not name the resource and position: {message}"))
            }
        }
        (NoExecutableProcess, Err(err @ BpmnError::Invalid { .. })) => {
            let message = err.to_string();
            if err.problems().len() == 1 && message.contains("contains no executable process") {
                Ok(())
            } else {
                Err(format!("expected only 'contains no executable process', got:\n{message}"))
            }
        }
        (Rejected(reasons), Err(err @ BpmnError::Invalid { .. })) => check_problems(&err, reasons.len(), reasons),
        (RejectedAmong(count, reasons), Err(err @ BpmnError::Invalid { .. })) => check_problems(&err, *count, reasons),
        (_, Ok(processes)) => {
            let ids: Vec<_> = processes.iter().map(|p| p.bpmn_process_id.as_str()).collect();
            Err(format!("expected a rejection, but it parsed into {ids:?}"))
        }
        (_, Err(err)) => Err(format!("rejected for an unexpected reason:\n{err}")),
    }
}

/// The error has `count` problems, and for each reason one about that element that says so. Reasons
/// naming a construct in parentheses must be "not supported" problems.
fn check_problems(err: &BpmnError, count: usize, reasons: &[(&str, &str)]) -> Result<(), String> {
    let problems = err.problems();
    let mut unmatched: Vec<String> = Vec::new();
    for (id, words) in reasons {
        let found = problems.iter().any(|p| {
            p.element_id.as_deref() == Some(*id)
                && p.message.contains(&format!("'{id}'"))
                && p.message.contains(words)
                && (!words.starts_with('(') || p.message.ends_with(UNSUPPORTED))
        });
        if !found {
            unmatched.push(format!("no problem about '{id}' saying {words:?}"));
        }
    }
    if problems.len() != count {
        unmatched.push(format!("expected {count} problem(s), got {}", problems.len()));
    }
    if unmatched.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\nactual error:\n{err}", unmatched.join("\n")))
    }
}
