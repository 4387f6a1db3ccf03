//! Layered configuration: defaults, then a TOML file, then `WAGGLE_*` environment variables, then flags.
//!
//! clap already merges flags over environment variables; every such value is optional there so that a
//! value from the TOML file (`--config FILE`) can fill the gaps, and defaults fill the rest. The result
//! is validated once, before anything starts, and a bad value stops the process naming its key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use waggle_broker::BrokerConfig;
use waggle_broker::ProcessingLimits;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the configuration file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: `{key}` {problem}")]
    Invalid { key: &'static str, problem: String },
}

/// Broker settings from one layer: the TOML file (keys are the flags' names in snake case), or the
/// flags and environment variables. Unset values fall through to the next layer.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSettings {
    pub node_id: Option<u32>,
    pub cluster_size: Option<u32>,
    pub partitions: Option<u32>,
    pub replication_factor: Option<u32>,
    pub peers: Option<Vec<String>>,
    pub data_dir: Option<PathBuf>,
    pub internal_addr: Option<String>,
    pub command_addr: Option<String>,
    pub advertised_command_addr: Option<String>,
    pub management_addr: Option<String>,
    pub queue_capacity: Option<usize>,
    pub snapshot_interval: Option<u64>,
    pub snapshot_period: Option<u64>,
    pub max_steps_per_run: Option<u32>,
    pub max_deferrals_without_wait: Option<u32>,
    pub stall_timeout: Option<u64>,
    pub min_free_disk_bytes: Option<u64>,
    pub replication_min_free_disk_bytes: Option<u64>,
    pub dedup_window: Option<u64>,
    /// Exporter settings, written by the operator; this build ships no exporters yet, so the table is
    /// accepted and reported at start-up rather than silently dropped.
    pub exporters: Option<toml::Table>,
}

pub fn read_file(path: &Path) -> Result<BrokerSettings, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })
}

pub fn addr(key: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::Invalid { key, problem: format!("'{value}' is not an address like 127.0.0.1:26500") })
}

/// Merges flags and environment (`given`) over the file over defaults, and validates the result.
pub fn broker_config(given: BrokerSettings, file: BrokerSettings) -> Result<BrokerConfig, ConfigError> {
    if let Some(exporters) = file.exporters.as_ref().filter(|e| !e.is_empty()) {
        let names: Vec<&String> = exporters.keys().collect();
        tracing::warn!(
            ?names,
            "exporters are configured, but this build of Waggle ships no exporters yet: no records are exported"
        );
    }
    let min_free_disk_bytes = given.min_free_disk_bytes.or(file.min_free_disk_bytes).unwrap_or(256 * 1024 * 1024);
    let config = BrokerConfig {
        node_id: given.node_id.or(file.node_id).unwrap_or(0),
        cluster_size: given.cluster_size.or(file.cluster_size).unwrap_or(1),
        partitions: given.partitions.or(file.partitions).unwrap_or(1),
        replication_factor: given.replication_factor.or(file.replication_factor).unwrap_or(1),
        peers: given.peers.or(file.peers).unwrap_or_default(),
        data_dir: given.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("./data")),
        internal_addr: addr(
            "internal-addr",
            &given.internal_addr.or(file.internal_addr).unwrap_or_else(|| "0.0.0.0:26502".into()),
        )?,
        command_addr: addr(
            "command-addr",
            &given.command_addr.or(file.command_addr).unwrap_or_else(|| "0.0.0.0:26501".into()),
        )?,
        advertised_command_addr: given.advertised_command_addr.or(file.advertised_command_addr),
        management_addr: addr(
            "management-addr",
            &given.management_addr.or(file.management_addr).unwrap_or_else(|| "0.0.0.0:9600".into()),
        )?,
        queue_capacity: given.queue_capacity.or(file.queue_capacity).unwrap_or(4096),
        snapshot_interval: given.snapshot_interval.or(file.snapshot_interval).unwrap_or(10_000),
        snapshot_period: given
            .snapshot_period
            .or(file.snapshot_period)
            .map_or(waggle_broker::DEFAULT_SNAPSHOT_PERIOD, std::time::Duration::from_secs),
        stall_timeout: std::time::Duration::from_secs(given.stall_timeout.or(file.stall_timeout).unwrap_or(30)),
        min_free_disk_bytes,
        replication_min_free_disk_bytes: given
            .replication_min_free_disk_bytes
            .or(file.replication_min_free_disk_bytes)
            .unwrap_or(min_free_disk_bytes.min(64 * 1024 * 1024)),
        dedup_window: given
            .dedup_window
            .or(file.dedup_window)
            .map_or(waggle_broker::DEFAULT_DEDUP_WINDOW, std::time::Duration::from_secs),
        processing: {
            let defaults = ProcessingLimits::default();
            ProcessingLimits {
                max_steps_per_run: given
                    .max_steps_per_run
                    .or(file.max_steps_per_run)
                    .unwrap_or(defaults.max_steps_per_run),
                max_deferrals_without_wait: given
                    .max_deferrals_without_wait
                    .or(file.max_deferrals_without_wait)
                    .unwrap_or(defaults.max_deferrals_without_wait),
                ..defaults
            }
        },
    };
    config.validate().map_err(|e| match e {
        waggle_broker::ConfigError::Invalid { key, problem } => ConfigError::Invalid { key, problem },
    })?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file: BrokerSettings =
            toml::from_str("partitions = 3\nnode_id = 1\ncluster_size = 2\npeers = ['a:1', 'b:2']").unwrap();
        let given = BrokerSettings { partitions: Some(5), ..Default::default() };
        let config = broker_config(given, file).unwrap();
        assert_eq!(config.partitions, 5);
        assert_eq!(config.node_id, 1);
        assert_eq!(config.replication_factor, 1);
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        assert!(toml::from_str::<BrokerSettings>("partitons = 3").is_err());
    }

    #[test]
    fn a_bad_address_names_its_key() {
        let given = BrokerSettings { command_addr: Some("localhost".into()), ..Default::default() };
        let error = broker_config(given, BrokerSettings::default()).unwrap_err().to_string();
        assert!(error.contains("command-addr"), "{error}");
    }

    #[test]
    fn replication_above_cluster_size_is_refused() {
        let given = BrokerSettings { replication_factor: Some(3), ..Default::default() };
        let error = broker_config(given, BrokerSettings::default()).unwrap_err().to_string();
        assert!(error.contains("replication-factor"), "{error}");
    }
}
