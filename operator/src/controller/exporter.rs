//! Reconciling an `Exporter`: it owns no objects (the Cluster reconciler writes its configuration),
//! so this only checks its settings and reports, from the Cluster's status, whether the brokers run
//! it. Being written into the ConfigMap is not enough: the Exporter is Ready only once its Cluster
//! is Ready on the configuration that contains it, i.e. every broker has restarted with it. A broker
//! that cannot start with it (for example because a Secret it names is missing) keeps the Cluster,
//! and so the Exporter, from being Ready.
//!
//! The operator never reads Secrets (least privilege: credentials are passed to the brokers by
//! reference). So to say *why* such an Exporter is not Ready, it reads what the kubelet reports
//! instead: a broker Pod whose container waits with `CreateContainerConfigError` naming one of
//! the Exporter's Secrets makes the Exporter Degraded with that message.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::{apply_status, Context, Error, RESYNC, WAIT};
use crate::builders::{cluster_selector_labels, render_broker_config, selector_string};
use crate::crd::{AppliedTo, Cluster, Exporter, ExporterStatus};
use crate::status::{conditions, is_true, transition, Health, READY};

const KIND: &str = "Exporter";

pub async fn reconcile_exporter(exporter: Arc<Exporter>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.start_reconcile(KIND);
    let namespace = exporter.namespace().ok_or(Error::NoNamespace { kind: KIND })?;
    let name = exporter.name_any();
    let cluster_name = &exporter.spec.cluster_ref.name;

    if let Err(error) = render_broker_config(None, std::slice::from_ref(exporter.as_ref())) {
        let health = Health::degraded("InvalidSettings", error.to_string());
        report(&ctx, &exporter, health, None).await?;
        return Ok(Action::await_change());
    }

    let clusters: Api<Cluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(cluster) = clusters.get_opt(cluster_name).await? else {
        let health = Health::degraded(
            "ClusterNotFound",
            format!("Cluster {cluster_name} does not exist in namespace {namespace}; waiting for it"),
        );
        report(&ctx, &exporter, health, None).await?;
        return Ok(Action::requeue(WAIT));
    };

    let cluster_status = cluster.status.clone().unwrap_or_default();
    let config_map = crate::builders::config_map_name(cluster_name);
    let (health, applied_to) = if !exporter.spec.enabled {
        (Health::ready("Disabled", format!("disabled; left out of Cluster {cluster_name}'s configuration")), None)
    } else if !cluster_status.exporters.contains(&name) {
        (Health::progressing("Pending", format!("waiting for Cluster {cluster_name} to take the configuration")), None)
    } else if let Some(problem) = missing_secret(&ctx, &exporter, &namespace, cluster_name).await? {
        (Health::degraded("SecretMissing", problem), None)
    } else if !is_true(&cluster_status.conditions, READY) {
        (
            Health::progressing(
                "Loading",
                format!(
                    "configured in ConfigMap {config_map}, waiting for Cluster {cluster_name}'s brokers to run it ({})",
                    cluster_status.progress
                ),
            ),
            None,
        )
    } else {
        let applied = AppliedTo {
            cluster: cluster_name.clone(),
            config_map: config_map.clone(),
            config_hash: cluster_status.config_hash.clone(),
        };
        (
            Health::ready(
                "Loaded",
                format!("every broker of Cluster {cluster_name} runs the configuration in ConfigMap {config_map}"),
            ),
            Some(applied),
        )
    };
    let ready = matches!(health, Health::Ready { .. });
    report(&ctx, &exporter, health, applied_to).await?;
    Ok(Action::requeue(if ready { RESYNC } else { WAIT }))
}

/// Why a broker Pod of the Cluster cannot start for want of a Secret this Exporter names, if one
/// cannot: the kubelet's own words (`secret "x" not found`, `couldn't find key k in Secret ns/x`).
async fn missing_secret(
    ctx: &Context,
    exporter: &Exporter,
    namespace: &str,
    cluster_name: &str,
) -> Result<Option<String>, Error> {
    let secrets = &exporter.spec.secret_settings;
    if secrets.is_empty() {
        return Ok(None);
    }
    let selector = selector_string(&cluster_selector_labels(cluster_name));
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let pods = pods.list(&ListParams::default().labels(&selector)).await?;
    for pod in &pods.items {
        let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
        let waiting = statuses.into_iter().flatten().filter_map(|c| c.state.as_ref()?.waiting.as_ref());
        for waiting in waiting {
            if waiting.reason.as_deref() != Some("CreateContainerConfigError") {
                continue;
            }
            let message = waiting.message.as_deref().unwrap_or_default();
            let named = secrets.iter().find(|s| names_secret(message, namespace, &s.secret_key_ref.name));
            if let Some(setting) = named {
                return Ok(Some(format!(
                    "broker Pod {} cannot start: {message} (setting {} of this Exporter refers to it); create the \
                     Secret and the broker starts by itself",
                    pod.name_any(),
                    setting.name
                )));
            }
        }
    }
    Ok(None)
}

/// Whether a kubelet message is about the Secret `name`: `secret "name" not found`, or
/// `couldn't find key k in Secret namespace/name`.
fn names_secret(message: &str, namespace: &str, name: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains(&format!("secret \"{name}\"")) || message.ends_with(&format!("secret {namespace}/{name}"))
}

async fn report(
    ctx: &Context,
    exporter: &Exporter,
    health: Health,
    applied_to: Option<AppliedTo>,
) -> Result<(), Error> {
    let previous = exporter.status.clone().unwrap_or_default();
    let generation = exporter.metadata.generation;
    let status = ExporterStatus {
        observed_generation: generation,
        conditions: conditions(&previous.conditions, &health, generation, &Time(Timestamp::now())),
        applied_to,
    };
    apply_status(&ctx.client, exporter, status).await?;
    if let Some(event) = transition(&previous.conditions, &health) {
        ctx.publish(exporter, "Reconcile", event).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::names_secret;

    #[test]
    fn kubelet_messages_name_the_secret_they_miss() {
        assert!(names_secret(r#"secret "audit-db" not found"#, "shop", "audit-db"));
        assert!(names_secret("couldn't find key password in Secret shop/audit-db", "shop", "audit-db"));
        assert!(!names_secret(r#"secret "audit-db-2" not found"#, "shop", "audit-db"));
        assert!(!names_secret("couldn't find key password in Secret shop/audit-db-2", "shop", "audit-db"));
        assert!(!names_secret(r#"configmap "audit-db" not found"#, "shop", "audit-db"));
    }
}
