//! `Exporter`: streams a cluster's records to an external store.
//!
//! An Exporter owns no workload: it becomes a `[exporters.<name>]` table in its cluster's broker
//! configuration, so the Cluster reconciler folds every Exporter that references the cluster into the
//! broker ConfigMap, and the Exporter's own status reports where (and whether) that happened.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{free_form_object, ClusterReference, SecretKeyReference};

/// Desired state of one exporter.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "waggle.dev",
    version = "v1alpha1",
    kind = "Exporter",
    namespaced,
    status = "ExporterStatus",
    shortname = "wex",
    category = "waggle",
    doc = "Streams the records of a Waggle Cluster to an external store",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterRef.name"),
    printcolumn(name = "Kind", type_ = "string", json_path = ".spec.kind"),
    printcolumn(name = "Enabled", type_ = "boolean", json_path = ".spec.enabled"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ExporterSpec {
    /// The Cluster whose records this exporter ships.
    pub cluster_ref: ClusterReference,
    /// Which exporter implementation the brokers run.
    pub kind: ExporterKind,
    /// Whether the brokers run it; a disabled exporter is left out of the configuration.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Settings of the exporter implementation (URL, index prefix, batch size, ...), as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub settings: Option<serde_json::Map<String, serde_json::Value>>,
    /// Settings whose values come from Secrets (passwords, tokens).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub secret_settings: Vec<SecretSetting>,
}

fn default_enabled() -> bool {
    true
}

/// Exporter implementations the brokers ship.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExporterKind {
    Postgres,
    Elasticsearch,
    Opensearch,
}

impl ExporterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExporterKind::Postgres => "postgres",
            ExporterKind::Elasticsearch => "elasticsearch",
            ExporterKind::Opensearch => "opensearch",
        }
    }
}

/// One setting whose value is read from a Secret and handed to the brokers as an environment variable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretSetting {
    /// Setting name, e.g. `password`.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z][a-z0-9_]*$"))]
    pub name: String,
    pub secret_key_ref: SecretKeyReference,
}

/// Observed state of one exporter.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExporterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Where the configuration was written, once it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_to: Option<AppliedTo>,
}

/// The broker configuration that carries an exporter.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedTo {
    pub cluster: String,
    /// ConfigMap holding the broker TOML.
    pub config_map: String,
    /// Hash of that configuration.
    pub config_hash: String,
}
