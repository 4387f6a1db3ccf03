//! The reconcilers against a scripted API server (kube's mock-service pattern): each test plays the
//! API server's side request by request, asserting what the operator asks for and answering it,
//! including with errors and `409 Conflict`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

mod common;
use common::mock::{client, ApiServer};
use waggle_operator::builders::Defaults;
use waggle_operator::controller::{reconcile_cluster, reconcile_exporter, reconcile_gateway, retry_delay, Context};
use waggle_operator::crd::{Cluster, Exporter, Gateway};
use waggle_operator::metrics::Metrics;

fn context() -> (Arc<Context>, ApiServer) {
    let (client, server) = client();
    let defaults = Defaults { image: "ghcr.io/waggle-dev/waggle".to_owned() };
    (Arc::new(Context::new(client, defaults, Metrics::new().unwrap(), "test-0")), server)
}

fn cluster(status: Option<Value>) -> Cluster {
    let mut value = json!({
        "apiVersion": "waggle.dev/v1alpha1", "kind": "Cluster",
        "metadata": {"name": "demo", "namespace": "shop", "uid": "u-1", "generation": 2},
        "spec": {"brokers": 3, "partitions": 3, "replicationFactor": 3, "version": "0.1.0", "storage": {"size": "10Gi"}},
    });
    if let Some(status) = status {
        value["status"] = status;
    }
    serde_json::from_value(value).unwrap()
}

fn exporter(name: &str, cluster: &str) -> Value {
    json!({
        "apiVersion": "waggle.dev/v1alpha1", "kind": "Exporter",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("u-{name}"), "generation": 1},
        "spec": {"clusterRef": {"name": cluster}, "kind": "postgres", "settings": {"url": "postgres://db"}},
    })
}

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "waggle.dev/v1alpha1", "kind": "ExporterList", "metadata": {}, "items": items})
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == type_).unwrap()
}

const EXPORTERS: &str = "/apis/waggle.dev/v1alpha1/namespaces/shop/exporters";
const STS: &str = "/apis/apps/v1/namespaces/shop/statefulsets/demo-broker";
const CONFIG_MAP: &str = "/api/v1/namespaces/shop/configmaps/demo-broker-config";
const SERVICE: &str = "/api/v1/namespaces/shop/services/demo-broker";
const PDB: &str = "/apis/policy/v1/namespaces/shop/poddisruptionbudgets/demo-broker";
const CLUSTER_STATUS: &str = "/apis/waggle.dev/v1alpha1/namespaces/shop/clusters/demo/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";

#[tokio::test]
async fn new_cluster_gets_its_children_applied_and_reports_progress() {
    let (ctx, mut server) = context();
    let task = tokio::spawn(reconcile_cluster(Arc::new(cluster(None)), ctx));

    server
        .expect("GET", EXPORTERS)
        .await
        .reply(200, list(vec![exporter("audit", "demo"), exporter("other", "elsewhere")]));
    server.expect("GET", STS).await.fail(404, "NotFound");
    let config_map = server.expect_apply(CONFIG_MAP, None).await;
    let toml = config_map["data"]["broker.toml"].as_str().unwrap();
    assert!(toml.contains("[exporters.audit]") && !toml.contains("other"), "{toml}");
    assert_eq!(config_map["metadata"]["ownerReferences"][0]["uid"], "u-1");
    assert_eq!(config_map["metadata"]["ownerReferences"][0]["controller"], true);
    server.expect_apply(SERVICE, None).await;
    let sts = server.expect_apply(STS, Some(json!({"replicas": 0, "observedGeneration": 1}))).await;
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(sts["spec"]["updateStrategy"]["type"], "OnDelete");
    server.expect_apply(PDB, None).await;

    let status = server.expect("PATCH", CLUSTER_STATUS).await;
    assert!(status.uri.contains("fieldManager=waggle-operator"));
    let body = status.body.clone();
    status.reply(200, serde_json::to_value(cluster(None)).unwrap());
    assert_eq!(body["status"]["observedGeneration"], 2);
    assert_eq!(body["status"]["exporters"], json!(["audit"]));
    assert_eq!(
        body["status"]["selector"],
        "app.kubernetes.io/component=broker,app.kubernetes.io/instance=demo,app.kubernetes.io/name=waggle"
    );
    assert_eq!(condition(&body, "Progressing")["status"], "True");
    assert_eq!(condition(&body, "Ready")["status"], "False");
    assert_eq!(condition(&body, "Ready")["message"], "0/3 brokers ready, scaling from 0 to 3");

    let action = task.await.unwrap().unwrap();
    assert_eq!(action, kube::runtime::controller::Action::requeue(Duration::from_secs(15)));
    server.expect_done().await;
}

#[tokio::test]
async fn cluster_becoming_ready_is_reported_and_recorded_as_an_event() {
    let (ctx, mut server) = context();
    let previous = json!({"conditions": [{"type": "Progressing", "status": "True", "reason": "Starting", "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    let task = tokio::spawn(reconcile_cluster(Arc::new(cluster(Some(previous))), ctx));

    server.expect("GET", EXPORTERS).await.reply(200, list(vec![]));
    server.expect("GET", STS).await.fail(404, "NotFound");
    server.expect_apply(CONFIG_MAP, None).await;
    server.expect_apply(SERVICE, None).await;
    server
        .expect_apply(
            STS,
            Some(json!({"replicas": 3, "readyReplicas": 3, "updatedReplicas": 3, "observedGeneration": 1})),
        )
        .await;
    server.expect_apply(PDB, None).await;
    let status = server.expect("PATCH", CLUSTER_STATUS).await;
    let body = status.body.clone();
    status.reply(200, serde_json::to_value(cluster(None)).unwrap());
    assert_eq!(condition(&body, "Ready")["status"], "True");
    assert_eq!(condition(&body, "Ready")["reason"], "AllReady");
    assert_eq!(condition(&body, "Progressing")["status"], "False");
    assert_eq!(
        condition(&body, "Progressing")["lastTransitionTime"].as_str().map(|t| t != "2026-01-01T00:00:00Z"),
        Some(true)
    );
    assert_eq!(body["status"]["readyBrokers"], 3);

    let event = server.expect("POST", EVENTS).await;
    assert_eq!(event.body["reason"], "AllReady");
    assert_eq!(event.body["type"], "Normal");
    assert_eq!(event.body["regarding"]["kind"], "Cluster");
    assert_eq!(event.body["reportingController"], "waggle-operator");
    let reply = event.body.clone();
    event.reply(201, reply);

    assert_eq!(task.await.unwrap().unwrap(), kube::runtime::controller::Action::requeue(Duration::from_secs(300)));
    server.expect_done().await;
}

#[tokio::test]
async fn failed_apply_marks_the_cluster_degraded_and_is_retried_later() {
    let (ctx, mut server) = context();
    let task = tokio::spawn(reconcile_cluster(Arc::new(cluster(None)), ctx));

    server.expect("GET", EXPORTERS).await.reply(200, list(vec![]));
    server.expect("GET", STS).await.fail(404, "NotFound");
    server.expect_apply(CONFIG_MAP, None).await;
    server.expect_apply(SERVICE, None).await;
    server.expect("PATCH", STS).await.fail(500, "InternalError");
    let status = server.expect("PATCH", CLUSTER_STATUS).await;
    let body = status.body.clone();
    status.reply(200, serde_json::to_value(cluster(None)).unwrap());
    assert_eq!(condition(&body, "Degraded")["status"], "True");
    assert_eq!(condition(&body, "Degraded")["reason"], "ApplyFailed");
    assert_eq!(
        condition(&body, "Degraded")["message"],
        "could not apply StatefulSet demo-broker: InternalError (scripted)",
        "the server's sentence, not the debug form of its response"
    );
    let event = server.expect("POST", EVENTS).await;
    assert_eq!(event.body["type"], "Warning");
    let reply = event.body.clone();
    event.reply(201, reply);

    let error = task.await.unwrap().unwrap_err();
    assert!(!error.is_conflict());
    assert_eq!(error.label(), "api");
    assert_eq!(retry_delay(&error), Duration::from_secs(15));
    server.expect_done().await;
}

#[tokio::test]
async fn conflict_is_retried_soon_without_marking_the_cluster_degraded() {
    let (ctx, mut server) = context();
    let task = tokio::spawn(reconcile_cluster(Arc::new(cluster(None)), ctx));

    server.expect("GET", EXPORTERS).await.reply(200, list(vec![]));
    server.expect("GET", STS).await.fail(404, "NotFound");
    server.expect("PATCH", CONFIG_MAP).await.fail(409, "Conflict");

    let error = task.await.unwrap().unwrap_err();
    assert!(error.is_conflict());
    assert_eq!(error.label(), "conflict");
    assert_eq!(retry_delay(&error), Duration::from_secs(1));
    server.expect_done().await;
}

#[tokio::test]
async fn growing_storage_expands_the_volumes_and_recreates_the_stateful_set_without_its_pods() {
    let (ctx, mut server) = context();
    let task = tokio::spawn(reconcile_cluster(Arc::new(cluster(None)), ctx));

    server.expect("GET", EXPORTERS).await.reply(200, list(vec![]));
    let existing = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "demo-broker", "namespace": "shop"},
        "spec": {"replicas": 2, "serviceName": "demo-broker", "selector": {}, "template": {},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": "5Gi"}}}}]},
    });
    server.expect("GET", STS).await.reply(200, existing);
    let first = server.expect("PATCH", "/api/v1/namespaces/shop/persistentvolumeclaims/data-demo-broker-0").await;
    assert_eq!(first.body, json!({"spec": {"resources": {"requests": {"storage": "10Gi"}}}}));
    first.reply(
        200,
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data-demo-broker-0"}}),
    );
    server
        .expect("PATCH", "/api/v1/namespaces/shop/persistentvolumeclaims/data-demo-broker-1")
        .await
        .fail(404, "NotFound");
    let delete = server.expect("DELETE", STS).await;
    assert_eq!(delete.body["propagationPolicy"], "Orphan");
    delete.reply(200, json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}));
    let status = server.expect("PATCH", CLUSTER_STATUS).await;
    let body = status.body.clone();
    status.reply(200, serde_json::to_value(cluster(None)).unwrap());
    assert_eq!(condition(&body, "Progressing")["reason"], "ExpandingVolumes");
    assert_eq!(body["status"]["progress"], "growing broker volumes from 5Gi to 10Gi");

    assert_eq!(task.await.unwrap().unwrap(), kube::runtime::controller::Action::requeue(Duration::from_secs(2)));
    server.expect_done().await;
}

#[tokio::test]
async fn unrenderable_broker_config_is_reported_without_touching_children() {
    let (ctx, mut server) = context();
    let mut bad = cluster(None);
    bad.spec.config = Some(serde_json::from_value(json!({"retention": null})).unwrap());
    let task = tokio::spawn(reconcile_cluster(Arc::new(bad), ctx));

    server.expect("GET", EXPORTERS).await.reply(200, list(vec![]));
    let status = server.expect("PATCH", CLUSTER_STATUS).await;
    let body = status.body.clone();
    status.reply(200, serde_json::to_value(cluster(None)).unwrap());
    assert_eq!(condition(&body, "Degraded")["reason"], "InvalidConfig");
    assert!(condition(&body, "Degraded")["message"].as_str().unwrap().contains("retention"));
    let event = server.expect("POST", EVENTS).await;
    let reply = event.body.clone();
    event.reply(201, reply);

    assert_eq!(task.await.unwrap().unwrap(), kube::runtime::controller::Action::await_change());
    server.expect_done().await;
}

fn gateway(status: Option<Value>) -> Gateway {
    let mut value = json!({
        "apiVersion": "waggle.dev/v1alpha1", "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": "shop", "uid": "u-gw", "generation": 1},
        "spec": {"clusterRef": {"name": "demo"}, "replicas": 2},
    });
    if let Some(status) = status {
        value["status"] = status;
    }
    serde_json::from_value(value).unwrap()
}

const CLUSTER: &str = "/apis/waggle.dev/v1alpha1/namespaces/shop/clusters/demo";

#[tokio::test]
async fn gateway_whose_cluster_is_missing_reports_it_and_creates_nothing() {
    let (ctx, mut server) = context();
    let task = tokio::spawn(reconcile_gateway(Arc::new(gateway(None)), ctx));

    server.expect("GET", CLUSTER).await.fail(404, "NotFound");
    let status = server.expect("PATCH", "/apis/waggle.dev/v1alpha1/namespaces/shop/gateways/edge/status").await;
    let body = status.body.clone();
    status.reply(200, serde_json::to_value(gateway(None)).unwrap());
    assert_eq!(condition(&body, "Degraded")["reason"], "ClusterNotFound");
    assert_eq!(
        condition(&body, "Degraded")["message"],
        "Cluster demo does not exist in namespace shop; waiting for it"
    );
    let event = server.expect("POST", EVENTS).await;
    assert_eq!(event.body["reason"], "ClusterNotFound");
    let reply = event.body.clone();
    event.reply(201, reply);

    assert_eq!(task.await.unwrap().unwrap(), kube::runtime::controller::Action::requeue(Duration::from_secs(15)));
    server.expect_done().await;
}

#[tokio::test]
async fn gateway_recovers_once_its_cluster_exists() {
    let (ctx, mut server) = context();
    let previous = json!({"conditions": [{"type": "Degraded", "status": "True", "reason": "ClusterNotFound",
        "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    let task = tokio::spawn(reconcile_gateway(Arc::new(gateway(Some(previous))), ctx));

    server.expect("GET", CLUSTER).await.reply(200, serde_json::to_value(cluster(None)).unwrap());
    let deployment = server
        .expect_apply(
            "/apis/apps/v1/namespaces/shop/deployments/edge",
            Some(json!({"replicas": 2, "updatedReplicas": 2, "readyReplicas": 1, "observedGeneration": 1})),
        )
        .await;
    assert_eq!(deployment["spec"]["replicas"], 2);
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    assert_eq!(args[2], "demo-broker-0.demo-broker.shop.svc:26501,demo-broker-1.demo-broker.shop.svc:26501,demo-broker-2.demo-broker.shop.svc:26501");
    server.expect_apply("/api/v1/namespaces/shop/services/edge", None).await;
    let status = server.expect("PATCH", "/apis/waggle.dev/v1alpha1/namespaces/shop/gateways/edge/status").await;
    let body = status.body.clone();
    status.reply(200, serde_json::to_value(gateway(None)).unwrap());
    assert_eq!(condition(&body, "Degraded")["status"], "False");
    assert_eq!(condition(&body, "Progressing")["status"], "True");
    assert_eq!(body["status"]["readyReplicas"], 1);
    assert_eq!(body["status"]["grpcAddress"], "edge.shop.svc:26500");

    assert!(task.await.unwrap().is_ok());
    server.expect_done().await;
}

#[tokio::test]
async fn exporter_is_ready_once_its_cluster_runs_the_configuration_carrying_it() {
    let (ctx, mut server) = context();
    let audit: Exporter = serde_json::from_value(exporter("audit", "demo")).unwrap();
    let task = tokio::spawn(reconcile_exporter(Arc::new(audit), ctx));

    let ready = json!([{"type": "Ready", "status": "True", "reason": "AllReady", "message": "3/3 brokers ready",
        "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
    let applied = cluster(Some(json!({"exporters": ["audit"], "configHash": "abc123", "conditions": ready})));
    server.expect("GET", CLUSTER).await.reply(200, serde_json::to_value(applied).unwrap());
    let status = server.expect("PATCH", "/apis/waggle.dev/v1alpha1/namespaces/shop/exporters/audit/status").await;
    let body = status.body.clone();
    status.reply(200, exporter("audit", "demo"));
    assert_eq!(condition(&body, "Ready")["reason"], "Loaded");
    assert_eq!(
        body["status"]["appliedTo"],
        json!({"cluster": "demo", "configMap": "demo-broker-config", "configHash": "abc123"})
    );
    let event = server.expect("POST", EVENTS).await;
    let reply = event.body.clone();
    event.reply(201, reply);

    assert!(task.await.unwrap().is_ok());
    server.expect_done().await;
}

#[tokio::test]
async fn exporter_in_the_config_map_is_not_ready_while_brokers_run_an_older_one() {
    let (ctx, mut server) = context();
    let audit: Exporter = serde_json::from_value(exporter("audit", "demo")).unwrap();
    let task = tokio::spawn(reconcile_exporter(Arc::new(audit), ctx));

    let outdated = json!([{"type": "Progressing", "status": "True", "reason": "Outdated", "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
    let written = cluster(Some(json!({"exporters": ["audit"], "configHash": "abc123", "conditions": outdated})));
    server.expect("GET", CLUSTER).await.reply(200, serde_json::to_value(written).unwrap());
    let status = server.expect("PATCH", "/apis/waggle.dev/v1alpha1/namespaces/shop/exporters/audit/status").await;
    let body = status.body.clone();
    status.reply(200, exporter("audit", "demo"));
    assert_eq!(condition(&body, "Progressing")["reason"], "Loading");
    assert!(body["status"].get("appliedTo").is_none());

    assert!(task.await.unwrap().is_ok());
    server.expect_done().await;
}

#[tokio::test]
async fn exporter_waits_while_its_cluster_has_not_taken_it() {
    let (ctx, mut server) = context();
    let audit: Exporter = serde_json::from_value(exporter("audit", "demo")).unwrap();
    let task = tokio::spawn(reconcile_exporter(Arc::new(audit), ctx));

    server.expect("GET", CLUSTER).await.reply(200, serde_json::to_value(cluster(None)).unwrap());
    let status = server.expect("PATCH", "/apis/waggle.dev/v1alpha1/namespaces/shop/exporters/audit/status").await;
    let body = status.body.clone();
    status.reply(200, exporter("audit", "demo"));
    assert_eq!(condition(&body, "Progressing")["reason"], "Pending");
    assert!(body["status"].get("appliedTo").is_none());

    assert!(task.await.unwrap().is_ok());
    server.expect_done().await;
}
