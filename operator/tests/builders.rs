//! The builders from YAML fixtures to golden files.
//!
//! Each fixture in `fixtures/builders/` holds a resource and what it references (a Cluster's
//! Exporters, a Gateway's Cluster); its golden file in `golden/` holds every object the operator
//! would apply for it. Run with `UPDATE_GOLDEN=1` to rewrite the golden files after an intended
//! change, and review the diff.

mod common;

use std::path::Path;

use common::{crate_dir, documents, yaml_files};
use waggle_operator::builders::{ClusterObjects, Defaults, GatewayObjects};
use waggle_operator::crd::{Cluster, Exporter, Gateway};

fn defaults() -> Defaults {
    Defaults { image: "ghcr.io/waggle-dev/waggle".to_owned() }
}

fn to_yaml_documents(objects: &[serde_json::Value]) -> String {
    objects.iter().map(|o| format!("---\n{}", serde_yaml_ng::to_string(o).unwrap())).collect()
}

/// Builds every object for the fixture at `path`.
fn build(path: &Path) -> Vec<serde_json::Value> {
    let docs = documents(path);
    match docs[0]["kind"].as_str() {
        Some("Cluster") => {
            let cluster: Cluster = serde_json::from_value(docs[0].clone()).unwrap();
            let exporters: Vec<Exporter> =
                docs[1..].iter().map(|d| serde_json::from_value(d.clone()).unwrap()).collect();
            let objects = ClusterObjects::build(&cluster, &exporters, &defaults()).unwrap();
            vec![value(&objects.config_map), value(&objects.service), value(&objects.stateful_set), value(&objects.pdb)]
        }
        Some("Gateway") => {
            let gateway: Gateway = serde_json::from_value(docs[0].clone()).unwrap();
            let cluster: Cluster = serde_json::from_value(docs[1].clone()).unwrap();
            let objects = GatewayObjects::build(&gateway, &cluster, &defaults()).unwrap();
            vec![value(&objects.deployment), value(&objects.service)]
        }
        other => panic!("{}: unexpected fixture kind {other:?}", path.display()),
    }
}

/// An object as JSON; k8s-openapi's serialization includes apiVersion and kind, as sent.
fn value<T: serde::Serialize>(object: &T) -> serde_json::Value {
    serde_json::to_value(object).unwrap()
}

#[test]
fn builders_match_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let fixtures = yaml_files(&crate_dir().join("tests/fixtures/builders"));
    assert!(fixtures.len() >= 4, "fixtures missing");
    let mut failures = Vec::new();
    for fixture in fixtures {
        let golden = crate_dir().join("tests/golden").join(fixture.file_name().unwrap());
        let built = build(&fixture);
        if update {
            std::fs::write(&golden, to_yaml_documents(&built)).unwrap();
            continue;
        }
        let expected = if golden.exists() { documents(&golden) } else { Vec::new() };
        if expected != built {
            pretty_assertions::assert_eq!(
                to_yaml_documents(&expected),
                to_yaml_documents(&built),
                "{} differs from {}; rerun with UPDATE_GOLDEN=1 if the change is intended",
                fixture.display(),
                golden.display()
            );
            failures.push(fixture);
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn building_twice_gives_identical_objects() {
    for fixture in yaml_files(&crate_dir().join("tests/fixtures/builders")) {
        assert_eq!(build(&fixture), build(&fixture), "{}", fixture.display());
    }
}

fn cluster_fixture(name: &str) -> (Cluster, Vec<Exporter>) {
    let docs = documents(&crate_dir().join("tests/fixtures/builders").join(name));
    let cluster = serde_json::from_value(docs[0].clone()).unwrap();
    let exporters = docs[1..].iter().map(|d| serde_json::from_value(d.clone()).unwrap()).collect();
    (cluster, exporters)
}

#[test]
fn changing_the_broker_count_changes_only_the_stateful_set_and_its_peers() {
    let (cluster, exporters) = cluster_fixture("cluster-full.yaml");
    let before = ClusterObjects::build(&cluster, &exporters, &defaults()).unwrap();
    let mut scaled = cluster.clone();
    scaled.spec.brokers = 7;
    let after = ClusterObjects::build(&scaled, &exporters, &defaults()).unwrap();
    assert_eq!(before.config_map, after.config_map);
    assert_eq!(before.service, after.service);
    assert_eq!(before.pdb, after.pdb);
    assert_ne!(before.stateful_set, after.stateful_set);
    let env = after.stateful_set.spec.unwrap().template.spec.unwrap().containers[0].env.clone().unwrap();
    let peers = env.iter().find(|e| e.name == "WAGGLE_PEERS").unwrap().value.clone().unwrap();
    assert_eq!(peers.split(',').count(), 7);
    assert!(peers.starts_with("prod-broker-0.prod-broker.payments.svc:26502,"));
}

#[test]
fn changing_an_exporter_changes_the_config_and_the_pod_template_hash_only() {
    let (cluster, mut exporters) = cluster_fixture("cluster-full.yaml");
    let before = ClusterObjects::build(&cluster, &exporters, &defaults()).unwrap();
    exporters[0].spec.settings.as_mut().unwrap().insert("url".into(), "http://es2:9200".into());
    let after = ClusterObjects::build(&cluster, &exporters, &defaults()).unwrap();
    assert_ne!(before.config_map, after.config_map);
    assert_ne!(before.config.hash, after.config.hash);
    assert_eq!(before.service, after.service);
    assert_eq!(before.pdb, after.pdb);
    let annotations = |o: &ClusterObjects| {
        o.stateful_set.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.clone().unwrap()
    };
    assert_eq!(annotations(&after)["waggle.dev/config-hash"], after.config.hash);
    let spec_without_hash = |o: &ClusterObjects| {
        let mut set = o.stateful_set.clone();
        set.spec.as_mut().unwrap().template.metadata.as_mut().unwrap().annotations = None;
        set
    };
    assert_eq!(spec_without_hash(&before), spec_without_hash(&after));
}

#[test]
fn disabled_exporters_and_other_clusters_exporters_stay_out_of_the_config() {
    let (cluster, exporters) = cluster_fixture("cluster-full.yaml");
    let objects = ClusterObjects::build(&cluster, &exporters, &defaults()).unwrap();
    assert_eq!(objects.config.exporters, vec!["audit-db", "search"]);
    let toml = &objects.config_map.data.as_ref().unwrap()["broker.toml"];
    assert!(!toml.contains("old-search"));
    assert!(
        toml.contains("[exporters.audit-db.secret_env]\npassword = \"WAGGLE_EXPORTER_AUDIT_DB_PASSWORD\""),
        "a secret setting names the variable that carries it, never a value:\n{toml}"
    );
}

#[test]
fn the_broker_config_parses_as_toml_with_the_users_settings() {
    let (cluster, exporters) = cluster_fixture("cluster-full.yaml");
    let objects = ClusterObjects::build(&cluster, &exporters, &defaults()).unwrap();
    let parsed: toml::Table = objects.config.toml.parse().unwrap();
    assert_eq!(parsed["log_level"].as_str(), Some("debug"));
    assert_eq!(parsed["snapshot"]["period_seconds"].as_integer(), Some(300));
    assert_eq!(parsed["exporters"]["search"]["kind"].as_str(), Some("elasticsearch"));
    assert_eq!(parsed["exporters"]["search"]["index"]["number_of_shards"].as_integer(), Some(3));
}
