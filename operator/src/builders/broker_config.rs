//! The broker's TOML file: the user's extra settings plus one `[exporters.<name>]` table per enabled
//! Exporter.
//!
//! The cluster's shape (node id, size, partitions, replication, peers, data directory) is not written
//! here but passed as `WAGGLE_*` environment variables, which the broker ranks above its file; the
//! file carries only what has no flag. Secrets never enter the ConfigMap: a secret setting becomes an
//! environment variable fed from the Secret, and the exporter's table names that variable under
//! `secret_env`, so the broker reads the value at start-up.
//!
//! Keys are sorted before rendering so the output (and so its hash) does not depend on map order.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::crd::{Exporter, SecretKeyReference};

/// Errors in the settings a user wrote.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("{path}: null has no TOML form; remove the key instead")]
    Null { path: String },
    #[error("{path}: TOML arrays cannot mix tables and plain values")]
    MixedArray { path: String },
    #[error("{path}: number {value} is out of range for TOML")]
    Number { path: String, value: String },
    #[error("config key {key:?} is owned by the operator")]
    Reserved { key: String },
    #[error("exporter {exporter}: setting {setting:?} is set both in settings and in secretSettings")]
    DuplicateSetting { exporter: String, setting: String },
}

/// A rendered broker configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct BrokerConfig {
    /// Contents of `broker.toml`.
    pub toml: String,
    /// Environment variables fed from Secrets, by variable name.
    pub secret_env: BTreeMap<String, SecretKeyReference>,
    /// Names of the exporters the file carries, sorted.
    pub exporters: Vec<String>,
    /// Short hash of the file and the secret references, to tell configurations apart.
    pub hash: String,
}

/// The environment variable that carries one secret setting of one exporter.
pub fn secret_env_name(exporter: &str, setting: &str) -> String {
    let upper = |s: &str| {
        s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect::<String>()
    };
    format!("WAGGLE_EXPORTER_{}_{}", upper(exporter), upper(setting))
}

/// Renders the configuration from the cluster's extra settings and the Exporters that reference it.
/// Disabled exporters are left out.
pub fn render_broker_config(
    extra: Option<&serde_json::Map<String, serde_json::Value>>,
    exporters: &[Exporter],
) -> Result<BrokerConfig, ConfigError> {
    let mut root = toml::Table::new();
    if let Some(extra) = extra {
        for (key, value) in sorted(extra) {
            if crate::crd::RESERVED_CONFIG_KEYS.contains(&key.as_str()) {
                return Err(ConfigError::Reserved { key: key.clone() });
            }
            root.insert(key.clone(), to_toml(value, key)?);
        }
    }

    let mut secret_env = BTreeMap::new();
    let mut tables = toml::Table::new();
    let mut names = Vec::new();
    let mut enabled: Vec<&Exporter> = exporters.iter().filter(|e| e.spec.enabled).collect();
    enabled.sort_by_key(|e| e.metadata.name.clone());
    for exporter in enabled {
        let name = exporter.metadata.name.clone().unwrap_or_default();
        let mut table = toml::Table::new();
        table.insert("kind".into(), toml::Value::String(exporter.spec.kind.as_str().into()));
        if let Some(settings) = &exporter.spec.settings {
            for (key, value) in sorted(settings) {
                table.insert(key.clone(), to_toml(value, &format!("exporters.{name}.{key}"))?);
            }
        }
        let mut env_table = toml::Table::new();
        for secret in &exporter.spec.secret_settings {
            if table.contains_key(&secret.name) {
                return Err(ConfigError::DuplicateSetting { exporter: name.clone(), setting: secret.name.clone() });
            }
            let var = secret_env_name(&name, &secret.name);
            env_table.insert(secret.name.clone(), toml::Value::String(var.clone()));
            secret_env.insert(var, secret.secret_key_ref.clone());
        }
        if !env_table.is_empty() {
            table.insert("secret_env".into(), toml::Value::Table(env_table));
        }
        tables.insert(name.clone(), toml::Value::Table(table));
        names.push(name);
    }
    if !tables.is_empty() {
        root.insert("exporters".into(), toml::Value::Table(tables));
    }

    let body = toml::to_string(&root).expect("a TOML table always renders");
    let toml =
        format!("# Written by waggle-operator from the Cluster and its Exporters; edits are overwritten.\n{body}");
    let mut digest = Sha256::new();
    digest.update(toml.as_bytes());
    for (var, reference) in &secret_env {
        digest.update(format!("\n{var}={}/{}", reference.name, reference.key).as_bytes());
    }
    let hash = digest.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    Ok(BrokerConfig { toml, secret_env, exporters: names, hash })
}

fn sorted(map: &serde_json::Map<String, serde_json::Value>) -> BTreeMap<&String, &serde_json::Value> {
    map.iter().collect()
}

fn to_toml(value: &serde_json::Value, path: &str) -> Result<toml::Value, ConfigError> {
    use serde_json::Value as J;
    Ok(match value {
        J::Null => return Err(ConfigError::Null { path: path.into() }),
        J::Bool(b) => toml::Value::Boolean(*b),
        J::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => toml::Value::Integer(i),
            (None, Some(f)) if n.is_f64() => toml::Value::Float(f),
            _ => return Err(ConfigError::Number { path: path.into(), value: n.to_string() }),
        },
        J::String(s) => toml::Value::String(s.clone()),
        J::Array(items) => {
            let converted = items
                .iter()
                .enumerate()
                .map(|(i, v)| to_toml(v, &format!("{path}[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            let tables = converted.iter().filter(|v| v.is_table()).count();
            if tables != 0 && tables != converted.len() {
                return Err(ConfigError::MixedArray { path: path.into() });
            }
            toml::Value::Array(converted)
        }
        J::Object(map) => {
            let mut table = toml::Table::new();
            for (key, v) in sorted(map) {
                table.insert(key.clone(), to_toml(v, &format!("{path}.{key}"))?);
            }
            toml::Value::Table(table)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn exporter(value: serde_json::Value) -> Exporter {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn keys_come_out_sorted_whatever_the_input_order() {
        let a = json!({"zeta": 1, "alpha": {"y": true, "b": "x"}});
        let b = json!({"alpha": {"b": "x", "y": true}, "zeta": 1});
        let render = |v: serde_json::Value| render_broker_config(v.as_object(), &[]).unwrap();
        assert_eq!(render(a.clone()), render(b));
        assert!(render(a).toml.ends_with("zeta = 1\n\n[alpha]\nb = \"x\"\ny = true\n"));
    }

    #[test]
    fn values_without_a_toml_form_are_refused_with_their_path() {
        let err = render_broker_config(json!({"a": {"b": null}}).as_object(), &[]).unwrap_err();
        assert_eq!(err, ConfigError::Null { path: "a.b".into() });
        let err = render_broker_config(json!({"list": [1, {"x": 1}]}).as_object(), &[]).unwrap_err();
        assert_eq!(err, ConfigError::MixedArray { path: "list".into() });
        let err = render_broker_config(json!({"peers": "x"}).as_object(), &[]).unwrap_err();
        assert_eq!(err, ConfigError::Reserved { key: "peers".into() });
    }

    #[test]
    fn a_setting_given_both_plainly_and_as_secret_is_refused() {
        let e = exporter(json!({
            "metadata": {"name": "db"}, "apiVersion": "waggle.dev/v1alpha1", "kind": "Exporter",
            "spec": {"clusterRef": {"name": "c"}, "kind": "postgres", "settings": {"password": "plain"},
                "secretSettings": [{"name": "password", "secretKeyRef": {"name": "s", "key": "k"}}]}
        }));
        let err = render_broker_config(None, &[e]).unwrap_err();
        assert_eq!(err, ConfigError::DuplicateSetting { exporter: "db".into(), setting: "password".into() });
    }

    #[test]
    fn secret_settings_become_environment_variables_named_in_the_file() {
        let e = exporter(json!({
            "metadata": {"name": "audit-db"}, "apiVersion": "waggle.dev/v1alpha1", "kind": "Exporter",
            "spec": {"clusterRef": {"name": "c"}, "kind": "postgres",
                "secretSettings": [{"name": "password", "secretKeyRef": {"name": "s", "key": "k"}}]}
        }));
        let config = render_broker_config(None, &[e]).unwrap();
        assert_eq!(config.secret_env.keys().collect::<Vec<_>>(), ["WAGGLE_EXPORTER_AUDIT_DB_PASSWORD"]);
        assert!(
            config.toml.contains("[exporters.audit-db.secret_env]\npassword = \"WAGGLE_EXPORTER_AUDIT_DB_PASSWORD\""),
            "{}",
            config.toml
        );
    }
}
