//! The operator against a real Kubernetes control plane: the API server enforces the CRDs' schemas
//! and CEL rules, the controller manager runs StatefulSets, Deployments and garbage collection,
//! `kubelet-standin` runs the Pods as real `waggle` processes, and the operator is the real binary
//! running with the Helm chart's ServiceAccount and RBAC.
//!
//! These tests need the environment of `scripts/local-k8s.sh up` (found through `LOCAL_K8S_DIR`), so
//! they are `#[ignore]`d in a plain `cargo test`; `scripts/operator-kube-tests.sh` starts the
//! environment, runs them with `--ignored` and stops it again. Each test works in its own namespace.
//! The one that stops the operator (`a_restarted_operator_finishes_the_reconcile_it_was_killed_in`)
//! only delays the others, which wait with deadlines.

mod common;

use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{crate_dir, documents, workspace_dir, yaml_files};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ResourceQuota, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::time::Instant;
use waggle_operator::crd::{Cluster, Exporter, Gateway};

fn env_dir() -> PathBuf {
    PathBuf::from(std::env::var("LOCAL_K8S_DIR").expect("LOCAL_K8S_DIR is not set; run scripts/operator-kube-tests.sh"))
}

async fn client() -> Client {
    env_dir();
    Client::try_default().await.expect("a client for the KUBECONFIG of scripts/local-k8s.sh")
}

/// Creates a fresh namespace named after `name` (tests do not share namespaces; the process id keeps
/// a second run against the same environment apart from the first).
async fn namespace(client: &Client, name: &str) -> String {
    let name = &format!("{name}-{}", std::process::id());
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    name.to_owned()
}

/// Polls `check` until it returns `Ok`, or panics after `timeout` with the last reason it gave.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

fn condition(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> Option<(String, String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| (c.type_.clone(), c.reason.clone(), c.message.clone()))
}

/// The True condition of a Cluster, Gateway or Exporter: (type, reason, message).
fn state(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> String {
    ["Ready", "Progressing", "Degraded"]
        .iter()
        .find_map(|t| condition(conditions, t))
        .map(|(t, r, m)| format!("{t}/{r}: {m}"))
        .unwrap_or_else(|| "no condition yet".into())
}

fn cluster(name: &str, brokers: i32) -> Cluster {
    serde_json::from_value(json!({
        "apiVersion": "waggle.dev/v1alpha1", "kind": "Cluster", "metadata": { "name": name },
        "spec": { "brokers": brokers, "partitions": brokers, "replicationFactor": brokers, "version": "local",
                  "image": "waggle", "storage": { "size": "1Gi" } }
    }))
    .unwrap()
}

fn gateway(name: &str, cluster: &str) -> Gateway {
    serde_json::from_value(json!({
        "apiVersion": "waggle.dev/v1alpha1", "kind": "Gateway", "metadata": { "name": name },
        "spec": { "clusterRef": { "name": cluster }, "replicas": 1 }
    }))
    .unwrap()
}

async fn create<K>(client: &Client, ns: &str, object: &K) -> K
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), object)
        .await
        .unwrap_or_else(|e| panic!("creating {} {}: {e}", K::kind(&()), object.name_any()))
}

async fn get<K>(client: &Client, ns: &str, name: &str) -> Result<K, String>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    Api::<K>::namespaced(client.clone(), ns).get(name).await.map_err(|e| format!("{} {name}: {e}", K::kind(&())))
}

async fn cluster_state(client: &Client, ns: &str, name: &str, want: &str) -> Result<Cluster, String> {
    let cluster: Cluster = get(client, ns, name).await?;
    let status = cluster.status.clone().unwrap_or_default();
    let now = state(&status.conditions);
    if now.starts_with(want) && status.observed_generation == cluster.metadata.generation {
        Ok(cluster)
    } else {
        Err(format!("{now} (observedGeneration {:?} of {:?})", status.observed_generation, cluster.metadata.generation))
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The CRDs on the real API server

fn resource_for(kind: &str) -> ApiResource {
    let gvk = GroupVersionKind::gvk("waggle.dev", "v1alpha1", kind);
    ApiResource::from_gvk_with_plural(&gvk, &format!("{}s", kind.to_lowercase()))
}

fn renamed(mut doc: serde_json::Value, name: &str) -> DynamicObject {
    doc["metadata"] = json!({ "name": name });
    serde_json::from_value(doc).unwrap()
}

fn object_name(path: &std::path::Path, index: usize) -> String {
    let stem = path.file_stem().unwrap().to_string_lossy().to_lowercase().replace(['_', '.'], "-");
    format!("{stem}-{index}")
}

/// Applies `doc` under name `name` (a dry run when `dry_run`), returning the server's refusal.
async fn apply_doc(
    client: &Client,
    ns: &str,
    doc: &serde_json::Value,
    name: &str,
    dry_run: bool,
) -> Result<(), String> {
    let kind = doc["kind"].as_str().unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource_for(kind));
    let mut params = PatchParams::apply("validation-test").force();
    params.dry_run = dry_run;
    let object = renamed(doc.clone(), name);
    api.patch(name, &params, &Patch::Apply(&object)).await.map(|_| ()).map_err(|e| match e {
        kube::Error::Api(status) => status.message,
        other => other.to_string(),
    })
}

#[tokio::test]
#[ignore = "needs a live control plane: run scripts/operator-kube-tests.sh"]
async fn the_api_server_accepts_good_resources_and_refuses_bad_ones_with_their_message() {
    let client = client().await;
    let ns = namespace(&client, "crd-validation").await;

    let mut good = yaml_files(&crate_dir().join("tests/fixtures/schema/valid"));
    good.extend(yaml_files(&workspace_dir().join("charts/waggle/examples")));
    good.extend(yaml_files(&workspace_dir().join("e2e/manifests")));
    good.extend(yaml_files(&crate_dir().join("tests/fixtures/builders")));
    for path in &good {
        let docs = documents(path);
        let update = docs.len() == 2 && docs[0]["metadata"]["name"] == docs[1]["metadata"]["name"];
        for (i, doc) in docs.iter().enumerate() {
            let name = if update { object_name(path, 0) } else { object_name(path, i) };
            let last = i + 1 == docs.len();
            // Updates are stored first and then changed; single documents only need a dry run.
            let dry_run = !update || last;
            if let Err(message) = apply_doc(&client, &ns, doc, &name, dry_run).await {
                panic!("{} (document {i}) was refused: {message}", path.display());
            }
        }
    }

    let bad = yaml_files(&crate_dir().join("tests/fixtures/schema/invalid"));
    assert!(bad.len() >= 12, "invalid fixtures missing");
    for path in &bad {
        let text = std::fs::read_to_string(path).unwrap();
        let expect = text
            .lines()
            .find_map(|l| l.strip_prefix("# server: "))
            .unwrap_or_else(|| panic!("{} needs a '# server: <message>' line", path.display()));
        let docs = documents(path);
        let name = object_name(path, 0);
        if docs.len() == 2 {
            apply_doc(&client, &ns, &docs[0], &name, false)
                .await
                .unwrap_or_else(|m| panic!("{}: the stored object was refused: {m}", path.display()));
        }
        match apply_doc(&client, &ns, docs.last().unwrap(), &name, true).await {
            Ok(()) => panic!("{} was accepted", path.display()),
            Err(message) => assert!(message.contains(expect), "{}: expected {expect:?} in {message:?}", path.display()),
        }
    }
}

#[tokio::test]
#[ignore = "needs a live control plane: run scripts/operator-kube-tests.sh"]
async fn the_charts_crds_are_the_installed_ones() {
    for path in yaml_files(&workspace_dir().join("crds")) {
        let chart = workspace_dir().join("charts/waggle/crds").join(path.file_name().unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            std::fs::read_to_string(&chart).unwrap(),
            "{}",
            chart.display()
        );
    }
    let client = client().await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(
            Client::try_from(
                kube::Config::from_custom_kubeconfig(
                    kube::config::Kubeconfig::read_from(
                        std::env::var("TESTENV_CRD_KUBECONFIG").expect("TESTENV_CRD_KUBECONFIG"),
                    )
                    .unwrap(),
                    &Default::default(),
                )
                .await
                .unwrap(),
            )
            .unwrap(),
        );
    for name in ["clusters.waggle.dev", "gateways.waggle.dev", "exporters.waggle.dev"] {
        let crd = crds.get(name).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established, "{name} is not established");
    }
    drop(client);
}

// ---------------------------------------------------------------------------------------------
// 2. The operator's reconcilers against the real API machinery

#[tokio::test]
#[ignore = "needs a live control plane: run scripts/operator-kube-tests.sh"]
async fn a_cluster_gets_owned_children_a_truthful_status_and_they_go_when_it_does() {
    let client = client().await;
    let ns = namespace(&client, "children").await;
    let created = create(&client, &ns, &cluster("c", 1)).await;
    let uid = created.uid().unwrap();

    let config: ConfigMap =
        eventually("the broker ConfigMap", Duration::from_secs(30), || get(&client, &ns, "c-broker-config")).await;
    let service: Service = get(&client, &ns, "c-broker").await.unwrap();
    let set: StatefulSet =
        eventually("the StatefulSet", Duration::from_secs(30), || get(&client, &ns, "c-broker")).await;
    let pdbs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("policy", "v1", "PodDisruptionBudget"),
            "poddisruptionbudgets",
        ),
    );
    let pdb = eventually("the PodDisruptionBudget", Duration::from_secs(30), || async {
        pdbs.get("c-broker").await.map_err(|e| e.to_string())
    })
    .await;
    for (kind, owners) in [
        ("ConfigMap", config.owner_references()),
        ("Service", service.owner_references()),
        ("StatefulSet", set.owner_references()),
        ("PodDisruptionBudget", pdb.owner_references()),
    ] {
        assert!(
            owners.iter().any(|o| o.uid == uid && o.kind == "Cluster" && o.controller == Some(true)),
            "{kind} is not controlled by the Cluster: {owners:?}"
        );
    }
    assert_eq!(service.spec.unwrap().cluster_ip.as_deref(), Some("None"));

    let ready = eventually("the 1-broker Cluster to be Ready", Duration::from_secs(120), || {
        cluster_state(&client, &ns, "c", "Ready")
    })
    .await;
    let status = ready.status.unwrap();
    assert_eq!((status.brokers, status.ready_brokers), (1, 1));
    assert!(!status.selector.is_empty() && !status.config_hash.is_empty());
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let events = eventually("an Event saying the Cluster became Ready", Duration::from_secs(30), || async {
        let list = events.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
        let found: Vec<Event> = list
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(uid.as_str()))
            .collect();
        if found.iter().any(|e| e.reason.as_deref() == Some("AllReady")) {
            Ok(found)
        } else {
            Err(format!("{} events, none AllReady", found.len()))
        }
    })
    .await;
    for event in &events {
        let note = event.note.clone().unwrap_or_default();
        assert!(note.len() <= 1024 && !note.contains("ErrorResponse"), "event note is not a sentence: {note}");
    }

    // A spec change: observedGeneration follows, and the Cluster is not Ready while its broker runs
    // the old configuration (updates are OnDelete).
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), &ns);
    clusters
        .patch("c", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "config": { "queue_capacity": 1024 } } })))
        .await
        .unwrap();
    eventually("the Cluster to say its broker runs an old spec", Duration::from_secs(30), || {
        cluster_state(&client, &ns, "c", "Progressing/Outdated")
    })
    .await;
    let config: ConfigMap = get(&client, &ns, "c-broker-config").await.unwrap();
    assert!(config.data.unwrap()["broker.toml"].contains("queue_capacity = 1024"));
    Api::<Pod>::namespaced(client.clone(), &ns).delete("c-broker-0", &DeleteParams::default()).await.unwrap();
    eventually("the Cluster to be Ready on the new spec", Duration::from_secs(120), || {
        cluster_state(&client, &ns, "c", "Ready")
    })
    .await;

    // An unchanged spec is not written again: a second manager's edit of a label the operator owns
    // makes it reconcile (and revert the label), but the Cluster's status keeps its resourceVersion.
    let steady = clusters.get("c").await.unwrap().resource_version();
    // Kubernetes times have 1-second resolution: edit in a later second than the last status write,
    // so that a needlessly refreshed time would show as a new resourceVersion.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let label = json!({ "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": { "name": "c-broker",
        "labels": { "app.kubernetes.io/version": "edited" } } });
    sets.patch("c-broker", &PatchParams::apply("intruder").force(), &Patch::Apply(&label)).await.unwrap();
    // Counted from here; a restart of the operator by another test resets the count, so it re-bases.
    let before = std::cell::Cell::new(reconciles_done("Cluster").await);
    eventually("the operator to revert the label and finish two more reconciles", Duration::from_secs(30), || async {
        let set: StatefulSet = get(&client, &ns, "c-broker").await?;
        let version = set.labels().get("app.kubernetes.io/version").cloned();
        let done = reconciles_done("Cluster").await;
        before.set(before.get().min(done));
        if version.as_deref() == Some("local") && done >= before.get() + 2 {
            Ok(())
        } else {
            Err(format!("label {version:?}, {done} reconciles"))
        }
    })
    .await;
    assert_eq!(clusters.get("c").await.unwrap().resource_version(), steady, "a no-op reconcile rewrote the Cluster");

    clusters.delete("c", &DeleteParams::default()).await.unwrap();
    eventually("garbage collection of the Cluster's children", Duration::from_secs(60), || async {
        let left = [
            get::<ConfigMap>(&client, &ns, "c-broker-config").await.is_ok(),
            get::<Service>(&client, &ns, "c-broker").await.is_ok(),
            get::<StatefulSet>(&client, &ns, "c-broker").await.is_ok(),
            pdbs.get("c-broker").await.is_ok(),
            get::<Pod>(&client, &ns, "c-broker-0").await.is_ok(),
        ];
        if left.iter().any(|l| *l) {
            Err(format!("still there (ConfigMap, Service, StatefulSet, PDB, Pod): {left:?}"))
        } else {
            Ok(())
        }
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a live control plane: run scripts/operator-kube-tests.sh"]
async fn a_gateway_waits_for_its_cluster_and_recovers_when_it_appears() {
    let client = client().await;
    let ns = namespace(&client, "late-cluster").await;
    create(&client, &ns, &gateway("gw", "late")).await;
    eventually("the Gateway to report its missing Cluster", Duration::from_secs(30), || async {
        let gw: Gateway = get(&client, &ns, "gw").await?;
        let now = state(&gw.status.unwrap_or_default().conditions);
        if now.starts_with("Degraded/ClusterNotFound") {
            Ok(())
        } else {
            Err(now)
        }
    })
    .await;
    assert!(get::<Deployment>(&client, &ns, "gw").await.is_err(), "a Deployment was made without a Cluster");

    create(&client, &ns, &cluster("late", 1)).await;
    let deployment: Deployment =
        eventually("the Gateway's Deployment", Duration::from_secs(30), || get(&client, &ns, "gw")).await;
    let gw: Gateway = get(&client, &ns, "gw").await.unwrap();
    assert!(deployment.owner_references().iter().any(|o| Some(&o.uid) == gw.uid().as_ref()));
    let args = deployment.spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap();
    assert!(args.iter().any(|a| a.contains(&format!("late-broker-0.late-broker.{ns}.svc:26501"))), "{args:?}");
}

#[tokio::test]
#[ignore = "needs a live control plane: run scripts/operator-kube-tests.sh"]
async fn another_field_manager_cannot_keep_fields_the_operator_owns() {
    let client = client().await;
    let ns = namespace(&client, "managers").await;
    create(&client, &ns, &cluster("m", 1)).await;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    eventually("the StatefulSet", Duration::from_secs(30), || get::<StatefulSet>(&client, &ns, "m-broker")).await;

    let intruder = json!({ "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": { "name": "m-broker" }, "spec": { "replicas": 4 } });
    let refused = sets.patch("m-broker", &PatchParams::apply("intruder"), &Patch::Apply(&intruder)).await;
    match refused {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 409, "{status:?}");
            assert!(
                status.message.contains("waggle-operator"),
                "the conflict should name the owner: {}",
                status.message
            );
        }
        other => panic!("a second manager changed the operator's field without a conflict: {other:?}"),
    }
    sets.patch("m-broker", &PatchParams::apply("intruder").force(), &Patch::Apply(&intruder)).await.unwrap();
    eventually("the operator to take spec.replicas back", Duration::from_secs(30), || async {
        let set: StatefulSet = get(&client, &ns, "m-broker").await?;
        let replicas = set.spec.and_then(|s| s.replicas);
        if replicas == Some(1) {
            Ok(())
        } else {
            Err(format!("replicas {replicas:?}"))
        }
    })
    .await;
}

/// How many reconciles of `kind` the operator has finished, from its /metrics.
async fn reconciles_done(kind: &str) -> u64 {
    let url = std::env::var("WAGGLE_OPERATOR_METRICS").expect("WAGGLE_OPERATOR_METRICS");
    let address = url.trim_start_matches("http://");
    let Ok(mut stream) = tokio::net::TcpStream::connect(address).await else { return 0 };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.is_err() {
        return 0;
    }
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text).await;
    let prefix = format!("waggle_operator_reconcile_duration_seconds_count{{kind=\"{kind}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

fn local_k8s(args: &[&str]) {
    let status = Command::new(workspace_dir().join("scripts/local-k8s.sh"))
        .args(args)
        .status()
        .expect("scripts/local-k8s.sh runs");
    assert!(status.success(), "scripts/local-k8s.sh {args:?} failed");
}

#[tokio::test]
#[ignore = "needs a live control plane: run scripts/operator-kube-tests.sh"]
async fn a_restarted_operator_finishes_the_reconcile_it_was_killed_in() {
    let client = client().await;
    let ns = namespace(&client, "restart").await;
    let dir = env_dir();
    let dir = dir.to_str().unwrap();
    // A quota of zero StatefulSets stops the reconcile after the ConfigMap and the Service.
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": { "name": "no-statefulsets" }, "spec": { "hard": { "count/statefulsets.apps": "0" } }
    }))
    .unwrap();
    create(&client, &ns, &quota).await;
    eventually("the quota to be counted", Duration::from_secs(30), || async {
        let q: ResourceQuota = get(&client, &ns, "no-statefulsets").await?;
        if q.status.and_then(|s| s.hard).is_some() {
            Ok(())
        } else {
            Err("no status yet".into())
        }
    })
    .await;
    create(&client, &ns, &cluster("r", 1)).await;
    let halfway = eventually("the Cluster to report the refused StatefulSet", Duration::from_secs(30), || {
        cluster_state(&client, &ns, "r", "Degraded/ApplyFailed")
    })
    .await;
    let message = state(&halfway.status.unwrap().conditions);
    assert!(
        message.contains("could not apply StatefulSet r-broker") && message.contains("exceeded quota"),
        "{message}"
    );
    assert!(!message.contains("ErrorResponse") && message.len() < 1100, "not a sentence: {message}");
    get::<ConfigMap>(&client, &ns, "r-broker-config").await.unwrap();

    local_k8s(&["stop-operator", dir, "--kill"]);
    Api::<ResourceQuota>::namespaced(client.clone(), &ns)
        .delete("no-statefulsets", &DeleteParams::default())
        .await
        .unwrap();
    local_k8s(&["start-operator", dir]);

    eventually("the StatefulSet after the restart", Duration::from_secs(60), || {
        get::<StatefulSet>(&client, &ns, "r-broker")
    })
    .await;
    eventually("the Cluster to be Ready after the restart", Duration::from_secs(120), || {
        cluster_state(&client, &ns, "r", "Ready")
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a live control plane: run scripts/operator-kube-tests.sh"]
async fn the_operator_runs_with_the_charts_service_account_and_nothing_more() {
    let client = client().await;
    let user = "system:serviceaccount:waggle-system:waggle-operator";
    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    let allowed = |group: &str, resource: &str, verb: &str| {
        let review: SubjectAccessReview = serde_json::from_value(json!({
            "spec": { "user": user, "groups": ["system:serviceaccounts"], "resourceAttributes": {
                "group": group, "resource": resource, "verb": verb, "namespace": "default" } }
        }))
        .unwrap();
        let reviews = reviews.clone();
        async move { reviews.create(&PostParams::default(), &review).await.unwrap().status.unwrap().allowed }
    };
    assert!(allowed("apps", "statefulsets", "patch").await);
    assert!(allowed("waggle.dev", "clusters/status", "patch").await);
    assert!(!allowed("", "secrets", "get").await, "the operator must not read Secrets");
    assert!(!allowed("waggle.dev", "clusters", "delete").await);

    // The operator process holds the chart's Lease under its own identity.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "waggle-system");
    let lease = eventually("the operator's Lease", Duration::from_secs(30), || async {
        leases.get("waggle-operator").await.map_err(|e| e.to_string())
    })
    .await;
    let holder = lease.spec.and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some("waggle-operator-local"));
    let log = std::fs::read_to_string(env_dir().join("logs/operator.log")).unwrap();
    assert!(!log.contains("forbidden: User"), "the operator was refused something its chart should grant:\n{log}");
}

// ---------------------------------------------------------------------------------------------
// 3. and 4. Pods that run, and statuses that tell the truth

#[tokio::test]
#[ignore = "needs a live control plane: run scripts/operator-kube-tests.sh"]
async fn an_exporter_is_ready_only_once_its_brokers_run_it() {
    let client = client().await;
    let ns = namespace(&client, "exporter").await;
    create(&client, &ns, &cluster("x", 1)).await;
    eventually("the Cluster to be Ready", Duration::from_secs(120), || cluster_state(&client, &ns, "x", "Ready")).await;

    let exporter: Exporter = serde_json::from_value(json!({
        "apiVersion": "waggle.dev/v1alpha1", "kind": "Exporter", "metadata": { "name": "audit" },
        "spec": { "clusterRef": { "name": "x" }, "kind": "postgres", "settings": { "url": "postgres://db/audit" },
                  "secretSettings": [{ "name": "password", "secretKeyRef": { "name": "audit-db", "key": "password" } }] }
    }))
    .unwrap();
    create(&client, &ns, &exporter).await;
    let exporter_state = |want: &'static str| {
        let client = client.clone();
        let ns = ns.clone();
        move || {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                let e: Exporter = get(&client, &ns, "audit").await?;
                let now = state(&e.status.unwrap_or_default().conditions);
                if now.starts_with(want) {
                    Ok(now)
                } else {
                    Err(now)
                }
            }
        }
    };
    // Written into the ConfigMap, but the running broker has not loaded it.
    eventually("the Exporter to wait for the brokers", Duration::from_secs(30), exporter_state("Progressing/Loading"))
        .await;
    // The restarted broker cannot start without the Secret: still not Ready.
    Api::<Pod>::namespaced(client.clone(), &ns).delete("x-broker-0", &DeleteParams::default()).await.unwrap();
    eventually("the new broker pod to wait for its Secret", Duration::from_secs(60), || async {
        let pod: Pod = get(&client, &ns, "x-broker-0").await?;
        let waiting = pod
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|c| c.first().and_then(|c| c.state.clone()?.waiting));
        match waiting {
            Some(w) if w.reason.as_deref() == Some("CreateContainerConfigError") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let degraded =
        eventually("the Exporter to name its missing Secret", Duration::from_secs(30), exporter_state("Degraded"))
            .await;
    assert!(
        degraded
            .starts_with("Degraded/SecretMissing: broker Pod x-broker-0 cannot start: secret \"audit-db\" not found"),
        "{degraded}"
    );

    let secret: Secret =
        serde_json::from_value(json!({ "metadata": { "name": "audit-db" }, "stringData": { "password": "s3cret" } }))
            .unwrap();
    create(&client, &ns, &secret).await;
    eventually(
        "the Exporter to be Ready once the broker runs it",
        Duration::from_secs(120),
        exporter_state("Ready/Loaded"),
    )
    .await;
}

fn zbctl() -> PathBuf {
    let path = workspace_dir().join("tests/clients/node_modules/zbctl/bin/zbctl-cli.linux");
    assert!(path.exists(), "{} is missing; scripts/setup.sh installs it", path.display());
    path
}

/// Runs zbctl against `address` with the Pod network's DNS names, as a client inside the cluster
/// would; its output, or why it failed.
fn zbctl_try(address: &str, args: &[&str]) -> Result<String, String> {
    let dir = env_dir();
    let output = Command::new(workspace_dir().join("scripts/local-k8s.sh"))
        .args(["run", dir.to_str().unwrap(), "--"])
        .arg(zbctl())
        .args(["--insecure", "--address", address])
        .args(args)
        .output()
        .expect("zbctl runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if output.status.success() {
        Ok(text)
    } else {
        Err(format!("zbctl {args:?} failed: {text}"))
    }
}

fn zbctl_run(address: &str, args: &[&str]) -> String {
    zbctl_try(address, args).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
#[ignore = "needs a live control plane: run scripts/operator-kube-tests.sh"]
async fn three_brokers_and_a_gateway_serve_a_real_zeebe_client() {
    let client = client().await;
    let ns = namespace(&client, "waggle").await;
    for doc in documents(&workspace_dir().join("e2e/manifests/cluster.yaml")) {
        create(&client, &ns, &serde_json::from_value::<Cluster>(doc).unwrap()).await;
    }
    for doc in documents(&workspace_dir().join("e2e/manifests/gateway.yaml")) {
        create(&client, &ns, &serde_json::from_value::<Gateway>(doc).unwrap()).await;
    }
    let ready = eventually("the 3-broker Cluster to be Ready", Duration::from_secs(180), || {
        cluster_state(&client, &ns, "e2e", "Ready")
    })
    .await;
    assert_eq!(ready.status.unwrap().ready_brokers, 3);

    // Ready means every broker answers its own readiness endpoint on its own address.
    let network = std::env::var("LOCAL_K8S_POD_NETWORK").unwrap();
    for i in 0..3 {
        let pod: Pod = get(&client, &ns, &format!("e2e-broker-{i}")).await.unwrap();
        let ip = pod.status.and_then(|s| s.pod_ip).unwrap();
        assert!(ip.starts_with(&format!("{network}.")), "pod IP {ip} is not on the pod network {network}");
        let mut stream = tokio::net::TcpStream::connect((ip.as_str(), 9600)).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(b"GET /health/ready HTTP/1.0\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"), "broker {i}: {answer}");
    }

    let gw = eventually("the Gateway to be Ready", Duration::from_secs(120), || async {
        let gw: Gateway = get(&client, &ns, "e2e-gateway").await?;
        let status = gw.status.clone().unwrap_or_default();
        let now = state(&status.conditions);
        if now.starts_with("Ready") {
            Ok(gw)
        } else {
            Err(now)
        }
    })
    .await;
    let address = gw.status.unwrap().grpc_address;
    assert_eq!(address, format!("e2e-gateway.{ns}.svc:26500"));

    let topology = eventually("the gateway to see 3 brokers", Duration::from_secs(60), || async {
        // The Service's name resolves once the gateway Pod is one of its ready endpoints.
        let out = zbctl_try(&address, &["status"])?;
        if out.matches("Broker ").count() >= 3 {
            Ok(out)
        } else {
            Err(out)
        }
    })
    .await;
    assert!(topology.contains("Leader"), "{topology}");
    let bpmn = workspace_dir().join("e2e/manifests/order.bpmn");
    zbctl_run(&address, &["deploy", "resource", bpmn.to_str().unwrap()]);
    let mut worker = Command::new(workspace_dir().join("scripts/local-k8s.sh"))
        .args(["run", env_dir().to_str().unwrap(), "--"])
        .arg(zbctl())
        .args([
            "--insecure",
            "--address",
            &address,
            "create",
            "worker",
            "e2e-charge",
            "--handler",
            "echo {\"charged\":true}",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for amount in [1, 2, 3] {
        let out = zbctl_run(
            &address,
            &["create", "instance", "e2e-order", "--withResult", "--variables", &format!("{{\"amount\": {amount}}}")],
        );
        // The variables may come as an object or as an escaped JSON string.
        let compact: String = out.chars().filter(|c| !matches!(c, '\\' | ' ')).collect();
        assert!(compact.contains("\"charged\":true"), "instance {amount} did not complete through the worker: {out}");
    }
    let _ = worker.kill();
    let _ = worker.wait();
}
