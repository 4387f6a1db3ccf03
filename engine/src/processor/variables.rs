//! Variable scopes: lookup along the scope chain, merging documents, and FEEL evaluation contexts.
//!
//! Every element instance that is a scope holds its own variables; a lookup walks from the innermost
//! scope outwards. Merging follows Zeebe: a propagated variable is written where it already exists
//! (nearest first), or else at the process instance; a local one stays in the given scope.

use serde_json::{Map, Value as Json};
use waggle_protocol::record::{Intent, RecordValue, VariableIntent, VariableRecord};

use super::Ctx;
use crate::feel::{Environment, Expression, FeelError, Scope, Value};
use crate::state::tables::{elements, variables};
use crate::state::KvRead;

/// A FEEL scope over the variables visible from one element instance, with optional values on top
/// (inputs computed so far, or a job's result).
pub(super) struct ScopeView<'a> {
    kv: &'a dyn KvRead,
    chain: Vec<i64>,
    overrides: Option<&'a Map<String, Json>>,
}

impl<'a> ScopeView<'a> {
    pub(super) fn new(kv: &'a dyn KvRead, scope_key: i64, overrides: Option<&'a Map<String, Json>>) -> Self {
        Self { kv, chain: scope_chain(kv, scope_key), overrides }
    }

    fn lookup_json(&self, name: &str) -> Option<Json> {
        if let Some(value) = self.overrides.and_then(|o| o.get(name)) {
            return Some(value.clone());
        }
        self.chain.iter().find_map(|scope| {
            variables::get(self.kv, *scope, name).map(|v| serde_json::from_str(&v.value).unwrap_or(Json::Null))
        })
    }

    /// All variables visible from the scope: inner scopes shadow outer ones.
    pub(super) fn visible(&self) -> Map<String, Json> {
        let mut all = Map::new();
        for scope in self.chain.iter().rev() {
            for (name, v) in variables::of_scope(self.kv, *scope) {
                all.insert(name, serde_json::from_str(&v.value).unwrap_or(Json::Null));
            }
        }
        all
    }

    /// Only the named variables, where they exist.
    pub(super) fn fetch(&self, names: &[String]) -> Map<String, Json> {
        if names.is_empty() {
            return self.visible();
        }
        names.iter().filter_map(|n| self.lookup_json(n).map(|v| (n.clone(), v))).collect()
    }
}

impl Scope for ScopeView<'_> {
    fn get(&self, name: &str) -> Option<Value> {
        self.lookup_json(name).map(|j| Value::from_json(&j))
    }
}

/// Scope keys from `scope_key` outwards to the process instance.
pub(super) fn scope_chain(kv: &dyn KvRead, scope_key: i64) -> Vec<i64> {
    let mut chain = Vec::with_capacity(4);
    let mut current = scope_key;
    while current > 0 {
        chain.push(current);
        current = match elements::get(kv, current) {
            Some(instance) => instance.record.flow_scope_key,
            None => break,
        };
    }
    chain
}

impl Ctx<'_> {
    pub(super) fn evaluate(
        &self,
        expression: &Expression,
        scope_key: i64,
        overrides: Option<&Map<String, Json>>,
    ) -> Result<Value, FeelError> {
        let view = ScopeView::new(&*self.kv, scope_key, overrides);
        expression.evaluate(&view, &Environment { now_millis: self.now, limits: self.limits.feel })
    }

    /// Writes one variable into exactly this scope, as CREATED or UPDATED (nothing if unchanged).
    pub(super) fn set_variable(&mut self, scope_key: i64, name: &str, value: &Json) {
        let Some(scope) = elements::get(&*self.kv, scope_key) else { return };
        let text = value.to_string();
        let existing = variables::get(&*self.kv, scope_key, name);
        if existing.as_ref().is_some_and(|v| v.value == text) {
            return;
        }
        let (key, intent) = match existing {
            Some(v) => (v.key, VariableIntent::Updated),
            None => (self.new_key(), VariableIntent::Created),
        };
        let record = VariableRecord {
            name: name.to_string(),
            value: text,
            scope_key,
            process_instance_key: scope.record.process_instance_key,
            process_definition_key: scope.record.process_definition_key,
            bpmn_process_id: scope.record.bpmn_process_id.clone(),
            tenant_id: scope.record.tenant_id.clone(),
        };
        self.event(key, Intent::Variable(intent), RecordValue::Variable(record));
    }

    pub(super) fn merge_local(&mut self, scope_key: i64, document: &Map<String, Json>) {
        for (name, value) in document {
            self.set_variable(scope_key, name, value);
        }
    }

    /// Each variable goes to the nearest scope (from `scope_key` out) that has it, else the outermost.
    pub(super) fn merge_propagate(&mut self, scope_key: i64, document: &Map<String, Json>) {
        if document.is_empty() {
            return;
        }
        let chain = scope_chain(&*self.kv, scope_key);
        let Some(&root) = chain.last() else { return };
        for (name, value) in document {
            let target =
                chain.iter().copied().find(|scope| variables::get(&*self.kv, *scope, name).is_some()).unwrap_or(root);
            self.set_variable(target, name, value);
        }
    }
}

/// Writes `value` at a dotted `path` into `target`, creating nested objects as needed.
pub(super) fn insert_path(target: &mut Map<String, Json>, path: &str, value: Json) {
    let mut parts = path.split('.').peekable();
    let mut current = target;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            current.insert(part.to_string(), value);
            return;
        }
        let entry = current.entry(part.to_string()).or_insert_with(|| Json::Object(Map::new()));
        if !entry.is_object() {
            *entry = Json::Object(Map::new());
        }
        current = entry.as_object_mut().expect("just made an object");
    }
}
