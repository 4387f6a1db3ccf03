//! The custom resources of the `waggle.dev/v1alpha1` API: [`Cluster`], [`Gateway`] and [`Exporter`].
//!
//! The Rust types are the single source of truth: the OpenAPI schemas, printer columns, subresources
//! and CEL rules in `crds/` are generated from them by the `crdgen` binary, so the validation that the
//! API server enforces and the types the reconcilers read can never disagree. Rules that Kubernetes can
//! check itself (ranges, required fields, immutability, "only grows") live in the schema rather than in
//! the reconcilers, so a bad change is refused at `kubectl apply` time instead of failing later.

// kube's `printcolumn(...)` arguments repeat keys by design; clippy reads them as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

mod cluster;
mod common;
mod exporter;
mod gateway;

pub use cluster::{
    Cluster, ClusterSpec, ClusterStatus, PodTemplateOverrides, PullPolicy, StorageSpec, RESERVED_CONFIG_KEYS,
};
pub use common::{ClusterReference, SecretKeyReference};
pub use exporter::{AppliedTo, Exporter, ExporterKind, ExporterSpec, ExporterStatus, SecretSetting};
pub use gateway::{Gateway, GatewayService, GatewaySpec, GatewayStatus, ServiceType};

/// The API group of every Waggle resource.
pub const GROUP: &str = "waggle.dev";

/// The category that `kubectl get waggle` lists.
pub const CATEGORY: &str = "waggle";
