//! Built-in functions: FEEL 1.3's standard library plus Camunda's extensions.
//!
//! A `null` argument makes most functions return `null` (a missing variable is `null`, and Zeebe
//! keeps going rather than failing); functions marked `nulls` see the `null` and decide themselves.
//! An argument of the wrong type is an evaluation error naming the function. Nothing here reads the
//! clock or draws random numbers: `now()`/`today()` use the caller's evaluation time and there is no
//! `random number()`.

use std::cmp::Ordering;
use std::fmt;

use regex::{Regex, RegexBuilder};

use super::eval::{error, number, Evaluator};
use super::temporal::{self, Date, DateTime, Time, MILLIS_PER_DAY};
use super::value::{context_put, feel_cmp, feel_eq, Value};
use super::FeelError;

type BuiltinFn = fn(&mut Evaluator<'_>, ArgList) -> Result<Value, FeelError>;

pub(crate) struct Builtin {
    pub(crate) name: &'static str,
    /// Parameter names in order, for named arguments; `a|b` accepts either name.
    pub(crate) params: &'static [&'static str],
    required: usize,
    /// Accepts any number of arguments after the required ones (`max(1, 2, 3)`).
    variadic: bool,
    /// Receives `null` arguments instead of short-circuiting to `null`.
    nulls: bool,
    call: BuiltinFn,
}

impl fmt::Debug for Builtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "builtin '{}'", self.name)
    }
}

const fn f(name: &'static str, params: &'static [&'static str], required: usize, call: BuiltinFn) -> Builtin {
    Builtin { name, params, required, variadic: false, nulls: false, call }
}

impl Builtin {
    const fn variadic(self) -> Builtin {
        Builtin { variadic: true, ..self }
    }

    const fn nulls(self) -> Builtin {
        Builtin { nulls: true, ..self }
    }
}

pub(crate) fn lookup(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

pub(crate) fn call(ev: &mut Evaluator<'_>, builtin: &'static Builtin, values: Vec<Value>) -> Result<Value, FeelError> {
    if values.len() < builtin.required || (!builtin.variadic && values.len() > builtin.params.len()) {
        return Err(no_such_function(builtin.name, values.len()));
    }
    if !builtin.nulls && values.contains(&Value::Null) {
        return Ok(Value::Null);
    }
    (builtin.call)(ev, ArgList { name: builtin.name, values })
}

fn no_such_function(name: &str, count: usize) -> FeelError {
    error(format!("no function '{name}' with {count} argument(s)"))
}

/// The evaluated arguments of one call, with typed accessors that report type mismatches.
pub(crate) struct ArgList {
    name: &'static str,
    values: Vec<Value>,
}

impl ArgList {
    fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether argument `i` was given and is not `null`.
    fn has(&self, i: usize) -> bool {
        self.values.get(i).is_some_and(|v| *v != Value::Null)
    }

    fn get(&self, i: usize) -> &Value {
        self.values.get(i).unwrap_or(&Value::Null)
    }

    fn take(&mut self, i: usize) -> Value {
        self.values.get_mut(i).map_or(Value::Null, std::mem::take)
    }

    fn error(&self, message: impl fmt::Display) -> FeelError {
        error(format!("function '{}': {message}", self.name))
    }

    fn type_error(&self, i: usize, expected: &str) -> FeelError {
        self.error(format_args!("expected {expected} as argument {}, but got {}", i + 1, self.get(i).type_name()))
    }

    fn str(&self, i: usize) -> Result<&str, FeelError> {
        match self.get(i) {
            Value::String(s) => Ok(s),
            _ => Err(self.type_error(i, "a string")),
        }
    }

    fn num(&self, i: usize) -> Result<f64, FeelError> {
        match self.get(i) {
            Value::Number(n) => Ok(*n),
            _ => Err(self.type_error(i, "a number")),
        }
    }

    fn int(&self, i: usize) -> Result<i64, FeelError> {
        match self.get(i) {
            Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => Ok(*n as i64),
            _ => Err(self.type_error(i, "an integer")),
        }
    }

    fn opt_int(&self, i: usize) -> Result<Option<i64>, FeelError> {
        if self.has(i) {
            self.int(i).map(Some)
        } else {
            Ok(None)
        }
    }

    fn list(&mut self, i: usize) -> Result<Vec<Value>, FeelError> {
        match self.take(i) {
            Value::List(items) => Ok(items),
            other => {
                self.values[i] = other;
                Err(self.type_error(i, "a list"))
            }
        }
    }

    fn context(&mut self, i: usize) -> Result<Vec<(String, Value)>, FeelError> {
        match self.take(i) {
            Value::Context(entries) => Ok(entries),
            other => {
                self.values[i] = other;
                Err(self.type_error(i, "a context"))
            }
        }
    }

    fn date(&self, i: usize) -> Result<Date, FeelError> {
        match self.get(i) {
            Value::Date(d) => Ok(*d),
            Value::DateTime(dt) => Ok(dt.date()),
            _ => Err(self.type_error(i, "a date")),
        }
    }

    /// The items of a variadic call: either one list argument or all the arguments.
    fn items(mut self) -> Vec<Value> {
        if self.values.len() == 1 {
            if let Value::List(items) = self.take(0) {
                return items;
            }
            return self.values;
        }
        self.values
    }
}

fn string(s: impl Into<String>) -> Result<Value, FeelError> {
    Ok(Value::String(s.into()))
}

fn boolean(b: bool) -> Result<Value, FeelError> {
    Ok(Value::Bool(b))
}

fn list(items: Vec<Value>) -> Result<Value, FeelError> {
    Ok(Value::List(items))
}

fn contains(items: &[Value], value: &Value) -> bool {
    items.iter().any(|item| feel_eq(item, value) == Some(true))
}

/// A 1-based position (negative counts from the end) as a 0-based index below `len`.
fn position(pos: i64, len: usize) -> Option<usize> {
    let len = len as i64;
    let index = if pos > 0 { pos - 1 } else { len + pos };
    (pos != 0 && (0..len).contains(&index)).then_some(index as usize)
}

/// The `[start, end)` slice of `len` elements selected by a 1-based start (negative from the end)
/// and an optional length.
fn span(start: i64, length: Option<i64>, len: usize) -> (usize, usize) {
    let len = len as i64;
    let from = if start > 0 { start - 1 } else { len + start }.clamp(0, len);
    let to = length.map_or(len, |l| from.saturating_add(l.max(0))).clamp(from, len);
    (from as usize, to as usize)
}

#[derive(Clone, Copy)]
enum Rounding {
    Floor,
    Ceiling,
    Up,
    Down,
    HalfUp,
    HalfDown,
    HalfEven,
}

/// Rounds to `scale` decimal places. The scaled value is snapped to an integer or a half when it is
/// within floating-point noise of one, so that `round half up(2.675, 2)` gives 2.68 as in decimal.
fn round(n: f64, scale: i64, mode: Rounding) -> Value {
    let factor = 10f64.powi(scale.clamp(-30, 30) as i32);
    let mut x = n * factor;
    let tolerance = 1e-9 * x.abs().max(1.0);
    if (x - x.round()).abs() < tolerance {
        x = x.round();
    }
    let (sign, magnitude) = (x.signum(), x.abs());
    let whole = magnitude.floor();
    let is_half = ((magnitude - whole) - 0.5).abs() < tolerance;
    let rounded = match mode {
        Rounding::Floor => x.floor(),
        Rounding::Ceiling => x.ceil(),
        Rounding::Up => sign * magnitude.ceil(),
        Rounding::Down => x.trunc(),
        _ if !is_half => x.round(),
        Rounding::HalfUp => sign * (whole + 1.0),
        Rounding::HalfDown => sign * whole,
        Rounding::HalfEven => sign * if whole % 2.0 == 0.0 { whole } else { whole + 1.0 },
    };
    number(rounded / factor)
}

fn rounding(a: &ArgList, mode: Rounding) -> Result<Value, FeelError> {
    Ok(round(a.num(0)?, a.opt_int(1)?.unwrap_or(0), mode))
}

fn regex(a: &ArgList, pattern: usize, flags: usize) -> Result<Regex, FeelError> {
    let mut inline = String::new();
    let mut literal = false;
    if a.has(flags) {
        for flag in a.str(flags)?.chars() {
            match flag {
                'i' | 's' | 'm' | 'x' => inline.push(flag),
                'q' => literal = true,
                other => return Err(a.error(format_args!("unknown regular expression flag '{other}'"))),
            }
        }
    }
    let body = if literal { regex::escape(a.str(pattern)?) } else { a.str(pattern)?.to_string() };
    let full = if inline.is_empty() { body } else { format!("(?{inline}){body}") };
    RegexBuilder::new(&full)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| a.error(format_args!("invalid regular expression: {e}")))
}

/// Converts an XPath replacement string (`$1`, `\$`) into the `regex` crate's syntax.
fn replacement(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.push_str("$$"),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            '$' => {
                let mut group = String::new();
                while let Some(d) = chars.next_if(char::is_ascii_digit) {
                    group.push(d);
                }
                if group.is_empty() {
                    out.push_str("$$");
                } else {
                    out.push_str(&format!("${{{group}}}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The numbers of an aggregate's items; `None` if one of them is `null`.
fn numbers(name: &str, items: &[Value]) -> Result<Option<Vec<f64>>, FeelError> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::Number(n) => out.push(*n),
            Value::Null => return Ok(None),
            other => return Err(error(format!("function '{name}': expected numbers, but got {}", other.type_name()))),
        }
    }
    Ok(Some(out))
}

fn extreme(a: ArgList, wanted: Ordering) -> Result<Value, FeelError> {
    let name = a.name;
    let mut best: Option<Value> = None;
    for item in a.items() {
        if item == Value::Null {
            return Ok(Value::Null);
        }
        best = Some(match best {
            None => item,
            Some(current) => match feel_cmp(&item, &current) {
                Some(ordering) if ordering == wanted => item,
                Some(_) => current,
                None => {
                    return Err(error(format!(
                        "function '{name}': cannot compare {} with {}",
                        item.type_name(),
                        current.type_name()
                    )))
                }
            },
        });
    }
    Ok(best.unwrap_or(Value::Null))
}

fn distinct(items: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(items.len());
    for item in items {
        if !contains(&out, &item) {
            out.push(item);
        }
    }
    out
}

fn flatten_into(items: Vec<Value>, out: &mut Vec<Value>) {
    for item in items {
        match item {
            Value::List(inner) => flatten_into(inner, out),
            other => out.push(other),
        }
    }
}

/// Stable merge sort driven by a fallible "a precedes b" predicate. A hand-written sort is used
/// because user predicates need not be total orders, which the standard sorts may panic on.
fn merge_sort(
    items: Vec<Value>,
    precedes: &mut dyn FnMut(&Value, &Value) -> Result<bool, FeelError>,
) -> Result<Vec<Value>, FeelError> {
    if items.len() <= 1 {
        return Ok(items);
    }
    let mut left = items;
    let right = left.split_off(left.len() / 2);
    let left = merge_sort(left, precedes)?;
    let right = merge_sort(right, precedes)?;
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    while let (Some(l), Some(r)) = (left.peek(), right.peek()) {
        if precedes(r, l)? {
            out.extend(right.next());
        } else {
            out.extend(left.next());
        }
    }
    out.extend(left);
    out.extend(right);
    Ok(out)
}

fn sort(ev: &mut Evaluator<'_>, mut a: ArgList) -> Result<Value, FeelError> {
    if !a.has(0) {
        return Ok(Value::Null);
    }
    let items = a.list(0)?;
    let sorted = match a.take(1) {
        Value::Function(function) => {
            merge_sort(items, &mut |x, y| Ok(ev.invoke(&function, vec![x.clone(), y.clone()])?.is_truthy()))?
        }
        Value::Null => merge_sort(items, &mut |x, y| match feel_cmp(x, y) {
            Some(ordering) => Ok(ordering.is_lt()),
            None => Err(error(format!("function 'sort': cannot compare {} with {}", x.type_name(), y.type_name()))),
        })?,
        other => {
            a.values[1] = other;
            return Err(a.type_error(1, "a function"));
        }
    };
    list(sorted)
}

fn list_replace(ev: &mut Evaluator<'_>, mut a: ArgList) -> Result<Value, FeelError> {
    if !a.has(0) {
        return Ok(Value::Null);
    }
    let mut items = a.list(0)?;
    let new_item = a.take(2);
    match a.take(1) {
        Value::Number(n) if n.fract() == 0.0 => match position(n as i64, items.len()) {
            Some(index) => items[index] = new_item,
            None => return Ok(Value::Null),
        },
        Value::Function(matcher) => {
            for item in &mut items {
                if ev.invoke(&matcher, vec![item.clone(), new_item.clone()])?.is_truthy() {
                    *item = new_item.clone();
                }
            }
        }
        Value::Null => return Ok(Value::Null),
        other => {
            a.values[1] = other;
            return Err(a.type_error(1, "a position or a function"));
        }
    }
    list(items)
}

fn parse_number(a: &ArgList) -> Result<Value, FeelError> {
    let mut text = a.str(0)?.trim().to_string();
    if a.has(1) {
        text = text.replace(a.str(1)?, "");
    }
    if a.has(2) {
        text = text.replace(a.str(2)?, ".");
    }
    let valid =
        !text.is_empty() && text.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
    Ok(if valid { text.parse::<f64>().map_or(Value::Null, number) } else { Value::Null })
}

fn date(_: &mut Evaluator<'_>, a: ArgList) -> Result<Value, FeelError> {
    match a.len() {
        1 => Ok(match a.get(0) {
            Value::String(s) => {
                Date::parse(s).or_else(|| DateTime::parse(s).map(DateTime::date)).map_or(Value::Null, Value::Date)
            }
            Value::Date(_) | Value::DateTime(_) => Value::Date(a.date(0)?),
            _ => return Err(a.type_error(0, "a string, date or date and time")),
        }),
        3 => {
            let (y, m, d) = (a.int(0)?, a.int(1)?, a.int(2)?);
            let in_range = |v: i64| u32::try_from(v).ok();
            Ok(match (in_range(m), in_range(d)) {
                (Some(m), Some(d)) => Date::from_ymd(y, m, d).map_or(Value::Null, Value::Date),
                _ => Value::Null,
            })
        }
        n => Err(no_such_function(a.name, n)),
    }
}

fn time(_: &mut Evaluator<'_>, a: ArgList) -> Result<Value, FeelError> {
    // Only the offset may be null; a missing hour, minute or second makes the time unknown.
    if (0..a.len().min(3)).any(|i| !a.has(i)) {
        return Ok(Value::Null);
    }
    match a.len() {
        1 => Ok(match a.get(0) {
            Value::String(s) => {
                Time::parse(s).or_else(|| DateTime::parse(s).map(DateTime::time)).map_or(Value::Null, Value::Time)
            }
            Value::Time(t) => Value::Time(*t),
            Value::DateTime(dt) => Value::Time(dt.time()),
            _ => return Err(a.type_error(0, "a string, time or date and time")),
        }),
        3 | 4 => {
            let offset = match a.get(3) {
                Value::Null => None,
                Value::DayTimeDuration(ms) => Some((ms / 1000) as i32),
                _ => return Err(a.type_error(3, "a days and time duration")),
            };
            Ok(Time::from_hms(a.int(0)?, a.int(1)?, a.num(2)?, offset).map_or(Value::Null, Value::Time))
        }
        n => Err(no_such_function(a.name, n)),
    }
}

fn date_and_time(_: &mut Evaluator<'_>, a: ArgList) -> Result<Value, FeelError> {
    match a.len() {
        1 => Ok(match a.get(0) {
            Value::String(s) => DateTime::parse(s).map_or(Value::Null, Value::DateTime),
            Value::DateTime(dt) => Value::DateTime(*dt),
            _ => return Err(a.type_error(0, "a string or date and time")),
        }),
        2 => match a.get(1) {
            Value::Time(t) => Ok(Value::DateTime(DateTime::new(a.date(0)?, *t))),
            _ => Err(a.type_error(1, "a time")),
        },
        n => Err(no_such_function(a.name, n)),
    }
}

fn duration(_: &mut Evaluator<'_>, a: ArgList) -> Result<Value, FeelError> {
    Ok(match temporal::parse_duration(a.str(0)?) {
        Some(temporal::Duration::YearMonth(months)) => Value::YearMonthDuration(months),
        Some(temporal::Duration::DayTime(millis)) => Value::DayTimeDuration(millis),
        None => Value::Null,
    })
}

fn years_and_months(_: &mut Evaluator<'_>, a: ArgList) -> Result<Value, FeelError> {
    let (from, to) = (a.date(0)?.ymd(), a.date(1)?.ymd());
    let mut months = (to.0 * 12 + i64::from(to.1)) - (from.0 * 12 + i64::from(from.1));
    if months > 0 && to.2 < from.2 {
        months -= 1;
    } else if months < 0 && to.2 > from.2 {
        months += 1;
    }
    Ok(Value::YearMonthDuration(months))
}

const DAY_NAMES: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

fn context_from_entries(_: &mut Evaluator<'_>, mut a: ArgList) -> Result<Value, FeelError> {
    let mut out = Vec::new();
    for entry in a.list(0)? {
        let Value::Context(fields) = entry else {
            return Err(a.error("expected a list of contexts with 'key' and 'value'"));
        };
        let mut key = None;
        let mut value = Value::Null;
        for (name, field) in fields {
            match (name.as_str(), field) {
                ("key", Value::String(k)) => key = Some(k),
                ("value", v) => value = v,
                _ => {}
            }
        }
        match key {
            Some(key) => context_put(&mut out, key, value),
            None => return Err(a.error("every entry needs a string 'key'")),
        }
    }
    Ok(Value::Context(out))
}

fn keys(a: &ArgList, i: usize) -> Result<Vec<String>, FeelError> {
    match a.get(i) {
        Value::String(key) => Ok(vec![key.clone()]),
        Value::List(path) if !path.is_empty() => path
            .iter()
            .map(|k| match k {
                Value::String(k) => Ok(k.clone()),
                _ => Err(a.type_error(i, "a string or a list of strings")),
            })
            .collect(),
        _ => Err(a.type_error(i, "a string or a list of strings")),
    }
}

fn put_path(entries: &mut Vec<(String, Value)>, path: &[String], value: Value) {
    let Some((key, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        context_put(entries, key.clone(), value);
        return;
    }
    let mut child = match entries.iter().position(|(k, _)| k == key).map(|i| entries[i].1.clone()) {
        Some(Value::Context(child)) => child,
        _ => Vec::new(),
    };
    put_path(&mut child, rest, value);
    context_put(entries, key.clone(), Value::Context(child));
}

fn put(_: &mut Evaluator<'_>, mut a: ArgList) -> Result<Value, FeelError> {
    if !a.has(0) || !a.has(1) {
        return Ok(Value::Null);
    }
    let path = keys(&a, 1)?;
    let value = a.take(2);
    let mut entries = a.context(0)?;
    put_path(&mut entries, &path, value);
    Ok(Value::Context(entries))
}

fn merge(_: &mut Evaluator<'_>, a: ArgList) -> Result<Value, FeelError> {
    let name = a.name;
    let mut out = Vec::new();
    for item in a.items() {
        match item {
            Value::Context(entries) => {
                for (key, value) in entries {
                    context_put(&mut out, key, value);
                }
            }
            other => return Err(error(format!("function '{name}': expected contexts, but got {}", other.type_name()))),
        }
    }
    Ok(Value::Context(out))
}

fn string_join(_: &mut Evaluator<'_>, mut a: ArgList) -> Result<Value, FeelError> {
    if !a.has(0) {
        return Ok(Value::Null);
    }
    let items = a.list(0)?;
    let separator = if a.has(1) { a.str(1)? } else { "" };
    let mut out = if a.has(2) { a.str(2)?.to_string() } else { String::new() };
    let mut first = true;
    for item in &items {
        match item {
            Value::Null => continue,
            Value::String(s) => {
                if !first {
                    out.push_str(separator);
                }
                out.push_str(s);
                first = false;
            }
            other => return Err(a.error(format_args!("expected a list of strings, but got {}", other.type_name()))),
        }
    }
    if a.has(3) {
        out.push_str(a.str(3)?);
    }
    string(out)
}

fn all_or_any(a: ArgList, all: bool) -> Result<Value, FeelError> {
    let name = a.name;
    let mut unknown = false;
    for item in a.items() {
        match item {
            Value::Bool(b) if b != all => return boolean(b),
            Value::Bool(_) => {}
            Value::Null => unknown = true,
            other => return Err(error(format!("function '{name}': expected booleans, but got {}", other.type_name()))),
        }
    }
    Ok(if unknown { Value::Null } else { Value::Bool(all) })
}

static BUILTINS: &[Builtin] = &[
    // Boolean and Camunda extensions.
    f("not", &["negand"], 1, |_, a| {
        Ok(match a.get(0) {
            Value::Bool(b) => Value::Bool(!b),
            _ => Value::Null,
        })
    }),
    f("is defined", &["value"], 1, |_, _| boolean(true)).nulls(),
    f("get or else", &["value", "default"], 2, |_, mut a| Ok(if a.has(0) { a.take(0) } else { a.take(1) })).nulls(),
    f("assert", &["value", "condition", "cause"], 2, |_, mut a| {
        if a.get(1).is_truthy() {
            return Ok(a.take(0));
        }
        Err(match a.get(2) {
            Value::String(cause) => error(format!("assertion failed: {cause}")),
            _ => error("assertion failed"),
        })
    })
    .nulls(),
    // Conversion.
    f("string", &["from"], 1, |_, a| string(a.get(0).to_string())),
    f("number", &["from", "grouping separator", "decimal separator"], 1, |_, a| match a.get(0) {
        Value::Number(n) => Ok(Value::Number(*n)),
        _ => parse_number(&a),
    }),
    f("context", &["entries"], 1, context_from_entries),
    // Strings.
    f("substring", &["string", "start position", "length"], 2, |_, a| {
        let chars: Vec<char> = a.str(0)?.chars().collect();
        let length = if a.has(2) { Some(a.num(2)?.floor() as i64) } else { None };
        let (from, to) = span(a.num(1)?.floor() as i64, length, chars.len());
        string(chars[from..to].iter().collect::<String>())
    }),
    f("string length", &["string"], 1, |_, a| Ok(Value::Number(a.str(0)?.chars().count() as f64))),
    f("upper case", &["string"], 1, |_, a| string(a.str(0)?.to_uppercase())),
    f("lower case", &["string"], 1, |_, a| string(a.str(0)?.to_lowercase())),
    f("substring before", &["string", "match"], 2, |_, a| {
        let (s, m) = (a.str(0)?, a.str(1)?);
        string(s.find(m).map_or("", |i| &s[..i]))
    }),
    f("substring after", &["string", "match"], 2, |_, a| {
        let (s, m) = (a.str(0)?, a.str(1)?);
        string(s.find(m).map_or("", |i| &s[i + m.len()..]))
    }),
    f("contains", &["string", "match"], 2, |_, a| boolean(a.str(0)?.contains(a.str(1)?))),
    f("starts with", &["string", "match"], 2, |_, a| boolean(a.str(0)?.starts_with(a.str(1)?))),
    f("ends with", &["string", "match"], 2, |_, a| boolean(a.str(0)?.ends_with(a.str(1)?))),
    f("matches", &["input", "pattern", "flags"], 2, |_, a| boolean(regex(&a, 1, 2)?.is_match(a.str(0)?))),
    f("replace", &["input", "pattern", "replacement", "flags"], 3, |_, a| {
        let re = regex(&a, 1, 3)?;
        string(re.replace_all(a.str(0)?, replacement(a.str(2)?).as_str()).into_owned())
    }),
    f("split", &["string", "delimiter"], 2, |_, a| {
        let re = regex(&a, 1, 2)?;
        list(re.split(a.str(0)?).map(|part| Value::String(part.to_string())).collect())
    }),
    f("extract", &["string", "pattern"], 2, |_, a| {
        let re = regex(&a, 1, 2)?;
        list(re.find_iter(a.str(0)?).map(|m| Value::String(m.as_str().to_string())).collect())
    }),
    f("trim", &["string"], 1, |_, a| string(a.str(0)?.trim())),
    f("is blank", &["string"], 1, |_, a| boolean(a.str(0)?.trim().is_empty())),
    f("string join", &["list", "delimiter", "prefix", "suffix"], 1, string_join).nulls(),
    // Numbers.
    f("decimal", &["n", "scale"], 2, |_, a| Ok(round(a.num(0)?, a.int(1)?, Rounding::HalfEven))),
    f("floor", &["n", "scale"], 1, |_, a| rounding(&a, Rounding::Floor)),
    f("ceiling", &["n", "scale"], 1, |_, a| rounding(&a, Rounding::Ceiling)),
    f("round up", &["n", "scale"], 1, |_, a| rounding(&a, Rounding::Up)),
    f("round down", &["n", "scale"], 1, |_, a| rounding(&a, Rounding::Down)),
    f("round half up", &["n", "scale"], 1, |_, a| rounding(&a, Rounding::HalfUp)),
    f("round half down", &["n", "scale"], 1, |_, a| rounding(&a, Rounding::HalfDown)),
    f("abs", &["n"], 1, |_, a| match a.get(0) {
        Value::Number(n) => Ok(Value::Number(n.abs())),
        Value::DayTimeDuration(ms) => Ok(Value::DayTimeDuration(ms.abs())),
        Value::YearMonthDuration(m) => Ok(Value::YearMonthDuration(m.abs())),
        _ => Err(a.type_error(0, "a number or duration")),
    }),
    f("modulo", &["dividend", "divisor"], 2, |_, a| {
        let (x, y) = (a.num(0)?, a.num(1)?);
        Ok(if y == 0.0 { Value::Null } else { number(x - y * (x / y).floor()) })
    }),
    f("sqrt", &["number"], 1, |_, a| Ok(number(a.num(0)?.sqrt()))),
    f("log", &["number"], 1, |_, a| {
        let n = a.num(0)?;
        Ok(if n > 0.0 { number(n.ln()) } else { Value::Null })
    }),
    f("exp", &["number"], 1, |_, a| Ok(number(a.num(0)?.exp()))),
    f("odd", &["number"], 1, |_, a| {
        let n = a.num(0)?;
        Ok(if n.fract() == 0.0 { Value::Bool(n % 2.0 != 0.0) } else { Value::Bool(false) })
    }),
    f("even", &["number"], 1, |_, a| {
        let n = a.num(0)?;
        Ok(if n.fract() == 0.0 { Value::Bool(n % 2.0 == 0.0) } else { Value::Bool(false) })
    }),
    // Lists.
    f("list contains", &["list", "element"], 2, |_, mut a| {
        if !a.has(0) {
            return Ok(Value::Null);
        }
        let element = a.take(1);
        boolean(contains(&a.list(0)?, &element))
    })
    .nulls(),
    f("count", &["list"], 1, |_, mut a| Ok(Value::Number(a.list(0)?.len() as f64))),
    f("min", &["list"], 1, |_, a| extreme(a, Ordering::Less)).variadic(),
    f("max", &["list"], 1, |_, a| extreme(a, Ordering::Greater)).variadic(),
    f("sum", &["list"], 1, |_, a| {
        let name = a.name;
        Ok(match numbers(name, &a.items())? {
            Some(ns) if !ns.is_empty() => number(ns.iter().sum()),
            _ => Value::Null,
        })
    })
    .variadic(),
    f("product", &["list"], 1, |_, a| {
        let name = a.name;
        Ok(match numbers(name, &a.items())? {
            Some(ns) if !ns.is_empty() => number(ns.iter().product()),
            _ => Value::Null,
        })
    })
    .variadic(),
    f("mean", &["list"], 1, |_, a| {
        let name = a.name;
        Ok(match numbers(name, &a.items())? {
            Some(ns) if !ns.is_empty() => number(ns.iter().sum::<f64>() / ns.len() as f64),
            _ => Value::Null,
        })
    })
    .variadic(),
    f("median", &["list"], 1, |_, a| {
        let name = a.name;
        Ok(match numbers(name, &a.items())? {
            Some(mut ns) if !ns.is_empty() => {
                ns.sort_by(f64::total_cmp);
                let mid = ns.len() / 2;
                number(if ns.len() % 2 == 0 { (ns[mid - 1] + ns[mid]) / 2.0 } else { ns[mid] })
            }
            _ => Value::Null,
        })
    })
    .variadic(),
    f("all", &["list"], 1, |_, a| all_or_any(a, true)).variadic(),
    f("any", &["list"], 1, |_, a| all_or_any(a, false)).variadic(),
    f("sublist", &["list", "start position", "length"], 2, |_, mut a| {
        let length = a.opt_int(2)?;
        let start = a.int(1)?;
        let mut items = a.list(0)?;
        let (from, to) = span(start, length, items.len());
        items.truncate(to);
        list(items.split_off(from))
    }),
    f("append", &["list", "items"], 1, |_, mut a| {
        if !a.has(0) {
            return Ok(Value::Null);
        }
        let mut items = a.list(0)?;
        items.extend(a.values.drain(1..));
        list(items)
    })
    .variadic()
    .nulls(),
    f("concatenate", &["lists"], 0, |_, mut a| {
        let mut out = Vec::new();
        for i in 0..a.len() {
            out.extend(a.list(i)?);
        }
        list(out)
    })
    .variadic(),
    f("insert before", &["list", "position", "newItem"], 3, |_, mut a| {
        if !a.has(0) || !a.has(1) {
            return Ok(Value::Null);
        }
        let pos = a.int(1)?;
        let new_item = a.take(2);
        let mut items = a.list(0)?;
        match position(pos, items.len()) {
            Some(index) => items.insert(index, new_item),
            None => return Ok(Value::Null),
        }
        list(items)
    })
    .nulls(),
    f("remove", &["list", "position"], 2, |_, mut a| {
        let pos = a.int(1)?;
        let mut items = a.list(0)?;
        match position(pos, items.len()) {
            Some(index) => items.remove(index),
            None => return Ok(Value::Null),
        };
        list(items)
    }),
    f("reverse", &["list"], 1, |_, mut a| {
        let mut items = a.list(0)?;
        items.reverse();
        list(items)
    }),
    f("index of", &["list", "match"], 2, |_, mut a| {
        if !a.has(0) {
            return Ok(Value::Null);
        }
        let wanted = a.take(1);
        let items = a.list(0)?;
        list(
            items
                .iter()
                .enumerate()
                .filter(|(_, item)| feel_eq(item, &wanted) == Some(true))
                .map(|(i, _)| Value::Number((i + 1) as f64))
                .collect(),
        )
    })
    .nulls(),
    f("union", &["lists"], 0, |_, mut a| {
        let mut out = Vec::new();
        for i in 0..a.len() {
            out.extend(a.list(i)?);
        }
        list(distinct(out))
    })
    .variadic(),
    f("distinct values", &["list"], 1, |_, mut a| list(distinct(a.list(0)?))),
    f("duplicate values", &["list"], 1, |_, mut a| {
        let items = a.list(0)?;
        let mut duplicates: Vec<Value> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if contains(&items[..i], item) && !contains(&duplicates, item) {
                duplicates.push(item.clone());
            }
        }
        list(duplicates)
    }),
    f("flatten", &["list"], 1, |_, mut a| {
        let mut out = Vec::new();
        flatten_into(a.list(0)?, &mut out);
        list(out)
    }),
    f("sort", &["list", "precedes"], 1, sort).nulls(),
    f("list replace", &["list", "position|match", "newItem"], 3, list_replace).nulls(),
    f("is empty", &["list"], 1, |_, mut a| boolean(a.list(0)?.is_empty())),
    // Contexts.
    f("get value", &["context", "key|keys"], 2, |_, a| {
        let path = keys(&a, 1)?;
        match a.get(0) {
            Value::Context(_) => Ok(a.get(0).select_path(&path).unwrap_or(Value::Null)),
            _ => Err(a.type_error(0, "a context")),
        }
    }),
    f("get entries", &["context"], 1, |_, mut a| {
        let entries = a.context(0)?;
        list(
            entries
                .into_iter()
                .map(|(k, v)| Value::Context(vec![("key".to_string(), Value::String(k)), ("value".to_string(), v)]))
                .collect(),
        )
    }),
    f("put", &["context", "key|keys", "value"], 3, put).nulls(),
    f("context put", &["context", "key|keys", "value"], 3, put).nulls(),
    f("put all", &["contexts"], 1, merge).variadic(),
    f("context merge", &["contexts"], 1, merge).variadic(),
    // Temporal.
    f("date", &["from|year", "month", "day"], 1, date),
    f("time", &["from|hour", "minute", "second", "offset"], 1, time).nulls(),
    f("date and time", &["from|date", "time"], 1, date_and_time),
    f("duration", &["from"], 1, duration),
    f("years and months duration", &["from", "to"], 2, years_and_months),
    f("now", &[], 0, |ev, _| Ok(Value::DateTime(DateTime::from_epoch_millis(ev.env.now_millis)))),
    f("today", &[], 0, |ev, _| Ok(Value::Date(Date::from_days(ev.env.now_millis.div_euclid(MILLIS_PER_DAY))))),
    f("day of week", &["date"], 1, |_, a| string(DAY_NAMES[a.date(0)?.weekday() as usize - 1])),
    f("month of year", &["date"], 1, |_, a| string(MONTH_NAMES[a.date(0)?.ymd().1 as usize - 1])),
    f("day of year", &["date"], 1, |_, a| Ok(Value::Number(f64::from(a.date(0)?.day_of_year())))),
    f("week of year", &["date"], 1, |_, a| Ok(Value::Number(f64::from(a.date(0)?.iso_week())))),
    f("last day of month", &["date"], 1, |_, a| Ok(Value::Number(f64::from(a.date(0)?.last_day_of_month())))),
];
