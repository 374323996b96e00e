//! [`SnapshotConfig`]: snapshots as configuration (policy, serializer, schema version,
//! retention); `RepositorySnapshotExt` (in the manager's module) plugs it into any repository.

use cqrsx_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::policy::PolicyConfig;
use crate::serializer::SnapshotSerializer;

/// Snapshot settings; the same struct configures the in-memory, Redis and Mongo repositories.
///
/// ```
/// use cqrsx_snapshot::{Compression, Format, PolicyConfig, SnapshotConfig, SnapshotSerializer};
///
/// let config = SnapshotConfig::default()
///     .with_policy("any(every:100,time:3600)".parse().unwrap())
///     .with_serializer(SnapshotSerializer::new(Format::MessagePack, Compression::ZSTD_DEFAULT))
///     .with_retention(3);
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotConfig {
    /// Whether repositories use snapshots at all.
    pub enabled: bool,
    /// When to take one.
    pub policy: PolicyConfig,
    /// How to write one.
    pub serializer: SnapshotSerializer,
    /// The schema version of the aggregate state; snapshots of another version are ignored.
    pub schema_version: u32,
    /// Snapshots kept per stream (`None`: all).
    pub keep: Option<usize>,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            policy: PolicyConfig::default(),
            serializer: SnapshotSerializer::JSON,
            schema_version: 1,
            keep: Some(3),
        }
    }
}

impl SnapshotConfig {
    /// Reads `CQRSX_SNAPSHOT_ENABLED` (true/false), `CQRSX_SNAPSHOT_POLICY` (e.g. `every:100`,
    /// `any(every:100,time:3600)`), `CQRSX_SNAPSHOT_SERIALIZER` (e.g. `msgpack+zstd`),
    /// `CQRSX_SNAPSHOT_SCHEMA_VERSION` and `CQRSX_SNAPSHOT_KEEP` (0: keep all) over the defaults.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// [`SnapshotConfig::from_env`] over any key lookup (tests, config files).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut config = Self::default();
        if let Some(v) = lookup("CQRSX_SNAPSHOT_ENABLED") {
            config.enabled = match v.trim() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                other => {
                    return Err(Error::Config(format!(
                        "CQRSX_SNAPSHOT_ENABLED={other:?}: expected true or false"
                    )))
                }
            };
        }
        if let Some(v) = lookup("CQRSX_SNAPSHOT_POLICY") {
            config.policy = v.parse()?;
        }
        if let Some(v) = lookup("CQRSX_SNAPSHOT_SERIALIZER") {
            config.serializer = v.parse().map_err(|_| {
                Error::Config(format!(
                    "CQRSX_SNAPSHOT_SERIALIZER={v:?}: expected json, msgpack, with +lz4 or +zstd"
                ))
            })?;
        }
        if let Some(v) = lookup("CQRSX_SNAPSHOT_SCHEMA_VERSION") {
            config.schema_version = v
                .trim()
                .parse()
                .map_err(|_| Error::Config(format!("CQRSX_SNAPSHOT_SCHEMA_VERSION={v:?}: expected a number")))?;
        }
        if let Some(v) = lookup("CQRSX_SNAPSHOT_KEEP") {
            let keep: usize = v
                .trim()
                .parse()
                .map_err(|_| Error::Config(format!("CQRSX_SNAPSHOT_KEEP={v:?}: expected a number")))?;
            config.keep = (keep > 0).then_some(keep);
        }
        config.validate()?;
        Ok(config)
    }

    /// Disables snapshots.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// Sets the policy.
    pub fn with_policy(mut self, policy: PolicyConfig) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the serializer.
    pub fn with_serializer(mut self, serializer: SnapshotSerializer) -> Self {
        self.serializer = serializer;
        self
    }

    /// Sets the schema version.
    pub fn with_schema_version(mut self, schema_version: u32) -> Self {
        self.schema_version = schema_version;
        self
    }

    /// Keeps the newest `keep` snapshots per stream.
    pub fn with_retention(mut self, keep: usize) -> Self {
        self.keep = Some(keep);
        self
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.keep == Some(0) {
            return Err(Error::Config("snapshot retention must keep at least 1 snapshot".into()));
        }
        if let crate::Compression::Zstd { level } = self.serializer.compression {
            if !(1..=22).contains(&level) {
                return Err(Error::Config(format!("zstd level {level} is outside 1..=22")));
            }
        }
        self.policy.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Compression, Format};
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |key| map.get(key).cloned()
    }

    #[test]
    fn env_overrides_defaults() {
        let config = SnapshotConfig::from_lookup(lookup(&[
            ("CQRSX_SNAPSHOT_POLICY", "version:50"),
            ("CQRSX_SNAPSHOT_SERIALIZER", "msgpack+lz4"),
            ("CQRSX_SNAPSHOT_SCHEMA_VERSION", "4"),
            ("CQRSX_SNAPSHOT_KEEP", "0"),
        ]))
        .expect("config");
        assert_eq!(config.policy, PolicyConfig::VersionInterval { interval: 50 });
        assert_eq!(
            config.serializer,
            SnapshotSerializer::new(Format::MessagePack, Compression::Lz4)
        );
        assert_eq!((config.schema_version, config.keep, config.enabled), (4, None, true));
        assert_eq!(
            SnapshotConfig::from_lookup(lookup(&[])).expect("defaults"),
            SnapshotConfig::default()
        );
    }

    #[test]
    fn bad_settings_are_config_errors() {
        for (key, value) in [
            ("CQRSX_SNAPSHOT_POLICY", "often"),
            ("CQRSX_SNAPSHOT_SERIALIZER", "xml"),
            ("CQRSX_SNAPSHOT_SCHEMA_VERSION", "v2"),
            ("CQRSX_SNAPSHOT_KEEP", "-1"),
            ("CQRSX_SNAPSHOT_ENABLED", "maybe"),
        ] {
            let err = SnapshotConfig::from_lookup(lookup(&[(key, value)])).expect_err(key);
            assert!(matches!(err, Error::Config(_)), "{key}: {err}");
            assert!(err.to_string().contains(key) || key == "CQRSX_SNAPSHOT_POLICY", "{err}");
        }
        let zstd = SnapshotConfig::default()
            .with_serializer(SnapshotSerializer::new(Format::Json, Compression::Zstd { level: 40 }));
        assert!(zstd.validate().is_err());
        assert!(SnapshotConfig::default().with_retention(0).validate().is_err());
    }

    #[test]
    fn config_round_trips_through_serde() {
        let config = SnapshotConfig::default()
            .with_policy("any(every:10,time:60)".parse().expect("policy"))
            .with_serializer(SnapshotSerializer::new(Format::MessagePack, Compression::ZSTD_DEFAULT));
        let json = serde_json::to_string(&config).expect("json");
        let back: SnapshotConfig = serde_json::from_str(&json).expect("back");
        assert_eq!(back, config);
        let partial: SnapshotConfig =
            serde_json::from_str(r#"{"policy":{"kind":"every_events","events":5}}"#).expect("partial");
        assert_eq!(partial.policy, PolicyConfig::EveryEvents { events: 5 });
        assert_eq!(partial.serializer, SnapshotSerializer::JSON);
    }
}
