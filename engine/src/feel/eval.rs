//! Tree-walking evaluation of a parsed expression.

use std::slice;
use std::sync::Arc;

use super::ast::{Args, ArithOp, Ast, CompareOp, Iteration, Range, UnaryTest};
use super::builtins::{self, Builtin};
use super::temporal::{Date, Time, MILLIS_PER_DAY};
use super::value::{context_get, context_put, feel_cmp, feel_eq, Closure, Function, Value};
use super::{Environment, FeelError, Limit, Scope};

/// A local binding layer, searched innermost first before the caller's scope.
#[derive(Clone, Debug)]
pub(crate) enum Frame {
    /// An iteration variable or function parameter.
    Var(Arc<str>, Value),
    /// The element under test in a filter: visible as `item` and, if it is a context, through its
    /// entries.
    Item(Value),
    /// A context literal being built: later entries can refer to earlier ones.
    Context(Vec<(String, Value)>),
}

pub(crate) fn error(message: impl Into<String>) -> FeelError {
    FeelError::Evaluation { message: message.into() }
}

pub(crate) struct Evaluator<'a> {
    scope: &'a dyn Scope,
    pub(crate) env: &'a Environment,
    frames: Vec<Frame>,
    /// How deeply `eval` is nested right now.
    depth: u32,
    /// Iterations taken so far, against `env.limits.max_iterations`.
    iterations: u64,
    /// Estimated bytes of the values built so far, against `env.limits.max_allocation_bytes`.
    allocated: u64,
}

/// The estimated size of one value slot: a list element or a context entry without its contents.
const SLOT_BYTES: u64 = std::mem::size_of::<Value>() as u64;

impl<'a> Evaluator<'a> {
    pub(crate) fn new(scope: &'a dyn Scope, env: &'a Environment) -> Evaluator<'a> {
        Evaluator { scope, env, frames: Vec::new(), depth: 0, iterations: 0, allocated: 0 }
    }

    /// Counts `count` iterations against the limit, before they are taken.
    pub(crate) fn iterate(&mut self, count: u64) -> Result<(), FeelError> {
        self.iterations = self.iterations.saturating_add(count);
        let max = self.env.limits.max_iterations;
        if self.iterations > max {
            return Err(FeelError::LimitExceeded { limit: Limit::Iterations, max });
        }
        Ok(())
    }

    /// Counts `bytes` about to be allocated for a value against the limit.
    pub(crate) fn allocate(&mut self, bytes: u64) -> Result<(), FeelError> {
        self.allocated = self.allocated.saturating_add(bytes);
        let max = self.env.limits.max_allocation_bytes;
        if self.allocated > max {
            return Err(FeelError::LimitExceeded { limit: Limit::Allocation, max });
        }
        Ok(())
    }

    /// Counts the top level of a value a built-in function returned: its inputs were counted when
    /// they were built, and no built-in makes more than a copy of its inputs.
    pub(crate) fn allocate_result(&mut self, value: &Value) -> Result<(), FeelError> {
        match value {
            Value::String(s) => self.allocate(s.len() as u64),
            Value::List(items) => self.allocate(items.len() as u64 * SLOT_BYTES),
            Value::Context(entries) => {
                self.allocate(entries.iter().map(|(k, _)| k.len() as u64 + SLOT_BYTES).sum::<u64>())
            }
            _ => Ok(()),
        }
    }

    fn local(&self, name: &str) -> Option<&Value> {
        self.frames.iter().rev().find_map(|frame| match frame {
            Frame::Var(n, v) => (**n == *name).then_some(v),
            Frame::Item(v) if name == "item" => Some(v),
            Frame::Item(Value::Context(entries)) | Frame::Context(entries) => context_get(entries, name),
            Frame::Item(_) => None,
        })
    }

    /// Resolves `name.path...`; `None` if the variable or a context key along the path is missing.
    fn lookup(&self, name: &str, path: &[String]) -> Option<Value> {
        match self.local(name) {
            Some(value) => value.select_path(path),
            None => self.scope.get_path(name, path),
        }
    }

    pub(crate) fn eval(&mut self, ast: &Ast) -> Result<Value, FeelError> {
        let max = self.env.limits.max_depth;
        if self.depth >= max {
            return Err(FeelError::LimitExceeded { limit: Limit::Depth, max: u64::from(max) });
        }
        self.depth += 1;
        let result = self.eval_nested(ast);
        self.depth -= 1;
        result
    }

    fn eval_nested(&mut self, ast: &Ast) -> Result<Value, FeelError> {
        Ok(match ast {
            Ast::Literal(v) => v.clone(),
            Ast::Var { name, path } => self.lookup(name, path).unwrap_or(Value::Null),
            Ast::Path(base, key) => {
                let base = self.eval(base)?;
                base.select_path(slice::from_ref(key)).unwrap_or(Value::Null)
            }
            Ast::Filter(base, condition) => {
                let base = self.eval(base)?;
                self.filter(base, condition)?
            }
            Ast::List(items) => {
                self.allocate(items.len() as u64 * SLOT_BYTES)?;
                Value::List(items.iter().map(|i| self.eval(i)).collect::<Result<_, _>>()?)
            }
            Ast::Context(entries) => {
                self.allocate(entries.iter().map(|(k, _)| k.len() as u64 + SLOT_BYTES).sum::<u64>())?;
                self.frames.push(Frame::Context(Vec::with_capacity(entries.len())));
                for (key, value) in entries {
                    let value = self.eval(value)?;
                    if let Some(Frame::Context(built)) = self.frames.last_mut() {
                        context_put(built, key.to_string(), value);
                    }
                }
                match self.frames.pop() {
                    Some(Frame::Context(built)) => Value::Context(built),
                    _ => Value::Null,
                }
            }
            Ast::Neg(operand) => match self.eval(operand)? {
                Value::Number(n) => Value::Number(-n),
                Value::DayTimeDuration(ms) => Value::DayTimeDuration(-ms),
                Value::YearMonthDuration(m) => Value::YearMonthDuration(-m),
                _ => Value::Null,
            },
            Ast::Arith(op, left, right) => {
                let left = self.eval(left)?;
                let right = self.eval(right)?;
                if let (ArithOp::Add, Value::String(x), Value::String(y)) = (op, &left, &right) {
                    self.allocate((x.len() + y.len()) as u64)?;
                }
                arith(*op, left, right)
            }
            Ast::Compare(op, left, right) => {
                let left = self.eval(left)?;
                compare(*op, &left, &self.eval(right)?)
            }
            Ast::And(left, right) => match self.eval(left)? {
                Value::Bool(false) => Value::Bool(false),
                left => match (left, self.eval(right)?) {
                    (_, Value::Bool(false)) => Value::Bool(false),
                    (Value::Bool(true), Value::Bool(true)) => Value::Bool(true),
                    _ => Value::Null,
                },
            },
            Ast::Or(left, right) => match self.eval(left)? {
                Value::Bool(true) => Value::Bool(true),
                left => match (left, self.eval(right)?) {
                    (_, Value::Bool(true)) => Value::Bool(true),
                    (Value::Bool(false), Value::Bool(false)) => Value::Bool(false),
                    _ => Value::Null,
                },
            },
            Ast::Between(value, low, high) => {
                let value = self.eval(value)?;
                let low = self.eval(low)?;
                let high = self.eval(high)?;
                and3(compare(CompareOp::Ge, &value, &low), compare(CompareOp::Le, &value, &high))
            }
            Ast::In(value, tests) => {
                let value = self.eval(value)?;
                let mut unknown = false;
                for test in tests {
                    match self.unary_test(&value, test)? {
                        Value::Bool(true) => return Ok(Value::Bool(true)),
                        Value::Bool(false) => {}
                        _ => unknown = true,
                    }
                }
                if unknown {
                    Value::Null
                } else {
                    Value::Bool(false)
                }
            }
            Ast::InstanceOf(value, ty) => {
                let value = self.eval(value)?;
                Value::Bool(match *ty {
                    "Any" => value != Value::Null,
                    "Null" => value == Value::Null,
                    ty => value.type_name() == ty,
                })
            }
            Ast::If(condition, then, otherwise) => {
                if self.eval(condition)?.is_truthy() {
                    self.eval(then)?
                } else {
                    self.eval(otherwise)?
                }
            }
            Ast::For(bindings, body) => {
                let mut results = Vec::new();
                if !self.for_each(bindings, body, &mut results)? {
                    return Ok(Value::Null);
                }
                Value::List(results)
            }
            Ast::Quantified { every, bindings, condition } => self.quantified(*every, bindings, condition)?,
            Ast::Call { name, builtin, args } => self.call(name, *builtin, args)?,
            Ast::Lambda(lambda) => Value::Function(Function(Arc::new(Closure {
                lambda: Arc::clone(lambda),
                captured: self.frames.clone(),
            }))),
        })
    }

    /// `list[condition]`: a number selects by 1-based position (negative counts from the end);
    /// anything else is evaluated per element with `item` and the element's entries in scope.
    fn filter(&mut self, base: Value, condition: &Ast) -> Result<Value, FeelError> {
        let items = match base {
            Value::Null => return Ok(Value::Null),
            Value::List(items) => items,
            single => vec![single],
        };
        if !is_boolean_shaped(condition) {
            if let Value::Number(index) = self.eval(condition)? {
                return Ok(select_index(items, index));
            }
        }
        self.iterate(items.len() as u64)?;
        let mut selected = Vec::new();
        for item in items {
            self.frames.push(Frame::Item(item));
            let keep = self.eval(condition)?.is_truthy();
            if let Some(Frame::Item(item)) = self.frames.pop() {
                if keep {
                    selected.push(item);
                }
            }
        }
        Ok(Value::List(selected))
    }

    fn unary_test(&mut self, input: &Value, test: &UnaryTest) -> Result<Value, FeelError> {
        Ok(match test {
            UnaryTest::Compare(op, endpoint) => compare(*op, input, &self.eval(endpoint)?),
            UnaryTest::Range(range) => self.in_range(input, range)?,
            UnaryTest::Equals(expected) => match self.eval(expected)? {
                Value::List(items) => Value::Bool(items.iter().any(|item| feel_eq(input, item) == Some(true))),
                expected => feel_eq(input, &expected).map_or(Value::Null, Value::Bool),
            },
        })
    }

    fn in_range(&mut self, input: &Value, range: &Range) -> Result<Value, FeelError> {
        let start = self.eval(&range.start)?;
        let end = self.eval(&range.end)?;
        let low = if range.start_inclusive { CompareOp::Ge } else { CompareOp::Gt };
        let high = if range.end_inclusive { CompareOp::Le } else { CompareOp::Lt };
        Ok(and3(compare(low, input, &start), compare(high, input, &end)))
    }

    /// Evaluates `body` for every combination of the bindings, appending to `results`; `false` if an
    /// iteration source is not a list.
    fn for_each(
        &mut self,
        bindings: &[(Arc<str>, Iteration)],
        body: &Ast,
        results: &mut Vec<Value>,
    ) -> Result<bool, FeelError> {
        let Some(((name, iteration), rest)) = bindings.split_first() else {
            let result = self.eval(body)?;
            self.allocate(SLOT_BYTES)?;
            results.push(result);
            return Ok(true);
        };
        let items = match iteration {
            Iteration::Collection(collection) => match self.eval(collection)? {
                Value::List(items) => items,
                _ => return Ok(false),
            },
            Iteration::Span(from, to) => match (self.eval(from)?, self.eval(to)?) {
                (Value::Number(from), Value::Number(to)) if from.fract() == 0.0 && to.fract() == 0.0 => {
                    let (from, to) = (from as i64, to as i64);
                    let count = from.abs_diff(to).saturating_add(1);
                    self.iterate(count)?;
                    self.allocate(count.saturating_mul(SLOT_BYTES))?;
                    let numbers: Vec<i64> =
                        if from <= to { (from..=to).collect() } else { (to..=from).rev().collect() };
                    numbers.into_iter().map(|n| Value::Number(n as f64)).collect()
                }
                _ => return Ok(false),
            },
        };
        if let Iteration::Collection(_) = iteration {
            self.iterate(items.len() as u64)?;
        }
        for item in items {
            self.frames.push(Frame::Var(Arc::clone(name), item));
            let complete = self.for_each(rest, body, results)?;
            self.frames.pop();
            if !complete {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn quantified(
        &mut self,
        every: bool,
        bindings: &[(Arc<str>, Iteration)],
        condition: &Ast,
    ) -> Result<Value, FeelError> {
        let mut results = Vec::new();
        if !self.for_each(bindings, condition, &mut results)? {
            return Ok(Value::Null);
        }
        Ok(Value::Bool(if every { results.iter().all(Value::is_truthy) } else { results.iter().any(Value::is_truthy) }))
    }

    fn call(&mut self, name: &str, builtin: Option<&'static Builtin>, args: &Args) -> Result<Value, FeelError> {
        if let Some(Value::Function(function)) = self.local(name) {
            let function = function.clone();
            let params = &function.0.lambda.params;
            let values = match args {
                Args::Positional(list) => self.eval_all(list)?,
                Args::Named(named) => {
                    let mut values = vec![Value::Null; params.len()];
                    for (param, arg) in named {
                        let index = params
                            .iter()
                            .position(|p| **p == **param)
                            .ok_or_else(|| error(format!("function '{name}' has no parameter '{param}'")))?;
                        values[index] = self.eval(arg)?;
                    }
                    values
                }
            };
            return self.invoke(&function, values);
        }
        let count = match args {
            Args::Positional(list) => list.len(),
            Args::Named(named) => named.len(),
        };
        let Some(builtin) = builtin else {
            return Err(error(format!("no function '{name}' with {count} argument(s)")));
        };
        if builtin.name == "is defined" {
            return match args {
                Args::Positional(list) if list.len() == 1 => Ok(Value::Bool(self.is_defined(&list[0])?)),
                _ => Err(error(format!("no function '{name}' with {count} argument(s)"))),
            };
        }
        let values = match args {
            Args::Positional(list) => self.eval_all(list)?,
            Args::Named(named) => {
                let mut values: Vec<Option<Value>> = vec![None; builtin.params.len()];
                for (param, arg) in named {
                    let index = builtin
                        .params
                        .iter()
                        .position(|p| p.split('|').any(|alternative| alternative == param))
                        .ok_or_else(|| error(format!("function '{name}' has no parameter '{param}'")))?;
                    values[index] = Some(self.eval(arg)?);
                }
                let given = values.iter().rposition(Option::is_some).map_or(0, |last| last + 1);
                values.truncate(given);
                values.into_iter().map(|v| v.unwrap_or(Value::Null)).collect()
            }
        };
        let result = builtins::call(self, builtin, values)?;
        self.allocate_result(&result)?;
        Ok(result)
    }

    fn eval_all(&mut self, list: &[Ast]) -> Result<Vec<Value>, FeelError> {
        list.iter().map(|arg| self.eval(arg)).collect()
    }

    /// Whether a variable or context entry exists (its value may be `null`); any other expression is
    /// defined.
    fn is_defined(&mut self, ast: &Ast) -> Result<bool, FeelError> {
        Ok(match ast {
            Ast::Var { name, path } => self.lookup(name, path).is_some(),
            Ast::Path(base, key) => self.eval(base)?.select_path(slice::from_ref(key)).is_some(),
            other => {
                self.eval(other)?;
                true
            }
        })
    }

    /// Calls a user-defined function with its captured locals and the given arguments bound.
    pub(crate) fn invoke(&mut self, function: &Function, args: Vec<Value>) -> Result<Value, FeelError> {
        self.iterate(1)?;
        let closure = &function.0;
        if args.len() != closure.lambda.params.len() {
            return Err(error(format!(
                "function expects {} argument(s) but got {}",
                closure.lambda.params.len(),
                args.len()
            )));
        }
        let mut frames = closure.captured.clone();
        frames.extend(closure.lambda.params.iter().cloned().zip(args).map(|(p, v)| Frame::Var(p, v)));
        let saved = std::mem::replace(&mut self.frames, frames);
        let result = self.eval(&closure.lambda.body);
        self.frames = saved;
        result
    }
}

/// Conditions that can only produce booleans never select by index, so filters skip the probe.
fn is_boolean_shaped(ast: &Ast) -> bool {
    matches!(
        ast,
        Ast::Compare(..)
            | Ast::And(..)
            | Ast::Or(..)
            | Ast::Between(..)
            | Ast::In(..)
            | Ast::InstanceOf(..)
            | Ast::Quantified { .. }
    )
}

fn select_index(mut items: Vec<Value>, index: f64) -> Value {
    if index.fract() != 0.0 {
        return Value::Null;
    }
    let len = items.len() as f64;
    let position = if index > 0.0 { index - 1.0 } else { len + index };
    if index == 0.0 || position < 0.0 || position >= len {
        return Value::Null;
    }
    items.swap_remove(position as usize)
}

/// Three-valued conjunction of two comparison results.
fn and3(a: Value, b: Value) -> Value {
    match (a, b) {
        (Value::Bool(false), _) | (_, Value::Bool(false)) => Value::Bool(false),
        (Value::Bool(true), Value::Bool(true)) => Value::Bool(true),
        _ => Value::Null,
    }
}

pub(crate) fn compare(op: CompareOp, a: &Value, b: &Value) -> Value {
    match op {
        CompareOp::Eq => feel_eq(a, b).map_or(Value::Null, Value::Bool),
        CompareOp::Ne => feel_eq(a, b).map_or(Value::Null, |eq| Value::Bool(!eq)),
        _ => match feel_cmp(a, b) {
            None => Value::Null,
            Some(ordering) => Value::Bool(match op {
                CompareOp::Lt => ordering.is_lt(),
                CompareOp::Le => ordering.is_le(),
                CompareOp::Gt => ordering.is_gt(),
                _ => ordering.is_ge(),
            }),
        },
    }
}

pub(crate) fn number(n: f64) -> Value {
    if n.is_finite() {
        Value::Number(if n == 0.0 { 0.0 } else { n })
    } else {
        Value::Null
    }
}

fn shift_date(date: Date, millis: i64) -> Option<Value> {
    let total = date.days().checked_mul(MILLIS_PER_DAY)?.checked_add(millis)?;
    Some(Value::Date(Date::from_days(total.div_euclid(MILLIS_PER_DAY))))
}

/// Arithmetic with FEEL's rules: `null` if an operand is `null`, the operation is undefined for the
/// operand types, or the result is not a finite number (e.g. division by zero).
pub(crate) fn arith(op: ArithOp, a: Value, b: Value) -> Value {
    use ArithOp::{Add, Div, Mul, Pow, Sub};
    use Value::{Date as D, DateTime as Dt, DayTimeDuration as Dtd, Number as N, Time as T, YearMonthDuration as Ymd};
    let result = match (op, a, b) {
        (_, Value::Null, _) | (_, _, Value::Null) => None,
        (op, N(x), N(y)) => Some(number(match op {
            Add => x + y,
            Sub => x - y,
            Mul => x * y,
            Div => x / y,
            Pow => x.powf(y),
        })),
        (Add, Value::String(x), Value::String(y)) => Some(Value::String(x + &y)),
        (Add, Dt(d), Dtd(ms)) | (Add, Dtd(ms), Dt(d)) => Some(Dt(d.add_millis(ms))),
        (Sub, Dt(d), Dtd(ms)) => Some(Dt(d.add_millis(-ms))),
        (Add, Dt(d), Ymd(m)) | (Add, Ymd(m), Dt(d)) => d.add_months(m).map(Dt),
        (Sub, Dt(d), Ymd(m)) => d.add_months(-m).map(Dt),
        (Sub, Dt(x), Dt(y)) => x.millis_since(y).map(Dtd),
        (Add, D(d), Dtd(ms)) | (Add, Dtd(ms), D(d)) => shift_date(d, ms),
        (Sub, D(d), Dtd(ms)) => shift_date(d, -ms),
        (Add, D(d), Ymd(m)) | (Add, Ymd(m), D(d)) => d.add_months(m).map(D),
        (Sub, D(d), Ymd(m)) => d.add_months(-m).map(D),
        (Sub, D(x), D(y)) => Some(Dtd((x.days() - y.days()) * MILLIS_PER_DAY)),
        (Add, T(t), Dtd(ms)) | (Add, Dtd(ms), T(t)) => {
            Some(T(Time::from_millis(t.millis_of_day() + ms % MILLIS_PER_DAY, t.offset())))
        }
        (Sub, T(t), Dtd(ms)) => Some(T(Time::from_millis(t.millis_of_day() - ms % MILLIS_PER_DAY, t.offset()))),
        (Sub, T(x), T(y)) => match (x.offset(), y.offset()) {
            (None, None) => Some(Dtd(x.millis_of_day() - y.millis_of_day())),
            (Some(p), Some(q)) => {
                Some(Dtd(x.millis_of_day() - y.millis_of_day() - (i64::from(p) - i64::from(q)) * 1000))
            }
            _ => None,
        },
        (Add, Dtd(x), Dtd(y)) => x.checked_add(y).map(Dtd),
        (Sub, Dtd(x), Dtd(y)) => x.checked_sub(y).map(Dtd),
        (Add, Ymd(x), Ymd(y)) => x.checked_add(y).map(Ymd),
        (Sub, Ymd(x), Ymd(y)) => x.checked_sub(y).map(Ymd),
        (Mul, Dtd(ms), N(n)) | (Mul, N(n), Dtd(ms)) => scale(ms, n).map(Dtd),
        (Div, Dtd(ms), N(n)) if n != 0.0 => scale(ms, 1.0 / n).map(Dtd),
        (Div, Dtd(x), Dtd(y)) if y != 0 => Some(number(x as f64 / y as f64)),
        (Mul, Ymd(m), N(n)) | (Mul, N(n), Ymd(m)) => scale(m, n).map(Ymd),
        (Div, Ymd(m), N(n)) if n != 0.0 => scale(m, 1.0 / n).map(Ymd),
        (Div, Ymd(x), Ymd(y)) if y != 0 => Some(number(x as f64 / y as f64)),
        _ => None,
    };
    result.unwrap_or(Value::Null)
}

fn scale(amount: i64, factor: f64) -> Option<i64> {
    let scaled = (amount as f64 * factor).round();
    (scaled.is_finite() && scaled.abs() < 9.0e18).then_some(scaled as i64)
}
