//! The operator's own configuration: flags, each also settable through an environment variable
//! (which is how the Helm chart passes them). Validated once at start-up; a bad value stops the
//! process with a message naming the setting.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// Errors in the operator's settings.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("--namespaces (WAGGLE_OPERATOR_NAMESPACES): {0:?} is not a valid namespace name")]
    Namespace(String),
    #[error("--default-image (WAGGLE_OPERATOR_DEFAULT_IMAGE): {0:?} must be a repository without tag, e.g. ghcr.io/org/waggle")]
    Image(String),
    #[error("--lease-duration-seconds (WAGGLE_OPERATOR_LEASE_DURATION_SECONDS) must be between 5 and 300, got {0}")]
    LeaseDuration(u64),
    #[error("--identity (POD_NAME) is empty and the host name is unknown; set POD_NAME")]
    Identity,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Clone, Debug, Parser)]
#[command(name = "waggle-operator", version, about = "Reconciles Waggle Cluster, Gateway and Exporter resources")]
pub struct Settings {
    /// Namespaces to watch, comma-separated; all namespaces when empty.
    #[arg(long, env = "WAGGLE_OPERATOR_NAMESPACES", value_delimiter = ',', default_value = "")]
    pub namespaces: Vec<String>,
    /// Address of the /metrics, /healthz and /readyz endpoint.
    #[arg(long, env = "WAGGLE_OPERATOR_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Image repository for brokers and gateways whose resource names none.
    #[arg(long, env = "WAGGLE_OPERATOR_DEFAULT_IMAGE", default_value = "ghcr.io/waggle-dev/waggle")]
    pub default_image: String,
    /// Run only while holding a Lease, so that several replicas can run with one active.
    #[arg(long, env = "WAGGLE_OPERATOR_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, env = "WAGGLE_OPERATOR_LEASE_NAME", default_value = "waggle-operator")]
    pub lease_name: String,
    /// Namespace of the Lease; the operator's own namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// How long a Lease stays valid without renewal.
    #[arg(long, env = "WAGGLE_OPERATOR_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// This replica's name in the Lease; the host name when empty.
    #[arg(long, env = "POD_NAME", default_value = "")]
    pub identity: String,
    #[arg(long, env = "WAGGLE_OPERATOR_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

impl Settings {
    /// Checks every setting, filling in the identity from the host name when absent.
    pub fn validated(mut self) -> Result<Self, SettingsError> {
        self.namespaces.retain(|ns| !ns.trim().is_empty());
        for ns in &mut self.namespaces {
            *ns = ns.trim().to_owned();
            if !is_dns_label(ns) {
                return Err(SettingsError::Namespace(ns.clone()));
            }
        }
        if !is_dns_label(&self.lease_namespace) {
            return Err(SettingsError::Namespace(self.lease_namespace.clone()));
        }
        let last = self.default_image.rsplit('/').next().unwrap_or_default();
        if self.default_image.is_empty() || last.contains(':') || last.contains('@') {
            return Err(SettingsError::Image(self.default_image.clone()));
        }
        if !(5..=300).contains(&self.lease_duration_seconds) {
            return Err(SettingsError::LeaseDuration(self.lease_duration_seconds));
        }
        if self.identity.is_empty() {
            self.identity = std::env::var("HOSTNAME").unwrap_or_default();
            if self.identity.is_empty() {
                return Err(SettingsError::Identity);
            }
        }
        Ok(self)
    }

    pub fn lease_duration(&self) -> Duration {
        Duration::from_secs(self.lease_duration_seconds)
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Settings {
        Settings::try_parse_from(std::iter::once("waggle-operator").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn watched_namespaces_are_split_and_trimmed() {
        let settings = parse(&["--namespaces", "team-a, team-b", "--identity", "op-0"]).validated().unwrap();
        assert_eq!(settings.namespaces, vec!["team-a", "team-b"]);
    }

    #[test]
    fn no_namespaces_means_all_namespaces() {
        let settings = parse(&["--namespaces", "", "--identity", "op-0"]).validated().unwrap();
        assert!(settings.namespaces.is_empty());
    }

    #[test]
    fn bad_settings_stop_start_up_naming_the_setting() {
        let err = parse(&["--namespaces", "Team_A", "--identity", "x"]).validated().unwrap_err();
        assert!(err.to_string().contains("--namespaces"), "{err}");
        let err = parse(&["--default-image", "repo/waggle:1.0", "--identity", "x"]).validated().unwrap_err();
        assert!(err.to_string().contains("--default-image"), "{err}");
        let err = parse(&["--lease-duration-seconds", "1", "--identity", "x"]).validated().unwrap_err();
        assert_eq!(err, SettingsError::LeaseDuration(1));
    }
}
