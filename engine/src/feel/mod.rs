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
}
