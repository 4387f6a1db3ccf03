//! Names, labels and owner references shared by the builders.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// The one field manager under which every server-side apply of the operator is made.
pub const FIELD_MANAGER: &str = "waggle-operator";

/// Settings of the operator that the builders need, fixed at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defaults {
    /// Image repository (without tag) used when a resource names none.
    pub image: String,
}

/// The labels that select a cluster's broker pods; they never change over the cluster's life.
pub fn cluster_selector_labels(cluster: &str) -> BTreeMap<String, String> {
    selector(cluster, "broker")
}

/// The labels that select a gateway's pods.
pub fn gateway_selector_labels(gateway: &str) -> BTreeMap<String, String> {
    selector(gateway, "gateway")
}

fn selector(instance: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "waggle".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), instance.to_owned()),
        ("app.kubernetes.io/component".to_owned(), component.to_owned()),
    ])
}

/// Selector labels plus the descriptive ones that may change (version).
pub(crate) fn standard_labels(selector: BTreeMap<String, String>, version: &str) -> BTreeMap<String, String> {
    let mut labels = selector;
    labels.insert("app.kubernetes.io/part-of".to_owned(), "waggle".to_owned());
    labels.insert("app.kubernetes.io/managed-by".to_owned(), FIELD_MANAGER.to_owned());
    labels.insert("app.kubernetes.io/version".to_owned(), version.to_owned());
    labels
}

/// A label selector in the string form the scale subresource reports.
pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

pub(crate) fn object_meta(
    name: String,
    namespace: &str,
    labels: BTreeMap<String, String>,
    owner: OwnerReference,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    }
}
