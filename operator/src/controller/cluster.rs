//! Reconciling a `Cluster`: broker configuration (with its Exporters), headless Service, StatefulSet
//! and PodDisruptionBudget.
//!
//! StatefulSet volume claim templates are immutable, yet `storage.size` may grow. When it does, the
//! reconciler expands each broker's PersistentVolumeClaim, deletes the StatefulSet with orphaning
//! (the pods keep running) and lets the next round create it again with the new template, which
//! adopts the running pods.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::{apply, apply_status, Context, Error, RESYNC, WAIT};
use crate::builders::{cluster_selector_labels, render_broker_config, selector_string, BuildError, ClusterObjects};
use crate::crd::{Cluster, ClusterStatus, Exporter};
use crate::status::{conditions, replicas_health, transition, Health, Replicas};

const KIND: &str = "Cluster";

pub async fn reconcile_cluster(cluster: Arc<Cluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.start_reconcile(KIND);
    let namespace = cluster.namespace().ok_or(Error::NoNamespace { kind: KIND })?;
    let name = cluster.name_any();

    let exporters: Vec<Exporter> = Api::<Exporter>::namespaced(ctx.client.clone(), &namespace)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.spec.cluster_ref.name == name)
        .filter(|e| render_broker_config(None, std::slice::from_ref(e)).is_ok())
        .collect();

    let objects = match ClusterObjects::build(&cluster, &exporters, &ctx.defaults) {
        Ok(objects) => objects,
        Err(BuildError::Config(error)) => {
            let health = Health::degraded("InvalidConfig", error.to_string());
            report(&ctx, &cluster, health, None, None).await?;
            return Ok(Action::await_change());
        }
        Err(error) => return Err(error.into()),
    };

    match expand_volumes(&ctx, &namespace, &objects.stateful_set).await {
        Ok(None) => {}
        Ok(Some(health)) => {
            report(&ctx, &cluster, health, None, Some(&objects)).await?;
            return Ok(Action::requeue(std::time::Duration::from_secs(2)));
        }
        Err(error) => return Err(fail(&ctx, &cluster, error).await),
    }

    let stateful_set = match apply_children(&ctx, &objects).await {
        Ok(stateful_set) => stateful_set,
        Err(error) => return Err(fail(&ctx, &cluster, error).await),
    };

    let observed = stateful_set.status.clone().unwrap_or_default();
    let replicas = Replicas {
        desired: cluster.spec.brokers,
        current: observed.replicas,
        ready: observed.ready_replicas.unwrap_or(0),
        updated: observed.updated_replicas.unwrap_or(0),
        observed: observed.observed_generation >= stateful_set.metadata.generation,
    };
    let previous = cluster.status.clone().unwrap_or_default().conditions;
    let health = replicas_health(replicas, "brokers", &previous);
    let ready = matches!(health, Health::Ready { .. });
    report(&ctx, &cluster, health, Some(replicas), Some(&objects)).await?;
    Ok(Action::requeue(if ready { RESYNC } else { WAIT }))
}

async fn apply_children(ctx: &Context, objects: &ClusterObjects) -> Result<StatefulSet, Error> {
    apply(&ctx.client, &objects.config_map).await?;
    apply(&ctx.client, &objects.service).await?;
    let stateful_set = apply(&ctx.client, &objects.stateful_set).await?;
    apply(&ctx.client, &objects.pdb).await?;
    Ok(stateful_set)
}

/// Reports a failed write as Degraded (unless it was a conflict, which is no news about the
/// cluster) and hands the error back for the retry.
async fn fail(ctx: &Context, cluster: &Cluster, error: Error) -> Error {
    if !error.is_conflict() {
        let health = Health::degraded("ApplyFailed", error.to_string());
        if let Err(status_error) = report(ctx, cluster, health, None, None).await {
            tracing::warn!(%status_error, "could not report the failure in the status");
        }
    }
    error
}

fn storage_request(stateful_set: &StatefulSet) -> Option<String> {
    let claim = stateful_set.spec.as_ref()?.volume_claim_templates.as_ref()?.first()?;
    let requests = claim.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?;
    requests.get("storage").map(|q| q.0.clone())
}

/// Starts growing the brokers' volumes when the desired size differs from the existing StatefulSet's
/// template. Returns the health to report while that happens, or `None` when there is nothing to do.
async fn expand_volumes(ctx: &Context, namespace: &str, desired: &StatefulSet) -> Result<Option<Health>, Error> {
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), namespace);
    let name = desired.name_any();
    let Some(existing) = api.get_opt(&name).await? else {
        return Ok(None);
    };
    if existing.metadata.deletion_timestamp.is_some() {
        return Ok(Some(Health::progressing("ExpandingVolumes", "waiting for the old StatefulSet to go")));
    }
    let (Some(size), Some(old)) = (storage_request(desired), storage_request(&existing)) else {
        return Ok(None);
    };
    if size == old {
        return Ok(None);
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({ "spec": { "resources": { "requests": { "storage": size } } } });
    let replicas = existing.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    for ordinal in 0..replicas {
        let claim = format!("data-{name}-{ordinal}");
        match claims.patch(&claim, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    api.delete(&name, &DeleteParams::orphan()).await?;
    Ok(Some(Health::progressing("ExpandingVolumes", format!("growing broker volumes from {old} to {size}"))))
}

async fn report(
    ctx: &Context,
    cluster: &Cluster,
    health: Health,
    replicas: Option<Replicas>,
    objects: Option<&ClusterObjects>,
) -> Result<(), Error> {
    let previous = cluster.status.clone().unwrap_or_default();
    let generation = cluster.metadata.generation;
    let now = Time(Timestamp::now());
    let replicas = replicas.unwrap_or(Replicas {
        current: previous.brokers,
        ready: previous.ready_brokers,
        ..Replicas::default()
    });
    let status = ClusterStatus {
        observed_generation: generation,
        conditions: conditions(&previous.conditions, &health, generation, &now),
        brokers: replicas.current,
        ready_brokers: replicas.ready,
        selector: selector_string(&cluster_selector_labels(&cluster.name_any())),
        exporters: objects.map(|o| o.config.exporters.clone()).unwrap_or(previous.exporters.clone()),
        config_hash: objects.map(|o| o.config.hash.clone()).unwrap_or(previous.config_hash.clone()),
        progress: health.message().to_owned(),
    };
    apply_status(&ctx.client, cluster, status).await?;
    if let Some(event) = transition(&previous.conditions, &health) {
        ctx.publish(cluster, "Reconcile", event).await;
    }
    Ok(())
}
