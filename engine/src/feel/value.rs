//! FEEL values, their JSON mapping, equality and ordering.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use super::ast::Lambda;
use super::eval::Frame;
use super::temporal::{self, Date, DateTime, Time};

/// A FEEL value.
///
/// Numbers are `f64`: integral values up to 2^53 are exact, which covers keys, counts and amounts in
/// cents; decimal fractions carry binary rounding error unlike FEEL's decimal128.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    List(Vec<Value>),
    /// Entries in insertion order; keys are unique.
    Context(Vec<(String, Value)>),
    Date(Date),
    Time(Time),
    DateTime(DateTime),
    /// Exact duration in milliseconds (`days and time duration`).
    DayTimeDuration(i64),
    /// Calendar duration in months (`years and months duration`).
    YearMonthDuration(i64),
    /// A function value created by a `function(..) body` literal.
    Function(Function),
}

/// A user-defined function together with the local variables it captured.
#[derive(Clone)]
pub struct Function(pub(crate) Arc<Closure>);

pub(crate) struct Closure {
    pub(crate) lambda: Arc<Lambda>,
    pub(crate) captured: Vec<Frame>,
}

impl Function {
    /// Number of parameters the function takes.
    pub fn arity(&self) -> usize {
        self.0.lambda.params.len()
    }
}

impl PartialEq for Function {
    fn eq(&self, other: &Function) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "function({})", self.0.lambda.params.join(", "))
    }
}

impl Value {
    /// Maps JSON onto FEEL: objects become contexts (keeping key order), strings stay strings (they are
    /// not sniffed for dates, as in Zeebe).
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => n.as_f64().map_or(Value::Null, Value::Number),
            serde_json::Value::String(s) => Value::String(s.clone()),
            serde_json::Value::Array(items) => Value::List(items.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(map) => {
                Value::Context(map.iter().map(|(k, v)| (k.clone(), Value::from_json(v))).collect())
            }
        }
    }

    /// Maps FEEL onto JSON: integral numbers that fit `i64` become JSON integers, temporal values become
    /// their ISO-8601 strings, functions become `null`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null | Value::Function(_) => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => number_to_json(*n),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::List(items) => serde_json::Value::Array(items.iter().map(Value::to_json).collect()),
            Value::Context(entries) => {
                serde_json::Value::Object(entries.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
            Value::Date(_)
            | Value::Time(_)
            | Value::DateTime(_)
            | Value::DayTimeDuration(_)
            | Value::YearMonthDuration(_) => serde_json::Value::String(self.to_string()),
        }
    }

    /// FEEL conditions only hold for `true`; `null` and every other value count as not satisfied.
    pub fn is_truthy(&self) -> bool {
        matches!(self, Value::Bool(true))
    }

    /// The FEEL type name, as used by `instance of`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::List(_) => "list",
            Value::Context(_) => "context",
            Value::Date(_) => "date",
            Value::Time(_) => "time",
            Value::DateTime(_) => "date and time",
            Value::DayTimeDuration(_) => "days and time duration",
            Value::YearMonthDuration(_) => "years and months duration",
            Value::Function(_) => "function",
        }
    }

    /// The value of a context entry, or a temporal value's property (`date.year`, `duration.hours`).
    /// `None` means the key does not exist.
    pub fn get(&self, key: &str) -> Option<Value> {
        match self {
            Value::Context(entries) => context_get(entries, key).cloned(),
            _ => self.property(key),
        }
    }

    fn property(&self, key: &str) -> Option<Value> {
        let number = |n: i64| Some(Value::Number(n as f64));
        let date = match self {
            Value::Date(d) => Some(*d),
            Value::DateTime(dt) => Some(dt.date()),
            _ => None,
        };
        let time = match self {
            Value::Time(t) => Some(*t),
            Value::DateTime(dt) => Some(dt.time()),
            _ => None,
        };
        match (key, date, time, self) {
            ("year", Some(d), _, _) => number(d.ymd().0),
            ("month", Some(d), _, _) => number(i64::from(d.ymd().1)),
            ("day", Some(d), _, _) => number(i64::from(d.ymd().2)),
            ("weekday", Some(d), _, _) => number(i64::from(d.weekday())),
            ("hour", _, Some(t), _) => number(t.hour()),
            ("minute", _, Some(t), _) => number(t.minute()),
            ("second", _, Some(t), _) => number(t.second()),
            ("time offset", _, Some(t), _) => {
                Some(t.offset().map_or(Value::Null, |o| Value::DayTimeDuration(i64::from(o) * 1000)))
            }
            ("days", _, _, Value::DayTimeDuration(ms)) => number(ms / temporal::MILLIS_PER_DAY),
            ("hours", _, _, Value::DayTimeDuration(ms)) => number(ms / 3_600_000 % 24),
            ("minutes", _, _, Value::DayTimeDuration(ms)) => number(ms / 60_000 % 60),
            ("seconds", _, _, Value::DayTimeDuration(ms)) => number(ms / 1000 % 60),
            ("years", _, _, Value::YearMonthDuration(m)) => number(m / 12),
            ("months", _, _, Value::YearMonthDuration(m)) => number(m % 12),
            _ => None,
        }
    }

    /// Follows a path of keys. On a list the rest of the path is applied to every element, yielding a
    /// list (`items.price`); a missing key in an element yields `null` there.
    pub fn select_path(&self, path: &[String]) -> Option<Value> {
        let mut current = self;
        for (i, key) in path.iter().enumerate() {
            match current {
                Value::Context(entries) => current = context_get(entries, key)?,
                Value::List(items) => {
                    return Some(Value::List(
                        items.iter().map(|item| item.select_path(&path[i..]).unwrap_or(Value::Null)).collect(),
                    ))
                }
                other => {
                    let property = other.property(key)?;
                    return property.select_path(&path[i + 1..]);
                }
            }
        }
        Some(current.clone())
    }
}

pub(crate) fn context_get<'v>(entries: &'v [(String, Value)], key: &str) -> Option<&'v Value> {
    entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

pub(crate) fn context_put(entries: &mut Vec<(String, Value)>, key: String, value: Value) {
    match entries.iter_mut().find(|(k, _)| *k == key) {
        Some(entry) => entry.1 = value,
        None => entries.push((key, value)),
    }
}

fn number_to_json(n: f64) -> serde_json::Value {
    if n.fract() == 0.0 && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&n) {
        serde_json::Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

pub(crate) fn format_number(f: &mut fmt::Formatter<'_>, n: f64) -> fmt::Result {
    if n.fract() == 0.0 && n.abs() < 1e21 {
        write!(f, "{}", n as i128)
    } else {
        write!(f, "{n}")
    }
}

/// Renders values as FEEL's `string()` does: strings bare, everything else in FEEL literal form.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Number(n) => format_number(f, *n),
            Value::String(s) => f.write_str(s),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write_nested(f, item)?;
                }
                f.write_str("]")
            }
            Value::Context(entries) => {
                f.write_str("{")?;
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{key}:")?;
                    write_nested(f, value)?;
                }
                f.write_str("}")
            }
            Value::Date(d) => write!(f, "{d}"),
            Value::Time(t) => write!(f, "{t}"),
            Value::DateTime(dt) => write!(f, "{dt}"),
            Value::DayTimeDuration(ms) => temporal::format_day_time(f, *ms),
            Value::YearMonthDuration(m) => temporal::format_year_month(f, *m),
            Value::Function(func) => write!(f, "{func:?}"),
        }
    }
}

fn write_nested(f: &mut fmt::Formatter<'_>, value: &Value) -> fmt::Result {
    match value {
        Value::String(s) => write!(f, "{s:?}"),
        other => write!(f, "{other}"),
    }
}

/// FEEL equality: `Some(true|false)` for comparable values, `None` (FEEL `null`) when the types differ.
/// `null` equals only `null`.
pub(crate) fn feel_eq(a: &Value, b: &Value) -> Option<bool> {
    match (a, b) {
        (Value::Null, Value::Null) => Some(true),
        (Value::Null, _) | (_, Value::Null) => Some(false),
        (Value::List(x), Value::List(y)) => {
            if x.len() != y.len() {
                return Some(false);
            }
            let mut result = Some(true);
            for (p, q) in x.iter().zip(y) {
                match feel_eq(p, q) {
                    Some(true) => {}
                    Some(false) => return Some(false),
                    None => result = None,
                }
            }
            result
        }
        (Value::Context(x), Value::Context(y)) => {
            if x.len() != y.len() {
                return Some(false);
            }
            let mut result = Some(true);
            for (key, p) in x {
                match context_get(y, key).map(|q| feel_eq(p, q)) {
                    None | Some(Some(false)) => return Some(false),
                    Some(Some(true)) => {}
                    Some(None) => result = None,
                }
            }
            result
        }
        (Value::Bool(x), Value::Bool(y)) => Some(x == y),
        (Value::Function(x), Value::Function(y)) => Some(x == y),
        _ => feel_cmp(a, b).map(|o| o == Ordering::Equal),
    }
}

/// FEEL ordering between values of the same ordered type; `None` when they are not comparable.
pub(crate) fn feel_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.partial_cmp(y),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Date(x), Value::Date(y)) => Some(x.cmp(y)),
        (Value::Time(x), Value::Time(y)) => temporal::compare_times(*x, *y),
        (Value::DateTime(x), Value::DateTime(y)) => temporal::compare_date_times(*x, *y),
        (Value::DayTimeDuration(x), Value::DayTimeDuration(y)) => Some(x.cmp(y)),
        (Value::YearMonthDuration(x), Value::YearMonthDuration(y)) => Some(x.cmp(y)),
        _ => None,
    }
}
