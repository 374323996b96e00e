//! The span and the outcome record every checked operation gets.

use std::future::Future;
use std::time::Instant;

use tracing::{Instrument, Span};

use crate::error::Result;

/// Runs `op` (the checks, then the backend's call) in `span`, then traces its outcome and how
/// long it took inside the same span.
pub(super) async fn traced<T>(span: Span, op: impl Future<Output = Result<T>>) -> Result<T> {
    // Nothing listens at `debug` for this span: no clock reads on the hot path.
    if span.is_disabled() {
        return op.await;
    }
    let started = Instant::now();
    let result = op.instrument(span.clone()).await;
    let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    span.in_scope(|| match &result {
        Ok(_) => tracing::debug!(elapsed_us, "done"),
        Err(error) => tracing::debug!(elapsed_us, %error, "failed"),
    });
    result
}

/// The backend's name in spans: its type's name.
pub(super) fn backend<B: ?Sized>() -> &'static str {
    std::any::type_name::<B>()
}
