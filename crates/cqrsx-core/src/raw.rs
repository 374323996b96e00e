//! For backend implementers: the traits a backend implements ([`EventBackend`], [`ReadBackend`],
//! [`SnapshotBackend`], [`ProjectionBackend`], and the records a projection store writes: [`Lease`], [`Commit`], [`ViewWrite`], [`ViewChange`] — core's checked layer validates every input and
//! traces every call before they run, so a backend never re-checks), the checks themselves, the
//! reference semantics of read-model queries, and the operation statistics clients keep. A service that
//! only uses stores never needs this module (the crate root is its vocabulary).

pub use crate::checked::{EventBackend, ProjectionBackend, ReadBackend, SnapshotBackend};
pub use crate::checkpoint::Wake;
pub use crate::error::BoxError;
pub use crate::event::AllPage;
pub use crate::event_store::{
    validate_append, validate_expected, validate_filter, validate_number, validate_position, DEFAULT_PAGE_SIZE,
};
pub use crate::event_store::{EventStoreCapabilities, MAX_NUMBER};
pub use crate::import::{validate_import, StreamInfo};
pub use crate::projection::store::{Commit, Lease, ViewChange, ViewWrite};
pub use crate::read_store::ReadStoreCapabilities;
pub use crate::read_store::{
    compare, has_nested_arrays, lookup, total_order, validate_document, validate_document_for, validate_field_path,
    validate_ttl, MAX_TTL,
};
pub use crate::snapshot_store::validate_snapshot;
pub use crate::stats::{Latencies, OperationStats, LATENCY_WINDOW};
pub use crate::stream::{validate_id, validate_type_name, MAX_NAME_LEN};
