//! The parsed form of a FEEL expression.

use std::sync::Arc;

use super::builtins::Builtin;
use super::value::Value;

#[derive(Clone, Debug)]
pub(crate) enum Ast {
    /// A literal, including `@"..."` temporal literals, which are parsed at parse time.
    Literal(Value),
    /// A variable reference followed by zero or more `.key` selections, resolved without copying the
    /// intermediate contexts.
    Var {
        name: Arc<str>,
        path: Vec<String>,
    },
    /// `.key` on an arbitrary expression.
    Path(Box<Ast>, String),
    Filter(Box<Ast>, Box<Ast>),
    List(Vec<Ast>),
    Context(Vec<(Arc<str>, Ast)>),
    Neg(Box<Ast>),
    Arith(ArithOp, Box<Ast>, Box<Ast>),
    Compare(CompareOp, Box<Ast>, Box<Ast>),
    And(Box<Ast>, Box<Ast>),
    Or(Box<Ast>, Box<Ast>),
    Between(Box<Ast>, Box<Ast>, Box<Ast>),
    In(Box<Ast>, Vec<UnaryTest>),
    InstanceOf(Box<Ast>, &'static str),
    If(Box<Ast>, Box<Ast>, Box<Ast>),
    For(Vec<(Arc<str>, Iteration)>, Box<Ast>),
    Quantified {
        every: bool,
        bindings: Vec<(Arc<str>, Iteration)>,
        condition: Box<Ast>,
    },
    Call {
        name: Arc<str>,
        builtin: Option<&'static Builtin>,
        args: Args,
    },
    Lambda(Arc<Lambda>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Debug)]
pub(crate) enum Args {
    Positional(Vec<Ast>),
    Named(Vec<(String, Ast)>),
}

#[derive(Clone, Debug)]
pub(crate) enum Iteration {
    Collection(Ast),
    /// `for x in 1..3`: an inclusive integer range, counting down if the end is below the start.
    Span(Ast, Ast),
}

#[derive(Clone, Debug)]
pub(crate) enum UnaryTest {
    /// `< 5`, `>= x`, `!= "a"`.
    Compare(CompareOp, Ast),
    Range(Range),
    /// An expression: the input must equal it, or be contained in it if it is a list.
    Equals(Ast),
}

#[derive(Clone, Debug)]
pub(crate) struct Range {
    pub(crate) start: Ast,
    pub(crate) start_inclusive: bool,
    pub(crate) end: Ast,
    pub(crate) end_inclusive: bool,
}

#[derive(Debug)]
pub(crate) struct Lambda {
    pub(crate) params: Vec<Arc<str>>,
    pub(crate) body: Ast,
}
