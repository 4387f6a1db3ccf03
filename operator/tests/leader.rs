//! Leader election against a scripted API server: taking a missing, free or expired Lease, leaving
//! a held one alone, and treating a lost race (409) as "not leader" rather than an error.

mod common;

use std::time::Duration;

use common::mock::client;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use serde_json::json;
use waggle_operator::leader::LeaseLock;

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/waggle-operator";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";

fn now() -> Timestamp {
    "2026-03-01T12:00:00Z".parse().unwrap()
}

fn lease(holder: &str, renewed: &str) -> serde_json::Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "waggle-operator", "namespace": "ops", "resourceVersion": "41"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed,
            "acquireTime": "2026-03-01T11:00:00.000000Z", "leaseTransitions": 3},
    })
}

fn lock(client: kube::Client, identity: &str) -> LeaseLock {
    LeaseLock::new(Api::<Lease>::namespaced(client, "ops"), "waggle-operator", identity, Duration::from_secs(15))
}

#[tokio::test]
async fn missing_lease_is_created_and_held() {
    let (client, mut server) = client();
    let task = tokio::spawn(async move { lock(client, "op-a").try_acquire_or_renew(now()).await });
    server.expect("GET", LEASE).await.fail(404, "NotFound");
    let create = server.expect("POST", LEASES).await;
    assert_eq!(create.body["spec"]["holderIdentity"], "op-a");
    assert_eq!(create.body["spec"]["leaseDurationSeconds"], 15);
    let body = create.body.clone();
    create.reply(201, body);
    assert!(task.await.unwrap().unwrap());
    server.expect_done().await;
}

#[tokio::test]
async fn lease_held_by_a_live_replica_is_left_alone() {
    let (client, mut server) = client();
    let task = tokio::spawn(async move { lock(client, "op-a").try_acquire_or_renew(now()).await });
    server.expect("GET", LEASE).await.reply(200, lease("op-b", "2026-03-01T11:59:55.000000Z"));
    assert!(!task.await.unwrap().unwrap());
    server.expect_done().await;
}

#[tokio::test]
async fn expired_lease_is_taken_over_with_the_read_resource_version() {
    let (client, mut server) = client();
    let task = tokio::spawn(async move { lock(client, "op-a").try_acquire_or_renew(now()).await });
    server.expect("GET", LEASE).await.reply(200, lease("op-b", "2026-03-01T11:59:40.000000Z"));
    let replace = server.expect("PUT", LEASE).await;
    assert_eq!(replace.body["metadata"]["resourceVersion"], "41");
    assert_eq!(replace.body["spec"]["holderIdentity"], "op-a");
    assert_eq!(replace.body["spec"]["leaseTransitions"], 4);
    let body = replace.body.clone();
    replace.reply(200, body);
    assert!(task.await.unwrap().unwrap());
    server.expect_done().await;
}

#[tokio::test]
async fn holder_renews_its_lease_keeping_the_acquire_time() {
    let (client, mut server) = client();
    let task = tokio::spawn(async move { lock(client, "op-a").try_acquire_or_renew(now()).await });
    server.expect("GET", LEASE).await.reply(200, lease("op-a", "2026-03-01T11:59:55.000000Z"));
    let replace = server.expect("PUT", LEASE).await;
    assert_eq!(replace.body["spec"]["acquireTime"], "2026-03-01T11:00:00.000000Z");
    assert_eq!(replace.body["spec"]["leaseTransitions"], 3);
    assert_eq!(replace.body["spec"]["renewTime"], "2026-03-01T12:00:00.000000Z");
    let body = replace.body.clone();
    replace.reply(200, body);
    assert!(task.await.unwrap().unwrap());
    server.expect_done().await;
}

#[tokio::test]
async fn losing_the_race_for_a_lease_is_not_an_error() {
    let (client, mut server) = client();
    let task = tokio::spawn(async move { lock(client, "op-a").try_acquire_or_renew(now()).await });
    server.expect("GET", LEASE).await.reply(200, lease("", "2026-03-01T11:00:00.000000Z"));
    server.expect("PUT", LEASE).await.fail(409, "Conflict");
    assert!(!task.await.unwrap().unwrap());
    server.expect_done().await;
}

#[tokio::test]
async fn other_api_errors_are_reported() {
    let (client, mut server) = client();
    let task = tokio::spawn(async move { lock(client, "op-a").try_acquire_or_renew(now()).await });
    server.expect("GET", LEASE).await.fail(403, "Forbidden");
    let error = task.await.unwrap().unwrap_err();
    assert!(error.to_string().contains("Lease waggle-operator"), "{error}");
    server.expect_done().await;
}

#[tokio::test]
async fn release_clears_the_holder_only_when_held() {
    let (client, mut server) = client();
    let task = tokio::spawn(async move { lock(client, "op-a").release().await });
    server.expect("GET", LEASE).await.reply(200, lease("op-a", "2026-03-01T11:59:55.000000Z"));
    let replace = server.expect("PUT", LEASE).await;
    assert!(replace.body["spec"].get("holderIdentity").is_none());
    let body = replace.body.clone();
    replace.reply(200, body);
    task.await.unwrap().unwrap();
    server.expect_done().await;
}
