//! `Cluster`: a group of brokers that together host the partitions of one Waggle cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, ResourceRequirements, Toleration, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{free_form_object, quantity_string};

/// Desired state of a Waggle cluster.
///
/// `partitions` and `storage.storageClassName` cannot change yet (moving data between partition
/// layouts or storage classes needs orchestration that does not exist), and `storage.size` may only
/// grow, because volumes can be expanded but not shrunk.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "waggle.dev",
    version = "v1alpha1",
    kind = "Cluster",
    namespaced,
    status = "ClusterStatus",
    shortname = "wcl",
    category = "waggle",
    doc = "A Waggle cluster: brokers hosting replicated partitions",
    scale(
        spec_replicas_path = ".spec.brokers",
        status_replicas_path = ".status.brokers",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Brokers", type_ = "integer", json_path = ".spec.brokers"),
    printcolumn(name = "Ready Brokers", type_ = "integer", json_path = ".status.readyBrokers"),
    printcolumn(name = "Partitions", type_ = "integer", json_path = ".spec.partitions"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self.replicationFactor <= self.brokers").message("replicationFactor must not exceed brokers").field_path(".replicationFactor"))]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Number of brokers (StatefulSet replicas).
    #[schemars(range(min = 1, max = 255))]
    pub brokers: i32,
    /// Number of partitions; fixed at creation.
    #[schemars(range(min = 1, max = 8192))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("partitions is immutable"))]
    pub partitions: i32,
    /// Number of replicas of each partition; at most `brokers`.
    #[schemars(range(min = 1, max = 7))]
    pub replication_factor: i32,
    /// Waggle version: the image tag the brokers run.
    #[schemars(length(min = 1, max = 128))]
    pub version: String,
    /// Image repository without tag; the operator's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Pull policy for the broker image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// CPU and memory of each broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Persistent volume of each broker.
    pub storage: StorageSpec,
    /// Extra broker settings, written into the broker's TOML file as given. Keys the operator owns
    /// (cluster shape, peers, data directory, exporters) are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "broker_config_schema")]
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
    /// Additions to the broker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplateOverrides>,
}

/// Image pull policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// The broker configuration keys that the operator sets itself.
pub const RESERVED_CONFIG_KEYS: &[&str] =
    &["node_id", "cluster_size", "partitions", "replication_factor", "peers", "data_dir", "exporters"];

/// The schema of `spec.config`: any object, except that the reserved keys are refused.
///
/// CEL cannot look into an object that only has `x-kubernetes-preserve-unknown-fields` (the API server
/// gives it no type, so `k in self` and `has(self.k)` do not compile). Declaring each reserved key as
/// a typed property makes `has(self.<key>)` legal while every other key is still kept as written; a
/// reserved key of the wrong type is refused by its type instead of by the rule.
fn broker_config_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = free_form_object(generator);
    let properties: serde_json::Map<String, serde_json::Value> =
        RESERVED_CONFIG_KEYS.iter().map(|key| ((*key).to_owned(), reserved_key_schema(key))).collect();
    let rule = RESERVED_CONFIG_KEYS.iter().map(|key| format!("!has(self.{key})")).collect::<Vec<_>>().join(" && ");
    schema.insert("properties".into(), properties.into());
    schema.insert(
        "x-kubernetes-validations".into(),
        serde_json::json!([{
            "rule": rule,
            "message": format!("config must not set keys the operator owns: {}", RESERVED_CONFIG_KEYS.join(", "))
        }]),
    );
    schema
}

/// The type the broker gives a reserved key, so the declared property matches what users would write.
fn reserved_key_schema(key: &str) -> serde_json::Value {
    let description = "Owned by the operator; refused here.";
    match key {
        "peers" => serde_json::json!({"type": "array", "items": {"type": "string"}, "description": description}),
        "data_dir" => serde_json::json!({"type": "string", "description": description}),
        "exporters" => serde_json::json!({
            "type": "object", "x-kubernetes-preserve-unknown-fields": true, "description": description
        }),
        _ => serde_json::json!({"type": "integer", "description": description}),
    }
}

/// Persistent storage of each broker.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)").message("storageClassName is immutable"))]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Volume size, e.g. `10Gi`; may only grow.
    #[schemars(schema_with = "quantity_string")]
    #[x_kube(validation = Rule::new("quantity(self).compareTo(quantity(oldSelf)) >= 0").message("storage size may only grow"))]
    pub size: String,
    /// Storage class; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// Additions to the pods of brokers (and, for labels and annotations, nothing else).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateOverrides {
    /// Extra pod labels; the operator's own labels win on conflict.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Replaces the default soft anti-affinity between brokers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Extra environment variables for the broker container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

/// Observed state of a Waggle cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing and Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Brokers the StatefulSet currently has (the scale subresource's status).
    #[serde(default)]
    pub brokers: i32,
    /// Brokers that pass their readiness probe.
    #[serde(default)]
    pub ready_brokers: i32,
    /// Label selector of the broker pods (the scale subresource's selector).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    /// Names of the Exporters whose configuration the brokers carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exporters: Vec<String>,
    /// Hash of the broker configuration the pod template carries.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub config_hash: String,
    /// What the operator is doing now, in words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub progress: String,
}
