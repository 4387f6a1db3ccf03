use serde_json::json;

use super::*;

/// 2024-03-15T10:30:00Z, a Friday.
const NOW: i64 = 1_710_498_600_000;

fn scope(vars: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match vars {
        serde_json::Value::Object(map) => map,
        _ => panic!("scope must be a JSON object"),
    }
}

fn try_eval_with(source: &str, vars: serde_json::Value) -> Result<Value, FeelError> {
    Expression::parse(source)?.evaluate(&scope(vars), &Environment::at(NOW))
}

fn eval_with(source: &str, vars: serde_json::Value) -> serde_json::Value {
    match try_eval_with(source, vars) {
        Ok(value) => value.to_json(),
        Err(e) => panic!("{source}: {e}"),
    }
}

fn eval(source: &str) -> serde_json::Value {
    eval_with(source, json!({}))
}

fn eval_value(source: &str) -> Value {
    try_eval_with(source, json!({})).unwrap_or_else(|e| panic!("{source}: {e}"))
}

fn eval_error(source: &str) -> String {
    match try_eval_with(source, json!({})) {
        Err(FeelError::Evaluation { message }) => message,
        other => panic!("{source}: expected an evaluation error, got {other:?}"),
    }
}

fn syntax_error(source: &str) -> (usize, String) {
    match Expression::parse(source) {
        Err(FeelError::Syntax { position, message }) => (position, message),
        other => panic!("{source}: expected a syntax error, got {other:?}"),
    }
}

fn check(cases: &[(&str, serde_json::Value)]) {
    for (source, expected) in cases {
        assert_eq!(&eval(source), expected, "{source}");
    }
}

#[test]
fn literals_evaluate_to_their_values() {
    check(&[
        ("42", json!(42)),
        ("-7", json!(-7)),
        ("3.25", json!(3.25)),
        ("-0.5", json!(-0.5)),
        (".5", json!(0.5)),
        (r#""a \"quoted\" \\ line\nnext \u00e9""#, json!("a \"quoted\" \\ line\nnext é")),
        ("true", json!(true)),
        ("false", json!(false)),
        ("null", json!(null)),
        ("[1, 2, [3]]", json!([1, 2, [3]])),
        ("[]", json!([])),
        (r#"{a: 1, "b c": 2, nested: {x: true}}"#, json!({"a": 1, "b c": 2, "nested": {"x": true}})),
        ("{}", json!({})),
    ]);
}

#[test]
fn context_entries_can_refer_to_earlier_entries() {
    assert_eq!(eval("{a: 1, b: a + 1}"), json!({"a": 1, "b": 2}));
}

#[test]
fn temporal_literals_parse_at_parse_time() {
    check(&[
        (r#"@"2024-01-01""#, json!("2024-01-01")),
        (r#"@"2024-01-01T10:00:00Z""#, json!("2024-01-01T10:00:00Z")),
        (r#"@"10:15:30+02:00""#, json!("10:15:30+02:00")),
        (r#"@"P1DT2H""#, json!("P1DT2H")),
        (r#"@"P1Y2M""#, json!("P1Y2M")),
    ]);
    let (position, message) = syntax_error(r#"1 + @"not a date""#);
    assert_eq!(position, 4);
    assert!(message.contains("invalid temporal literal"), "{message}");
}

#[test]
fn missing_variable_evaluates_to_null() {
    assert_eq!(eval("missing"), json!(null));
    assert_eq!(eval("missing.deeper.still"), json!(null));
    assert_eq!(eval("missing + 1"), json!(null));
    assert_eq!(eval("missing > 1"), json!(null));
    assert_eq!(eval("missing = null"), json!(true));
}

#[test]
fn qualified_paths_select_nested_entries() {
    let vars = json!({"order": {"customer": {"name": "Ada", "vip": true}}});
    assert_eq!(eval_with("order.customer.name", vars.clone()), json!("Ada"));
    assert_eq!(eval_with("order.customer.age", vars.clone()), json!(null));
    assert_eq!(eval_with("order.customer.name.first", vars), json!(null));
    assert_eq!(eval(r#"{a: {b: 3}}.a.b"#), json!(3));
}

#[test]
fn path_on_list_of_contexts_yields_list() {
    let vars = json!({"items": [{"price": 5}, {"price": 20}, {"name": "x"}]});
    assert_eq!(eval_with("items.price", vars), json!([5, 20, null]));
    assert_eq!(eval("[{a: {b: 1}}, {a: {b: 2}}].a.b"), json!([1, 2]));
}

#[test]
fn filter_with_implicit_item_selects_matching_entries() {
    let vars = json!({"items": [{"price": 5}, {"price": 20}, {"price": 30}], "numbers": [1, 5, 10]});
    assert_eq!(eval_with("items[price > 10]", vars.clone()), json!([{"price": 20}, {"price": 30}]));
    assert_eq!(eval_with("items[item.price < 10].price", vars.clone()), json!([5]));
    assert_eq!(eval_with("numbers[item >= 5]", vars.clone()), json!([5, 10]));
    assert_eq!(eval_with("numbers[item > 100]", vars), json!([]));
    assert_eq!(eval("[{x: 5}, {y: 2}][x > 3]"), json!([{"x": 5}]));
}

#[test]
fn numeric_filter_indexes_from_one_and_from_the_end() {
    check(&[
        ("[10, 20, 30][1]", json!(10)),
        ("[10, 20, 30][3]", json!(30)),
        ("[10, 20, 30][-1]", json!(30)),
        ("[10, 20, 30][-3]", json!(10)),
        ("[10, 20, 30][0]", json!(null)),
        ("[10, 20, 30][4]", json!(null)),
    ]);
    assert_eq!(eval_with("xs[i]", json!({"xs": ["a", "b"], "i": 2})), json!("b"));
}

#[test]
fn arithmetic_follows_precedence() {
    check(&[
        ("1 + 2 * 3", json!(7)),
        ("(1 + 2) * 3", json!(9)),
        ("10 - 4 - 3", json!(3)),
        ("7 / 2", json!(3.5)),
        ("2 ** 10", json!(1024)),
        ("-(2 + 3)", json!(-5)),
        ("- 2 * 3", json!(-6)),
        ("1.5 + 1.5", json!(3)),
    ]);
}

#[test]
fn arithmetic_with_null_operand_is_null() {
    check(&[
        ("null + 1", json!(null)),
        ("1 - null", json!(null)),
        ("null * null", json!(null)),
        ("-null", json!(null)),
        (r#"1 + "a""#, json!(null)),
    ]);
}

#[test]
fn division_by_zero_is_null() {
    assert_eq!(eval("1 / 0"), json!(null));
    assert_eq!(eval("0 / 0"), json!(null));
}

#[test]
fn plus_concatenates_strings() {
    assert_eq!(eval(r#""foo" + "bar""#), json!("foobar"));
    assert_eq!(eval_with(r#""Hello " + name"#, json!({"name": "Ada"})), json!("Hello Ada"));
}

#[test]
fn comparisons_of_same_types() {
    check(&[
        ("1 < 2", json!(true)),
        ("2 <= 2", json!(true)),
        ("3 > 4", json!(false)),
        ("3 >= 4", json!(false)),
        ("1 = 1.0", json!(true)),
        ("1 != 2", json!(true)),
        (r#""a" < "b""#, json!(true)),
        (r#""a" = "a""#, json!(true)),
        ("true = true", json!(true)),
        ("[1, 2] = [1, 2]", json!(true)),
        ("[1, 2] = [2, 1]", json!(false)),
        ("{a: 1, b: 2} = {b: 2, a: 1}", json!(true)),
        (r#"date("2024-01-01") < date("2024-02-01")"#, json!(true)),
    ]);
}

#[test]
fn null_equals_only_null() {
    check(&[("null = null", json!(true)), ("1 = null", json!(false)), ("null != 1", json!(true))]);
}

#[test]
fn comparing_incompatible_types_is_null() {
    check(&[(r#"1 = "1""#, json!(null)), (r#"1 < "2""#, json!(null)), ("true > false", json!(null))]);
}

#[test]
fn between_is_inclusive() {
    check(&[
        ("5 between 1 and 10", json!(true)),
        ("1 between 1 and 10", json!(true)),
        ("10 between 1 and 10", json!(true)),
        ("11 between 1 and 10", json!(false)),
        ("null between 1 and 10", json!(null)),
    ]);
}

#[test]
fn in_tests_lists_ranges_and_comparisons() {
    check(&[
        ("2 in [1, 2, 3]", json!(true)),
        ("4 in [1, 2, 3]", json!(false)),
        ("2 in (1, 2, 3)", json!(true)),
        ("5 in (1, 2, 3)", json!(false)),
        ("5 in [1..10]", json!(true)),
        ("10 in [1..10]", json!(true)),
        ("1 in (1..10]", json!(false)),
        ("10 in [1..10)", json!(false)),
        ("10 in [1..10[", json!(false)),
        ("1 in ]1..10]", json!(false)),
        ("6 in > 5", json!(true)),
        ("5 in > 5", json!(false)),
        ("3 in (< 2, > 5)", json!(false)),
        ("7 in (< 2, > 5)", json!(true)),
        (r#""b" in ("a", "b")"#, json!(true)),
        ("2 in (2)", json!(true)),
        ("3 in [1..2] or 3 in [3..4]", json!(true)),
    ]);
    assert_eq!(eval_with("x in xs", json!({"x": 2, "xs": [1, 2]})), json!(true));
}

#[test]
fn and_or_use_three_valued_logic() {
    check(&[
        ("true and true", json!(true)),
        ("true and false", json!(false)),
        ("false and null", json!(false)),
        ("null and false", json!(false)),
        ("true and null", json!(null)),
        ("true or null", json!(true)),
        ("null or true", json!(true)),
        ("false or null", json!(null)),
        ("false or false", json!(false)),
        ("1 and true", json!(null)),
        ("not(true)", json!(false)),
        ("not(false)", json!(true)),
        ("not(null)", json!(null)),
    ]);
}

#[test]
fn if_with_non_true_condition_picks_else() {
    check(&[
        (r#"if true then "a" else "b""#, json!("a")),
        (r#"if false then "a" else "b""#, json!("b")),
        (r#"if null then "a" else "b""#, json!("b")),
        (r#"if 1 then "a" else "b""#, json!("b")),
        ("if 1 > 2 then 1 else if 2 > 1 then 2 else 3", json!(2)),
        ("1 + (if true then 1 else 0)", json!(2)),
    ]);
}

#[test]
fn for_returns_a_list() {
    check(&[
        ("for x in [1, 2, 3] return x * 2", json!([2, 4, 6])),
        ("for x in 1..3 return x", json!([1, 2, 3])),
        ("for x in 3..1 return x", json!([3, 2, 1])),
        ("for x in [1, 2], y in [10, 20] return x + y", json!([11, 21, 12, 22])),
        ("for x in [] return x", json!([])),
        ("for x in null return x", json!(null)),
    ]);
}

#[test]
fn quantified_expressions() {
    check(&[
        ("some x in [1, 5, 10] satisfies x > 7", json!(true)),
        ("some x in [1, 5] satisfies x > 7", json!(false)),
        ("every x in [8, 9] satisfies x > 7", json!(true)),
        ("every x in [8, 1] satisfies x > 7", json!(false)),
        ("every x in [] satisfies x > 7", json!(true)),
        ("some x in [1, 2], y in [2, 3] satisfies x = y", json!(true)),
    ]);
}

#[test]
fn instance_of_checks_basic_types() {
    check(&[
        ("1 instance of number", json!(true)),
        (r#""a" instance of string"#, json!(true)),
        ("true instance of boolean", json!(true)),
        ("[1] instance of list", json!(true)),
        ("{} instance of context", json!(true)),
        (r#"date("2024-01-01") instance of date"#, json!(true)),
        ("now() instance of date and time", json!(true)),
        (r#"duration("PT1H") instance of days and time duration"#, json!(true)),
        (r#"duration("P1Y") instance of years and months duration"#, json!(true)),
        ("1 instance of string", json!(false)),
        ("null instance of number", json!(false)),
        ("null instance of Null", json!(true)),
        ("1 instance of Any", json!(true)),
    ]);
}

#[test]
fn named_arguments_map_to_parameters() {
    check(&[
        (r#"substring(string: "foobar", start position: 3)"#, json!("obar")),
        (r#"substring(start position: 2, length: 3, string: "foobar")"#, json!("oob")),
        ("date(year: 2024, month: 2, day: 29)", json!("2024-02-29")),
    ]);
    assert!(eval_error(r#"substring(text: "a", start position: 1)"#).contains("no parameter 'text'"));
}

#[test]
fn user_functions_can_be_defined_and_called() {
    check(&[
        ("{square: function(x) x * x, r: square(4)}.r", json!(16)),
        ("{add: function(a, b) a + b, r: add(b: 2, a: 1)}.r", json!(3)),
        ("{k: 10, f: function(x) x + k, r: f(1)}.r", json!(11)),
    ]);
}

#[test]
fn unknown_function_is_an_error_naming_it() {
    assert_eq!(eval_error("foo(1)"), "no function 'foo' with 1 argument(s)");
    assert_eq!(eval_error("string length()"), "no function 'string length' with 0 argument(s)");
    assert_eq!(eval_error("random number()"), "no function 'random number' with 0 argument(s)");
}

#[test]
fn wrong_arity_or_types_are_errors() {
    assert_eq!(eval_error(r#"upper case("a", "b")"#), "no function 'upper case' with 2 argument(s)");
    assert_eq!(eval_error("upper case(1)"), "function 'upper case': expected a string as argument 1, but got number");
    assert!(eval_error(r#"sum([1, "a"])"#).contains("expected numbers"));
    assert!(eval_error(r#"matches("a", "(")"#).contains("invalid regular expression"));
}

#[test]
fn null_arguments_give_null_results() {
    check(&[("upper case(missing)", json!(null)), ("string length(null)", json!(null)), ("abs(null)", json!(null))]);
}

#[test]
fn camunda_extension_functions() {
    let vars = json!({"x": null, "order": {"id": 1}});
    check(&[
        (r#"get or else(null, "default")"#, json!("default")),
        (r#"get or else("value", "default")"#, json!("value")),
        ("is empty([])", json!(true)),
        ("is empty([1])", json!(false)),
        (r#"string join(["a", "b", "c"], ", ")"#, json!("a, b, c")),
        (r#"string join(["a", null, "c"])"#, json!("ac")),
        (r#"string join(["a", "b"], "-", "[", "]")"#, json!("[a-b]")),
        ("assert(5, 5 > 0)", json!(5)),
        (r#"is blank("  ")"#, json!(true)),
    ]);
    assert_eq!(eval_with("is defined(x)", vars.clone()), json!(true));
    assert_eq!(eval_with("is defined(y)", vars.clone()), json!(false));
    assert_eq!(eval_with("is defined(order.id)", vars.clone()), json!(true));
    assert_eq!(eval_with("is defined(order.total)", vars.clone()), json!(false));
    assert_eq!(eval_with("is defined(1)", vars.clone()), json!(true));
    assert_eq!(eval_with("is defined(null)", vars), json!(true));
    assert_eq!(eval_error("assert(-1, -1 > 0)"), "assertion failed");
    assert_eq!(eval_error(r#"assert(-1, -1 > 0, "must be positive")"#), "assertion failed: must be positive");
}

#[test]
fn context_functions() {
    check(&[
        (r#"context([{key: "a", value: 1}, {key: "b", value: 2}])"#, json!({"a": 1, "b": 2})),
        (r#"get value({a: 1}, "a")"#, json!(1)),
        (r#"get value({a: 1}, "b")"#, json!(null)),
        (r#"get value({a: {b: 2}}, ["a", "b"])"#, json!(2)),
        ("get entries({a: 1, b: 2})", json!([{"key": "a", "value": 1}, {"key": "b", "value": 2}])),
        (r#"put({a: 1}, "b", 2)"#, json!({"a": 1, "b": 2})),
        (r#"put({a: 1}, "a", 3)"#, json!({"a": 3})),
        (r#"context put({a: {x: 1}}, ["a", "y"], 2)"#, json!({"a": {"x": 1, "y": 2}})),
        (r#"put({a: 1}, "b", null)"#, json!({"a": 1, "b": null})),
        ("put all({a: 1}, {b: 2}, {a: 3})", json!({"a": 3, "b": 2})),
        ("context merge([{a: 1}, {b: 2}])", json!({"a": 1, "b": 2})),
    ]);
}

#[test]
fn string_functions() {
    check(&[
        ("string(1)", json!("1")),
        ("string(1.5)", json!("1.5")),
        ("string(true)", json!("true")),
        (r#"string("a")"#, json!("a")),
        (r#"string([1, "a"])"#, json!("[1, \"a\"]")),
        (r#"string(date("2024-01-31"))"#, json!("2024-01-31")),
        (r#"number("12.5")"#, json!(12.5)),
        (r#"number("1,000.5", ",", ".")"#, json!(1000.5)),
        (r#"number("abc")"#, json!(null)),
        (r#"string length("héllo")"#, json!(5)),
        (r#"substring("foobar", 3)"#, json!("obar")),
        (r#"substring("foobar", 3, 3)"#, json!("oba")),
        (r#"substring("foobar", -2, 1)"#, json!("a")),
        (r#"upper case("aBc")"#, json!("ABC")),
        (r#"lower case("aBc")"#, json!("abc")),
        (r#"substring before("foobar", "bar")"#, json!("foo")),
        (r#"substring before("foobar", "x")"#, json!("")),
        (r#"substring after("foobar", "ob")"#, json!("ar")),
        (r#"contains("foobar", "ob")"#, json!(true)),
        (r#"starts with("foobar", "foo")"#, json!(true)),
        (r#"ends with("foobar", "foo")"#, json!(false)),
        (r#"matches("foobar", "^fo*b")"#, json!(true)),
        (r#"matches("FOO", "foo", "i")"#, json!(true)),
        (r#"replace("abcd", "(ab)|(a)", "[1=$1][2=$2]")"#, json!("[1=ab][2=]cd")),
        (r#"replace("a.b.c", ".", "-", "q")"#, json!("a-b-c")),
        (r#"split("a, b,c", ",\s*")"#, json!(["a", "b", "c"])),
        (r#"trim("  x  ")"#, json!("x")),
        (r#"extract("a1b22c333", "[0-9]+")"#, json!(["1", "22", "333"])),
    ]);
}

#[test]
fn numeric_functions() {
    check(&[
        ("decimal(1.5, 0)", json!(2)),
        ("decimal(2.5, 0)", json!(2)),
        ("decimal(1/3, 2)", json!(0.33)),
        ("floor(1.5)", json!(1)),
        ("floor(-1.5)", json!(-2)),
        ("floor(1.56, 1)", json!(1.5)),
        ("ceiling(1.5)", json!(2)),
        ("ceiling(-1.5)", json!(-1)),
        ("round up(5.5, 0)", json!(6)),
        ("round up(-5.5, 0)", json!(-6)),
        ("round up(1.121, 2)", json!(1.13)),
        ("round down(5.5, 0)", json!(5)),
        ("round down(-5.5, 0)", json!(-5)),
        ("round half up(5.5, 0)", json!(6)),
        ("round half up(-5.5, 0)", json!(-6)),
        ("round half up(2.675, 2)", json!(2.68)),
        ("round half down(5.5, 0)", json!(5)),
        ("round half down(-5.5, 0)", json!(-5)),
        ("round half down(5.6, 0)", json!(6)),
        ("abs(-3)", json!(3)),
        ("modulo(12, 5)", json!(2)),
        ("modulo(-12, 5)", json!(3)),
        ("modulo(12, -5)", json!(-3)),
        ("modulo(1, 0)", json!(null)),
        ("sqrt(16)", json!(4)),
        ("sqrt(-1)", json!(null)),
        ("log(1)", json!(0)),
        ("log(0)", json!(null)),
        ("exp(0)", json!(1)),
        ("odd(5)", json!(true)),
        ("odd(4)", json!(false)),
        ("even(4)", json!(true)),
    ]);
}

#[test]
fn list_functions() {
    check(&[
        ("list contains([1, 2], 2)", json!(true)),
        ("list contains([1, null], null)", json!(true)),
        ("count([1, 2, 3])", json!(3)),
        ("min([3, 1, 2])", json!(1)),
        ("min(3, 1, 2)", json!(1)),
        (r#"max(["a", "c", "b"])"#, json!("c")),
        ("max([])", json!(null)),
        ("sum([1, 2, 3])", json!(6)),
        ("sum(1, 2)", json!(3)),
        ("sum([])", json!(null)),
        ("mean([1, 2, 3, 4])", json!(2.5)),
        ("product([2, 3, 4])", json!(24)),
        ("median([3, 1, 2])", json!(2)),
        ("median([4, 1, 3, 2])", json!(2.5)),
        ("all([true, true])", json!(true)),
        ("all([true, false, null])", json!(false)),
        ("all([true, null])", json!(null)),
        ("all([])", json!(true)),
        ("any([false, true])", json!(true)),
        ("any([false, false])", json!(false)),
        ("any([])", json!(false)),
        ("sublist([1, 2, 3, 4], 2)", json!([2, 3, 4])),
        ("sublist([1, 2, 3, 4], 2, 2)", json!([2, 3])),
        ("sublist([1, 2, 3, 4], -2, 1)", json!([3])),
        ("append([1], 2, 3)", json!([1, 2, 3])),
        ("append([1], null)", json!([1, null])),
        ("concatenate([1], [2, 3], [])", json!([1, 2, 3])),
        ("insert before([1, 3], 2, 2)", json!([1, 2, 3])),
        ("remove([1, 2, 3], 2)", json!([1, 3])),
        ("remove([1, 2, 3], -1)", json!([1, 2])),
        ("reverse([1, 2, 3])", json!([3, 2, 1])),
        ("index of([1, 2, 1], 1)", json!([1, 3])),
        ("union([1, 2], [2, 3])", json!([1, 2, 3])),
        ("distinct values([1, 2, 1, 3, 2])", json!([1, 2, 3])),
        ("duplicate values([1, 2, 1, 3, 2, 1])", json!([1, 2])),
        ("flatten([1, [2, [3, 4]], []])", json!([1, 2, 3, 4])),
        ("sort([3, 1, 2], function(a, b) a < b)", json!([1, 2, 3])),
        ("sort([3, 1, 2], function(a, b) a > b)", json!([3, 2, 1])),
        ("sort([{n: 2}, {n: 1}], function(x, y) x.n < y.n).n", json!([1, 2])),
        ("sort([3, 1, 2])", json!([1, 2, 3])),
        ("sort([1, 2, 3], function(a, b) true)", json!([3, 2, 1])),
        ("list replace([1, 2, 3], 2, 9)", json!([1, 9, 3])),
        ("list replace([1, 2, 3], function(item, new) item > new, 1)", json!([1, 1, 1])),
    ]);
}

#[test]
fn temporal_constructors_and_rendering() {
    check(&[
        (r#"date("2024-01-31")"#, json!("2024-01-31")),
        ("date(2024, 2, 29)", json!("2024-02-29")),
        ("date(2023, 2, 29)", json!(null)),
        (r#"date("2024-13-01")"#, json!(null)),
        (r#"date(date and time("2024-01-01T10:00:00Z"))"#, json!("2024-01-01")),
        (r#"time("10:30:00")"#, json!("10:30:00")),
        (r#"time("10:30:00.250Z")"#, json!("10:30:00.25Z")),
        (r#"time(date and time("2024-01-01T10:00:00+01:00"))"#, json!("10:00:00+01:00")),
        (r#"time(13, 5, 0, duration("PT1H"))"#, json!("13:05:00+01:00")),
        (r#"date and time("2024-01-01T10:00:00Z")"#, json!("2024-01-01T10:00:00Z")),
        (r#"date and time("2024-01-01T10:00:00")"#, json!("2024-01-01T10:00:00")),
        (r#"date and time(date("2024-01-01"), time("08:00:00Z"))"#, json!("2024-01-01T08:00:00Z")),
        (r#"date and time("garbage")"#, json!(null)),
        (r#"duration("PT5M")"#, json!("PT5M")),
        (r#"duration("P2DT3H4M5.5S")"#, json!("P2DT3H4M5.5S")),
        (r#"duration("P1W")"#, json!("P7D")),
        (r#"duration("-PT90M")"#, json!("-PT1H30M")),
        (r#"duration("P14M")"#, json!("P1Y2M")),
        (r#"duration("PT0S")"#, json!("PT0S")),
        (r#"duration("P1Y2D")"#, json!(null)),
        (r#"years and months duration(date("2020-01-15"), date("2021-03-14"))"#, json!("P1Y1M")),
    ]);
}

#[test]
fn now_and_today_come_from_the_environment() {
    assert_eq!(eval("now()"), json!("2024-03-15T10:30:00Z"));
    assert_eq!(eval("today()"), json!("2024-03-15"));
    let scope = serde_json::Map::new();
    let later = Environment::at(NOW + 86_400_000);
    let today = Expression::parse("today()").unwrap();
    assert_eq!(today.evaluate(&scope, &later).unwrap().to_json(), json!("2024-03-16"));
}

#[test]
fn date_time_arithmetic_with_durations() {
    check(&[
        (r#"date and time("2024-01-01T10:00:00Z") + duration("PT5M")"#, json!("2024-01-01T10:05:00Z")),
        (r#"date and time("2024-01-01T00:10:00Z") - duration("PT20M")"#, json!("2023-12-31T23:50:00Z")),
        (r#"date and time("2024-01-31T10:00:00Z") + duration("P1M")"#, json!("2024-02-29T10:00:00Z")),
        (r#"date("2024-01-31") + duration("P1D")"#, json!("2024-02-01")),
        (r#"date("2024-03-31") - duration("P1M")"#, json!("2024-02-29")),
        (r#"date("2024-03-01") - date("2024-02-01")"#, json!("P29D")),
        (r#"date and time("2024-01-01T12:00:00+02:00") - date and time("2024-01-01T09:00:00Z")"#, json!("PT1H")),
        (r#"time("23:30:00") + duration("PT1H")"#, json!("00:30:00")),
        (r#"duration("PT1H") + duration("PT30M")"#, json!("PT1H30M")),
        (r#"duration("PT1H") * 2"#, json!("PT2H")),
        (r#"duration("PT1H") / duration("PT30M")"#, json!(2)),
        (r#"duration("P1Y") + duration("P3M")"#, json!("P1Y3M")),
        (r#"-duration("PT1H")"#, json!("-PT1H")),
        (r#"now() + duration("P1D")"#, json!("2024-03-16T10:30:00Z")),
    ]);
}

#[test]
fn temporal_comparisons() {
    check(&[
        (r#"date and time("2024-01-01T10:00:00Z") < now()"#, json!(true)),
        (r#"date and time("2024-01-01T12:00:00+02:00") = date and time("2024-01-01T10:00:00Z")"#, json!(true)),
        (r#"date and time("2024-01-01T10:00:00") < date and time("2024-01-01T10:00:00Z")"#, json!(null)),
        (r#"duration("PT1H") > duration("PT59M")"#, json!(true)),
        (r#"duration("P1Y") > duration("P11M")"#, json!(true)),
        (r#"now() - duration("P1D") < now()"#, json!(true)),
        (r#"date("2024-06-01") between date("2024-01-01") and date("2024-12-31")"#, json!(true)),
    ]);
}

#[test]
fn temporal_properties_and_calendar_functions() {
    check(&[
        (r#"date("2024-03-15").year"#, json!(2024)),
        (r#"date("2024-03-15").month"#, json!(3)),
        (r#"date("2024-03-15").weekday"#, json!(5)),
        (r#"date and time("2024-03-15T10:30:00Z").hour"#, json!(10)),
        (r#"duration("P2DT3H").days"#, json!(2)),
        (r#"duration("P2DT3H").hours"#, json!(3)),
        (r#"duration("P1Y2M").months"#, json!(2)),
        (r#"day of week(date("2024-03-15"))"#, json!("Friday")),
        (r#"day of week(date("1970-01-01"))"#, json!("Thursday")),
        (r#"month of year(date("2024-03-15"))"#, json!("March")),
        (r#"day of year(date("2024-12-31"))"#, json!(366)),
        (r#"week of year(date("2021-01-03"))"#, json!(53)),
        (r#"week of year(date("2024-03-15"))"#, json!(11)),
        (r#"last day of month(date("2023-02-10"))"#, json!(28)),
        (r#"date("1900-03-01") - date("1900-02-28")"#, json!("P1D")),
    ]);
}

#[test]
fn to_json_renders_integral_numbers_as_integers() {
    assert_eq!(Value::Number(3.0).to_json().to_string(), "3");
    assert_eq!(Value::Number(-3.0).to_json().to_string(), "-3");
    assert_eq!(Value::Number(3.5).to_json().to_string(), "3.5");
    assert_eq!(Value::Number(1e18).to_json().to_string(), "1000000000000000000");
    assert_eq!(eval("6 / 2").to_string(), "3");
}

#[test]
fn json_round_trips_through_values() {
    let original = json!({"z": 1, "a": [true, null, "s", 2.5], "m": {"k": {}}});
    let value = Value::from_json(&original);
    assert_eq!(value.to_json(), original);
    assert_eq!(serde_json::to_string(&value.to_json()).unwrap(), serde_json::to_string(&original).unwrap());
}

#[test]
fn only_true_is_truthy() {
    assert!(Value::Bool(true).is_truthy());
    assert!(!Value::Bool(false).is_truthy());
    assert!(!Value::Null.is_truthy());
    assert!(!Value::Number(1.0).is_truthy());
    assert!(!Value::String("true".into()).is_truthy());
}

#[test]
fn type_names_match_feel() {
    assert_eq!(Value::Null.type_name(), "null");
    assert_eq!(eval_value("1").type_name(), "number");
    assert_eq!(eval_value("now()").type_name(), "date and time");
    assert_eq!(eval_value(r#"duration("PT1S")"#).type_name(), "days and time duration");
    assert_eq!(eval_value("function(x) x").type_name(), "function");
}

#[test]
fn syntax_errors_report_position_and_expectation() {
    let error = Expression::parse("(1 + 2").unwrap_err();
    assert_eq!(error.to_string(), "expected ')', found end of input at 6");
    assert_eq!(syntax_error("foo(1, 2"), (8, "expected ',' or ')', found end of input".into()));
    assert_eq!(syntax_error("1 +"), (3, "expected an expression, found end of input".into()));
    assert_eq!(syntax_error("if x then 1"), (11, "expected 'else', found end of input".into()));
    assert_eq!(syntax_error("1 2"), (2, "expected end of input, found number 2".into()));
    assert_eq!(syntax_error("a # b").0, 2);
    assert_eq!(syntax_error(r#""open"#).1, "unterminated string");
    assert!(syntax_error("{a 1}").1.starts_with("expected a context key"));
}

#[test]
fn deeply_nested_input_is_a_syntax_error_not_a_crash() {
    let source = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(syntax_error(&source).1.contains("nested too deeply"));
    let negations = format!("{}1", "-".repeat(10_000));
    assert!(syntax_error(&negations).1.contains("nested too deeply"));
}

#[test]
fn comments_and_backquoted_names_are_accepted() {
    assert_eq!(eval("1 + // one\n 2 /* two */"), json!(3));
    assert_eq!(eval_with("`order id` + 1", json!({"order id": 41})), json!(42));
}

#[test]
fn source_is_kept() {
    let expression = Expression::parse(" x + 1 ").unwrap();
    assert_eq!(expression.source(), " x + 1 ");
}

#[test]
fn parsed_expression_is_reusable_across_scopes() {
    let expression = Expression::parse("orderTotal > 100 and customer.vip").unwrap();
    let env = Environment::at(NOW);
    let big_vip = scope(json!({"orderTotal": 150, "customer": {"vip": true}}));
    let small = scope(json!({"orderTotal": 50, "customer": {"vip": true}}));
    assert_eq!(expression.evaluate(&big_vip, &env).unwrap(), Value::Bool(true));
    assert_eq!(expression.evaluate(&small, &env).unwrap(), Value::Bool(false));
    // Both operands are null without variables, so the condition is null: not satisfied.
    assert_eq!(expression.evaluate(&serde_json::Map::new(), &env).unwrap(), Value::Null);
}

#[test]
fn hash_map_scope_resolves_paths() {
    let mut vars = std::collections::HashMap::new();
    vars.insert("order".to_string(), Value::from_json(&json!({"lines": [{"qty": 2}, {"qty": 3}]})));
    let expression = Expression::parse("sum(order.lines.qty)").unwrap();
    assert_eq!(expression.evaluate(&vars, &Environment::default()).unwrap(), Value::Number(5.0));
}

#[test]
fn realistic_zeebe_expressions_parse() {
    let attributes = [
        "=orderTotal > 100 and customer.vip",
        r#"= if x = null then "none" else string(x)"#,
        "= sum(for i in items return i.price * i.quantity)",
        r#"=order.status = "PAID" or order.status = "SHIPPED""#,
        "=count(items[quantity > 0]) > 0",
        "=retries - 1",
        r#"="order-" + string(orderId)"#,
        "={id: order.id, total: sum(order.lines.amount), urgent: order.priority >= 3}",
        r#"=date and time(deadline) - now() < duration("PT1H")"#,
        r#"=now() + duration("P" + string(days) + "D")"#,
        r#"=is defined(approval) and approval.decision in ("approved", "auto")"#,
        r#"=get or else(assignee, "unassigned")"#,
        "=every item in items satisfies item.stock > 0",
        "=some r in reviews satisfies r.score < 2",
        "=for x in 1..retries return x * 1000",
        "=sort(candidates, function(a, b) a.rank < b.rank)[1].id",
        r#"=string join(for p in participants return p.email, ";")"#,
        "=list contains(allowedRegions, customer.region)",
        "=amount between 1000 and 5000",
        "=score in [0..50)",
        r#"=matches(email, "^[^@]+@example\.com$")"#,
        "=items[1].price",
        "=items[-1]",
        r#"=context put(payload, "processedAt", string(now()))"#,
        "=x instance of number",
        "=not(cancelled)",
        "=round half up(total * 1.19, 2)",
        r#"=upper case(substring(country, 1, 2))"#,
        "=distinct values(flatten(orders.tags))",
        r#"=@"2024-01-01T00:00:00Z" < now()"#,
    ];
    for attribute in attributes {
        let source = attribute.strip_prefix('=').unwrap();
        if let Err(e) = Expression::parse(source) {
            panic!("{source}: {e}");
        }
    }
}

#[test]
fn realistic_expressions_evaluate() {
    let vars = json!({
        "items": [{"price": 2.5, "quantity": 4}, {"price": 10, "quantity": 1}],
        "x": null,
        "customer": {"vip": true, "region": "EU"},
        "orderTotal": 120,
    });
    assert_eq!(eval_with("sum(for i in items return i.price * i.quantity)", vars.clone()), json!(20));
    assert_eq!(eval_with(r#"if x = null then "none" else string(x)"#, vars.clone()), json!("none"));
    assert_eq!(eval_with("orderTotal > 100 and customer.vip", vars.clone()), json!(true));
    assert_eq!(eval_with(r#"list contains(["EU", "US"], customer.region)"#, vars.clone()), json!(true));
    assert_eq!(eval_with("count(items[quantity > 1])", vars), json!(1));
}

#[test]
fn expressions_and_values_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Expression>();
    assert_send_sync::<Value>();
    assert_send_sync::<FeelError>();
}

#[test]
fn functions_tolerating_null_return_null_for_a_missing_input() {
    check(&[
        ("time(missing)", json!(null)),
        ("time(10, missing, 0)", json!(null)),
        ("string join(missing)", json!(null)),
        ("sort(missing, function(a, b) a < b)", json!(null)),
        ("list contains(missing, 1)", json!(null)),
        ("some x in missing satisfies x > 1", json!(null)),
    ]);
}

#[test]
fn range_end_may_contain_a_filter_in_parentheses() {
    assert_eq!(eval_with("5 in [1..(xs[2])]", json!({"xs": [1, 9]})), json!(true));
}

fn evaluate_with(source: &str, limits: super::Limits) -> Result<Value, FeelError> {
    Expression::parse(source)?.evaluate(&scope(json!({})), &Environment { now_millis: NOW, limits })
}

#[test]
fn evaluation_stops_at_each_limit_and_says_which() {
    let roomy = super::Limits { max_depth: 64, max_iterations: 1_000, max_allocation_bytes: 10_000_000 };
    let tight = super::Limits { max_iterations: 1_000_000, max_allocation_bytes: 10_000, ..roomy };
    let cases = [
        ("{f: function(g, n) if n = 0 then 0 else 1 + g(g, n - 1), r: f(f, 100)}.r", roomy, super::Limit::Depth, 64),
        ("count(for x in 1..40, y in 1..40 return x)", roomy, super::Limit::Iterations, 1_000),
        ("some x in [1, 2] satisfies count(for y in 1..999 return y) < 0", roomy, super::Limit::Iterations, 1_000),
        ("count([1, 2, 3][item > 0]) + count(for x in 1..999 return x)", roomy, super::Limit::Iterations, 1_000),
        (
            "{f: function(g, s, n) if n = 0 then s else g(g, s + s, n - 1), r: f(f, \"ab\", 20)}.r",
            tight,
            super::Limit::Allocation,
            10_000,
        ),
        ("string join(for x in 1..200 return \"0123456789\")", tight, super::Limit::Allocation, 10_000),
    ];
    for (source, limits, limit, max) in cases {
        assert_eq!(evaluate_with(source, limits), Err(FeelError::LimitExceeded { limit, max }), "{source}");
    }
}

#[test]
fn expressions_within_the_limits_evaluate_as_before() {
    let limits = super::Limits { max_depth: 64, max_iterations: 1_000, max_allocation_bytes: 100_000 };
    let cases = [
        ("{f: function(g, n) if n = 0 then 0 else 1 + g(g, n - 1), r: f(f, 10)}.r", Value::Number(10.0)),
        ("count(for x in 1..30, y in 1..30 return x)", Value::Number(900.0)),
        ("string length(string join(for x in 1..100 return \"0123456789\"))", Value::Number(1000.0)),
    ];
    for (source, expected) in cases {
        assert_eq!(evaluate_with(source, limits), Ok(expected), "{source}");
    }
}

#[test]
fn the_default_limits_allow_a_million_iterations_but_not_a_billion() {
    let limits = super::Limits::default();
    assert_eq!(evaluate_with("count(for x in 1..1000, y in 1..999 return x)", limits), Ok(Value::Number(999_000.0)));
    assert!(matches!(
        evaluate_with("count(for x in 1..1000, y in 1..1000, z in 1..1000 return x)", limits),
        Err(FeelError::LimitExceeded { limit: super::Limit::Iterations, .. })
    ));
}
