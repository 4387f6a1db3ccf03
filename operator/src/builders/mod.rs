//! Pure builders: a custom resource (plus what it references) in, Kubernetes objects out.
//!
//! Every object the operator writes is computed here, without I/O, the clock or randomness, so the
//! same spec always yields byte-identical objects. That is what makes server-side apply a no-op when
//! nothing changed, and what lets the tests pin the output with golden files.

mod broker_config;
mod cluster;
mod gateway;
mod meta;

pub use broker_config::{render_broker_config, secret_env_name, BrokerConfig, ConfigError};
pub use cluster::{
    broker_addresses, build_config_map, build_headless_service, build_pdb, build_stateful_set, config_map_name,
    BuildError, ClusterObjects,
};
pub use gateway::{build_deployment, build_service, GatewayBuildError, GatewayObjects};
pub use meta::{cluster_selector_labels, gateway_selector_labels, selector_string, Defaults, FIELD_MANAGER};

/// Ports of the broker and gateway processes, fixed by the `waggle` binary's defaults.
pub mod ports {
    pub const GATEWAY_GRPC: i32 = 26500;
    pub const BROKER_COMMAND: i32 = 26501;
    pub const BROKER_INTERNAL: i32 = 26502;
    pub const GATEWAY_REST: i32 = 8080;
    pub const MANAGEMENT: i32 = 9600;
}
