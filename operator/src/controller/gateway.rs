//! Reconciling a `Gateway`: its Deployment and Service, once its Cluster exists.
//!
//! A Gateway whose Cluster is missing creates nothing and says so in its status; the watch on
//! Clusters brings it back here as soon as the Cluster appears.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::{apply, apply_status, Context, Error, RESYNC, WAIT};
use crate::builders::{gateway_selector_labels, selector_string, GatewayObjects};
use crate::crd::{Cluster, Gateway, GatewayStatus};
use crate::status::{conditions, replicas_health, transition, Health, Replicas};

const KIND: &str = "Gateway";

pub async fn reconcile_gateway(gateway: Arc<Gateway>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.start_reconcile(KIND);
    let namespace = gateway.namespace().ok_or(Error::NoNamespace { kind: KIND })?;
    let cluster_name = &gateway.spec.cluster_ref.name;
    let clusters: Api<Cluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(cluster) = clusters.get_opt(cluster_name).await? else {
        let health = Health::degraded(
            "ClusterNotFound",
            format!("Cluster {cluster_name} does not exist in namespace {namespace}; waiting for it"),
        );
        report(&ctx, &gateway, health, Replicas::default()).await?;
        return Ok(Action::requeue(WAIT));
    };

    let objects = GatewayObjects::build(&gateway, &cluster, &ctx.defaults)?;
    let applied = async {
        let deployment = apply(&ctx.client, &objects.deployment).await?;
        apply(&ctx.client, &objects.service).await?;
        Ok::<_, Error>(deployment)
    }
    .await;
    let deployment = match applied {
        Ok(deployment) => deployment,
        Err(error) => {
            if !error.is_conflict() {
                let health = Health::degraded("ApplyFailed", error.to_string());
                if let Err(status_error) = report(&ctx, &gateway, health, Replicas::default()).await {
                    tracing::warn!(%status_error, "could not report the failure in the status");
                }
            }
            return Err(error);
        }
    };

    let observed = deployment.status.clone().unwrap_or_default();
    let replicas = Replicas {
        desired: gateway.spec.replicas,
        current: observed.updated_replicas.unwrap_or(0).min(observed.replicas.unwrap_or(0)),
        ready: observed.ready_replicas.unwrap_or(0),
        updated: observed.updated_replicas.unwrap_or(0),
        observed: observed.observed_generation >= deployment.metadata.generation,
    };
    let previous = gateway.status.clone().unwrap_or_default().conditions;
    let health = replicas_health(replicas, "gateways", &previous);
    let ready = matches!(health, Health::Ready { .. });
    report(&ctx, &gateway, health, replicas).await?;
    Ok(Action::requeue(if ready { RESYNC } else { WAIT }))
}

async fn report(ctx: &Context, gateway: &Gateway, health: Health, replicas: Replicas) -> Result<(), Error> {
    let previous = gateway.status.clone().unwrap_or_default();
    let generation = gateway.metadata.generation;
    let name = gateway.name_any();
    let status = GatewayStatus {
        observed_generation: generation,
        conditions: conditions(&previous.conditions, &health, generation, &Time(Timestamp::now())),
        replicas: replicas.current,
        ready_replicas: replicas.ready,
        selector: selector_string(&gateway_selector_labels(&name)),
        grpc_address: format!(
            "{name}.{}.svc:{}",
            gateway.namespace().unwrap_or_default(),
            gateway.spec.service.grpc_port
        ),
    };
    apply_status(&ctx.client, gateway, status).await?;
    if let Some(event) = transition(&previous.conditions, &health) {
        ctx.publish(gateway, "Reconcile", event).await;
    }
    Ok(())
}
