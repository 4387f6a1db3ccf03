//! Validation of example resources against the committed CRD schemas (`crds/`), as the API server
//! would do it: the structural OpenAPI part with a JSON-schema validator, and the CEL rules
//! (`x-kubernetes-validations`, including transition rules on `oldSelf`) with kube-cel.
//!
//! Good examples live in `fixtures/schema/valid/`, the chart's `examples/` and `e2e/manifests/`; bad
//! ones in `fixtures/schema/invalid/`, each starting with `# expect: <text>` naming what the error must
//! mention (and a `# server: <text>` line with what the real API server says, checked by
//! `tests/kube.rs`). A file with two documents is an update: the first is the stored object, the second the
//! new one.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{crate_dir, documents, workspace_dir, yaml_files};

/// The openAPIV3Schema of each kind in `crds/`.
fn schemas() -> BTreeMap<String, serde_json::Value> {
    yaml_files(&workspace_dir().join("crds"))
        .iter()
        .flat_map(|path| documents(path))
        .map(|crd| {
            let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_owned();
            (kind, crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone())
        })
        .collect()
}

/// All problems the API server would report for `object` (an update of `old` when given).
fn problems(
    schemas: &BTreeMap<String, serde_json::Value>,
    object: &serde_json::Value,
    old: Option<&serde_json::Value>,
) -> Vec<String> {
    let kind = object["kind"].as_str().unwrap();
    let schema = &schemas[kind];
    let validator = jsonschema::validator_for(schema).unwrap();
    let mut found: Vec<String> =
        validator.iter_errors(object).map(|e| format!("{}: {}", e.instance_path(), e)).collect();
    if found.is_empty() {
        if let Err(errors) = kube_cel::Validator::new().validate(schema, object, old) {
            found.push(errors.to_string());
        }
    }
    found
}

fn check_valid(path: &Path, schemas: &BTreeMap<String, serde_json::Value>) {
    let docs = documents(path);
    let (old, new) = match docs.as_slice() {
        [one] => (None, one),
        [old, new] if old["metadata"]["name"] == new["metadata"]["name"] => (Some(old), new),
        many => {
            for doc in many {
                assert_eq!(problems(schemas, doc, None), Vec::<String>::new(), "{}", path.display());
            }
            return;
        }
    };
    if let Some(old) = old {
        assert_eq!(problems(schemas, old, None), Vec::<String>::new(), "{} (stored object)", path.display());
    }
    assert_eq!(problems(schemas, new, old), Vec::<String>::new(), "{}", path.display());
}

#[test]
fn good_examples_pass_the_schemas_and_cel_rules() {
    let schemas = schemas();
    let mut files = yaml_files(&crate_dir().join("tests/fixtures/schema/valid"));
    files.extend(yaml_files(&workspace_dir().join("charts/waggle/examples")));
    files.extend(yaml_files(&workspace_dir().join("e2e/manifests")));
    files.extend(yaml_files(&crate_dir().join("tests/fixtures/builders")));
    assert!(files.len() >= 10);
    for file in files {
        check_valid(&file, &schemas);
    }
}

#[test]
fn bad_examples_are_rejected_with_a_message_naming_the_problem() {
    let schemas = schemas();
    let files = yaml_files(&crate_dir().join("tests/fixtures/schema/invalid"));
    assert!(files.len() >= 10);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} must start with '# expect: '", file.display()));
        let docs = documents(&file);
        let (old, new) = match docs.as_slice() {
            [one] => (None, one),
            [old, new] => {
                assert_eq!(
                    problems(&schemas, old, None),
                    Vec::<String>::new(),
                    "{}: stored object must be valid",
                    file.display()
                );
                (Some(old), new)
            }
            _ => panic!("{}: one or two documents", file.display()),
        };
        let found = problems(&schemas, new, old);
        assert!(!found.is_empty(), "{} was accepted", file.display());
        assert!(found.iter().any(|p| p.contains(expect)), "{}: expected {expect:?} in {found:?}", file.display());
    }
}

#[test]
fn cel_rules_are_in_the_schemas_and_compile() {
    let schemas = schemas();
    let rules = |kind: &str| {
        let mut rules = Vec::new();
        collect_rules(&schemas[kind], &mut rules);
        rules
    };
    let cluster = rules("Cluster");
    for expected in [
        "self.replicationFactor <= self.brokers",
        "self == oldSelf",
        "quantity(self).compareTo(quantity(oldSelf)) >= 0",
        "isQuantity(self)",
    ] {
        assert!(cluster.iter().any(|r| r == expected), "missing CEL rule {expected:?} in {cluster:?}");
    }
    assert!(cluster.iter().any(|r| r.contains("self.storageClassName == oldSelf.storageClassName")));
    for (kind, schema) in &schemas {
        let compiled = kube_cel::compile_schema(schema);
        assert!(!compiled.has_errors(), "{kind}: {:?}", compiled.compilation_errors());
    }
}

fn collect_rules(schema: &serde_json::Value, out: &mut Vec<String>) {
    match schema {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Array(rules)) = map.get("x-kubernetes-validations") {
                out.extend(rules.iter().filter_map(|r| r["rule"].as_str().map(str::to_owned)));
            }
            map.values().for_each(|v| collect_rules(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_rules(v, out)),
        _ => {}
    }
}

#[test]
fn crds_have_printer_columns_short_names_category_and_subresources() {
    let crds: BTreeMap<String, serde_json::Value> = yaml_files(&workspace_dir().join("crds"))
        .iter()
        .flat_map(|p| documents(p))
        .map(|crd| (crd["spec"]["names"]["kind"].as_str().unwrap().to_owned(), crd))
        .collect();
    assert_eq!(crds.keys().collect::<Vec<_>>(), ["Cluster", "Exporter", "Gateway"]);
    for (kind, crd) in &crds {
        assert_eq!(crd["spec"]["group"], "waggle.dev");
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert_eq!(crd["spec"]["names"]["categories"], serde_json::json!(["waggle"]), "{kind}");
        assert_eq!(crd["spec"]["names"]["shortNames"].as_array().map(Vec::len), Some(1), "{kind}");
        assert!(version["subresources"]["status"].is_object(), "{kind} needs the status subresource");
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert!(columns.contains(&"Ready") && columns.contains(&"Age"), "{kind}: {columns:?}");
    }
    let cluster = &crds["Cluster"]["spec"]["versions"][0];
    let columns: Vec<&str> =
        cluster["additionalPrinterColumns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    for column in ["Ready", "Brokers", "Partitions", "Version", "Age"] {
        assert!(columns.contains(&column), "Cluster lacks printer column {column}");
    }
    assert_eq!(cluster["subresources"]["scale"]["specReplicasPath"], ".spec.brokers");
    assert_eq!(cluster["subresources"]["scale"]["statusReplicasPath"], ".status.brokers");
    assert_eq!(cluster["subresources"]["scale"]["labelSelectorPath"], ".status.selector");
}
