//! Lexer and recursive-descent parser for FEEL expressions.
//!
//! Multi-word built-in function names (`date and time`, `get or else`) are recognised where a run
//! of words is followed by `(` and spells a known built-in; variable names are single words (or
//! back-quoted). Built-ins are resolved here, once, so evaluation never searches the function table.

use std::sync::Arc;

use super::ast::{Args, ArithOp, Ast, CompareOp, Iteration, Lambda, Range, UnaryTest};
use super::builtins;
use super::temporal::{self, Date, DateTime, Time};
use super::value::Value;
use super::FeelError;

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Number(f64),
    Str(String),
    Name(String),
    /// A back-quoted name: never a keyword, may contain spaces.
    Quoted(String),
    Sym(&'static str),
    End,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    pos: usize,
}

const SYMBOLS: [&str; 22] =
    ["**", "..", "!=", "<=", ">=", "(", ")", "[", "]", "{", "}", ",", ".", ":", "=", "<", ">", "+", "-", "*", "/", "@"];

/// Type names accepted after `instance of`, longest first.
const TYPE_NAMES: [&str; 13] = [
    "years and months duration",
    "days and time duration",
    "date and time",
    "boolean",
    "context",
    "function",
    "number",
    "string",
    "date",
    "time",
    "list",
    "Any",
    "Null",
];

/// Words that join expressions, so a run of words containing one is not a function name.
const OPERATOR_WORDS: [&str; 10] =
    ["and", "or", "in", "between", "instance", "of", "then", "else", "return", "satisfies"];

/// Deepest nesting the parser accepts, so that hostile input cannot overflow the stack.
const MAX_DEPTH: usize = 128;

fn syntax(position: usize, message: impl Into<String>) -> FeelError {
    FeelError::Syntax { position, message: message.into() }
}

fn is_name_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '?' || c == '$'
}

fn is_name_part(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '?' || c == '$'
}

fn lex(src: &str) -> Result<Vec<Token>, FeelError> {
    let bytes = src.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < src.len() {
        let c = src[i..].chars().next().unwrap_or(' ');
        if c.is_whitespace() {
            i += c.len_utf8();
        } else if src[i..].starts_with("//") {
            i = src[i..].find('\n').map_or(src.len(), |n| i + n);
        } else if src[i..].starts_with("/*") {
            let close = src[i + 2..].find("*/").ok_or_else(|| syntax(i, "unterminated comment"))?;
            i += close + 4;
        } else if c.is_ascii_digit() || (c == '.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let start = i;
            while i < src.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
                i += 1;
                while i < src.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let number = src[start..i].parse().map_err(|_| syntax(start, "invalid number"))?;
            tokens.push(Token { tok: Tok::Number(number), pos: start });
        } else if c == '"' {
            let (text, end) = lex_string(src, i)?;
            tokens.push(Token { tok: Tok::Str(text), pos: i });
            i = end;
        } else if c == '`' {
            let close = src[i + 1..].find('`').ok_or_else(|| syntax(i, "unterminated `name`"))?;
            tokens.push(Token { tok: Tok::Quoted(src[i + 1..i + 1 + close].to_string()), pos: i });
            i += close + 2;
        } else if is_name_start(c) {
            let start = i;
            while let Some(c) = src[i..].chars().next().filter(|c| is_name_part(*c)) {
                i += c.len_utf8();
            }
            tokens.push(Token { tok: Tok::Name(src[start..i].to_string()), pos: start });
        } else if let Some(sym) = SYMBOLS.iter().find(|s| src[i..].starts_with(**s)) {
            tokens.push(Token { tok: Tok::Sym(sym), pos: i });
            i += sym.len();
        } else {
            return Err(syntax(i, format!("unexpected character '{c}'")));
        }
    }
    tokens.push(Token { tok: Tok::End, pos: src.len() });
    Ok(tokens)
}

/// Lexes a double-quoted string starting at `start`; returns its text and the index after it.
fn lex_string(src: &str, start: usize) -> Result<(String, usize), FeelError> {
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((offset, c)) = chars.next() {
        let at = start + 1 + offset;
        match c {
            '"' => return Ok((out, at + 1)),
            '\\' => {
                let escaped = match chars.next().map(|(_, e)| e) {
                    Some('n') => '\n',
                    Some('r') => '\r',
                    Some('t') => '\t',
                    Some('b') => '\u{8}',
                    Some('f') => '\u{c}',
                    Some(e @ ('"' | '\\' | '\'' | '/')) => e,
                    Some('u') => {
                        let hex: String = chars.by_ref().take(4).map(|(_, h)| h).collect();
                        u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| syntax(at, "invalid \\u escape"))?
                    }
                    // Other sequences (`\d`, `\s`) stay verbatim so that regular expressions read naturally.
                    Some(other) => {
                        out.push('\\');
                        other
                    }
                    None => return Err(syntax(start, "unterminated string")),
                };
                out.push(escaped);
            }
            c => out.push(c),
        }
    }
    Err(syntax(start, "unterminated string"))
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Number(n) => format!("number {n}"),
        Tok::Str(s) => format!("string {s:?}"),
        Tok::Name(n) | Tok::Quoted(n) => format!("'{n}'"),
        Tok::Sym(s) => format!("'{s}'"),
        Tok::End => "end of input".to_string(),
    }
}

pub(crate) fn parse(src: &str) -> Result<Ast, FeelError> {
    let mut parser = Parser { tokens: lex(src)?, i: 0, depth: 0, in_range_end: false };
    let ast = parser.expression()?;
    if parser.peek() != &Tok::End {
        return Err(parser.expected("end of input"));
    }
    Ok(ast)
}

struct Parser {
    tokens: Vec<Token>,
    i: usize,
    depth: usize,
    /// Parsing the end of a range, where `[` closes the range (`[1..10[`) instead of filtering.
    in_range_end: bool,
}

impl Parser {
    fn peek(&self) -> &Tok {
        self.peek_at(0)
    }

    fn peek_at(&self, n: usize) -> &Tok {
        let last = self.tokens.len() - 1;
        &self.tokens[(self.i + n).min(last)].tok
    }

    fn pos(&self) -> usize {
        self.tokens[self.i].pos
    }

    fn advance(&mut self) -> Tok {
        let tok = self.tokens[self.i].tok.clone();
        if self.i < self.tokens.len() - 1 {
            self.i += 1;
        }
        tok
    }

    fn expected(&self, what: &str) -> FeelError {
        syntax(self.pos(), format!("expected {what}, found {}", describe(self.peek())))
    }

    fn is_sym(&self, sym: &str) -> bool {
        matches!(self.peek(), Tok::Sym(s) if *s == sym)
    }

    fn eat_sym(&mut self, sym: &str) -> bool {
        let found = self.is_sym(sym);
        if found {
            self.advance();
        }
        found
    }

    fn expect_sym(&mut self, sym: &str) -> Result<(), FeelError> {
        if self.eat_sym(sym) {
            Ok(())
        } else {
            Err(self.expected(&format!("'{sym}'")))
        }
    }

    fn is_keyword_at(&self, n: usize, keyword: &str) -> bool {
        matches!(self.peek_at(n), Tok::Name(s) if s == keyword)
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let found = self.is_keyword_at(0, keyword);
        if found {
            self.advance();
        }
        found
    }

    fn expect_keyword(&mut self, keyword: &str) -> Result<(), FeelError> {
        if self.eat_keyword(keyword) {
            Ok(())
        } else {
            Err(self.expected(&format!("'{keyword}'")))
        }
    }

    fn name(&mut self) -> Result<Arc<str>, FeelError> {
        let name: Arc<str> = match self.peek() {
            Tok::Name(n) | Tok::Quoted(n) => n.as_str().into(),
            _ => return Err(self.expected("a name")),
        };
        self.advance();
        Ok(name)
    }

    /// The words at the cursor that are followed by `:`, joined by spaces (context keys, named
    /// arguments), without consuming them.
    fn words_before_colon(&self) -> Option<(String, usize)> {
        let mut words = Vec::new();
        while let Tok::Name(w) | Tok::Quoted(w) = self.peek_at(words.len()) {
            words.push(w.as_str());
        }
        (!words.is_empty() && matches!(self.peek_at(words.len()), Tok::Sym(":")))
            .then(|| (words.join(" "), words.len()))
    }

    fn expression(&mut self) -> Result<Ast, FeelError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(syntax(self.pos(), "expression is nested too deeply"));
        }
        let in_range_end = std::mem::replace(&mut self.in_range_end, false);
        let result = self.disjunction();
        self.in_range_end = in_range_end;
        self.depth -= 1;
        result
    }

    fn disjunction(&mut self) -> Result<Ast, FeelError> {
        let mut left = self.conjunction()?;
        while self.eat_keyword("or") {
            left = Ast::Or(Box::new(left), Box::new(self.conjunction()?));
        }
        Ok(left)
    }

    fn conjunction(&mut self) -> Result<Ast, FeelError> {
        let mut left = self.comparison()?;
        while self.eat_keyword("and") {
            left = Ast::And(Box::new(left), Box::new(self.comparison()?));
        }
        Ok(left)
    }

    fn compare_op(&mut self) -> Option<CompareOp> {
        let op = match self.peek() {
            Tok::Sym("=") => CompareOp::Eq,
            Tok::Sym("!=") => CompareOp::Ne,
            Tok::Sym("<") => CompareOp::Lt,
            Tok::Sym("<=") => CompareOp::Le,
            Tok::Sym(">") => CompareOp::Gt,
            Tok::Sym(">=") => CompareOp::Ge,
            _ => return None,
        };
        self.advance();
        Some(op)
    }

    fn comparison(&mut self) -> Result<Ast, FeelError> {
        let mut left = self.additive()?;
        loop {
            if let Some(op) = self.compare_op() {
                left = Ast::Compare(op, Box::new(left), Box::new(self.additive()?));
            } else if self.eat_keyword("between") {
                let low = self.additive()?;
                self.expect_keyword("and")?;
                let high = self.additive()?;
                left = Ast::Between(Box::new(left), Box::new(low), Box::new(high));
            } else if self.eat_keyword("in") {
                left = Ast::In(Box::new(left), self.in_tests()?);
            } else if self.is_keyword_at(0, "instance") && self.is_keyword_at(1, "of") {
                self.i += 2;
                left = Ast::InstanceOf(Box::new(left), self.type_name()?);
            } else {
                return Ok(left);
            }
        }
    }

    fn type_name(&mut self) -> Result<&'static str, FeelError> {
        for ty in TYPE_NAMES {
            let words: Vec<&str> = ty.split(' ').collect();
            if words.iter().enumerate().all(|(n, w)| self.is_keyword_at(n, w)) {
                self.i += words.len();
                return Ok(ty);
            }
        }
        Err(self.expected("a type name"))
    }

    /// The right-hand side of `in`: one unary test, or a parenthesised list of them.
    fn in_tests(&mut self) -> Result<Vec<UnaryTest>, FeelError> {
        if !self.eat_sym("(") {
            return Ok(vec![self.unary_test()?]);
        }
        let first = match self.compare_op() {
            Some(op) => UnaryTest::Compare(op, self.additive()?),
            None => {
                let start = self.expression()?;
                if self.eat_sym("..") {
                    return Ok(vec![self.range_end(start, false)?]);
                }
                UnaryTest::Equals(start)
            }
        };
        let mut tests = vec![first];
        while self.eat_sym(",") {
            tests.push(self.unary_test()?);
        }
        self.expect_sym(")")?;
        Ok(tests)
    }

    fn unary_test(&mut self) -> Result<UnaryTest, FeelError> {
        if let Some(op) = self.compare_op() {
            return Ok(UnaryTest::Compare(op, self.additive()?));
        }
        if self.eat_sym("]") || self.eat_sym("(") {
            let start = self.additive()?;
            self.expect_sym("..")?;
            return self.range_end(start, false);
        }
        if self.is_sym("[") {
            let open = self.i;
            self.advance();
            if !self.is_sym("]") {
                let start = self.expression()?;
                if self.eat_sym("..") {
                    return self.range_end(start, true);
                }
            }
            self.i = open;
        }
        Ok(UnaryTest::Equals(self.additive()?))
    }

    fn range_end(&mut self, start: Ast, start_inclusive: bool) -> Result<UnaryTest, FeelError> {
        self.in_range_end = true;
        let end = self.additive();
        self.in_range_end = false;
        let end = end?;
        let end_inclusive = if self.eat_sym("]") {
            true
        } else if self.eat_sym(")") || self.eat_sym("[") {
            false
        } else {
            return Err(self.expected("']' or ')'"));
        };
        Ok(UnaryTest::Range(Range { start, start_inclusive, end, end_inclusive }))
    }

    fn additive(&mut self) -> Result<Ast, FeelError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = if self.eat_sym("+") {
                ArithOp::Add
            } else if self.eat_sym("-") {
                ArithOp::Sub
            } else {
                return Ok(left);
            };
            left = Ast::Arith(op, Box::new(left), Box::new(self.multiplicative()?));
        }
    }

    fn multiplicative(&mut self) -> Result<Ast, FeelError> {
        let mut left = self.power()?;
        loop {
            let op = if self.eat_sym("*") {
                ArithOp::Mul
            } else if self.eat_sym("/") {
                ArithOp::Div
            } else {
                return Ok(left);
            };
            left = Ast::Arith(op, Box::new(left), Box::new(self.power()?));
        }
    }

    fn power(&mut self) -> Result<Ast, FeelError> {
        let mut left = self.unary()?;
        while self.eat_sym("**") {
            left = Ast::Arith(ArithOp::Pow, Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Ast, FeelError> {
        if self.eat_sym("-") {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(syntax(self.pos(), "expression is nested too deeply"));
            }
            let operand = self.unary()?;
            self.depth -= 1;
            return Ok(match operand {
                Ast::Literal(Value::Number(n)) => Ast::Literal(Value::Number(-n)),
                other => Ast::Neg(Box::new(other)),
            });
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Ast, FeelError> {
        let mut ast = self.primary()?;
        loop {
            if self.eat_sym(".") {
                let key = self.name()?.to_string();
                ast = match ast {
                    Ast::Var { name, mut path } => {
                        path.push(key);
                        Ast::Var { name, path }
                    }
                    other => Ast::Path(Box::new(other), key),
                };
            } else if !self.in_range_end && self.eat_sym("[") {
                let filter = self.expression()?;
                self.expect_sym("]")?;
                ast = Ast::Filter(Box::new(ast), Box::new(filter));
            } else {
                return Ok(ast);
            }
        }
    }

    fn primary(&mut self) -> Result<Ast, FeelError> {
        let start = self.pos();
        match self.peek().clone() {
            Tok::Number(n) => {
                self.advance();
                Ok(Ast::Literal(Value::Number(n)))
            }
            Tok::Str(s) => {
                self.advance();
                Ok(Ast::Literal(Value::String(s)))
            }
            Tok::Sym("@") => {
                self.advance();
                match self.advance() {
                    Tok::Str(s) => temporal_literal(&s)
                        .map(Ast::Literal)
                        .ok_or_else(|| syntax(start, format!("invalid temporal literal @{s:?}"))),
                    _ => Err(syntax(start + 1, "expected a string after '@'")),
                }
            }
            Tok::Sym("(") => {
                self.advance();
                let inner = self.expression()?;
                self.expect_sym(")")?;
                Ok(inner)
            }
            Tok::Sym("[") => {
                self.advance();
                let items = self.comma_separated("]")?;
                Ok(Ast::List(items))
            }
            Tok::Sym("{") => {
                self.advance();
                self.context()
            }
            Tok::Name(word) => self.word(&word),
            Tok::Quoted(name) => {
                self.advance();
                if self.is_sym("(") {
                    return self.call(name.into(), None);
                }
                Ok(Ast::Var { name: name.into(), path: Vec::new() })
            }
            _ => Err(self.expected("an expression")),
        }
    }

    fn comma_separated(&mut self, close: &str) -> Result<Vec<Ast>, FeelError> {
        let mut items = Vec::new();
        if self.eat_sym(close) {
            return Ok(items);
        }
        loop {
            items.push(self.expression()?);
            if self.eat_sym(close) {
                return Ok(items);
            }
            if !self.eat_sym(",") {
                return Err(self.expected(&format!("',' or '{close}'")));
            }
        }
    }

    fn context(&mut self) -> Result<Ast, FeelError> {
        let mut entries = Vec::new();
        if self.eat_sym("}") {
            return Ok(Ast::Context(entries));
        }
        loop {
            let key: Arc<str> = match self.peek().clone() {
                Tok::Str(s) => {
                    self.advance();
                    s.into()
                }
                _ => match self.words_before_colon() {
                    Some((key, words)) => {
                        self.i += words;
                        key.into()
                    }
                    None => return Err(self.expected("a context key")),
                },
            };
            self.expect_sym(":")?;
            entries.push((key, self.expression()?));
            if self.eat_sym("}") {
                return Ok(Ast::Context(entries));
            }
            if !self.eat_sym(",") {
                return Err(self.expected("',' or '}'"));
            }
        }
    }

    /// A primary expression starting with a word: a keyword construct, literal, call or variable.
    fn word(&mut self, word: &str) -> Result<Ast, FeelError> {
        match word {
            "true" | "false" | "null" => {
                self.advance();
                return Ok(Ast::Literal(match word {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ => Value::Null,
                }));
            }
            "if" => return self.if_expression(),
            "for" => return self.for_expression(),
            "some" | "every" if self.is_keyword_at(2, "in") => return self.quantified(word == "every"),
            "function" if matches!(self.peek_at(1), Tok::Sym("(")) => return self.lambda(),
            _ => {}
        }
        // A run of words directly followed by `(` is a call if it names a built-in, is a single word,
        // or contains no operator keyword (so that `random number()` reports an unknown function,
        // while `a and f(x)` stays a conjunction).
        let mut words = vec![word];
        while let Tok::Name(w) = self.peek_at(words.len()) {
            words.push(w);
        }
        if matches!(self.peek_at(words.len()), Tok::Sym("(")) {
            let count = words.len();
            let name = words.join(" ");
            let builtin = builtins::lookup(&name);
            if builtin.is_some() || count == 1 || !words.iter().any(|w| OPERATOR_WORDS.contains(w)) {
                self.i += count;
                return self.call(name.into(), builtin);
            }
        }
        self.advance();
        Ok(Ast::Var { name: word.into(), path: Vec::new() })
    }

    fn call(&mut self, name: Arc<str>, builtin: Option<&'static builtins::Builtin>) -> Result<Ast, FeelError> {
        self.expect_sym("(")?;
        let args = if self.words_before_colon().is_some() {
            let mut named = Vec::new();
            loop {
                let (param, words) = self.words_before_colon().ok_or_else(|| self.expected("a parameter name"))?;
                self.i += words + 1;
                named.push((param, self.expression()?));
                if self.eat_sym(")") {
                    break;
                }
                self.expect_sym(",")?;
            }
            Args::Named(named)
        } else {
            Args::Positional(self.comma_separated(")")?)
        };
        Ok(Ast::Call { name, builtin, args })
    }

    fn if_expression(&mut self) -> Result<Ast, FeelError> {
        self.advance();
        let condition = self.expression()?;
        self.expect_keyword("then")?;
        let then = self.expression()?;
        self.expect_keyword("else")?;
        let otherwise = self.expression()?;
        Ok(Ast::If(Box::new(condition), Box::new(then), Box::new(otherwise)))
    }

    fn for_expression(&mut self) -> Result<Ast, FeelError> {
        self.advance();
        let mut bindings = Vec::new();
        loop {
            let name = self.name()?;
            self.expect_keyword("in")?;
            let collection = self.expression()?;
            let iteration = if self.eat_sym("..") {
                Iteration::Span(collection, self.expression()?)
            } else {
                Iteration::Collection(collection)
            };
            bindings.push((name, iteration));
            if !self.eat_sym(",") {
                break;
            }
        }
        self.expect_keyword("return")?;
        Ok(Ast::For(bindings, Box::new(self.expression()?)))
    }

    fn quantified(&mut self, every: bool) -> Result<Ast, FeelError> {
        self.advance();
        let mut bindings = Vec::new();
        loop {
            let name = self.name()?;
            self.expect_keyword("in")?;
            bindings.push((name, Iteration::Collection(self.expression()?)));
            if !self.eat_sym(",") {
                break;
            }
        }
        self.expect_keyword("satisfies")?;
        let condition = Box::new(self.expression()?);
        Ok(Ast::Quantified { every, bindings, condition })
    }

    fn lambda(&mut self) -> Result<Ast, FeelError> {
        self.advance();
        self.expect_sym("(")?;
        let mut params = Vec::new();
        if !self.eat_sym(")") {
            loop {
                params.push(self.name()?);
                if self.eat_sym(":") {
                    self.type_name()?;
                }
                if self.eat_sym(")") {
                    break;
                }
                self.expect_sym(",")?;
            }
        }
        let body = self.expression()?;
        Ok(Ast::Lambda(Arc::new(Lambda { params, body })))
    }
}

/// `@"..."`: a date-time, date, time or duration, whichever the text parses as.
fn temporal_literal(text: &str) -> Option<Value> {
    if let Some(dt) = DateTime::parse(text) {
        return Some(Value::DateTime(dt));
    }
    if let Some(d) = Date::parse(text) {
        return Some(Value::Date(d));
    }
    if let Some(t) = Time::parse(text) {
        return Some(Value::Time(t));
    }
    temporal::parse_duration(text).map(|d| match d {
        temporal::Duration::YearMonth(m) => Value::YearMonthDuration(m),
        temporal::Duration::DayTime(ms) => Value::DayTimeDuration(ms),
    })
}
