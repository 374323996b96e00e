//! [`RetentionPolicy`]: what a retention run may take out of one aggregate type's streams.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::event_store::validate_number;
use crate::stream::validate_type_name;

/// What happens to a stream whose last event is older than the policy's age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untouched {
    /// Every event is archived, then removed from the hot store; the stream keeps its version
    /// and stays writable (needs an archive).
    Archive,
    /// The stream is deleted (a tombstone) with the version the run saw as the expected one;
    /// with an archive, its events are archived first.
    Delete,
}

/// The retention rules of one aggregate type.
///
/// The keep rules — [`RetentionPolicy::keep_before_snapshot`] and
/// [`RetentionPolicy::keep_younger_than`] — each name events to keep; an event is removed only
/// when every rule the policy has lets it go (with both rules, the run removes the versions
/// both would remove). [`RetentionPolicy::archive_untouched_after`] /
/// [`RetentionPolicy::delete_untouched_after`] act on a whole stream whose last event is older
/// than the age, instead of the keep rules.
///
/// ```
/// use std::time::Duration;
/// use cqrsx_core::retention::RetentionPolicy;
/// let orders = RetentionPolicy::new("Order")?
///     .keep_before_snapshot(100)
///     .archive_untouched_after(Duration::from_secs(365 * 24 * 3600));
/// assert_eq!(orders.aggregate_type(), "Order");
/// # Ok::<(), cqrsx_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub(crate) aggregate_type: String,
    pub(crate) keep_before_snapshot: Option<u64>,
    pub(crate) keep_younger_than: Option<Duration>,
    pub(crate) untouched: Option<(Duration, Untouched)>,
}

impl RetentionPolicy {
    /// A policy with no rules for `aggregate_type` (a valid type name).
    pub fn new(aggregate_type: impl Into<String>) -> Result<Self> {
        let aggregate_type = aggregate_type.into();
        validate_type_name("aggregate type of a retention policy", &aggregate_type)?;
        Ok(Self {
            aggregate_type,
            keep_before_snapshot: None,
            keep_younger_than: None,
            untouched: None,
        })
    }

    /// The aggregate type it is for.
    pub fn aggregate_type(&self) -> &str {
        &self.aggregate_type
    }

    /// Keeps the last `n` events before the stream's latest snapshot: removes versions
    /// ≤ snapshot − `n`. A stream without a snapshot keeps everything.
    pub fn keep_before_snapshot(mut self, n: u64) -> Self {
        self.keep_before_snapshot = Some(n);
        self
    }

    /// Keeps events recorded less than `age` before the run; older ones go. Without an
    /// archive, only versions up to the latest snapshot go (the rest are reported as held
    /// back, "not covered by a snapshot").
    pub fn keep_younger_than(mut self, age: Duration) -> Self {
        self.keep_younger_than = Some(age);
        self
    }

    /// Archives every event of a stream whose last event is older than `age` and removes them
    /// from the hot store; the stream stays writable at its version (needs an archive).
    pub fn archive_untouched_after(mut self, age: Duration) -> Self {
        self.untouched = Some((age, Untouched::Archive));
        self
    }

    /// Deletes a stream whose last event is older than `age` (archiving it first when the job
    /// has an archive).
    pub fn delete_untouched_after(mut self, age: Duration) -> Self {
        self.untouched = Some((age, Untouched::Delete));
        self
    }

    /// Checks the numbers: a policy with at least one rule, ages and counts in range.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.keep_before_snapshot.is_none() && self.keep_younger_than.is_none() && self.untouched.is_none() {
            return Err(Error::InvalidInput(format!(
                "the retention policy of {} has no rule",
                self.aggregate_type
            )));
        }
        if let Some(n) = self.keep_before_snapshot {
            validate_number("events kept before a snapshot", n)?;
        }
        let ages = self.keep_younger_than.iter().chain(self.untouched.iter().map(|u| &u.0));
        for age in ages {
            let ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
            validate_number("retention age (ms)", ms)?;
        }
        Ok(())
    }
}
