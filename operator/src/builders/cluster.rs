//! A `Cluster` becomes a ConfigMap, a headless Service, a StatefulSet of brokers and a
//! PodDisruptionBudget.
//!
//! Choices worth knowing:
//! - The node id is the pod's StatefulSet ordinal. Kubernetes 1.28+ publishes it as the
//!   `apps.kubernetes.io/pod-index` label, read through the downward API; older API servers lack the
//!   label (the downward API then gives an empty string), so the container starts through the image's
//!   `/bin/sh`, which falls back to the ordinal at the end of the pod name (`<set>-<ordinal>`, the
//!   StatefulSet naming contract) before it `exec`s `waggle broker`. Likewise the address a broker
//!   advertises to gateways is its stable DNS name, built from the pod name by Kubernetes' `$(VAR)`
//!   expansion.
//! - Pods start in parallel: a broker only becomes ready once its partitions have a quorum, so
//!   ordered start-up would wait forever for broker 0.
//! - The headless Service publishes not-ready addresses, so brokers find each other while forming.
//! - Updates are `OnDelete`: the operator, not the StatefulSet controller, decides when a broker
//!   restarts. The pod template carries the configuration hash, so an outdated pod is recognisable.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretKeySelector, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use super::broker_config::{render_broker_config, BrokerConfig, ConfigError};
use super::meta::{cluster_selector_labels, object_meta, standard_labels, Defaults};
use super::ports;
use crate::crd::{Cluster, Exporter};

const CONFIG_FILE: &str = "broker.toml";
const CONFIG_DIR: &str = "/etc/waggle";
const DATA_MOUNT: &str = "/var/lib/waggle";
const DATA_VOLUME: &str = "data";
/// Annotation on the pod template naming the configuration the pods were made for.
pub const CONFIG_HASH_ANNOTATION: &str = "waggle.dev/config-hash";
/// The broker's entrypoint: the node id from the `pod-index` label when the API server sets it
/// (1.28+), otherwise the ordinal that ends the pod name; then the broker with the container's args.
pub const NODE_ID_FALLBACK: &str =
    r#"export WAGGLE_NODE_ID="${WAGGLE_NODE_ID:-${POD_NAME##*-}}"; exec waggle broker "$@""#;
/// Non-root user and group of the `waggle` image.
const RUN_AS: i64 = 10001;

/// Why a Cluster cannot be turned into objects.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BuildError {
    #[error("the Cluster has no {0}; only stored objects can be built")]
    MissingMetadata(&'static str),
    #[error("broker configuration: {0}")]
    Config(#[from] ConfigError),
}

/// Everything a Cluster becomes.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterObjects {
    pub config: BrokerConfig,
    pub config_map: ConfigMap,
    pub service: Service,
    pub stateful_set: StatefulSet,
    pub pdb: PodDisruptionBudget,
}

impl ClusterObjects {
    /// Builds every child of `cluster`, with the configuration of the given Exporters (those that
    /// reference the cluster; the caller selects them).
    pub fn build(cluster: &Cluster, exporters: &[Exporter], defaults: &Defaults) -> Result<Self, BuildError> {
        let config = render_broker_config(cluster.spec.config.as_ref(), exporters)?;
        Ok(ClusterObjects {
            config_map: build_config_map(cluster, &config)?,
            service: build_headless_service(cluster)?,
            stateful_set: build_stateful_set(cluster, &config, defaults)?,
            pdb: build_pdb(cluster)?,
            config,
        })
    }
}

struct Identity {
    name: String,
    namespace: String,
    owner: OwnerReference,
}

fn identity(cluster: &Cluster) -> Result<Identity, BuildError> {
    let namespace = cluster.namespace().ok_or(BuildError::MissingMetadata("namespace"))?;
    let owner = cluster.controller_owner_ref(&()).ok_or(BuildError::MissingMetadata("name or uid"))?;
    Ok(Identity { name: cluster.name_any(), namespace, owner })
}

/// Name of the StatefulSet, its headless Service and its PDB.
pub fn broker_set_name(cluster: &str) -> String {
    format!("{cluster}-broker")
}

/// Name of the ConfigMap holding `broker.toml`.
pub fn config_map_name(cluster: &str) -> String {
    format!("{cluster}-broker-config")
}

/// Stable DNS names of the brokers, `host:port` in node-id order.
pub fn broker_addresses(cluster: &str, namespace: &str, brokers: i32, port: i32) -> Vec<String> {
    let set = broker_set_name(cluster);
    (0..brokers).map(|i| format!("{set}-{i}.{set}.{namespace}.svc:{port}")).collect()
}

fn labels(cluster: &Cluster, name: &str) -> BTreeMap<String, String> {
    standard_labels(cluster_selector_labels(name), &cluster.spec.version)
}

pub fn build_config_map(cluster: &Cluster, config: &BrokerConfig) -> Result<ConfigMap, BuildError> {
    let id = identity(cluster)?;
    Ok(ConfigMap {
        metadata: object_meta(config_map_name(&id.name), &id.namespace, labels(cluster, &id.name), id.owner),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_owned(), config.toml.clone())])),
        ..ConfigMap::default()
    })
}

pub fn build_headless_service(cluster: &Cluster) -> Result<Service, BuildError> {
    let id = identity(cluster)?;
    let port = |name: &str, number: i32| ServicePort {
        name: Some(name.to_owned()),
        port: number,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    };
    Ok(Service {
        metadata: object_meta(broker_set_name(&id.name), &id.namespace, labels(cluster, &id.name), id.owner),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(cluster_selector_labels(&id.name)),
            ports: Some(vec![
                port("command", ports::BROKER_COMMAND),
                port("internal", ports::BROKER_INTERNAL),
                port("management", ports::MANAGEMENT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

pub fn build_pdb(cluster: &Cluster) -> Result<PodDisruptionBudget, BuildError> {
    let id = identity(cluster)?;
    Ok(PodDisruptionBudget {
        metadata: object_meta(broker_set_name(&id.name), &id.namespace, labels(cluster, &id.name), id.owner),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(cluster_selector_labels(&id.name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.to_owned(), value: Some(value.into()), ..EnvVar::default() }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("management".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(3),
        ..Probe::default()
    }
}

/// Probes on the management port, shared by brokers and gateways. Start-up may take long (log
/// replay), so the startup probe allows ten minutes before liveness takes over.
pub(crate) fn management_probes() -> (Probe, Probe, Probe) {
    (http_probe("/health/startup", 5, 120), http_probe("/health/live", 10, 3), http_probe("/health/ready", 5, 3))
}

/// The container security settings of every Waggle container: non-root, read-only root file system,
/// no privilege escalation, no capabilities.
pub(crate) fn restricted_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), ..Capabilities::default() }),
        ..SecurityContext::default()
    }
}

pub(crate) fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        fs_group: Some(RUN_AS),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_owned(), ..SeccompProfile::default() }),
        ..PodSecurityContext::default()
    }
}

pub(crate) fn tmp_volume() -> (Volume, VolumeMount) {
    (
        Volume { name: "tmp".to_owned(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() },
        VolumeMount { name: "tmp".to_owned(), mount_path: "/tmp".to_owned(), ..VolumeMount::default() },
    )
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

fn soft_anti_affinity(selector: BTreeMap<String, String>) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: PodAffinityTerm {
                    topology_key: "kubernetes.io/hostname".to_owned(),
                    label_selector: Some(LabelSelector { match_labels: Some(selector), ..LabelSelector::default() }),
                    ..PodAffinityTerm::default()
                },
            }]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

pub fn build_stateful_set(
    cluster: &Cluster,
    config: &BrokerConfig,
    defaults: &Defaults,
) -> Result<StatefulSet, BuildError> {
    let id = identity(cluster)?;
    let spec = &cluster.spec;
    let overrides = spec.pod_template.clone().unwrap_or_default();
    let set_name = broker_set_name(&id.name);
    let selector = cluster_selector_labels(&id.name);
    let labels = labels(cluster, &id.name);

    let peers = broker_addresses(&id.name, &id.namespace, spec.brokers, ports::BROKER_INTERNAL).join(",");
    let field = |name: &str, path: &str| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.to_owned(), ..ObjectFieldSelector::default() }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let mut env_vars = vec![
        field("POD_NAME", "metadata.name"),
        field("WAGGLE_NODE_ID", "metadata.labels['apps.kubernetes.io/pod-index']"),
        env(
            "WAGGLE_ADVERTISED_COMMAND_ADDR",
            format!("$(POD_NAME).{set_name}.{}.svc:{}", id.namespace, ports::BROKER_COMMAND),
        ),
        env("WAGGLE_CLUSTER_SIZE", spec.brokers.to_string()),
        env("WAGGLE_PARTITIONS", spec.partitions.to_string()),
        env("WAGGLE_REPLICATION_FACTOR", spec.replication_factor.to_string()),
        env("WAGGLE_PEERS", peers),
        env("WAGGLE_DATA_DIR", format!("{DATA_MOUNT}/data")),
    ];
    env_vars.extend(config.secret_env.iter().map(|(name, reference)| EnvVar {
        name: name.clone(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: reference.name.clone(),
                key: reference.key.clone(),
                ..SecretKeySelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }));
    env_vars.extend(overrides.env.iter().cloned());

    let (startup, liveness, readiness) = management_probes();
    let (tmp, tmp_mount) = tmp_volume();
    let image = format!("{}:{}", spec.image.as_deref().unwrap_or(&defaults.image), spec.version);
    let container = Container {
        name: "broker".to_owned(),
        image: Some(image),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        command: Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), NODE_ID_FALLBACK.to_owned(), "waggle".to_owned()]),
        args: Some(vec!["--config".to_owned(), format!("{CONFIG_DIR}/{CONFIG_FILE}")]),
        env: Some(env_vars),
        ports: Some(vec![
            container_port("command", ports::BROKER_COMMAND),
            container_port("internal", ports::BROKER_INTERNAL),
            container_port("management", ports::MANAGEMENT),
        ]),
        resources: spec.resources.clone(),
        startup_probe: Some(startup),
        liveness_probe: Some(liveness),
        readiness_probe: Some(readiness),
        security_context: Some(restricted_security_context()),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".to_owned(),
                mount_path: CONFIG_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount { name: DATA_VOLUME.to_owned(), mount_path: DATA_MOUNT.to_owned(), ..VolumeMount::default() },
            tmp_mount,
        ]),
        ..Container::default()
    };

    let mut pod_labels = overrides.labels.clone();
    pod_labels.extend(labels.clone());
    let mut pod_annotations = overrides.annotations.clone();
    pod_annotations.insert(CONFIG_HASH_ANNOTATION.to_owned(), config.hash.clone());

    let pod = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(pod_annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            security_context: Some(pod_security_context()),
            affinity: Some(overrides.affinity.clone().unwrap_or_else(|| soft_anti_affinity(selector.clone()))),
            topology_spread_constraints: non_empty(overrides.topology_spread_constraints.clone()),
            node_selector: non_empty_map(overrides.node_selector.clone()),
            tolerations: non_empty(overrides.tolerations.clone()),
            priority_class_name: overrides.priority_class_name.clone(),
            service_account_name: overrides.service_account_name.clone(),
            termination_grace_period_seconds: Some(60),
            volumes: Some(vec![
                Volume {
                    name: "config".to_owned(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: config_map_name(&id.name),
                        ..ConfigMapVolumeSource::default()
                    }),
                    ..Volume::default()
                },
                tmp,
            ]),
            ..PodSpec::default()
        }),
    };

    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_owned()),
            labels: Some(selector.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), Quantity(spec.storage.size.clone()))])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };

    Ok(StatefulSet {
        metadata: object_meta(set_name.clone(), &id.namespace, labels, id.owner),
        spec: Some(StatefulSetSpec {
            replicas: Some(spec.brokers),
            service_name: Some(set_name),
            pod_management_policy: Some("Parallel".to_owned()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_owned()),
                ..StatefulSetUpdateStrategy::default()
            }),
            selector: LabelSelector { match_labels: Some(selector), ..LabelSelector::default() },
            template: pod,
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    })
}

fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

fn non_empty_map(map: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!map.is_empty()).then_some(map)
}
