//! Jittered pauses, so that clients that collided fall out of step.

use std::time::Duration;

/// A short pause after the `attempt`-th collision: up to `attempt` × 200 µs, varied by the
/// clock's nanoseconds so that writers that collided together spread out.
pub(crate) fn collision_backoff(attempt: usize) -> Duration {
    let ceiling = 200 * attempt.min(20) as u64;
    Duration::from_micros(jitter() % ceiling.max(1))
}

/// A pause after the `attempt`-th schema statement that raced another client's: up to
/// `attempt` × 25 ms (at most 250 ms), jittered, so that racing clients fall out of step.
pub(crate) fn ddl_backoff(attempt: usize) -> Duration {
    let ceiling = 25_000 * attempt.min(10) as u64;
    Duration::from_micros(ceiling / 2 + jitter() % (ceiling / 2).max(1))
}

fn jitter() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0)
}
