//! The reconcilers: read what a resource needs, apply its children with server-side apply, and report
//! in its status.
//!
//! Each reconciler is idempotent and level-triggered: it recomputes every child from the spec and
//! applies all of them under one field manager, so an unchanged spec is a no-op on the API server and
//! a changed one rewrites exactly the children whose computed form changed. Watches map changes of
//! related resources back to their owners (an Exporter to its Cluster, a Cluster to the Gateways and
//! Exporters that name it), which is how a resource that referenced something missing recovers by
//! itself once it appears.
//!
//! Errors are split in two. A `409 Conflict` means someone wrote between our read and our write;
//! it is retried soon and says nothing about the resource's health. Anything else is reported as
//! Degraded in the status and retried with a longer delay.

mod cluster;
mod exporter;
mod gateway;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use cluster::reconcile_cluster;
pub use exporter::reconcile_exporter;
pub use gateway::reconcile_gateway;

use crate::builders::{BuildError, Defaults, GatewayBuildError, FIELD_MANAGER};
use crate::crd::{Cluster, Exporter, Gateway};
use crate::metrics::Metrics;
use crate::status::Transition;

/// Errors of a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} has no namespace")]
    NoNamespace { kind: &'static str },
    #[error("a request to the Kubernetes API failed: {}", describe(.0))]
    Kube(#[from] kube::Error),
    #[error("could not apply {kind} {name}: {}", describe(.source))]
    Apply { kind: String, name: String, source: kube::Error },
    #[error("cannot build the cluster's objects: {0}")]
    Build(#[from] BuildError),
    #[error("cannot build the gateway's objects: {0}")]
    GatewayBuild(#[from] GatewayBuildError),
    #[error("cannot encode the status: {0}")]
    Encode(#[from] serde_json::Error),
}

impl Error {
    /// Someone else wrote first; retry soon.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(status)) | Error::Apply { source: kube::Error::Api(status), .. } if status.code == 409)
    }

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::NoNamespace { .. } => "no_namespace",
            Error::Kube(_) | Error::Apply { .. } if self.is_conflict() => "conflict",
            Error::Kube(_) | Error::Apply { .. } => "api",
            Error::Build(_) | Error::GatewayBuild(_) => "build",
            Error::Encode(_) => "encode",
        }
    }
}

/// What every reconcile needs.
pub struct Context {
    pub client: Client,
    pub defaults: Defaults,
    pub metrics: Metrics,
    pub recorder: Recorder,
}

impl Context {
    pub fn new(client: Client, defaults: Defaults, metrics: Metrics, instance: &str) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.to_owned(), instance: Some(instance.to_owned()) };
        Context { recorder: Recorder::new(client.clone(), reporter), client, defaults, metrics }
    }

    /// Publishes an Event about `object`. Events are best effort: failing to record one must not
    /// fail the reconcile that caused it.
    async fn publish<K: Resource<DynamicType = ()>>(&self, object: &K, action: &str, transition: Transition) {
        let event = Event {
            type_: if transition.warning { EventType::Warning } else { EventType::Normal },
            reason: transition.reason,
            note: Some(transition.note),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(%error, object = %object.object_ref(&()).name.unwrap_or_default(), "could not record event");
        }
    }
}

/// What the API server said, as a sentence: its own message for a refusal (not the debug form of
/// the whole response), the error itself otherwise.
fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

/// Server-side applies `object` under the operator's field manager, taking over fields others set.
async fn apply<K>(client: &Client, object: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Serialize + DeserializeOwned + Clone + Debug,
{
    let namespace = object.meta().namespace.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&object.name_any(), &params, &Patch::Apply(object)).await.map_err(|source| Error::Apply {
        kind: K::kind(&()).into_owned(),
        name: object.name_any(),
        source,
    })
}

/// Server-side applies the status of `object`.
async fn apply_status<K>(client: &Client, object: &K, status: impl Serialize) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + DeserializeOwned + Clone + Debug,
{
    let namespace = object.namespace().ok_or(Error::NoNamespace { kind: "object" })?;
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": serde_json::to_value(status)?,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&object.name_any(), &params, &Patch::Apply(&body)).await?;
    Ok(())
}

/// How long to wait before trying again after `error`.
pub fn retry_delay(error: &Error) -> Duration {
    if error.is_conflict() {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(15)
    }
}

/// Periodic re-check of a healthy resource, to notice drift no watch reports.
pub const RESYNC: Duration = Duration::from_secs(300);
/// Re-check of a resource that waits for something (pods starting, a missing reference).
pub const WAIT: Duration = Duration::from_secs(15);

fn error_policy<K: ResourceExt>(kind: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |object, error, ctx| {
        ctx.metrics.reconcile_failed(kind, error.label());
        tracing::warn!(kind, name = %object.name_any(), namespace = ?object.namespace(), %error, "reconcile failed");
        Action::requeue(retry_delay(error))
    }
}

fn api_for<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the three controllers over `namespace` (all namespaces when `None`) until `shutdown`.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>, shutdown: CancellationToken) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let config = watcher::Config::default();

    let clusters = Controller::new(api_for::<Cluster>(&client, ns), config.clone())
        .owns(api_for::<StatefulSet>(&client, ns), config.clone())
        .owns(api_for::<ConfigMap>(&client, ns), config.clone())
        .owns(api_for::<Service>(&client, ns), config.clone())
        .owns(api_for::<PodDisruptionBudget>(&client, ns), config.clone())
        .watches(api_for::<Exporter>(&client, ns), config.clone(), |exporter| {
            let namespace = exporter.namespace()?;
            Some(ObjectRef::<Cluster>::new(&exporter.spec.cluster_ref.name).within(&namespace))
        })
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconcile_cluster, error_policy("Cluster"), ctx.clone())
        .for_each(|_| async {});

    let gateway_controller = Controller::new(api_for::<Gateway>(&client, ns), config.clone());
    let gateways_store = gateway_controller.store();
    let gateways = gateway_controller
        .owns(api_for::<Deployment>(&client, ns), config.clone())
        .owns(api_for::<Service>(&client, ns), config.clone())
        .watches(api_for::<Cluster>(&client, ns), config.clone(), move |cluster| {
            referencing(&gateways_store.state(), &cluster, |g: &Gateway| &g.spec.cluster_ref.name)
        })
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconcile_gateway, error_policy("Gateway"), ctx.clone())
        .for_each(|_| async {});

    let exporter_controller = Controller::new(api_for::<Exporter>(&client, ns), config.clone());
    let exporters_store = exporter_controller.store();
    let exporters = exporter_controller
        .watches(api_for::<Cluster>(&client, ns), config, move |cluster| {
            referencing(&exporters_store.state(), &cluster, |e: &Exporter| &e.spec.cluster_ref.name)
        })
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile_exporter, error_policy("Exporter"), ctx)
        .for_each(|_| async {});

    futures::join!(clusters, gateways, exporters);
}

/// The objects in `store` of the same namespace as `cluster` whose cluster reference names it.
fn referencing<K>(store: &[Arc<K>], cluster: &Cluster, cluster_of: impl Fn(&K) -> &String) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    store
        .iter()
        .filter(|o| o.meta().namespace == cluster.namespace() && cluster_of(o) == &cluster.name_any())
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}
