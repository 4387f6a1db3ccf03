//! The walk from XML to [`ProcessModel`]: resolve references, check the rules, collect problems.
//!
//! BPMN references point forwards and backwards freely (a sequence flow may come before the nodes
//! it connects, a boundary event before its activity, a message after the process), so each
//! executable process is built in passes: first every flow node and sequence flow of every scope is
//! registered and given its index, then flows are resolved, then each element's behaviour is built
//! with all indices known, and last the rules that span elements (start events per scope, gateway
//! conditions, boundary events) are checked. Problems accumulate in one list; a process is
//! assembled only if building it added none.

use std::collections::{HashMap, HashSet};
use std::fmt;

use roxmltree::{Document, Node, ParsingOptions};

use super::{BpmnError, Problem, BPMN_NS, ZEEBE_NS};
use crate::feel::Expression;
use crate::model::{
    Element, ElementIdx, ElementKind, EndKind, FlowIdx, JobDefinition, Mapping, MessageDefinition, ProcessModel,
    SequenceFlow, StartTrigger, TaskBehavior, TaskKind, ValueExpr,
};

type XmlNode<'a> = Node<'a, 'a>;

/// Job type of Zeebe's job-based user tasks: a user task without its own `zeebe:taskDefinition`
/// is handed to whatever tasklist worker subscribes to this type.
const USER_TASK_JOB_TYPE: &str = "io.camunda.zeebe:userTask";
/// Retries of a job whose task definition does not say.
const DEFAULT_RETRIES: &str = "3";
/// Bounds the work a hostile deployment can cause before any check runs.
const MAX_XML_NODES: u32 = 1_000_000;

/// Flow nodes of the BPMN namespace that this engine executes.
const SUPPORTED_FLOW_NODES: &[&str] = &[
    "startEvent",
    "endEvent",
    "intermediateCatchEvent",
    "intermediateThrowEvent",
    "boundaryEvent",
    "task",
    "serviceTask",
    "sendTask",
    "receiveTask",
    "userTask",
    "manualTask",
    "businessRuleTask",
    "scriptTask",
    "exclusiveGateway",
    "parallelGateway",
];

/// Children of a process or subprocess that do not change how it executes. Loop characteristics,
/// `incoming` and `outgoing` are listed because they are read by the element that owns them, not
/// by the scope walk.
const DECORATION: &[&str] = &[
    "documentation",
    "extensionElements",
    "laneSet",
    "textAnnotation",
    "association",
    "group",
    "dataObject",
    "dataObjectReference",
    "dataStore",
    "dataStoreReference",
    "dataInputAssociation",
    "dataOutputAssociation",
    "ioSpecification",
    "property",
    "auditing",
    "monitoring",
    "performer",
    "humanPerformer",
    "potentialOwner",
    "resourceRole",
    "incoming",
    "outgoing",
    "multiInstanceLoopCharacteristics",
    "standardLoopCharacteristics",
];

/// Activities: the flow nodes that may carry boundary events and loop characteristics.
const ACTIVITIES: &[&str] = &[
    "task",
    "serviceTask",
    "sendTask",
    "receiveTask",
    "userTask",
    "manualTask",
    "businessRuleTask",
    "scriptTask",
    "subProcess",
];

pub(super) fn parse_resource(resource: &str, xml: &[u8]) -> Result<Vec<ProcessModel>, BpmnError> {
    let text = decode(resource, xml)?;
    let options = ParsingOptions { allow_dtd: false, nodes_limit: MAX_XML_NODES, ..ParsingOptions::default() };
    let doc = Document::parse_with_options(text, options).map_err(|err| {
        let pos = err.pos();
        let message = err.to_string();
        let message = message.strip_suffix(&format!(" at {pos}")).unwrap_or(&message).to_string();
        BpmnError::MalformedXml { resource: resource.to_string(), line: pos.row, column: pos.col, message }
    })?;
    let mut problems = Vec::new();
    let processes = read_definitions(doc.root_element(), &mut problems);
    if problems.is_empty() {
        Ok(processes)
    } else {
        Err(BpmnError::Invalid { resource: resource.to_string(), problems })
    }
}

/// The document as text: UTF-8, with a leading byte order mark (which some editors write) dropped.
fn decode<'x>(resource: &str, xml: &'x [u8]) -> Result<&'x str, BpmnError> {
    let xml = xml.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(xml);
    std::str::from_utf8(xml).map_err(|err| {
        let valid = String::from_utf8_lossy(&xml[..err.valid_up_to()]);
        let line = valid.matches('\n').count() + 1;
        let column = valid.rsplit('\n').next().map_or(0, |last| last.chars().count()) + 1;
        BpmnError::MalformedXml {
            resource: resource.to_string(),
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(column).unwrap_or(u32::MAX),
            message: "the document is not valid UTF-8".to_string(),
        }
    })
}

fn read_definitions(root: XmlNode<'_>, problems: &mut Vec<Problem>) -> Vec<ProcessModel> {
    if !is_bpmn(root, "definitions") {
        problems.push(Problem {
            element_id: None,
            message: format!(
                "the document's root element is '{}', not a BPMN 2.0 'definitions' element (namespace {BPMN_NS})",
                root.tag_name().name()
            ),
        });
        return Vec::new();
    }
    let mut defs = Definitions { messages: HashMap::new(), errors: HashMap::new() };
    for child in bpmn_children(root) {
        let registry = match child.tag_name().name() {
            "message" => &mut defs.messages,
            "error" => &mut defs.errors,
            _ => continue,
        };
        if let Some(id) = child.attribute("id") {
            registry.insert(id, child);
        }
    }

    let processes: Vec<_> = bpmn_children(root).filter(|c| c.tag_name().name() == "process").collect();
    let executable: Vec<_> =
        processes.iter().copied().filter(|p| p.attribute("isExecutable") == Some("true")).collect();
    if executable.is_empty() {
        let message = if processes.is_empty() {
            "contains no bpmn:process".to_string()
        } else {
            format!(
                "contains no executable process ({} process(es), none with isExecutable=\"true\"); \
                 mark the process to deploy as executable",
                processes.len()
            )
        };
        problems.push(Problem { element_id: None, message });
        return Vec::new();
    }

    let mut seen_ids = HashSet::new();
    let mut models = Vec::new();
    for process in executable {
        if let Some(id) = process.attribute("id") {
            if !seen_ids.insert(id) {
                report(problems, process, ": is defined more than once in this resource");
                continue;
            }
        }
        if let Some(model) = ProcessBuilder::new(&defs, problems).build(process) {
            models.push(model);
        }
    }
    models
}

/// Document-level definitions that flow nodes refer to by id.
struct Definitions<'a> {
    messages: HashMap<&'a str, XmlNode<'a>>,
    errors: HashMap<&'a str, XmlNode<'a>>,
}

struct ProcessBuilder<'a, 'p> {
    defs: &'p Definitions<'a>,
    problems: &'p mut Vec<Problem>,
    /// Flow nodes in index order with their scope; index [`ProcessModel::ROOT`] is the process.
    nodes: Vec<(XmlNode<'a>, Option<ElementIdx>)>,
    index: HashMap<&'a str, ElementIdx>,
    /// Every id claimed so far by a flow node, a sequence flow or an unsupported element.
    ids: HashSet<&'a str>,
    /// Ids of elements already reported as unsupported: references to them are not reported again.
    unsupported: HashSet<&'a str>,
    /// Sequence flows with their id and scope, in document order.
    flow_nodes: Vec<(XmlNode<'a>, &'a str, ElementIdx)>,
}

/// The sequence flows of a process once their ends are resolved.
struct Flows<'a> {
    flows: Vec<SequenceFlow>,
    /// The XML of each resolved flow, by flow index.
    nodes: Vec<XmlNode<'a>>,
    /// Every declared flow id; `None` for flows that could not be resolved (already reported).
    by_id: HashMap<&'a str, Option<FlowIdx>>,
    incoming: Vec<Vec<FlowIdx>>,
    outgoing: Vec<Vec<FlowIdx>>,
}

impl<'a, 'p> ProcessBuilder<'a, 'p> {
    fn new(defs: &'p Definitions<'a>, problems: &'p mut Vec<Problem>) -> Self {
        ProcessBuilder {
            defs,
            problems,
            nodes: Vec::new(),
            index: HashMap::new(),
            ids: HashSet::new(),
            unsupported: HashSet::new(),
            flow_nodes: Vec::new(),
        }
    }

    fn build(mut self, process: XmlNode<'a>) -> Option<ProcessModel> {
        let problems_before = self.problems.len();
        let process_id = match process.attribute("id").map(str::trim).filter(|id| !id.is_empty()) {
            Some(id) => id,
            None => {
                self.report(process, ": has no id; an executable process needs one (it becomes its bpmnProcessId)");
                ""
            }
        };
        self.nodes.push((process, None));
        self.index.insert(process_id, ProcessModel::ROOT);
        self.ids.insert(process_id);
        self.collect_scope(process, ProcessModel::ROOT);

        let flows = self.resolve_flows();
        let mut kinds: Vec<Option<ElementKind>> = (0..self.nodes.len()).map(|idx| self.kind(idx, &flows)).collect();
        let mappings: Vec<_> = self.nodes.clone().into_iter().map(|(node, _)| self.io_mappings(node)).collect();
        self.check_scopes(&mut kinds, &flows);
        self.check_exclusive_gateways(&kinds, &flows);
        self.check_boundary_events(&kinds);
        if self.problems.len() != problems_before {
            return None;
        }

        let kinds: Vec<ElementKind> = kinds.into_iter().collect::<Option<_>>()?;
        let mappings: Vec<(Vec<Mapping>, Vec<Mapping>)> = mappings.into_iter().collect::<Option<_>>()?;
        let Flows { flows, mut incoming, mut outgoing, .. } = flows;
        let mut elements: Vec<Element> = self
            .nodes
            .iter()
            .zip(kinds)
            .zip(mappings)
            .enumerate()
            .map(|(idx, (((node, parent), kind), (inputs, outputs)))| Element {
                id: node.attribute("id").unwrap_or(process_id).to_string(),
                name: node.attribute("name").map(str::to_string),
                kind,
                parent: *parent,
                incoming: std::mem::take(&mut incoming[idx]),
                outgoing: std::mem::take(&mut outgoing[idx]),
                inputs,
                outputs,
                boundary_events: Vec::new(),
            })
            .collect();
        for idx in 0..elements.len() {
            if let ElementKind::BoundaryEvent { attached_to, .. } = elements[idx].kind {
                elements[attached_to].boundary_events.push(idx);
            }
        }
        Some(ProcessModel {
            bpmn_process_id: process_id.to_string(),
            name: process.attribute("name").map(str::to_string),
            element_by_id: self.index.into_iter().map(|(id, idx)| (id.to_string(), idx)).collect(),
            elements,
            flows,
        })
    }

    /// Pass 1: registers the flow nodes and sequence flows of a scope, recursing into subprocesses.
    fn collect_scope(&mut self, scope_node: XmlNode<'a>, scope: ElementIdx) {
        for child in bpmn_children(scope_node) {
            let tag = child.tag_name().name();
            if DECORATION.contains(&tag) {
                continue;
            }
            if tag == "sequenceFlow" {
                if let Some(id) = self.claim_id(child) {
                    self.flow_nodes.push((child, id, scope));
                }
            } else if tag == "subProcess" && child.attribute("triggeredByEvent") == Some("true") {
                self.unsupported(child, Some("triggeredByEvent, i.e. an event subprocess"));
            } else if tag == "subProcess" {
                if let Some(idx) = self.register(child, scope) {
                    self.collect_scope(child, idx);
                }
            } else if SUPPORTED_FLOW_NODES.contains(&tag) {
                self.register(child, scope);
            } else {
                self.unsupported(child, None);
            }
        }
    }

    fn register(&mut self, node: XmlNode<'a>, scope: ElementIdx) -> Option<ElementIdx> {
        let id = self.claim_id(node)?;
        let idx = self.nodes.len();
        self.nodes.push((node, Some(scope)));
        self.index.insert(id, idx);
        Some(idx)
    }

    /// The node's id, if it has one that no other node of the process uses.
    fn claim_id(&mut self, node: XmlNode<'a>) -> Option<&'a str> {
        match node.attribute("id").filter(|id| !id.trim().is_empty()) {
            None => {
                self.report(node, ": has no id");
                None
            }
            Some(id) if !self.ids.insert(id) => {
                self.report(node, ": its id is used by another element of the process; ids must be unique");
                None
            }
            Some(id) => Some(id),
        }
    }

    /// Pass 2: resolves each sequence flow's ends and condition.
    fn resolve_flows(&mut self) -> Flows<'a> {
        let mut flows = Flows {
            flows: Vec::new(),
            nodes: Vec::new(),
            by_id: HashMap::new(),
            incoming: vec![Vec::new(); self.nodes.len()],
            outgoing: vec![Vec::new(); self.nodes.len()],
        };
        for (node, id, scope) in self.flow_nodes.clone() {
            let source = self.flow_end(node, scope, "sourceRef", "starts at");
            let target = self.flow_end(node, scope, "targetRef", "targets");
            let condition = self.condition(node, source);
            let resolved = match (source, target, condition) {
                (Some(source), Some(target), Some(condition)) => {
                    let idx = flows.flows.len();
                    flows.flows.push(SequenceFlow { id: id.to_string(), source, target, condition });
                    flows.nodes.push(node);
                    flows.outgoing[source].push(idx);
                    flows.incoming[target].push(idx);
                    Some(idx)
                }
                _ => None,
            };
            flows.by_id.insert(id, resolved);
        }
        flows
    }

    /// One end of a sequence flow: an element of the flow's own scope.
    fn flow_end(&mut self, flow: XmlNode<'a>, scope: ElementIdx, attr: &str, verb: &str) -> Option<ElementIdx> {
        let Some(reference) = flow.attribute(attr) else {
            self.report(flow, format!(": has no {attr}"));
            return None;
        };
        if self.unsupported.contains(reference) {
            return None;
        }
        match self.index.get(reference) {
            None => {
                self.report(flow, format!(" {verb} '{reference}', which does not exist"));
                None
            }
            Some(&idx) if self.nodes[idx].1 != Some(scope) => {
                self.report(
                    flow,
                    format!(
                        " {verb} '{reference}', which is in another scope; a sequence flow cannot cross a \
                         subprocess boundary"
                    ),
                );
                None
            }
            Some(&idx) => Some(idx),
        }
    }

    /// The flow's condition: `Some(None)` without one, `None` if it is invalid (already reported).
    fn condition(&mut self, flow: XmlNode<'a>, source: Option<ElementIdx>) -> Option<Option<Expression>> {
        let Some(condition) = bpmn_children(flow).find(|c| c.tag_name().name() == "conditionExpression") else {
            return Some(None);
        };
        let raw: String = condition.children().filter_map(|c| c.text()).collect();
        let raw = raw.trim();
        if raw.is_empty() {
            self.report(flow, ": has an empty condition expression");
            return None;
        }
        if let Some(source) = source {
            let source_tag = self.nodes[source].0.tag_name().name();
            if source_tag != "exclusiveGateway" {
                self.report(
                    flow,
                    format!(
                        ": has a condition expression but leaves a {source_tag}; conditions are only supported on \
                         flows leaving an exclusive gateway"
                    ),
                );
                return None;
            }
        }
        let src = raw.strip_prefix('=').unwrap_or(raw);
        self.feel(flow, "condition expression", raw, src).map(Some)
    }

    /// Pass 3: what an element does, or `None` if it cannot be executed (already reported).
    fn kind(&mut self, idx: ElementIdx, flows: &Flows<'a>) -> Option<ElementKind> {
        let (node, scope) = self.nodes[idx];
        let tag = node.tag_name().name();
        if zeebe_extension(node, "executionListeners").is_some() {
            return self.unsupported(node, Some("zeebe:executionListeners"));
        }
        if ACTIVITIES.contains(&tag) && !self.check_activity_markers(node) {
            return None;
        }
        match tag {
            "process" => Some(ElementKind::Process { none_start: None }),
            "subProcess" => Some(ElementKind::SubProcess { none_start: None }),
            "startEvent" => self.start_event(node, scope),
            "endEvent" => self.end_event(node),
            "intermediateCatchEvent" => match self.event_definition(node)? {
                Some(def) if def.tag_name().name() == "messageEventDefinition" => {
                    let message = self.message(node, def, true)?;
                    Some(ElementKind::IntermediateCatchEvent { message })
                }
                Some(def) => self.unsupported(node, Some(def.tag_name().name())),
                None => {
                    self.report(node, ": an intermediate catch event needs an event definition (a message)");
                    None
                }
            },
            "intermediateThrowEvent" => match self.event_definition(node)? {
                None => Some(ElementKind::IntermediateThrowEvent),
                Some(def) => self.unsupported(node, Some(def.tag_name().name())),
            },
            "boundaryEvent" => self.boundary_event(node, scope),
            "serviceTask" => self.job_task(node, TaskKind::Service, None),
            "sendTask" => self.job_task(node, TaskKind::Send, None),
            "businessRuleTask" => match zeebe_extension(node, "calledDecision") {
                Some(_) => self.unsupported(node, Some("zeebe:calledDecision (a DMN decision)")),
                None => self.job_task(node, TaskKind::BusinessRule, None),
            },
            "scriptTask" => match zeebe_extension(node, "script") {
                Some(script) => self.script_task(node, script),
                None if zeebe_extension(node, "taskDefinition").is_none() => {
                    self.report(
                        node,
                        ": must have either a FEEL script (zeebe:script expression and resultVariable) or a job \
                         type (zeebe:taskDefinition type)",
                    );
                    None
                }
                None => self.job_task(node, TaskKind::Script, None),
            },
            "userTask" => match zeebe_extension(node, "userTask") {
                Some(_) => self.unsupported(node, Some("zeebe:userTask (a Camunda user task)")),
                None => self.job_task(node, TaskKind::User, Some(USER_TASK_JOB_TYPE)),
            },
            "manualTask" => Some(ElementKind::Task { kind: TaskKind::Manual, behavior: TaskBehavior::PassThrough }),
            "task" => Some(ElementKind::Task { kind: TaskKind::Undefined, behavior: TaskBehavior::PassThrough }),
            "receiveTask" => {
                let message = self.message(node, node, true)?;
                Some(ElementKind::ReceiveTask { message })
            }
            "exclusiveGateway" => self.exclusive_gateway(idx, node, flows),
            "parallelGateway" => Some(ElementKind::ParallelGateway),
            _ => self.unsupported(node, None),
        }
    }

    /// Rejects loop and compensation markers on an activity; `true` if it has none.
    fn check_activity_markers(&mut self, node: XmlNode<'a>) -> bool {
        for child in bpmn_children(node) {
            let marker = child.tag_name().name();
            if marker == "multiInstanceLoopCharacteristics" || marker == "standardLoopCharacteristics" {
                self.unsupported(node, Some(marker));
                return false;
            }
        }
        if node.attribute("isForCompensation") == Some("true") {
            self.unsupported(node, Some("isForCompensation"));
            return false;
        }
        true
    }

    /// The element's single event definition, `Ok(None)` for a none event.
    fn event_definition(&mut self, node: XmlNode<'a>) -> Option<Option<XmlNode<'a>>> {
        let mut definitions = bpmn_children(node).filter(|c| {
            let tag = c.tag_name().name();
            tag.ends_with("EventDefinition") || tag == "eventDefinitionRef"
        });
        let first = definitions.next();
        if definitions.next().is_some() {
            self.unsupported(node, Some("multiple event definitions"));
            return None;
        }
        Some(first)
    }

    fn start_event(&mut self, node: XmlNode<'a>, scope: Option<ElementIdx>) -> Option<ElementKind> {
        let trigger = match self.event_definition(node)? {
            None => StartTrigger::None,
            Some(def) if def.tag_name().name() == "messageEventDefinition" => {
                if scope != Some(ProcessModel::ROOT) {
                    self.report(node, ": an embedded subprocess can only have a none start event");
                    return None;
                }
                StartTrigger::Message(self.message(node, def, false)?)
            }
            Some(def) => return self.unsupported(node, Some(def.tag_name().name())),
        };
        Some(ElementKind::StartEvent { trigger })
    }

    fn end_event(&mut self, node: XmlNode<'a>) -> Option<ElementKind> {
        let kind = match self.event_definition(node)? {
            None => EndKind::None,
            Some(def) => match def.tag_name().name() {
                "terminateEventDefinition" => EndKind::Terminate,
                "errorEventDefinition" => {
                    let Some(error_ref) = def.attribute("errorRef") else {
                        self.report(node, ": an error end event must reference a bpmn:error (errorRef)");
                        return None;
                    };
                    EndKind::Error { error_code: self.error_code(node, error_ref)? }
                }
                other => return self.unsupported(node, Some(other)),
            },
        };
        Some(ElementKind::EndEvent { kind })
    }

    fn boundary_event(&mut self, node: XmlNode<'a>, scope: Option<ElementIdx>) -> Option<ElementKind> {
        let def = match self.event_definition(node)? {
            Some(def) if def.tag_name().name() == "errorEventDefinition" => def,
            Some(def) => return self.unsupported(node, Some(def.tag_name().name())),
            None => {
                self.report(node, ": a boundary event needs an event definition (an error)");
                return None;
            }
        };
        let error_code = match def.attribute("errorRef") {
            Some(error_ref) => Some(self.error_code(node, error_ref)?),
            None => None,
        };
        let interrupting = node.attribute("cancelActivity") != Some("false");
        if !interrupting {
            self.report(
                node,
                ": an error boundary event always interrupts its activity; remove cancelActivity=\"false\"",
            );
            return None;
        }
        let attached_to = self.attached_activity(node, scope)?;
        Some(ElementKind::BoundaryEvent { attached_to, error_code, interrupting })
    }

    fn attached_activity(&mut self, node: XmlNode<'a>, scope: Option<ElementIdx>) -> Option<ElementIdx> {
        let Some(reference) = node.attribute("attachedToRef") else {
            self.report(node, ": a boundary event must be attached to an activity (attachedToRef)");
            return None;
        };
        if self.unsupported.contains(reference) {
            return None;
        }
        let Some(&activity) = self.index.get(reference) else {
            self.report(node, format!(": is attached to '{reference}', which does not exist"));
            return None;
        };
        let (activity_node, activity_scope) = self.nodes[activity];
        let activity_tag = activity_node.tag_name().name();
        if !ACTIVITIES.contains(&activity_tag) {
            self.report(node, format!(": is attached to '{reference}', a {activity_tag}, which is not an activity"));
            return None;
        }
        if activity_scope != scope {
            self.report(node, format!(": must be in the same scope as the activity '{reference}' it is attached to"));
            return None;
        }
        Some(activity)
    }

    /// The `errorCode` of the `bpmn:error` an error event refers to.
    fn error_code(&mut self, node: XmlNode<'a>, error_ref: &str) -> Option<String> {
        let Some(error) = self.defs.errors.get(error_ref).copied() else {
            self.report(node, format!(": references error '{error_ref}', which does not exist"));
            return None;
        };
        match error.attribute("errorCode").map(str::trim).filter(|code| !code.is_empty()) {
            Some(code) => Some(code.to_string()),
            None => {
                self.report(node, format!(": error '{error_ref}' has no errorCode"));
                None
            }
        }
    }

    /// The message that `holder` (a message event definition or a receive task) refers to.
    fn message(&mut self, node: XmlNode<'a>, holder: XmlNode<'a>, catch: bool) -> Option<MessageDefinition> {
        let Some(message_ref) = holder.attribute("messageRef") else {
            self.report(node, ": must reference a bpmn:message (messageRef)");
            return None;
        };
        let Some(message) = self.defs.messages.get(message_ref).copied() else {
            self.report(node, format!(": references message '{message_ref}', which does not exist"));
            return None;
        };
        let name = match message.attribute("name").filter(|name| !name.trim().is_empty()) {
            Some(raw) => self.value_expr(node, "message name", raw),
            None => {
                self.report(node, format!(": message '{message_ref}' has no name"));
                None
            }
        };
        let correlation_key = if catch {
            let key = zeebe_extension(message, "subscription").and_then(|s| s.attribute("correlationKey"));
            match key.map(str::trim).filter(|key| !key.is_empty()) {
                None => {
                    self.report(
                        node,
                        format!(
                            ": message '{message_ref}' needs a correlation key (zeebe:subscription correlationKey) \
                             to be caught here"
                        ),
                    );
                    return None;
                }
                Some(raw) => match raw.strip_prefix('=') {
                    Some(src) => Some(self.feel(node, "correlation key", raw, src)?),
                    None => {
                        self.report(
                            node,
                            format!(
                                ": correlation key '{raw}' of message '{message_ref}' must be a FEEL expression \
                                 starting with '='"
                            ),
                        );
                        return None;
                    }
                },
            }
        } else {
            None
        };
        Some(MessageDefinition { name: name?, correlation_key })
    }

    fn job_task(&mut self, node: XmlNode<'a>, kind: TaskKind, default_type: Option<&str>) -> Option<ElementKind> {
        let definition = zeebe_extension(node, "taskDefinition");
        let job_type = definition.and_then(|d| d.attribute("type")).filter(|t| !t.trim().is_empty()).or(default_type);
        let Some(job_type) = job_type else {
            self.report(node, ": must have a job type (zeebe:taskDefinition type)");
            return None;
        };
        let job_type = self.value_expr(node, "job type", job_type);
        let retries = definition.and_then(|d| d.attribute("retries")).unwrap_or(DEFAULT_RETRIES).trim();
        let retries = if retries.starts_with('=') {
            self.value_expr(node, "retries", retries)
        } else if retries.parse::<u32>().is_ok() {
            Some(ValueExpr::Static(retries.to_string()))
        } else {
            self.report(
                node,
                format!(": retries '{retries}' must be a whole number or a FEEL expression starting with '='"),
            );
            None
        };
        let headers = self.task_headers(node);
        Some(ElementKind::Task {
            kind,
            behavior: TaskBehavior::Job(JobDefinition { job_type: job_type?, retries: retries?, headers: headers? }),
        })
    }

    fn task_headers(&mut self, node: XmlNode<'a>) -> Option<Vec<(String, String)>> {
        let Some(headers) = zeebe_extension(node, "taskHeaders") else {
            return Some(Vec::new());
        };
        let mut result = Vec::new();
        let mut valid = true;
        for header in zeebe_children(headers).filter(|c| c.tag_name().name() == "header") {
            match header.attribute("key").filter(|key| !key.trim().is_empty()) {
                Some(key) => result.push((key.to_string(), header.attribute("value").unwrap_or_default().to_string())),
                None => {
                    self.report(node, ": has a task header (zeebe:header) without a key");
                    valid = false;
                }
            }
        }
        valid.then_some(result)
    }

    fn script_task(&mut self, node: XmlNode<'a>, script: XmlNode<'a>) -> Option<ElementKind> {
        let expression = match script.attribute("expression").map(str::trim).filter(|e| !e.is_empty()) {
            None => {
                self.report(node, ": its zeebe:script has no expression");
                None
            }
            Some(raw) => match raw.strip_prefix('=') {
                Some(src) => self.feel(node, "script expression", raw, src),
                None => {
                    self.report(
                        node,
                        format!(": script expression '{raw}' must be a FEEL expression starting with '='"),
                    );
                    None
                }
            },
        };
        let result_variable = script.attribute("resultVariable").map(str::trim).filter(|v| !v.is_empty());
        if result_variable.is_none() {
            self.report(node, ": its zeebe:script has no resultVariable to store the result in");
        }
        Some(ElementKind::Task {
            kind: TaskKind::Script,
            behavior: TaskBehavior::Script { expression: expression?, result_variable: result_variable?.to_string() },
        })
    }

    fn exclusive_gateway(&mut self, idx: ElementIdx, node: XmlNode<'a>, flows: &Flows<'a>) -> Option<ElementKind> {
        let Some(default) = node.attribute("default") else {
            return Some(ElementKind::ExclusiveGateway { default_flow: None });
        };
        match flows.by_id.get(default) {
            None => {
                self.report(node, format!(": its default flow '{default}' does not exist"));
                None
            }
            Some(None) => None,
            Some(&Some(flow)) if flows.flows[flow].source != idx => {
                self.report(node, format!(": its default flow '{default}' is not one of its outgoing sequence flows"));
                None
            }
            Some(&Some(flow)) => Some(ElementKind::ExclusiveGateway { default_flow: Some(flow) }),
        }
    }

    /// `zeebe:ioMapping` inputs and outputs, or `None` if one is invalid (already reported).
    fn io_mappings(&mut self, node: XmlNode<'a>) -> Option<(Vec<Mapping>, Vec<Mapping>)> {
        let mut inputs = Vec::new();
        let mut outputs = Vec::new();
        let Some(io) = zeebe_extension(node, "ioMapping") else {
            return Some((inputs, outputs));
        };
        let mut valid = true;
        for mapping in zeebe_children(io) {
            let list = match mapping.tag_name().name() {
                "input" => &mut inputs,
                "output" => &mut outputs,
                _ => continue,
            };
            match self.mapping(node, mapping) {
                Some(m) => list.push(m),
                None => valid = false,
            }
        }
        valid.then_some((inputs, outputs))
    }

    fn mapping(&mut self, node: XmlNode<'a>, mapping: XmlNode<'a>) -> Option<Mapping> {
        let direction = mapping.tag_name().name();
        let target = mapping.attribute("target").map(str::trim).unwrap_or_default();
        if target.is_empty() {
            self.report(node, format!(": has a zeebe:{direction} mapping without a target"));
            return None;
        }
        if !is_variable_path(target) {
            self.report(
                node,
                format!(
                    ": {direction} mapping target '{target}' is not a variable name or a dotted path of names \
                     (like 'order.total')"
                ),
            );
            return None;
        }
        let raw = mapping.attribute("source").map(str::trim).unwrap_or_default();
        let source = match raw.strip_prefix('=') {
            Some(src) => self.feel(node, &format!("{direction} mapping source"), raw, src)?,
            // Zeebe reads a source without '=' as a static string and an absent one as null.
            None if raw.is_empty() => self.feel(node, &format!("{direction} mapping source"), raw, "null")?,
            None => self.feel(node, &format!("{direction} mapping source"), raw, &feel_string_literal(raw))?,
        };
        Some(Mapping { source, target: target.to_string() })
    }

    /// Pass 4: start events per scope, and flows that start events and boundary events must not have.
    fn check_scopes(&mut self, kinds: &mut [Option<ElementKind>], flows: &Flows<'a>) {
        for scope in 0..self.nodes.len() {
            if !matches!(kinds[scope], Some(ElementKind::Process { .. } | ElementKind::SubProcess { .. })) {
                continue;
            }
            let children: Vec<ElementIdx> = (0..self.nodes.len()).filter(|&c| self.nodes[c].1 == Some(scope)).collect();
            let start_events = children.iter().filter(|&&c| self.nodes[c].0.tag_name().name() == "startEvent").count();
            let none_starts: Vec<ElementIdx> = children
                .iter()
                .copied()
                .filter(|&c| matches!(kinds[c], Some(ElementKind::StartEvent { trigger: StartTrigger::None })))
                .collect();
            let scope_node = self.nodes[scope].0;
            if start_events == 0 {
                self.report(scope_node, ": has no start event; it needs one to be started");
            }
            if none_starts.len() > 1 {
                self.report(
                    scope_node,
                    format!(": has {} none start events; at most one is allowed", none_starts.len()),
                );
            }
            if let Some(ElementKind::Process { none_start } | ElementKind::SubProcess { none_start }) =
                &mut kinds[scope]
            {
                *none_start = none_starts.first().copied();
            }
            if scope == ProcessModel::ROOT {
                self.check_message_start_names(&children, kinds);
            }
        }
        for idx in 0..self.nodes.len() {
            let node = self.nodes[idx].0;
            match node.tag_name().name() {
                "startEvent" if !flows.incoming[idx].is_empty() => {
                    self.report(node, ": a start event cannot have incoming sequence flows");
                }
                "boundaryEvent" if !flows.incoming[idx].is_empty() => {
                    self.report(node, ": a boundary event cannot have incoming sequence flows");
                }
                "boundaryEvent" if flows.outgoing[idx].is_empty() => {
                    self.report(node, ": a boundary event needs an outgoing sequence flow");
                }
                "endEvent" if !flows.outgoing[idx].is_empty() => {
                    self.report(node, ": an end event cannot have outgoing sequence flows");
                }
                _ => {}
            }
        }
    }

    /// Two message start events with one message name would make a published message ambiguous.
    fn check_message_start_names(&mut self, children: &[ElementIdx], kinds: &[Option<ElementKind>]) {
        let mut seen = HashSet::new();
        for &child in children {
            if let Some(ElementKind::StartEvent { trigger: StartTrigger::Message(message) }) = &kinds[child] {
                if let ValueExpr::Static(name) = &message.name {
                    if !seen.insert(name.clone()) {
                        self.report(
                            self.nodes[child].0,
                            format!(": another message start event of the process already waits for message '{name}'"),
                        );
                    }
                }
            }
        }
    }

    /// Every outgoing flow of an exclusive gateway with a choice, except the default, needs a condition.
    fn check_exclusive_gateways(&mut self, kinds: &[Option<ElementKind>], flows: &Flows<'a>) {
        for (idx, kind) in kinds.iter().enumerate() {
            let Some(ElementKind::ExclusiveGateway { default_flow }) = kind else {
                continue;
            };
            let outgoing = &flows.outgoing[idx];
            if outgoing.len() < 2 {
                continue;
            }
            for &flow in outgoing {
                if Some(flow) != *default_flow && flows.flows[flow].condition.is_none() {
                    let gateway = self.nodes[idx].0.attribute("id").unwrap_or_default();
                    self.report(
                        flows.nodes[flow],
                        format!(
                            ": leaves exclusive gateway '{gateway}' without a condition expression; every outgoing \
                             flow except the gateway's default flow needs one"
                        ),
                    );
                }
            }
        }
    }

    /// Two error boundary events on one activity must not catch the same error.
    fn check_boundary_events(&mut self, kinds: &[Option<ElementKind>]) {
        let mut caught: HashSet<(ElementIdx, Option<&str>)> = HashSet::new();
        for (idx, kind) in kinds.iter().enumerate() {
            let Some(ElementKind::BoundaryEvent { attached_to, error_code, .. }) = kind else {
                continue;
            };
            if !caught.insert((*attached_to, error_code.as_deref())) {
                let activity = self.nodes[*attached_to].0.attribute("id").unwrap_or_default();
                let what = match error_code {
                    Some(code) => format!("error code '{code}'"),
                    None => "all errors".to_string(),
                };
                self.report(
                    self.nodes[idx].0,
                    format!(": activity '{activity}' already has an error boundary event catching {what}"),
                );
            }
        }
    }

    /// A static value, or a FEEL expression when it starts with '='.
    fn value_expr(&mut self, node: XmlNode<'a>, what: &str, raw: &str) -> Option<ValueExpr> {
        let raw = raw.trim();
        match raw.strip_prefix('=') {
            Some(src) => self.feel(node, what, raw, src).map(ValueExpr::Feel),
            None => Some(ValueExpr::Static(raw.to_string())),
        }
    }

    fn feel(&mut self, node: XmlNode<'a>, what: &str, raw: &str, src: &str) -> Option<Expression> {
        match Expression::parse(src) {
            Ok(expression) => Some(expression),
            Err(err) => {
                self.report(node, format!(": {what} '{raw}' is not valid FEEL: {err}"));
                None
            }
        }
    }

    fn report(&mut self, node: XmlNode<'a>, rest: impl fmt::Display) {
        report(self.problems, node, rest);
    }

    /// Reports a construct this engine does not execute; `None` so callers can return it directly.
    fn unsupported(&mut self, node: XmlNode<'a>, detail: Option<&str>) -> Option<ElementKind> {
        if let Some(id) = node.attribute("id") {
            self.unsupported.insert(id);
            self.ids.insert(id);
        }
        let tag = node.tag_name().name();
        let what = match detail {
            Some(detail) => format!("{tag} with {detail}"),
            None => tag.to_string(),
        };
        let subject = match node.attribute("id") {
            Some(id) => format!("element '{id}' ({what})"),
            None => format!("a {what} without an id ({})", line_of(node)),
        };
        self.problems.push(Problem {
            element_id: node.attribute("id").map(str::to_string),
            message: format!("{subject} is not supported by this engine yet"),
        });
        None
    }
}

/// Adds a problem about `node`; `rest` follows the node's description (start it with ": " or " ").
fn report(problems: &mut Vec<Problem>, node: XmlNode<'_>, rest: impl fmt::Display) {
    let tag = node.tag_name().name();
    let id = node.attribute("id");
    let subject = match (tag, id) {
        ("process", Some(id)) => format!("process '{id}'"),
        ("sequenceFlow", Some(id)) => format!("sequence flow '{id}'"),
        (_, Some(id)) => format!("element '{id}' ({tag})"),
        (_, None) => format!("a {tag} ({})", line_of(node)),
    };
    problems.push(Problem { element_id: id.map(str::to_string), message: format!("{subject}{rest}") });
}

/// Where a node starts, for elements that have no id to name them by.
fn line_of(node: XmlNode<'_>) -> String {
    let pos = node.document().text_pos_at(node.range().start);
    format!("at line {}, column {}", pos.row, pos.col)
}

fn is_bpmn(node: XmlNode<'_>, name: &str) -> bool {
    node.is_element() && node.tag_name().namespace() == Some(BPMN_NS) && node.tag_name().name() == name
}

fn bpmn_children<'a>(node: XmlNode<'a>) -> impl Iterator<Item = XmlNode<'a>> {
    node.children().filter(|c| c.is_element() && c.tag_name().namespace() == Some(BPMN_NS))
}

fn zeebe_children<'a>(node: XmlNode<'a>) -> impl Iterator<Item = XmlNode<'a>> {
    node.children().filter(|c| c.is_element() && c.tag_name().namespace() == Some(ZEEBE_NS))
}

/// The Zeebe extension element `zeebe:<name>` under the node's `bpmn:extensionElements`.
fn zeebe_extension<'a>(node: XmlNode<'a>, name: &str) -> Option<XmlNode<'a>> {
    bpmn_children(node)
        .filter(|c| c.tag_name().name() == "extensionElements")
        .flat_map(zeebe_children)
        .find(|c| c.tag_name().name() == name)
}

/// Whether a mapping target names a variable (`total`) or a nested path into one (`order.total`).
fn is_variable_path(target: &str) -> bool {
    target.split('.').all(|segment| {
        let mut chars = segment.chars();
        chars.next().is_some_and(|c| c.is_alphabetic() || c == '_') && chars.all(|c| c.is_alphanumeric() || c == '_')
    })
}

/// A FEEL string literal that evaluates to `value`.
fn feel_string_literal(value: &str) -> String {
    let mut literal = String::with_capacity(value.len() + 2);
    literal.push('"');
    for c in value.chars() {
        match c {
            '"' => literal.push_str("\\\""),
            '\\' => literal.push_str("\\\\"),
            '\n' => literal.push_str("\\n"),
            '\r' => literal.push_str("\\r"),
            '\t' => literal.push_str("\\t"),
            c => literal.push(c),
        }
    }
    literal.push('"');
    literal
}
