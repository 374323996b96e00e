//! How a [`super::ProjectionRunner`] runs: its error policy, lease, page size and polling.

use std::time::Duration;

use crate::error::{Error, Result};

/// What happens to an event whose handler keeps failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// The runner stops at the event (its checkpoint stays just before it) and reports the
    /// error in its status. The default: nothing is skipped silently.
    Stop,
    /// The event is parked in the dead-letter store (position, error, attempts) and the runner
    /// goes on; [`ProjectionHandle::replay_parked`](super::ProjectionHandle::replay_parked) applies parked events later.
    Park,
}

/// Retries of a failing handler, then what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorPolicy {
    /// Retries after the first failure.
    pub retries: u32,
    /// Pause before the first retry; it doubles for each further one.
    pub backoff: Duration,
    /// Longest pause between retries.
    pub max_backoff: Duration,
    /// What happens when the retries are used up.
    pub then: OnFailure,
}

impl Default for ErrorPolicy {
    fn default() -> Self {
        Self {
            retries: 3,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            then: OnFailure::Stop,
        }
    }
}

impl ErrorPolicy {
    /// Stops after `retries` retries.
    pub fn stop_after(retries: u32) -> Self {
        Self {
            retries,
            ..Self::default()
        }
    }

    /// Parks after `retries` retries.
    pub fn park_after(retries: u32) -> Self {
        Self {
            retries,
            then: OnFailure::Park,
            ..Self::default()
        }
    }

    pub(super) fn pause(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

/// How a [`ProjectionRunner`](super::ProjectionRunner) runs.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// Who this runner is, for the lease. A runner restarted under the same owner (a process
    /// with a stable identity) takes its lease back at once; another owner waits for it to
    /// expire. Default: a fresh UUID.
    pub owner: String,
    /// How long a lease lasts without renewal; the runner renews it every third of this.
    /// A stopped runner's successor takes over within it (plus a quarter, its polling).
    pub lease_ttl: Duration,
    /// Events read and committed together.
    pub page_size: usize,
    /// What a failing handler gets.
    pub errors: ErrorPolicy,
    /// View documents kept in memory between batches (the runner is the views' only writer
    /// while it holds the lease, so what it wrote is what the store holds).
    pub cache_docs: usize,
    /// Polling pauses of the live tail where the backend has no signal.
    pub poll: (Duration, Duration),
    /// How long one call of the handler may run; one that runs longer fails the event (and is
    /// retried, then stopped at or parked, by the error policy).
    pub handler_timeout: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            owner: format!("runner-{}", uuid::Uuid::now_v7().simple()),
            lease_ttl: Duration::from_secs(10),
            page_size: 256,
            errors: ErrorPolicy::default(),
            cache_docs: 10_000,
            poll: (Duration::from_millis(5), Duration::from_millis(250)),
            handler_timeout: Duration::from_secs(60),
        }
    }
}

impl RunnerOptions {
    /// Runs as `owner`.
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// Leases of `ttl`.
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Pages of `page_size` events.
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size;
        self
    }

    /// The handler error policy.
    pub fn with_errors(mut self, policy: ErrorPolicy) -> Self {
        self.errors = policy;
        self
    }

    /// Polling pauses of the live tail (backends without a signal).
    pub fn with_poll_between(mut self, min: Duration, max: Duration) -> Self {
        self.poll = (min, max);
        self
    }

    /// Each call of the handler may run for at most `timeout`.
    pub fn with_handler_timeout(mut self, timeout: Duration) -> Self {
        self.handler_timeout = timeout;
        self
    }

    pub(super) fn validate(&self) -> Result<()> {
        crate::stream::validate_id("runner owner", &self.owner)?;
        super::store::validate_lease_ttl(self.lease_ttl)?;
        if self.handler_timeout.is_zero() || self.handler_timeout > super::store::MAX_LEASE_TTL {
            return Err(Error::InvalidInput(format!(
                "the handler timeout must be longer than zero and at most a day, got {:?}",
                self.handler_timeout
            )));
        }
        if self.poll.0.is_zero() || self.poll.1 < self.poll.0 {
            return Err(Error::InvalidInput(
                "polling pauses must be positive, and the longest at least the shortest".into(),
            ));
        }
        if self.page_size == 0 || self.page_size > crate::subscription::MAX_PAGE_SIZE {
            return Err(Error::InvalidInput(format!(
                "page size must be 1..={}, got {}",
                crate::subscription::MAX_PAGE_SIZE,
                self.page_size
            )));
        }
        if self.errors.backoff.is_zero() || self.errors.max_backoff < self.errors.backoff {
            return Err(Error::InvalidInput(
                "error backoff must be positive and max_backoff at least backoff".into(),
            ));
        }
        Ok(())
    }
}
