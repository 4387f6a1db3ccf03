//! The executable process model: what the processor walks.
//!
//! The BPMN parser ([`crate::bpmn`]) turns XML into this compact graph once per deployed process; the
//! processor then works on element and flow indices instead of strings and XML. Everything the engine
//! needs at run time is resolved here: FEEL expressions are parsed, boundary events are attached to
//! their activities, and each scope knows its none start event.

use std::collections::HashMap;

use waggle_protocol::record::{BpmnElementType, BpmnEventType};

use crate::feel::Expression;

/// Index of an element in [`ProcessModel::elements`].
pub type ElementIdx = usize;
/// Index of a sequence flow in [`ProcessModel::flows`].
pub type FlowIdx = usize;

#[derive(Debug)]
pub struct ProcessModel {
    pub bpmn_process_id: String,
    pub name: Option<String>,
    /// All flow nodes of the process, including the process itself at [`ProcessModel::ROOT`].
    pub elements: Vec<Element>,
    pub flows: Vec<SequenceFlow>,
    pub element_by_id: HashMap<String, ElementIdx>,
}

impl ProcessModel {
    /// The process element is always the first element.
    pub const ROOT: ElementIdx = 0;

    pub fn element(&self, idx: ElementIdx) -> &Element {
        &self.elements[idx]
    }

    pub fn flow(&self, idx: FlowIdx) -> &SequenceFlow {
        &self.flows[idx]
    }

    pub fn find(&self, element_id: &str) -> Option<ElementIdx> {
        self.element_by_id.get(element_id).copied()
    }

    /// The none start event of a scope (the process or an embedded subprocess).
    pub fn none_start_of(&self, scope: ElementIdx) -> Option<ElementIdx> {
        match &self.elements[scope].kind {
            ElementKind::Process { none_start, .. } | ElementKind::SubProcess { none_start } => *none_start,
            _ => None,
        }
    }

    /// Root-level message start events.
    pub fn message_start_events(&self) -> impl Iterator<Item = (ElementIdx, &MessageDefinition)> {
        self.elements.iter().enumerate().filter_map(|(idx, e)| match &e.kind {
            ElementKind::StartEvent { trigger: StartTrigger::Message(message) } if e.parent == Some(Self::ROOT) => {
                Some((idx, message))
            }
            _ => None,
        })
    }
}

#[derive(Debug)]
pub struct Element {
    pub id: String,
    pub name: Option<String>,
    pub kind: ElementKind,
    /// The scope (process or subprocess) that contains the element; `None` only for the process.
    pub parent: Option<ElementIdx>,
    pub incoming: Vec<FlowIdx>,
    pub outgoing: Vec<FlowIdx>,
    /// `zeebe:ioMapping` inputs, applied to the element's local scope on activation.
    pub inputs: Vec<Mapping>,
    /// `zeebe:ioMapping` outputs, applied to the parent scope on completion.
    pub outputs: Vec<Mapping>,
    /// Boundary events attached to this activity, in document order.
    pub boundary_events: Vec<ElementIdx>,
}

impl Element {
    pub fn element_type(&self) -> BpmnElementType {
        match &self.kind {
            ElementKind::Process { .. } => BpmnElementType::Process,
            ElementKind::SubProcess { .. } => BpmnElementType::SubProcess,
            ElementKind::StartEvent { .. } => BpmnElementType::StartEvent,
            ElementKind::EndEvent { .. } => BpmnElementType::EndEvent,
            ElementKind::IntermediateCatchEvent { .. } => BpmnElementType::IntermediateCatchEvent,
            ElementKind::IntermediateThrowEvent => BpmnElementType::IntermediateThrowEvent,
            ElementKind::BoundaryEvent { .. } => BpmnElementType::BoundaryEvent,
            ElementKind::Task { kind, .. } => kind.element_type(),
            ElementKind::ReceiveTask { .. } => BpmnElementType::ReceiveTask,
            ElementKind::ExclusiveGateway { .. } => BpmnElementType::ExclusiveGateway,
            ElementKind::ParallelGateway => BpmnElementType::ParallelGateway,
        }
    }

    pub fn event_type(&self) -> BpmnEventType {
        match &self.kind {
            ElementKind::StartEvent { trigger: StartTrigger::None } => BpmnEventType::None,
            ElementKind::StartEvent { trigger: StartTrigger::Message(_) } => BpmnEventType::Message,
            ElementKind::EndEvent { kind: EndKind::None } => BpmnEventType::None,
            ElementKind::EndEvent { kind: EndKind::Terminate } => BpmnEventType::Terminate,
            ElementKind::EndEvent { kind: EndKind::Error { .. } } => BpmnEventType::Error,
            ElementKind::IntermediateCatchEvent { .. } => BpmnEventType::Message,
            ElementKind::IntermediateThrowEvent => BpmnEventType::None,
            ElementKind::BoundaryEvent { .. } => BpmnEventType::Error,
            _ => BpmnEventType::Unspecified,
        }
    }

    /// Whether the element is a scope that holds child elements (and so its own variables).
    pub fn is_container(&self) -> bool {
        matches!(self.kind, ElementKind::Process { .. } | ElementKind::SubProcess { .. })
    }
}

#[derive(Debug)]
pub enum ElementKind {
    Process {
        none_start: Option<ElementIdx>,
    },
    SubProcess {
        none_start: Option<ElementIdx>,
    },
    StartEvent {
        trigger: StartTrigger,
    },
    EndEvent {
        kind: EndKind,
    },
    /// A message intermediate catch event.
    IntermediateCatchEvent {
        message: MessageDefinition,
    },
    /// A none intermediate throw event: passes straight through.
    IntermediateThrowEvent,
    /// An error boundary event. `error_code` `None` catches every error.
    BoundaryEvent {
        attached_to: ElementIdx,
        error_code: Option<String>,
        interrupting: bool,
    },
    /// Service, send, business rule, script, user, manual and undefined tasks.
    Task {
        kind: TaskKind,
        behavior: TaskBehavior,
    },
    ReceiveTask {
        message: MessageDefinition,
    },
    ExclusiveGateway {
        default_flow: Option<FlowIdx>,
    },
    ParallelGateway,
}

#[derive(Debug)]
pub enum StartTrigger {
    None,
    Message(MessageDefinition),
}

#[derive(Debug)]
pub enum EndKind {
    None,
    Terminate,
    /// Throws a BPMN error with this code.
    Error {
        error_code: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskKind {
    Service,
    Send,
    BusinessRule,
    Script,
    User,
    Manual,
    Undefined,
}

impl TaskKind {
    pub fn element_type(self) -> BpmnElementType {
        match self {
            TaskKind::Service => BpmnElementType::ServiceTask,
            TaskKind::Send => BpmnElementType::SendTask,
            TaskKind::BusinessRule => BpmnElementType::BusinessRuleTask,
            TaskKind::Script => BpmnElementType::ScriptTask,
            TaskKind::User => BpmnElementType::UserTask,
            TaskKind::Manual => BpmnElementType::ManualTask,
            TaskKind::Undefined => BpmnElementType::Task,
        }
    }
}

#[derive(Debug)]
pub enum TaskBehavior {
    /// Waits for a job worker (`zeebe:taskDefinition`).
    Job(JobDefinition),
    /// A script task evaluated by the engine (`zeebe:script expression resultVariable`).
    Script { expression: Expression, result_variable: String },
    /// Manual and undefined tasks complete as soon as they are activated.
    PassThrough,
}

/// `zeebe:taskDefinition` and `zeebe:taskHeaders`.
#[derive(Debug)]
pub struct JobDefinition {
    pub job_type: ValueExpr,
    pub retries: ValueExpr,
    pub headers: Vec<(String, String)>,
}

/// A BPMN attribute that is either a static value or, when it starts with `=`, a FEEL expression.
#[derive(Debug)]
pub enum ValueExpr {
    Static(String),
    Feel(Expression),
}

#[derive(Debug)]
pub struct MessageDefinition {
    /// The message's `name` attribute (static or FEEL).
    pub name: ValueExpr,
    /// `zeebe:subscription correlationKey`; required for catch events, absent for start events.
    pub correlation_key: Option<Expression>,
}

#[derive(Debug)]
pub struct SequenceFlow {
    pub id: String,
    pub source: ElementIdx,
    pub target: ElementIdx,
    /// `conditionExpression`, present only on flows out of exclusive gateways.
    pub condition: Option<Expression>,
}

/// One `zeebe:input` or `zeebe:output`: evaluate `source`, write it to `target`.
#[derive(Debug)]
pub struct Mapping {
    pub source: Expression,
    /// The target variable name; a dotted path (`a.b.c`) writes into nested contexts.
    pub target: String,
}
