use super::*;
use crate::model::{ElementKind, EndKind, Mapping, ProcessModel, StartTrigger, TaskBehavior, TaskKind, ValueExpr};

const RESOURCE: &str = "test.bpmn";

/// A definitions document with one executable process `p` holding `body`, plus document-level
/// definitions (`bpmn:message`, `bpmn:error`) in `globals`.
fn document(body: &str, globals: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:zeebe="http://camunda.org/schema/zeebe/1.0"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" id="Definitions_1">
  <bpmn:process id="p" name="Test process" isExecutable="true">
{body}
  </bpmn:process>
{globals}
</bpmn:definitions>"#
    )
}

fn parse_ok(body: &str, globals: &str) -> ProcessModel {
    match parse_processes(RESOURCE, document(body, globals).as_bytes()) {
        Ok(mut processes) => {
            assert_eq!(processes.len(), 1);
            processes.remove(0)
        }
        Err(err) => panic!("expected the process to parse, got:\n{err}"),
    }
}

fn error_of(body: &str, globals: &str) -> BpmnError {
    match parse_processes(RESOURCE, document(body, globals).as_bytes()) {
        Ok(_) => panic!("expected the process to be rejected"),
        Err(err) => err,
    }
}

/// Asserts that some line of the error message contains every fragment.
fn assert_problem(err: &BpmnError, fragments: &[&str]) {
    let message = err.to_string();
    assert!(
        message.lines().any(|line| fragments.iter().all(|f| line.contains(f))),
        "no line of the error contains all of {fragments:?}:\n{message}"
    );
}

const START_TO_END: &str = r#"
    <bpmn:startEvent id="start"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:endEvent id="end"><bpmn:incoming>f1</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="end" />"#;

/// start -> `task` (id "task") -> end.
fn around(task: &str) -> String {
    format!(
        r#"
    <bpmn:startEvent id="start" />
    {task}
    <bpmn:endEvent id="end" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="task" />
    <bpmn:sequenceFlow id="f2" sourceRef="task" targetRef="end" />"#
    )
}

fn service_task(extensions: &str) -> String {
    format!(
        r#"<bpmn:serviceTask id="task"><bpmn:extensionElements>{extensions}</bpmn:extensionElements></bpmn:serviceTask>"#
    )
}

fn job_of<'m>(model: &'m ProcessModel, id: &str) -> (TaskKind, &'m crate::model::JobDefinition) {
    match &model.element(model.find(id).expect("element exists")).kind {
        ElementKind::Task { kind, behavior: TaskBehavior::Job(job) } => (*kind, job),
        other => panic!("expected a job task, got {other:?}"),
    }
}

fn static_value(value: &ValueExpr) -> &str {
    match value {
        ValueExpr::Static(s) => s,
        ValueExpr::Feel(e) => panic!("expected a static value, got {e:?}"),
    }
}

#[test]
fn minimal_process_puts_the_process_first_and_links_flows() {
    let model = parse_ok(START_TO_END, "");
    assert_eq!(model.bpmn_process_id, "p");
    assert_eq!(model.name.as_deref(), Some("Test process"));
    let root = model.element(ProcessModel::ROOT);
    assert_eq!(root.id, "p");
    assert!(root.parent.is_none());
    let start = model.find("start").unwrap();
    let end = model.find("end").unwrap();
    assert!(matches!(root.kind, ElementKind::Process { none_start: Some(s) } if s == start));
    assert_eq!(model.none_start_of(ProcessModel::ROOT), Some(start));
    assert_eq!(model.element(start).parent, Some(ProcessModel::ROOT));
    assert_eq!(model.flows.len(), 1);
    let flow = model.flow(0);
    assert_eq!((flow.id.as_str(), flow.source, flow.target), ("f1", start, end));
    assert_eq!(model.element(start).outgoing, vec![0]);
    assert_eq!(model.element(end).incoming, vec![0]);
    assert!(matches!(model.element(end).kind, ElementKind::EndEvent { kind: EndKind::None }));
}

#[test]
fn service_task_without_job_type_is_rejected() {
    let err = error_of(&around(r#"<bpmn:serviceTask id="task" />"#), "");
    assert_eq!(
        err.to_string(),
        "'test.bpmn': element 'task' (serviceTask): must have a job type (zeebe:taskDefinition type)"
    );
    assert_eq!(err.problems()[0].element_id.as_deref(), Some("task"));

    let err = error_of(&around(&service_task(r#"<zeebe:taskDefinition type="  " />"#)), "");
    assert_problem(&err, &["'task' (serviceTask)", "must have a job type"]);
}

#[test]
fn send_and_business_rule_tasks_need_a_job_type_too() {
    let err = error_of(&around(r#"<bpmn:sendTask id="task" />"#), "");
    assert_problem(&err, &["'task' (sendTask)", "must have a job type"]);
    let err = error_of(&around(r#"<bpmn:businessRuleTask id="task" />"#), "");
    assert_problem(&err, &["'task' (businessRuleTask)", "must have a job type"]);

    let model = parse_ok(
        &around(
            r#"<bpmn:sendTask id="task"><bpmn:extensionElements><zeebe:taskDefinition type="mail" /></bpmn:extensionElements></bpmn:sendTask>"#,
        ),
        "",
    );
    let (kind, job) = job_of(&model, "task");
    assert_eq!(kind, TaskKind::Send);
    assert_eq!(static_value(&job.job_type), "mail");
}

#[test]
fn job_type_and_retries_are_static_or_feel_and_retries_default_to_three() {
    let model = parse_ok(&around(&service_task(r#"<zeebe:taskDefinition type="payment" />"#)), "");
    let (kind, job) = job_of(&model, "task");
    assert_eq!(kind, TaskKind::Service);
    assert_eq!(static_value(&job.job_type), "payment");
    assert_eq!(static_value(&job.retries), "3");

    let model = parse_ok(
        &around(&service_task(r#"<zeebe:taskDefinition type="= &quot;pay-&quot; + region" retries="=tries" />"#)),
        "",
    );
    let (_, job) = job_of(&model, "task");
    assert!(matches!(job.job_type, ValueExpr::Feel(_)));
    assert!(matches!(job.retries, ValueExpr::Feel(_)));
}

#[test]
fn static_retries_must_be_a_whole_number() {
    let err = error_of(&around(&service_task(r#"<zeebe:taskDefinition type="x" retries="many" />"#)), "");
    assert_problem(&err, &["'task' (serviceTask)", "retries 'many' must be a whole number"]);
}

#[test]
fn invalid_feel_in_job_type_is_reported_with_the_expression() {
    let err = error_of(&around(&service_task(r#"<zeebe:taskDefinition type="= a +" />"#)), "");
    assert_problem(&err, &["'task' (serviceTask)", "job type '= a +' is not valid FEEL"]);
}

#[test]
fn task_headers_keep_their_order() {
    let model = parse_ok(
        &around(&service_task(
            r#"<zeebe:taskDefinition type="x" />
               <zeebe:taskHeaders><zeebe:header key="b" value="2" /><zeebe:header key="a" value="1" /></zeebe:taskHeaders>"#,
        )),
        "",
    );
    let (_, job) = job_of(&model, "task");
    assert_eq!(job.headers, vec![("b".to_string(), "2".to_string()), ("a".to_string(), "1".to_string())]);
}

#[test]
fn task_header_without_key_is_rejected() {
    let err = error_of(
        &around(&service_task(
            r#"<zeebe:taskDefinition type="x" /><zeebe:taskHeaders><zeebe:header value="1" /></zeebe:taskHeaders>"#,
        )),
        "",
    );
    assert_problem(&err, &["'task' (serviceTask)", "task header (zeebe:header) without a key"]);
}

#[test]
fn io_mappings_accept_feel_static_and_empty_sources() {
    let model = parse_ok(
        &around(&service_task(
            r#"<zeebe:taskDefinition type="x" />
               <zeebe:ioMapping>
                 <zeebe:input source="=order.total" target="total" />
                 <zeebe:input source="say &quot;hi&quot;" target="greeting" />
                 <zeebe:input target="nothing" />
                 <zeebe:output source="= result" target="order.result" />
               </zeebe:ioMapping>"#,
        )),
        "",
    );
    let task = model.element(model.find("task").unwrap());
    let targets = |mappings: &[Mapping]| mappings.iter().map(|m| m.target.clone()).collect::<Vec<_>>();
    assert_eq!(targets(&task.inputs), ["total", "greeting", "nothing"]);
    assert_eq!(targets(&task.outputs), ["order.result"]);
}

#[test]
fn io_mapping_target_is_required_and_must_be_a_variable_path() {
    let err = error_of(
        &around(&service_task(
            r#"<zeebe:taskDefinition type="x" /><zeebe:ioMapping><zeebe:input source="=a" /></zeebe:ioMapping>"#,
        )),
        "",
    );
    assert_problem(&err, &["'task' (serviceTask)", "zeebe:input mapping without a target"]);

    let err = error_of(
        &around(&service_task(
            r#"<zeebe:taskDefinition type="x" /><zeebe:ioMapping><zeebe:output source="=a" target="$.foo" /></zeebe:ioMapping>"#,
        )),
        "",
    );
    assert_problem(&err, &["'task' (serviceTask)", "output mapping target '$.foo'"]);
}

#[test]
fn io_mapping_source_must_be_valid_feel() {
    let err = error_of(
        &around(&service_task(
            r#"<zeebe:taskDefinition type="x" /><zeebe:ioMapping><zeebe:input source="= (a" target="a" /></zeebe:ioMapping>"#,
        )),
        "",
    );
    assert_problem(&err, &["'task' (serviceTask)", "input mapping source '= (a' is not valid FEEL"]);
}

#[test]
fn sequence_flow_to_a_missing_element_is_rejected() {
    let body = format!("{START_TO_END}\n<bpmn:sequenceFlow id=\"Flow_3\" sourceRef=\"start\" targetRef=\"Nowhere\" />");
    let err = error_of(&body, "");
    assert_eq!(err.to_string(), "'test.bpmn': sequence flow 'Flow_3' targets 'Nowhere', which does not exist");

    let body = format!("{START_TO_END}\n<bpmn:sequenceFlow id=\"Flow_4\" targetRef=\"end\" />");
    assert_problem(&error_of(&body, ""), &["sequence flow 'Flow_4': has no sourceRef"]);
}

#[test]
fn sequence_flow_cannot_cross_a_subprocess_boundary() {
    let body = r#"
    <bpmn:startEvent id="start" />
    <bpmn:subProcess id="sub">
      <bpmn:startEvent id="inner_start" />
      <bpmn:endEvent id="inner_end" />
      <bpmn:sequenceFlow id="inner" sourceRef="inner_start" targetRef="inner_end" />
    </bpmn:subProcess>
    <bpmn:sequenceFlow id="cross" sourceRef="start" targetRef="inner_end" />"#;
    let err = error_of(body, "");
    assert_problem(&err, &["sequence flow 'cross' targets 'inner_end', which is in another scope"]);
}

#[test]
fn embedded_subprocess_is_a_scope_with_its_own_none_start() {
    let body = r#"
    <bpmn:startEvent id="start" />
    <bpmn:subProcess id="sub">
      <bpmn:startEvent id="inner_start" />
      <bpmn:task id="inner_task" />
      <bpmn:sequenceFlow id="inner" sourceRef="inner_start" targetRef="inner_task" />
    </bpmn:subProcess>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="sub" />"#;
    let model = parse_ok(body, "");
    let sub = model.find("sub").unwrap();
    let inner_start = model.find("inner_start").unwrap();
    assert_eq!(model.element(sub).parent, Some(ProcessModel::ROOT));
    assert_eq!(model.element(inner_start).parent, Some(sub));
    assert_eq!(model.element(model.find("inner_task").unwrap()).parent, Some(sub));
    assert_eq!(model.none_start_of(sub), Some(inner_start));
    assert!(model.element(sub).is_container());
}

#[test]
fn process_and_subprocess_need_a_start_event() {
    let err = error_of(r#"<bpmn:endEvent id="end" />"#, "");
    assert_problem(&err, &["process 'p': has no start event"]);

    let body = r#"
    <bpmn:startEvent id="start" />
    <bpmn:subProcess id="sub"><bpmn:endEvent id="inner_end" /></bpmn:subProcess>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="sub" />"#;
    assert_problem(&error_of(body, ""), &["element 'sub' (subProcess): has no start event"]);
}

#[test]
fn at_most_one_none_start_event_per_scope() {
    let err = error_of(r#"<bpmn:startEvent id="a" /><bpmn:startEvent id="b" />"#, "");
    assert_problem(&err, &["process 'p': has 2 none start events; at most one is allowed"]);
}

#[test]
fn exclusive_gateway_default_must_be_one_of_its_outgoing_flows() {
    let body = r#"
    <bpmn:startEvent id="start" />
    <bpmn:exclusiveGateway id="gw" default="f1" />
    <bpmn:endEvent id="end" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="gw" />
    <bpmn:sequenceFlow id="f2" sourceRef="gw" targetRef="end" />"#;
    let err = error_of(body, "");
    assert_problem(
        &err,
        &["element 'gw' (exclusiveGateway): its default flow 'f1' is not one of its outgoing sequence flows"],
    );

    let err = error_of(&body.replace("default=\"f1\"", "default=\"missing\""), "");
    assert_problem(&err, &["element 'gw' (exclusiveGateway): its default flow 'missing' does not exist"]);
}

const GATEWAY: &str = r#"
    <bpmn:startEvent id="start" />
    <bpmn:exclusiveGateway id="gw" default="to_b" />
    <bpmn:endEvent id="a" />
    <bpmn:endEvent id="b" />
    <bpmn:sequenceFlow id="in" sourceRef="start" targetRef="gw" />
    <bpmn:sequenceFlow id="to_a" sourceRef="gw" targetRef="a">CONDITION</bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="to_b" sourceRef="gw" targetRef="b" />"#;

fn gateway_with(condition: &str) -> String {
    GATEWAY.replace("CONDITION", condition)
}

#[test]
fn exclusive_gateway_resolves_default_and_conditions_with_optional_equals() {
    for condition in ["= x &gt; 5", "x &gt; 5"] {
        let body = gateway_with(&format!(
            r#"<bpmn:conditionExpression xsi:type="bpmn:tFormalExpression">{condition}</bpmn:conditionExpression>"#
        ));
        let model = parse_ok(&body, "");
        let gw = model.element(model.find("gw").unwrap());
        let default = model.flows.iter().position(|f| f.id == "to_b").unwrap();
        assert!(matches!(gw.kind, ElementKind::ExclusiveGateway { default_flow: Some(d) } if d == default));
        let to_a = model.flows.iter().find(|f| f.id == "to_a").unwrap();
        assert!(to_a.condition.is_some());
        assert_eq!(gw.outgoing.len(), 2);
    }
}

#[test]
fn exclusive_gateway_flows_other_than_default_need_a_condition() {
    let err = error_of(&gateway_with(""), "");
    assert_problem(&err, &["sequence flow 'to_a': leaves exclusive gateway 'gw' without a condition expression"]);
}

#[test]
fn exclusive_gateway_with_a_single_outgoing_flow_may_omit_the_condition() {
    let body = r#"
    <bpmn:startEvent id="start" />
    <bpmn:exclusiveGateway id="gw" />
    <bpmn:endEvent id="end" />
    <bpmn:sequenceFlow id="in" sourceRef="start" targetRef="gw" />
    <bpmn:sequenceFlow id="out" sourceRef="gw" targetRef="end" />"#;
    let model = parse_ok(body, "");
    assert!(matches!(
        model.element(model.find("gw").unwrap()).kind,
        ElementKind::ExclusiveGateway { default_flow: None }
    ));
}

#[test]
fn invalid_condition_is_reported_as_feel_error() {
    let body = gateway_with(r#"<bpmn:conditionExpression>= x &gt;</bpmn:conditionExpression>"#);
    let err = error_of(&body, "");
    assert_problem(&err, &["sequence flow 'to_a': condition expression '= x >' is not valid FEEL: "]);
}

#[test]
fn condition_outside_an_exclusive_gateway_is_rejected() {
    let body = r#"
    <bpmn:startEvent id="start" />
    <bpmn:endEvent id="end" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="end">
      <bpmn:conditionExpression>= true</bpmn:conditionExpression>
    </bpmn:sequenceFlow>"#;
    let err = error_of(body, "");
    assert_problem(&err, &["sequence flow 'f1': has a condition expression but leaves a startEvent"]);
}

#[test]
fn parallel_gateway_forks_and_joins() {
    let body = r#"
    <bpmn:startEvent id="start" />
    <bpmn:parallelGateway id="fork" />
    <bpmn:manualTask id="a" />
    <bpmn:task id="b" />
    <bpmn:parallelGateway id="join" />
    <bpmn:endEvent id="end" />
    <bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="fork" />
    <bpmn:sequenceFlow id="f1" sourceRef="fork" targetRef="a" />
    <bpmn:sequenceFlow id="f2" sourceRef="fork" targetRef="b" />
    <bpmn:sequenceFlow id="f3" sourceRef="a" targetRef="join" />
    <bpmn:sequenceFlow id="f4" sourceRef="b" targetRef="join" />
    <bpmn:sequenceFlow id="f5" sourceRef="join" targetRef="end" />"#;
    let model = parse_ok(body, "");
    let join = model.element(model.find("join").unwrap());
    assert!(matches!(join.kind, ElementKind::ParallelGateway));
    assert_eq!(join.incoming.len(), 2);
    let a = &model.element(model.find("a").unwrap()).kind;
    let b = &model.element(model.find("b").unwrap()).kind;
    assert!(matches!(a, ElementKind::Task { kind: TaskKind::Manual, behavior: TaskBehavior::PassThrough }));
    assert!(matches!(b, ElementKind::Task { kind: TaskKind::Undefined, behavior: TaskBehavior::PassThrough }));
}

const ORDER_MESSAGE: &str = r#"
  <bpmn:message id="Msg" name="order-paid">
    <bpmn:extensionElements><zeebe:subscription correlationKey="=orderId" /></bpmn:extensionElements>
  </bpmn:message>"#;

#[test]
fn message_catch_event_and_receive_task_resolve_name_and_correlation_key() {
    let catch = r#"<bpmn:intermediateCatchEvent id="task"><bpmn:messageEventDefinition messageRef="Msg" /></bpmn:intermediateCatchEvent>"#;
    let model = parse_ok(&around(catch), ORDER_MESSAGE);
    let ElementKind::IntermediateCatchEvent { message } = &model.element(model.find("task").unwrap()).kind else {
        panic!("expected a message catch event");
    };
    assert_eq!(static_value(&message.name), "order-paid");
    assert!(message.correlation_key.is_some());

    let model = parse_ok(&around(r#"<bpmn:receiveTask id="task" messageRef="Msg" />"#), ORDER_MESSAGE);
    let ElementKind::ReceiveTask { message } = &model.element(model.find("task").unwrap()).kind else {
        panic!("expected a receive task");
    };
    assert!(message.correlation_key.is_some());
}

#[test]
fn message_catch_needs_an_existing_named_message_with_a_correlation_key() {
    let catch = |message_ref: &str| {
        around(&format!(
            r#"<bpmn:intermediateCatchEvent id="task"><bpmn:messageEventDefinition {message_ref} /></bpmn:intermediateCatchEvent>"#
        ))
    };
    assert_problem(
        &error_of(&catch(""), ORDER_MESSAGE),
        &["'task' (intermediateCatchEvent): must reference a bpmn:message"],
    );
    assert_problem(
        &error_of(&catch(r#"messageRef="Other""#), ORDER_MESSAGE),
        &["'task' (intermediateCatchEvent): references message 'Other', which does not exist"],
    );
    let unnamed = r#"<bpmn:message id="Msg"><bpmn:extensionElements><zeebe:subscription correlationKey="=id" /></bpmn:extensionElements></bpmn:message>"#;
    assert_problem(&error_of(&catch(r#"messageRef="Msg""#), unnamed), &["message 'Msg' has no name"]);
    let keyless = r#"<bpmn:message id="Msg" name="m" />"#;
    assert_problem(
        &error_of(&catch(r#"messageRef="Msg""#), keyless),
        &["'task' (intermediateCatchEvent)", "needs a correlation key (zeebe:subscription correlationKey)"],
    );
    let static_key = r#"<bpmn:message id="Msg" name="m"><bpmn:extensionElements><zeebe:subscription correlationKey="orderId" /></bpmn:extensionElements></bpmn:message>"#;
    assert_problem(
        &error_of(&catch(r#"messageRef="Msg""#), static_key),
        &["correlation key 'orderId' of message 'Msg' must be a FEEL expression starting with '='"],
    );
    let bad_key = r#"<bpmn:message id="Msg" name="m"><bpmn:extensionElements><zeebe:subscription correlationKey="= a +" /></bpmn:extensionElements></bpmn:message>"#;
    assert_problem(&error_of(&catch(r#"messageRef="Msg""#), bad_key), &["correlation key '= a +' is not valid FEEL"]);
}

#[test]
fn message_start_event_needs_a_named_message_but_no_correlation_key() {
    let body = r#"
    <bpmn:startEvent id="start"><bpmn:messageEventDefinition messageRef="Msg" /></bpmn:startEvent>
    <bpmn:endEvent id="end" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="end" />"#;
    let model = parse_ok(body, r#"<bpmn:message id="Msg" name="start-it" />"#);
    assert_eq!(model.none_start_of(ProcessModel::ROOT), None);
    let starts: Vec<_> = model.message_start_events().collect();
    assert_eq!(starts.len(), 1);
    assert_eq!(static_value(&starts[0].1.name), "start-it");
    assert!(starts[0].1.correlation_key.is_none());

    assert_problem(
        &error_of(body, r#"<bpmn:message id="Msg" />"#),
        &["'start' (startEvent): message 'Msg' has no name"],
    );
}

#[test]
fn message_start_event_inside_a_subprocess_is_rejected() {
    let body = r#"
    <bpmn:startEvent id="start" />
    <bpmn:subProcess id="sub">
      <bpmn:startEvent id="inner"><bpmn:messageEventDefinition messageRef="Msg" /></bpmn:startEvent>
    </bpmn:subProcess>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="sub" />"#;
    let err = error_of(body, r#"<bpmn:message id="Msg" name="m" />"#);
    assert_problem(&err, &["'inner' (startEvent): an embedded subprocess can only have a none start event"]);
}

#[test]
fn end_events_may_be_none_terminate_or_error() {
    let body = r#"
    <bpmn:startEvent id="start" />
    <bpmn:parallelGateway id="fork" />
    <bpmn:endEvent id="t"><bpmn:terminateEventDefinition /></bpmn:endEvent>
    <bpmn:endEvent id="e"><bpmn:errorEventDefinition errorRef="Err" /></bpmn:endEvent>
    <bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="fork" />
    <bpmn:sequenceFlow id="f1" sourceRef="fork" targetRef="t" />
    <bpmn:sequenceFlow id="f2" sourceRef="fork" targetRef="e" />"#;
    let model = parse_ok(body, r#"<bpmn:error id="Err" name="Failed" errorCode="PAYMENT_FAILED" />"#);
    assert!(matches!(model.element(model.find("t").unwrap()).kind, ElementKind::EndEvent { kind: EndKind::Terminate }));
    match &model.element(model.find("e").unwrap()).kind {
        ElementKind::EndEvent { kind: EndKind::Error { error_code } } => assert_eq!(error_code, "PAYMENT_FAILED"),
        other => panic!("expected an error end event, got {other:?}"),
    }
}

#[test]
fn error_end_event_needs_an_error_with_a_code() {
    let end = |definition: &str| {
        format!(
            r#"<bpmn:startEvent id="start" /><bpmn:endEvent id="e">{definition}</bpmn:endEvent>
               <bpmn:sequenceFlow id="f" sourceRef="start" targetRef="e" />"#
        )
    };
    assert_problem(
        &error_of(&end("<bpmn:errorEventDefinition />"), ""),
        &["'e' (endEvent): an error end event must reference a bpmn:error (errorRef)"],
    );
    assert_problem(
        &error_of(&end(r#"<bpmn:errorEventDefinition errorRef="Nope" />"#), ""),
        &["'e' (endEvent): references error 'Nope', which does not exist"],
    );
    assert_problem(
        &error_of(&end(r#"<bpmn:errorEventDefinition errorRef="Err" />"#), r#"<bpmn:error id="Err" name="x" />"#),
        &["'e' (endEvent): error 'Err' has no errorCode"],
    );
}

/// start -> task (service) -> end, with `boundary` attached and leading to `recovered`.
fn with_boundary(boundary: &str) -> String {
    format!(
        r#"{}
    {boundary}
    <bpmn:endEvent id="recovered" />
    <bpmn:sequenceFlow id="f3" sourceRef="boundary" targetRef="recovered" />"#,
        around(&service_task(r#"<zeebe:taskDefinition type="x" />"#))
    )
}

#[test]
fn error_boundary_events_attach_to_their_activity() {
    let body = with_boundary(
        r#"<bpmn:boundaryEvent id="boundary" attachedToRef="task"><bpmn:errorEventDefinition errorRef="Err" /></bpmn:boundaryEvent>
           <bpmn:boundaryEvent id="catch_all" attachedToRef="task"><bpmn:outgoing>f4</bpmn:outgoing><bpmn:errorEventDefinition /></bpmn:boundaryEvent>
           <bpmn:sequenceFlow id="f4" sourceRef="catch_all" targetRef="recovered" />"#,
    );
    let model = parse_ok(&body, r#"<bpmn:error id="Err" errorCode="E1" />"#);
    let task = model.find("task").unwrap();
    let boundary = model.find("boundary").unwrap();
    let catch_all = model.find("catch_all").unwrap();
    assert_eq!(model.element(task).boundary_events, vec![boundary, catch_all]);
    match &model.element(boundary).kind {
        ElementKind::BoundaryEvent { attached_to, error_code, interrupting } => {
            assert_eq!(*attached_to, task);
            assert_eq!(error_code.as_deref(), Some("E1"));
            assert!(*interrupting);
        }
        other => panic!("expected a boundary event, got {other:?}"),
    }
    assert!(matches!(model.element(catch_all).kind, ElementKind::BoundaryEvent { error_code: None, .. }));
    assert_eq!(model.element(boundary).parent, Some(ProcessModel::ROOT));
}

#[test]
fn boundary_event_must_attach_to_an_existing_activity() {
    let boundary = |attached: &str| {
        with_boundary(&format!(
            r#"<bpmn:boundaryEvent id="boundary" {attached}><bpmn:errorEventDefinition /></bpmn:boundaryEvent>"#
        ))
    };
    assert_problem(
        &error_of(&boundary(r#"attachedToRef="ghost""#), ""),
        &["'boundary' (boundaryEvent): is attached to 'ghost', which does not exist"],
    );
    assert_problem(
        &error_of(&boundary(r#"attachedToRef="end""#), ""),
        &["'boundary' (boundaryEvent): is attached to 'end', a endEvent, which is not an activity"],
    );
    assert_problem(&error_of(&boundary(""), ""), &["'boundary' (boundaryEvent): a boundary event must be attached"]);
}

#[test]
fn error_boundary_event_cannot_be_non_interrupting() {
    let body = with_boundary(
        r#"<bpmn:boundaryEvent id="boundary" attachedToRef="task" cancelActivity="false"><bpmn:errorEventDefinition /></bpmn:boundaryEvent>"#,
    );
    assert_problem(&error_of(&body, ""), &["'boundary' (boundaryEvent): an error boundary event always interrupts"]);
}

#[test]
fn two_boundary_events_cannot_catch_the_same_error() {
    let body = with_boundary(
        r#"<bpmn:boundaryEvent id="boundary" attachedToRef="task"><bpmn:errorEventDefinition /></bpmn:boundaryEvent>
           <bpmn:boundaryEvent id="again" attachedToRef="task"><bpmn:errorEventDefinition /></bpmn:boundaryEvent>
           <bpmn:sequenceFlow id="f4" sourceRef="again" targetRef="recovered" />"#,
    );
    assert_problem(
        &error_of(&body, ""),
        &["'again' (boundaryEvent): activity 'task' already has an error boundary event catching all errors"],
    );
}

#[test]
fn unsupported_elements_are_named_with_what_they_are() {
    let timer = r#"<bpmn:intermediateCatchEvent id="Timer_1"><bpmn:timerEventDefinition><bpmn:timeDuration>PT1S</bpmn:timeDuration></bpmn:timerEventDefinition></bpmn:intermediateCatchEvent>"#;
    let body = around(&timer.replace("Timer_1", "task"));
    let err = error_of(&body, "");
    assert_eq!(
        err.to_string(),
        "'test.bpmn': element 'task' (intermediateCatchEvent with timerEventDefinition) is not supported by this engine yet"
    );

    let cases = [
        (r#"<bpmn:callActivity id="task" />"#, "element 'task' (callActivity) is not supported"),
        (r#"<bpmn:inclusiveGateway id="task" />"#, "element 'task' (inclusiveGateway) is not supported"),
        (r#"<bpmn:eventBasedGateway id="task" />"#, "element 'task' (eventBasedGateway) is not supported"),
        (r#"<bpmn:adHocSubProcess id="task" />"#, "element 'task' (adHocSubProcess) is not supported"),
        (r#"<bpmn:transaction id="task" />"#, "element 'task' (transaction) is not supported"),
        (
            r#"<bpmn:intermediateThrowEvent id="task"><bpmn:signalEventDefinition /></bpmn:intermediateThrowEvent>"#,
            "element 'task' (intermediateThrowEvent with signalEventDefinition) is not supported",
        ),
        (
            r#"<bpmn:intermediateThrowEvent id="task"><bpmn:linkEventDefinition name="l" /></bpmn:intermediateThrowEvent>"#,
            "element 'task' (intermediateThrowEvent with linkEventDefinition) is not supported",
        ),
        (
            r#"<bpmn:serviceTask id="task"><bpmn:extensionElements><zeebe:taskDefinition type="x" /></bpmn:extensionElements>
               <bpmn:multiInstanceLoopCharacteristics /></bpmn:serviceTask>"#,
            "element 'task' (serviceTask with multiInstanceLoopCharacteristics) is not supported",
        ),
        (
            r#"<bpmn:businessRuleTask id="task"><bpmn:extensionElements><zeebe:calledDecision decisionId="d" resultVariable="r" /></bpmn:extensionElements></bpmn:businessRuleTask>"#,
            "element 'task' (businessRuleTask with zeebe:calledDecision (a DMN decision)) is not supported",
        ),
        (
            r#"<bpmn:userTask id="task"><bpmn:extensionElements><zeebe:userTask /></bpmn:extensionElements></bpmn:userTask>"#,
            "element 'task' (userTask with zeebe:userTask (a Camunda user task)) is not supported",
        ),
    ];
    for (element, expected) in cases {
        let err = error_of(&around(element), "");
        // Flows to and from the unsupported element are not reported a second time.
        assert_eq!(err.problems().len(), 1, "{err}");
        assert_problem(&err, &[expected]);
    }
}

#[test]
fn unsupported_start_and_boundary_events_are_rejected() {
    let body = r#"
    <bpmn:startEvent id="start"><bpmn:signalEventDefinition signalRef="S" /></bpmn:startEvent>
    <bpmn:endEvent id="end" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="end" />"#;
    assert_problem(&error_of(body, ""), &["element 'start' (startEvent with signalEventDefinition) is not supported"]);

    let body = with_boundary(
        r#"<bpmn:boundaryEvent id="boundary" attachedToRef="task"><bpmn:timerEventDefinition /></bpmn:boundaryEvent>"#,
    );
    assert_problem(
        &error_of(&body, ""),
        &["element 'boundary' (boundaryEvent with timerEventDefinition) is not supported"],
    );
}

#[test]
fn event_subprocess_is_rejected() {
    let body = format!(
        r#"{START_TO_END}
    <bpmn:subProcess id="events" triggeredByEvent="true">
      <bpmn:startEvent id="on_error"><bpmn:errorEventDefinition /></bpmn:startEvent>
    </bpmn:subProcess>"#
    );
    assert_problem(
        &error_of(&body, ""),
        &["element 'events' (subProcess with triggeredByEvent, i.e. an event subprocess) is not supported"],
    );
}

#[test]
fn user_task_without_task_definition_becomes_a_zeebe_user_task_job() {
    let model = parse_ok(&around(r#"<bpmn:userTask id="task" name="Approve" />"#), "");
    let (kind, job) = job_of(&model, "task");
    assert_eq!(kind, TaskKind::User);
    assert_eq!(static_value(&job.job_type), "io.camunda.zeebe:userTask");
    assert_eq!(static_value(&job.retries), "3");
    assert_eq!(model.element(model.find("task").unwrap()).name.as_deref(), Some("Approve"));
}

#[test]
fn script_task_runs_a_feel_script_or_a_job() {
    let script = r#"<bpmn:scriptTask id="task"><bpmn:extensionElements><zeebe:script expression="= a + 1" resultVariable="b" /></bpmn:extensionElements></bpmn:scriptTask>"#;
    let model = parse_ok(&around(script), "");
    match &model.element(model.find("task").unwrap()).kind {
        ElementKind::Task { kind: TaskKind::Script, behavior: TaskBehavior::Script { result_variable, .. } } => {
            assert_eq!(result_variable, "b");
        }
        other => panic!("expected a FEEL script task, got {other:?}"),
    }

    let job_script = r#"<bpmn:scriptTask id="task"><bpmn:extensionElements><zeebe:taskDefinition type="js" /></bpmn:extensionElements></bpmn:scriptTask>"#;
    let model = parse_ok(&around(job_script), "");
    assert_eq!(job_of(&model, "task").0, TaskKind::Script);

    assert_problem(
        &error_of(&around(r#"<bpmn:scriptTask id="task" />"#), ""),
        &["'task' (scriptTask): must have either a FEEL script"],
    );
    let no_result = script.replace(r#" resultVariable="b""#, "");
    assert_problem(
        &error_of(&around(&no_result), ""),
        &["'task' (scriptTask): its zeebe:script has no resultVariable"],
    );
}

#[test]
fn collaboration_returns_every_executable_process_and_skips_the_others() {
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="d">
  <bpmn:collaboration id="c">
    <bpmn:participant id="pa" processRef="one" />
    <bpmn:participant id="pb" processRef="two" />
    <bpmn:participant id="pc" processRef="external" />
  </bpmn:collaboration>
  <bpmn:process id="one" isExecutable="true"><bpmn:startEvent id="s1" /></bpmn:process>
  <bpmn:process id="two" isExecutable="true"><bpmn:startEvent id="s2" /></bpmn:process>
  <bpmn:process id="external" isExecutable="false"><bpmn:serviceTask id="t" /></bpmn:process>
</bpmn:definitions>"#;
    let processes = parse_processes(RESOURCE, xml.as_bytes()).unwrap();
    let ids: Vec<_> = processes.iter().map(|p| p.bpmn_process_id.as_str()).collect();
    assert_eq!(ids, ["one", "two"]);
}

#[test]
fn resource_without_executable_process_is_rejected() {
    let xml = r#"<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="d">
  <bpmn:process id="one" isExecutable="false"><bpmn:startEvent id="s1" /></bpmn:process>
</bpmn:definitions>"#;
    let err = parse_processes(RESOURCE, xml.as_bytes()).unwrap_err();
    assert_problem(&err, &["'test.bpmn': contains no executable process", "isExecutable=\"true\""]);
}

#[test]
fn process_without_id_is_rejected() {
    let xml = r#"<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="d">
  <bpmn:process isExecutable="true"><bpmn:startEvent id="s1" /></bpmn:process>
</bpmn:definitions>"#;
    let err = parse_processes(RESOURCE, xml.as_bytes()).unwrap_err();
    assert_problem(&err, &["a process (at line 2, column 3): has no id"]);
}

#[test]
fn document_that_is_not_bpmn_is_rejected() {
    let err = parse_processes(RESOURCE, b"<html><body /></html>").unwrap_err();
    assert_problem(&err, &["root element is 'html', not a BPMN 2.0 'definitions' element"]);
}

#[test]
fn malformed_xml_reports_line_and_column() {
    let xml = "<bpmn:definitions xmlns:bpmn=\"http://www.omg.org/spec/BPMN/20100524/MODEL\">\n  <bpmn:process id=\"p\">\n</bpmn:definitions>";
    let err = parse_processes(RESOURCE, xml.as_bytes()).unwrap_err();
    let BpmnError::MalformedXml { line, .. } = &err else {
        panic!("expected malformed XML, got {err}");
    };
    assert_eq!(*line, 3);
    assert!(err.to_string().starts_with("'test.bpmn': malformed XML at line 3, column "), "{err}");

    let err = parse_processes(RESOURCE, b"<a>\n  \xff</a>").unwrap_err();
    assert_eq!(err.to_string(), "'test.bpmn': malformed XML at line 2, column 3: the document is not valid UTF-8");
}

#[test]
fn every_problem_is_listed_on_its_own_line() {
    let body = r#"
    <bpmn:startEvent id="start" />
    <bpmn:serviceTask id="a" />
    <bpmn:serviceTask id="b" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="a" />
    <bpmn:sequenceFlow id="f2" sourceRef="a" targetRef="missing" />"#;
    let err = error_of(body, "");
    let lines: Vec<_> = err.to_string().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(lines.iter().all(|line| line.starts_with("'test.bpmn': ")));
    assert_problem(&err, &["element 'a' (serviceTask): must have a job type"]);
    assert_problem(&err, &["element 'b' (serviceTask): must have a job type"]);
    assert_problem(&err, &["sequence flow 'f2' targets 'missing', which does not exist"]);
}

#[test]
fn duplicate_ids_are_rejected() {
    let body = format!(r#"{START_TO_END}<bpmn:task id="end" />"#);
    assert_problem(&error_of(&body, ""), &["element 'end' (task): its id is used by another element"]);
}

#[test]
fn start_events_cannot_have_incoming_flows_nor_end_events_outgoing() {
    let body = format!(r#"{START_TO_END}<bpmn:sequenceFlow id="back" sourceRef="end" targetRef="start" />"#);
    let err = error_of(&body, "");
    assert_problem(&err, &["'start' (startEvent): a start event cannot have incoming sequence flows"]);
    assert_problem(&err, &["'end' (endEvent): an end event cannot have outgoing sequence flows"]);
}

#[test]
fn decoration_and_foreign_extensions_are_ignored() {
    let body = r#"
    <bpmn:documentation>What this process does</bpmn:documentation>
    <bpmn:laneSet id="ls"><bpmn:lane id="lane"><bpmn:flowNodeRef>start</bpmn:flowNodeRef></bpmn:lane></bpmn:laneSet>
    <bpmn:startEvent id="start">
      <bpmn:extensionElements><camunda:properties xmlns:camunda="http://camunda.org/schema/1.0/bpmn" /></bpmn:extensionElements>
    </bpmn:startEvent>
    <bpmn:intermediateThrowEvent id="milestone" />
    <bpmn:endEvent id="end" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="milestone" />
    <bpmn:sequenceFlow id="f2" sourceRef="milestone" targetRef="end" />
    <bpmn:textAnnotation id="note"><bpmn:text>hello</bpmn:text></bpmn:textAnnotation>
    <bpmn:association id="assoc" sourceRef="start" targetRef="note" />
    <bpmn:dataObject id="data" />
    <bpmn:dataObjectReference id="data_ref" dataObjectRef="data" />"#;
    let model = parse_ok(body, "");
    assert_eq!(model.elements.len(), 4);
    assert!(matches!(model.element(model.find("milestone").unwrap()).kind, ElementKind::IntermediateThrowEvent));
    assert!(model.find("note").is_none());
}

#[test]
fn start_event_outputs_are_kept() {
    let body = r#"
    <bpmn:startEvent id="start">
      <bpmn:extensionElements><zeebe:ioMapping><zeebe:output source="= 0" target="count" /></zeebe:ioMapping></bpmn:extensionElements>
    </bpmn:startEvent>"#;
    let model = parse_ok(body, "");
    let start = model.element(model.find("start").unwrap());
    assert!(matches!(start.kind, ElementKind::StartEvent { trigger: StartTrigger::None }));
    assert_eq!(start.outputs.len(), 1);
    assert_eq!(start.outputs[0].target, "count");
}
