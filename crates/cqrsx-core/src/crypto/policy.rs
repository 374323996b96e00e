//! Protection policies: per event type, whose data an event holds (the subject) and which of
//! its fields are personal; per read-model collection or projection, the same for documents.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::event::NewEvent;
use crate::stream::StreamId;

/// What a protected field reads as once its subject is forgotten, unless the policy says
/// otherwise: the string `"[erased]"`.
pub const ERASED: &str = "[erased]";

/// A closure naming an event's subject.
pub type SubjectFn = Arc<dyn Fn(&StreamId, &NewEvent) -> Option<String> + Send + Sync>;

/// Where an event's subject comes from.
#[derive(Clone)]
pub enum Subject {
    /// The aggregate id (the id part of the stream id).
    AggregateId,
    /// A string (or number) at a JSON pointer of the payload, e.g. `/user_id`.
    PayloadField(String),
    /// A metadata user entry with this key.
    Metadata(String),
    /// A closure; `None` refuses the event ([`Error::InvalidInput`]).
    With(SubjectFn),
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::AggregateId => f.write_str("AggregateId"),
            Subject::PayloadField(p) => write!(f, "PayloadField({p:?})"),
            Subject::Metadata(k) => write!(f, "Metadata({k:?})"),
            Subject::With(_) => f.write_str("With(..)"),
        }
    }
}

/// One personal field and the value it reads as after erasure.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// A JSON pointer into the payload or document (`""`: the whole payload), or a metadata
    /// user key.
    pub path: String,
    /// What it reads as after its subject is forgotten (and what the store holds in its place).
    pub erased: Value,
}

fn validate_pointer(pointer: &str) -> Result<()> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err(Error::Config(format!(
            "{pointer:?} is not a JSON pointer (\"\" or starting with '/')"
        )));
    }
    Ok(())
}

/// How one event type is protected: its subject, its personal payload fields and metadata
/// user entries. Build with [`Protection::new`] and the `field*` / `metadata*` methods.
#[derive(Debug, Clone)]
pub struct Protection {
    pub(crate) subject: Subject,
    pub(crate) payload: Vec<Field>,
    pub(crate) metadata: Vec<Field>,
}

impl Protection {
    /// A policy whose subject comes from `subject`, with no personal field yet.
    pub fn new(subject: Subject) -> Self {
        Self {
            subject,
            payload: Vec::new(),
            metadata: Vec::new(),
        }
    }

    /// Marks the payload field at a JSON pointer personal; it reads as [`ERASED`] after
    /// erasure. A field the payload lacks is skipped.
    pub fn field(self, pointer: impl Into<String>) -> Result<Self> {
        self.field_erased_as(pointer, Value::from(ERASED))
    }

    /// Marks a payload field personal with its own erased value (e.g. `Value::Null`).
    pub fn field_erased_as(mut self, pointer: impl Into<String>, erased: Value) -> Result<Self> {
        let path = pointer.into();
        validate_pointer(&path)?;
        self.payload.push(Field { path, erased });
        Ok(self)
    }

    /// Marks the whole payload personal: after erasure it reads as `erased` (pick a value the
    /// event type still decodes from, or handle the decoding error).
    pub fn whole_payload(mut self, erased: Value) -> Self {
        self.payload = vec![Field {
            path: String::new(),
            erased,
        }];
        self
    }

    /// Marks a metadata user entry personal; it reads as [`ERASED`] after erasure.
    pub fn metadata(self, key: impl Into<String>) -> Self {
        self.metadata_erased_as(key, Value::from(ERASED))
    }

    /// Marks a metadata user entry personal with its own erased value.
    pub fn metadata_erased_as(mut self, key: impl Into<String>, erased: Value) -> Self {
        self.metadata.push(Field {
            path: key.into(),
            erased,
        });
        self
    }

    /// The subject of an event about to be appended to `stream` (`payload`: its decoded
    /// payload). [`Error::InvalidInput`] when the policy's source does not name one.
    pub(crate) fn subject_of(&self, stream: &StreamId, event: &NewEvent, payload: &Value) -> Result<String> {
        let found = match &self.subject {
            Subject::AggregateId => Some(stream.id().to_string()),
            Subject::PayloadField(pointer) => payload.pointer(pointer).and_then(scalar),
            Subject::Metadata(key) => event.metadata.user.get(key).and_then(scalar),
            Subject::With(f) => f(stream, event),
        };
        found.filter(|s| !s.is_empty()).ok_or_else(|| {
            Error::InvalidInput(format!(
                "event {} ({}) is protected but its subject ({:?}) is missing",
                event.event_id, event.event_type, self.subject
            ))
        })
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The protection policies of an event store, per event type. Event types without one pass
/// through untouched.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    by_type: HashMap<String, Protection>,
}

impl Policies {
    /// No policy: every event passes through.
    pub fn new() -> Self {
        Self::default()
    }

    /// Protects events of `event_type` as `protection` says.
    pub fn protect(mut self, event_type: impl Into<String>, protection: Protection) -> Self {
        self.by_type.insert(event_type.into(), protection);
        self
    }

    /// The policy of an event type.
    pub fn get(&self, event_type: &str) -> Option<&Protection> {
        self.by_type.get(event_type)
    }
}

/// Where a document's subject comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum DocSubject {
    /// The document id.
    Id,
    /// A string (or number) at a JSON pointer of the document (kept in clear).
    Field(String),
}

/// How the documents of one read-model collection or projection are protected.
#[derive(Debug, Clone)]
pub struct DocumentPolicy {
    pub(crate) subject: DocSubject,
    pub(crate) fields: Vec<Field>,
}

impl DocumentPolicy {
    /// A policy whose subject comes from `subject`, with no personal field yet.
    pub fn new(subject: DocSubject) -> Result<Self> {
        if let DocSubject::Field(p) = &subject {
            validate_pointer(p)?;
        }
        Ok(Self {
            subject,
            fields: Vec::new(),
        })
    }

    /// Marks the top-level or nested field at a JSON pointer (not `""`) personal; it reads as
    /// [`ERASED`] after erasure.
    pub fn field(self, pointer: impl Into<String>) -> Result<Self> {
        self.field_erased_as(pointer, Value::from(ERASED))
    }

    /// Marks a field personal with its own erased value.
    pub fn field_erased_as(mut self, pointer: impl Into<String>, erased: Value) -> Result<Self> {
        let path = pointer.into();
        validate_pointer(&path)?;
        if path.is_empty() {
            return Err(Error::Config(
                "a document policy protects fields, not the whole document".into(),
            ));
        }
        self.fields.push(Field { path, erased });
        Ok(self)
    }

    pub(crate) fn subject_of(&self, id: &str, doc: &Value) -> Result<String> {
        let found = match &self.subject {
            DocSubject::Id => Some(id.to_string()),
            DocSubject::Field(p) => doc.pointer(p).and_then(scalar),
        };
        found
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::InvalidInput(format!("document {id} is protected but its subject is missing")))
    }
}
