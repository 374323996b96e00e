//! The event type registry: each event type's current schema version and the upcaster chains that
//! bring older payloads up to it, checked for gaps when the registry is built.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::stream::validate_type_name;
use crate::tagged::variant_names;

/// Turns a payload of schema version `n` into version `n + 1`.
pub type UpcastFn = Arc<dyn Fn(Value) -> std::result::Result<Value, String> + Send + Sync>;

#[derive(Clone, Default)]
struct TypeEntry {
    current: u32,
    /// Keyed by the version the upcaster reads.
    upcasters: BTreeMap<u32, UpcastFn>,
}

/// Event types, their current schema versions, and upcasters.
///
/// A type that is not registered is at schema version 1 with no upcasters.
///
/// ```
/// use cqrsx_core::EventRegistry;
/// use serde_json::json;
///
/// let registry = EventRegistry::builder()
///     .event("UserRegistered", 3)
///     .upcaster("UserRegistered", 1, |mut v| { v["name"] = json!("unknown"); Ok(v) })
///     .upcaster("UserRegistered", 2, |mut v| { v["tier"] = json!("free"); Ok(v) })
///     .build()?;
/// let v3 = registry.upcast("UserRegistered", 1, json!({"email": "a@b.c"}))?;
/// assert_eq!(v3, json!({"email": "a@b.c", "name": "unknown", "tier": "free"}));
///
/// // A chain with a hole is refused at start-up, not at the first read.
/// let gap = EventRegistry::builder()
///     .event("UserRegistered", 3)
///     .upcaster("UserRegistered", 1, Ok)
///     .build();
/// assert!(gap.is_err());
/// # Ok::<(), cqrsx_core::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct EventRegistry {
    types: HashMap<String, TypeEntry>,
}

impl fmt::Debug for EventRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (name, entry) in &self.types {
            m.entry(
                name,
                &format_args!("v{} ({} upcasters)", entry.current, entry.upcasters.len()),
            );
        }
        m.finish()
    }
}

impl EventRegistry {
    /// Starts a registry.
    pub fn builder() -> EventRegistryBuilder {
        EventRegistryBuilder::default()
    }

    /// The schema version new events of this type are written with.
    pub fn current_version(&self, event_type: &str) -> u32 {
        self.types.get(event_type).map_or(1, |t| t.current)
    }

    /// The registered type names.
    pub fn event_types(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }

    /// Brings a payload written at `version` up to the type's current version.
    pub fn upcast(&self, event_type: &str, version: u32, mut value: Value) -> Result<Value> {
        let current = self.current_version(event_type);
        if version > current {
            return Err(Error::serialization_msg(format!(
                "{event_type} v{version} is newer than this code's v{current}"
            )));
        }
        let Some(entry) = self.types.get(event_type) else {
            return Ok(value);
        };
        for from in version..current {
            let up = entry.upcasters.get(&from).ok_or_else(|| {
                Error::serialization_msg(format!("no upcaster for {event_type} v{from} -> v{}", from + 1))
            })?;
            value = up(value).map_err(|e| {
                Error::serialization_msg(format!("upcaster {event_type} v{from} -> v{} failed: {e}", from + 1))
            })?;
        }
        Ok(value)
    }

    /// Checks that every registered type is a variant of the event enum `E`, so a typo in a
    /// registration fails at start-up.
    pub fn check_event_enum<E: DeserializeOwned>(&self) -> Result<()> {
        let variants = variant_names::<E>();
        if variants.is_empty() {
            return Err(Error::Config(format!(
                "{} is not an enum; events must be enum variants",
                std::any::type_name::<E>()
            )));
        }
        for name in self.types.keys() {
            if !variants.contains(&name.as_str()) {
                return Err(Error::Config(format!(
                    "registered event type {name:?} is not a variant of {} (variants: {variants:?})",
                    std::any::type_name::<E>()
                )));
            }
        }
        Ok(())
    }
}

/// Builds an [`EventRegistry`]; [`EventRegistryBuilder::build`] checks the chains.
#[derive(Default)]
pub struct EventRegistryBuilder {
    current: Vec<(String, u32)>,
    upcasters: Vec<(String, u32, UpcastFn)>,
}

impl EventRegistryBuilder {
    /// Declares an event type and its current schema version.
    pub fn event(mut self, event_type: impl Into<String>, current_version: u32) -> Self {
        self.current.push((event_type.into(), current_version));
        self
    }

    /// Adds the upcaster that turns `from_version` payloads of `event_type` into
    /// `from_version + 1`.
    pub fn upcaster<F>(mut self, event_type: impl Into<String>, from_version: u32, f: F) -> Self
    where
        F: Fn(Value) -> std::result::Result<Value, String> + Send + Sync + 'static,
    {
        self.upcasters.push((event_type.into(), from_version, Arc::new(f)));
        self
    }

    /// Checks every chain and builds the registry.
    ///
    /// Fails with [`Error::Config`] on an upcaster for an undeclared type, a version declared
    /// twice, an upcaster at or past the current version, or a hole in a chain.
    pub fn build(self) -> Result<EventRegistry> {
        let mut types: HashMap<String, TypeEntry> = HashMap::new();
        for (name, current) in self.current {
            validate_type_name("event type", &name).map_err(|e| Error::Config(e.to_string()))?;
            if current == 0 {
                return Err(Error::Config(format!("{name}: schema versions start at 1")));
            }
            if types
                .insert(
                    name.clone(),
                    TypeEntry {
                        current,
                        upcasters: BTreeMap::new(),
                    },
                )
                .is_some()
            {
                return Err(Error::Config(format!("{name} is declared twice")));
            }
        }
        for (name, from, f) in self.upcasters {
            let entry = types.get_mut(&name).ok_or_else(|| {
                Error::Config(format!(
                    "upcaster for {name} v{from}, but {name} is not declared with .event()"
                ))
            })?;
            if from == 0 || from >= entry.current {
                return Err(Error::Config(format!(
                    "upcaster {name} v{from} -> v{} is outside 1..{}",
                    from + 1,
                    entry.current
                )));
            }
            if entry.upcasters.insert(from, f).is_some() {
                return Err(Error::Config(format!("two upcasters for {name} v{from}")));
            }
        }
        for (name, entry) in &types {
            // Every version ever written (1 up to the current one) must have a way up.
            if let Some(missing) = (1..entry.current).find(|v| !entry.upcasters.contains_key(v)) {
                return Err(Error::Config(format!(
                    "upcaster gap: {name} is at v{} but has no upcaster v{missing} -> v{}",
                    entry.current,
                    missing + 1
                )));
            }
        }
        Ok(EventRegistry { types })
    }
}
