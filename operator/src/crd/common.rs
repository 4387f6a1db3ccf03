//! Schema pieces shared by several resources.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Points at a `Cluster` in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReference {
    /// Name of the `Cluster` in this namespace.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
}

/// One key of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyReference {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// A schema for free-form settings: any JSON object, kept as written.
///
/// Kubernetes needs `x-kubernetes-preserve-unknown-fields` for such fields; a plain
/// `serde_json::Value` schema would not be structural.
pub(crate) fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// A schema for a Kubernetes quantity kept as a string, so CEL can call `quantity()` on it.
pub(crate) fn quantity_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "pattern": "^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$",
        "x-kubernetes-validations": [
            { "rule": "isQuantity(self)", "message": "must be a Kubernetes quantity such as 10Gi" }
        ]
    })
}
