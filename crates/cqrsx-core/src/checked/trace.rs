//! The span, the outcome record and the metrics every checked operation gets.

use std::future::Future;
use std::time::Instant;

use tracing::{Instrument, Span};

use crate::error::Result;
use crate::telemetry;

/// Runs `op` (the checks, then the backend's call) in `span`, traces its outcome and how long it
/// took inside the same span (when something listens at `debug`), and records the operation's
/// count by outcome and its latency
/// ([`telemetry::names::STORE_OPERATIONS`], [`telemetry::names::STORE_OPERATION_DURATION`]),
/// labelled with `store` (a [`backend`] name) and `operation` (the span's name: a disabled
/// span does not keep it).
pub(super) async fn measured<T>(
    store: &'static str,
    operation: &'static str,
    span: Span,
    op: impl Future<Output = Result<T>>,
) -> Result<T> {
    let started = Instant::now();
    let result = if span.is_disabled() {
        op.await
    } else {
        run_traced(span, started, op).await
    };
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    };
    telemetry::record_store_operation(telemetry::backend_label(store), operation, outcome, started.elapsed());
    result
}

async fn run_traced<T>(span: Span, started: Instant, op: impl Future<Output = Result<T>>) -> Result<T> {
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
