//! Waggle's Kubernetes operator.
//!
//! Platform teams declare `Cluster`, `Gateway` and `Exporter` resources; this crate turns them into
//! StatefulSets, Deployments, Services, ConfigMaps and PodDisruptionBudgets and reports back through
//! each resource's status. It is split so that most of it can be tested without an API server:
//!
//! - [`crd`]: the resource types, from which `crds/` is generated ([`crdgen`]).
//! - [`builders`]: pure functions from a resource to the objects it becomes.
//! - [`status`]: pure functions from what was observed to conditions.
//! - [`controller`]: the reconcilers that read, apply and report, tested against a mocked API server.
//! - [`leader`], [`metrics`], [`server`], [`settings`]: the operator process around them.

pub mod builders;
pub mod controller;
pub mod crd;
pub mod crdgen;
pub mod leader;
pub mod metrics;
pub mod server;
pub mod settings;
pub mod status;
