//! BPMN parser and validator: deployment XML in, executable [`ProcessModel`]s out.
//!
//! Deployments arrive as BPMN 2.0 XML written by Camunda Modeler, with Zeebe's extension elements
//! (namespace [`ZEEBE_NS`]) carrying everything the standard leaves open: job types, retries,
//! headers, variable mappings, correlation keys. This module reads that XML once, at deploy time,
//! and resolves it into the index-based graph of [`crate::model`], so that the processor never
//! looks at XML or strings again and never finds a dangling reference at run time.
//!
//! Why validate here rather than fail later: a deployment is accepted or rejected as a whole, and
//! a process that deploys must run. Anything the engine cannot execute faithfully (timers, signals,
//! call activities, multi-instance, ...) is therefore rejected up front with a "not supported by
//! this engine yet" problem naming the element, instead of being deployed and silently skipped.
//! Pure decoration (lanes, annotations, data objects, diagram interchange, other vendors'
//! extensions) does not change execution and is ignored.
//!
//! Problems are collected across the whole resource rather than stopping at the first, so a user
//! fixing a model sees everything that is wrong in one round trip; [`BpmnError`]'s message lists
//! one problem per line, each naming the resource and the element.

mod parse;

#[cfg(test)]
mod tests;

use std::fmt;

use crate::model::ProcessModel;

/// Namespace of the BPMN 2.0 model elements (`bpmn:`, `bpmn2:`, `semantic:` ... prefixes alike).
pub const BPMN_NS: &str = "http://www.omg.org/spec/BPMN/20100524/MODEL";
/// Namespace of Zeebe's extension elements (`zeebe:taskDefinition`, `zeebe:ioMapping`, ...).
pub const ZEEBE_NS: &str = "http://camunda.org/schema/zeebe/1.0";

/// Parses and validates one BPMN resource, returning its executable processes in document order.
///
/// `resource_name` only labels error messages. Non-executable processes (pools of other
/// participants, documentation-only models) are skipped; a resource without any executable
/// process is rejected.
pub fn parse_processes(resource_name: &str, xml: &[u8]) -> Result<Vec<ProcessModel>, BpmnError> {
    parse::parse_resource(resource_name, xml)
}

/// Why a BPMN resource was rejected.
#[derive(Debug, thiserror::Error)]
pub enum BpmnError {
    /// The resource is not well-formed XML (or not UTF-8), so nothing in it could be checked.
    #[error("'{resource}': malformed XML at line {line}, column {column}: {message}")]
    MalformedXml { resource: String, line: u32, column: u32, message: String },
    /// The XML is well-formed but describes no process this engine can execute.
    #[error("{}", ProblemLines { resource, problems })]
    Invalid { resource: String, problems: Vec<Problem> },
}

impl BpmnError {
    /// The individual problems; a malformed document has none beyond the error itself.
    pub fn problems(&self) -> &[Problem] {
        match self {
            BpmnError::MalformedXml { .. } => &[],
            BpmnError::Invalid { problems, .. } => problems,
        }
    }
}

/// One thing wrong with a resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The id of the element (or sequence flow, or process) the problem is about, when it has one.
    pub element_id: Option<String>,
    /// The problem in words, naming the element, e.g.
    /// `element 'Task_1' (serviceTask): must have a job type (zeebe:taskDefinition type)`.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Renders problems one per line, each prefixed with the resource so that every line stands alone
/// when a client shows only part of the message.
struct ProblemLines<'a> {
    resource: &'a str,
    problems: &'a [Problem],
}

impl fmt::Display for ProblemLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "'{}': {}", self.resource, problem)?;
        }
        Ok(())
    }
}
