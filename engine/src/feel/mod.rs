//! FEEL (Friendly Enough Expression Language) with Zeebe semantics.
//!
//! BPMN attributes that start with `=` are FEEL expressions: sequence-flow conditions, input/output
//! mappings, correlation keys, multi-instance collections, timer definitions. This module parses such
//! an expression once into an [`Expression`] and evaluates it as often as needed against a variable
//! [`Scope`].
//!
//! The semantics follow Camunda's FEEL engine as Zeebe uses it, because process models written for
//! Zeebe must behave the same on Waggle:
//!
//! - **Null instead of failure.** A missing variable or context entry evaluates to `null`, never an
//!   error; so do comparisons between incompatible types, arithmetic on `null`, division by zero and
//!   most built-ins given `null`. A condition holds only if it evaluates to `true`, so a `null`
//!   condition simply does not match. Only genuinely broken expressions fail: unknown functions, calls
//!   with the wrong number or types of arguments, a failed `assert()`.
//! - **Determinism.** The engine must reach the same state whenever it replays the log, so evaluation
//!   reads no clock and draws no random numbers: `now()` and `today()` take the evaluation time from
//!   the caller's [`Environment`] (the time recorded with the command), and `random number()` does not
//!   exist.
//! - **Camunda extensions** such as `is defined`, `get or else`, `string join`, `context put` and
//!   `assert` are built in.
//!
//! Evaluation is bounded, because expressions come from whoever deploys a process and run on the
//! partition's leader: a recursive function, a nested `for` or a string doubled in a loop must not
//! take the broker down. [`Limits`] caps the nesting depth of evaluation (which bounds the stack),
//! the number of iterations (which bounds time) and an estimate of the bytes of the values built
//! (which bounds memory); exceeding one fails the evaluation with [`FeelError::LimitExceeded`],
//! which the processor turns into an incident naming the expression and the limit.
//!
//! Numbers are `f64` rather than FEEL's decimal128; integral values are exact up to 2^53 and render as
//! JSON integers. Date-times carry fixed UTC offsets only (no named zones) and millisecond precision.

mod ast;
mod builtins;
mod eval;
mod parser;
mod temporal;
mod value;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

pub use temporal::{Date, DateTime, Time};
pub use value::{Function, Value};

/// A parsed FEEL expression, ready to be evaluated any number of times.
#[derive(Clone, Debug)]
pub struct Expression {
    source: String,
    ast: ast::Ast,
}

impl Expression {
    /// Parses a FEEL expression (without the leading `=` that BPMN attributes use; callers strip it).
    pub fn parse(source: &str) -> Result<Expression, FeelError> {
        Ok(Expression { source: source.to_string(), ast: parser::parse(source)? })
    }

    /// The text the expression was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression against a variable scope. Missing variables evaluate to
    /// [`Value::Null`] (Zeebe semantics), never to an error.
    pub fn evaluate(&self, scope: &dyn Scope, env: &Environment) -> Result<Value, FeelError> {
        eval::Evaluator::new(scope, env).eval(&self.ast)
    }
}

/// Variables visible to an expression, looked up by top-level name.
pub trait Scope {
    /// The value of the variable `name`, or `None` if it does not exist.
    fn get(&self, name: &str) -> Option<Value>;

    /// The value at `name.path[0].path[1]...`, or `None` if the variable or a context entry along the
    /// path does not exist. On a list the remaining path applies to every element. Implementations
    /// can override this to avoid materialising the whole variable when only a leaf is needed.
    fn get_path(&self, name: &str, path: &[String]) -> Option<Value> {
        let value = self.get(name)?;
        if path.is_empty() {
            return Some(value);
        }
        value.select_path(path)
    }
}

/// A JSON object as a scope: only the selected part of a variable is converted to a [`Value`].
impl Scope for serde_json::Map<String, serde_json::Value> {
    fn get(&self, name: &str) -> Option<Value> {
        serde_json::Map::get(self, name).map(Value::from_json)
    }

    fn get_path(&self, name: &str, path: &[String]) -> Option<Value> {
        let mut current = serde_json::Map::get(self, name)?;
        for (i, key) in path.iter().enumerate() {
            match current {
                serde_json::Value::Object(map) => current = map.get(key)?,
                other => return Value::from_json(other).select_path(&path[i..]),
            }
        }
        Some(Value::from_json(current))
    }
}

impl Scope for HashMap<String, Value> {
    fn get(&self, name: &str) -> Option<Value> {
        HashMap::get(self, name).cloned()
    }

    fn get_path(&self, name: &str, path: &[String]) -> Option<Value> {
        HashMap::get(self, name)?.select_path(path)
    }
}

/// The evaluation context supplied by the caller: everything an expression may depend on besides
/// its variables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Environment {
    /// The evaluation time in milliseconds since the Unix epoch, returned by `now()` and `today()`.
    pub now_millis: i64,
    /// How far one evaluation may go.
    pub limits: Limits,
}

impl Environment {
    /// An environment at `now_millis` with the default limits.
    pub fn at(now_millis: i64) -> Environment {
        Environment { now_millis, limits: Limits::default() }
    }
}

/// Bounds on one evaluation of one expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How deeply evaluation may nest: every sub-expression and every call of a user-defined
    /// function is one level. This is what keeps a recursive function from overflowing the stack:
    /// an unoptimised build takes about 10 KiB of stack per level, so the default of 128 levels
    /// fits a 2 MiB thread stack (tokio's default) with room to spare.
    pub max_depth: u32,
    /// How many iterations `for`, `some`/`every`, filters and function calls may take in total.
    pub max_iterations: u64,
    /// An estimate of the bytes of all the lists, strings and contexts the evaluation builds.
    pub max_allocation_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_depth: 128, max_iterations: 1_000_000, max_allocation_bytes: 64 * 1024 * 1024 }
    }
}

/// Which of the [`Limits`] an evaluation exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Depth,
    Iterations,
    Allocation,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limit::Depth => "nesting depth (max_depth, levels)",
            Limit::Iterations => "iteration count (max_iterations)",
            Limit::Allocation => "allocation size (max_allocation_bytes, bytes)",
        })
    }
}

/// Why an expression could not be parsed or evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeelError {
    /// The text is not a valid expression; `position` is the byte offset where parsing failed.
    #[error("{message} at {position}")]
    Syntax { position: usize, message: String },
    /// Evaluation failed, e.g. an unknown function or arguments of the wrong type.
    #[error("{message}")]
    Evaluation { message: String },
    /// Evaluation went beyond one of the [`Limits`] and was stopped.
    #[error("the evaluation exceeded its {limit} limit of {max}")]
    LimitExceeded { limit: Limit, max: u64 },
}
