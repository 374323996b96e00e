//! [`SnapshotConfig`]: snapshots as configuration (policy, serializer, schema version,
//! retention); `RepositorySnapshotExt` (in the manager's module) plugs it into any repository.

use std::fmt;
use std::num::NonZeroUsize;

use cqrsx_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::policy::PolicyConfig;
use crate::serializer::SnapshotSerializer;

/// How many snapshots of a stream are kept after each new one: every one, or the newest N
/// (N ≥ 1: a retention of 0 would delete the snapshot just taken, so it cannot be written —
/// not in code, where N is a [`NonZeroUsize`], nor in the environment or a config file, where
/// `0` is a [`Error::Config`]; keeping every snapshot is said as `all`).
///
/// ```
/// use cqrsx_snapshot::Retention;
/// assert_eq!("all".parse::<Retention>()?, Retention::All);
/// assert_eq!("3".parse::<Retention>()?, Retention::newest(3)?);
/// assert!("0".parse::<Retention>().is_err());
/// assert!(Retention::newest(0).is_err());
/// # Ok::<(), cqrsx_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Retention {
    /// Every snapshot is kept.
    All,
    /// The newest N are kept; older ones are deleted after each new snapshot.
    Newest(NonZeroUsize),
}

impl Retention {
    /// The newest `n` snapshots; [`Error::Config`] for 0.
    pub fn newest(n: usize) -> Result<Self> {
        NonZeroUsize::new(n).map(Retention::Newest).ok_or_else(|| {
            Error::Config("a snapshot retention of 0 would delete every snapshot: keep at least 1, or all".into())
        })
    }

    /// How many to keep, `None` for all.
    pub fn keep(self) -> Option<usize> {
        match self {
            Retention::All => None,
            Retention::Newest(n) => Some(n.get()),
        }
    }
}

impl Default for Retention {
    /// The newest 3.
    fn default() -> Self {
        Retention::Newest(NonZeroUsize::MIN.saturating_add(2))
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Retention::All => f.write_str("all"),
            Retention::Newest(n) => write!(f, "{n}"),
        }
    }
}

impl std::str::FromStr for Retention {
    type Err = Error;

    /// `all`, or a number of at least 1.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "all" => Ok(Retention::All),
            n => Retention::newest(
                n.parse()
                    .map_err(|_| Error::Config(format!("snapshot retention {s:?}: expected all or a number")))?,
            ),
        }
    }
}

impl Serialize for Retention {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Retention::All => serializer.serialize_str("all"),
            Retention::Newest(n) => serializer.serialize_u64(n.get() as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        let parsed = match Raw::deserialize(deserializer)? {
            Raw::Number(n) => usize::try_from(n)
                .map_err(|_| Error::Config(format!("snapshot retention {n} is too large")))
                .and_then(Retention::newest),
            Raw::Text(s) => s.parse(),
        };
        parsed.map_err(serde::de::Error::custom)
    }
}

/// Snapshot settings; the same struct configures the in-memory, Redis and Mongo repositories,
/// and its defaults are [`SnapshotManager`](crate::SnapshotManager)'s.
///
/// ```
/// use cqrsx_snapshot::{Compression, Format, PolicyConfig, Retention, SnapshotConfig, SnapshotSerializer};
///
/// let config = SnapshotConfig::default()
///     .with_policy("any(every:100,time:3600)".parse().unwrap())
///     .with_serializer(SnapshotSerializer::new(Format::MessagePack, Compression::ZSTD_DEFAULT))
///     .with_retention(Retention::newest(3).unwrap());
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
    /// Snapshots kept per stream.
    pub retention: Retention,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            policy: PolicyConfig::default(),
            serializer: SnapshotSerializer::JSON,
            schema_version: 1,
            retention: Retention::default(),
        }
    }
}

impl SnapshotConfig {
    /// Reads `CQRSX_SNAPSHOT_ENABLED` (true/false), `CQRSX_SNAPSHOT_POLICY` (e.g. `every:100`,
    /// `any(every:100,time:3600)`), `CQRSX_SNAPSHOT_SERIALIZER` (e.g. `msgpack+zstd`),
    /// `CQRSX_SNAPSHOT_SCHEMA_VERSION` and `CQRSX_SNAPSHOT_KEEP` (`all`, or a number of at least
    /// 1; see [`Retention`]) over the defaults.
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
            config.retention = v
                .parse()
                .map_err(|e| Error::Config(format!("CQRSX_SNAPSHOT_KEEP={v:?}: {e}")))?;
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

    /// Keeps `retention` snapshots per stream.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
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
            ("CQRSX_SNAPSHOT_KEEP", "all"),
        ]))
        .expect("config");
        assert_eq!(config.policy, PolicyConfig::VersionInterval { interval: 50 });
        assert_eq!(
            config.serializer,
            SnapshotSerializer::new(Format::MessagePack, Compression::Lz4)
        );
        assert_eq!(
            (config.schema_version, config.retention, config.enabled),
            (4, Retention::All, true)
        );
        let five = SnapshotConfig::from_lookup(lookup(&[("CQRSX_SNAPSHOT_KEEP", "5")])).expect("config");
        assert_eq!(five.retention.keep(), Some(5));
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
            ("CQRSX_SNAPSHOT_KEEP", "0"),
            ("CQRSX_SNAPSHOT_ENABLED", "maybe"),
        ] {
            let err = SnapshotConfig::from_lookup(lookup(&[(key, value)])).expect_err(key);
            assert!(matches!(err, Error::Config(_)), "{key}: {err}");
            assert!(err.to_string().contains(key) || key == "CQRSX_SNAPSHOT_POLICY", "{err}");
        }
        let zstd = SnapshotConfig::default()
            .with_serializer(SnapshotSerializer::new(Format::Json, Compression::Zstd { level: 40 }));
        assert!(zstd.validate().is_err());
        // Retention 0 has one meaning everywhere: refused (in code it cannot be written).
        assert!(Retention::newest(0).is_err());
        assert!("0".parse::<Retention>().is_err());
        assert!(serde_json::from_str::<SnapshotConfig>(r#"{"retention":0}"#).is_err());
        let all: SnapshotConfig = serde_json::from_str(r#"{"retention":"all"}"#).expect("all");
        assert_eq!(all.retention, Retention::All);
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
