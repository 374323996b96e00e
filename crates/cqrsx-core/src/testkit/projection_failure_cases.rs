//! Projection cases for failing handlers and the status: contract items 13 and 14 — handlers
//! that panic, hang or meet a transient store error, under each policy, and a lag that is true
//! when read.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::projection_support::{fast, POISON};
use super::support::{ev, unique};
use super::Fixture;
use crate::error::Error;
use crate::event::Position;
use crate::projection::{ErrorPolicy, ProjectionRunner, RunnerOptions, RunnerState, ViewKey};
use crate::stream::{ExpectedVersion, StreamId};

/// What [`Misbehaving`] does with the event whose payload is [`POISON`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Misbehaviour {
    /// Panics.
    Panics,
    /// Never returns.
    Hangs,
    /// Fails with a transient store error three times, then applies it.
    FailsTransiently,
    /// Waits for the gate to open before applying any event.
    Gated,
}

/// A projection counting its events in one document, misbehaving on one event.
struct Misbehaving {
    name: String,
    aggregate: String,
    how: Misbehaviour,
    tries: AtomicUsize,
    gate: tokio::sync::Semaphore,
}

impl Misbehaving {
    fn new(how: Misbehaviour, aggregate: &str) -> Arc<Self> {
        Arc::new(Self {
            name: unique("misbehaving"),
            aggregate: aggregate.to_string(),
            how,
            tries: AtomicUsize::new(0),
            gate: tokio::sync::Semaphore::new(0),
        })
    }
}

#[crate::async_trait]
impl crate::projection::Projection for Misbehaving {
    fn name(&self) -> &str {
        &self.name
    }

    fn filter(&self) -> crate::event::EventFilter {
        crate::event::EventFilter::aggregate_types([self.aggregate.clone()])
    }

    async fn apply(
        &self,
        event: &crate::event::RecordedEvent,
        view: &mut crate::projection::View<'_>,
    ) -> crate::projection::HandlerResult {
        if self.how == Misbehaviour::Gated {
            self.gate.acquire().await?.forget();
        }
        if super::support::payload_n(&event.payload) == POISON {
            match self.how {
                Misbehaviour::Panics => panic!("the handler cannot take event {}", event.position),
                Misbehaviour::Hangs => std::future::pending::<()>().await,
                Misbehaviour::FailsTransiently if self.tries.fetch_add(1, Ordering::SeqCst) < 3 => {
                    return Err(Error::backend(true, "the view store is restarting").into());
                }
                _ => {}
            }
        }
        let n = view.get("n").await?.and_then(|d| d["n"].as_u64()).unwrap_or(0);
        view.put("n", json!({ "n": n + 1 }))?;
        Ok(())
    }
}

/// Contract 13: a handler that panics, hangs or meets a transient store error never ends the
/// runner silently. A panic or a hang fails the event under the policy — `Stop` ends the runner
/// `Failed` with the handler's message and the event's position in its status (and `join`
/// says so), `Park` parks it with that message and goes on; a transient error is retried, shown
/// in the status, and the event applied once. And contract 14: right after an acknowledged
/// append, the status read shows its lag.
pub async fn projection_failing_handlers_are_contained(f: Fixture) {
    let aggregate = unique("Failing");
    let stream = StreamId::new(&aggregate, "s").expect("stream");
    let appended = f
        .events
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![ev("F", 1), ev("F", POISON), ev("F", 3)],
        )
        .await
        .expect("append");
    let poison_at = Position {
        offset: appended.position.offset - 1,
        ..appended.position
    };
    let count = |name: String| {
        let f = f.clone();
        async move {
            let view = f.checkpoints.view(&ViewKey::new(name, 1).expect("key")).expect("view");
            view.get("n")
                .await
                .expect("get")
                .and_then(|d| d["n"].as_u64())
                .unwrap_or(0)
        }
    };
    let spawn = |p: Arc<Misbehaving>, options: RunnerOptions| {
        ProjectionRunner::new(p, Arc::clone(&f.events), Arc::clone(&f.checkpoints))
            .with_options(options)
            .spawn()
            .expect("spawn")
    };
    let within = Duration::from_secs(60);

    for how in [Misbehaviour::Panics, Misbehaviour::Hangs] {
        // Stop: the runner ends Failed, saying why and where.
        let p = Misbehaving::new(how, &aggregate);
        let short = Duration::from_millis(300);
        let handle = spawn(Arc::clone(&p), fast("stopper").with_handler_timeout(short));
        handle
            .wait_for(within, |s| s.ended())
            .await
            .unwrap_or_else(|e| panic!("{how:?}: the runner ends: {e}"));
        let status = handle.status().await;
        assert_eq!(status.state, RunnerState::Failed, "{how:?}: {status:?}");
        let message = status.last_error.clone().unwrap_or_default();
        let expected = if how == Misbehaviour::Panics {
            "cannot take event"
        } else {
            "did not finish"
        };
        assert!(message.contains(expected), "{how:?}: {message}");
        assert_eq!(status.error_position, Some(poison_at), "{how:?}: {status:?}");
        match handle.join().await {
            Err(Error::Handler { position, .. }) => assert_eq!(position, poison_at),
            other => panic!("{how:?}: the runner ends with the handler's error: {other:?}"),
        }
        assert_eq!(
            count(p.name.clone()).await,
            1,
            "{how:?}: the event before it is applied"
        );

        // Park: parked with the message, the rest applied.
        let p = Misbehaving::new(how, &aggregate);
        let park = fast("parker").with_errors(ErrorPolicy {
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            ..ErrorPolicy::park_after(1)
        });
        let handle = spawn(Arc::clone(&p), park.with_handler_timeout(short));
        let key = ViewKey::new(&p.name, 1).expect("key");
        handle
            .wait_until_caught_up(appended.position, within)
            .await
            .unwrap_or_else(|e| panic!("{how:?}: the parking runner goes on: {e}"));
        let parked = f.checkpoints.parked(&key).await.expect("parked");
        assert_eq!(parked.len(), 1, "{how:?}: {parked:?}");
        assert_eq!(parked[0].position, poison_at);
        assert!(parked[0].error.contains(expected), "{how:?}: {}", parked[0].error);
        assert_eq!(count(p.name.clone()).await, 2, "{how:?}: the rest is applied");
        let status = handle.status().await;
        assert_eq!(status.parked, 1, "{status:?}");
        assert!(!status.ended(), "{status:?}");
        handle.stop().await.expect("stop");
    }

    // A transient store error under the handler: retried, shown, applied once.
    let p = Misbehaving::new(Misbehaviour::FailsTransiently, &aggregate);
    let handle = spawn(
        Arc::clone(&p),
        fast("transient").with_errors(ErrorPolicy::stop_after(0)),
    );
    handle
        .wait_until_caught_up(appended.position, within)
        .await
        .expect("a transient error is ridden out");
    assert_eq!(p.tries.load(Ordering::SeqCst), 4, "three failures, then applied");
    assert_eq!(count(p.name.clone()).await, 3, "every event applied once");
    let status = handle.status().await;
    assert!(
        status.last_error.as_deref().is_some_and(|e| e.contains("restarting")),
        "{status:?}"
    );
    assert_eq!(
        status.retry_attempts, 0,
        "the retries are over once it committed: {status:?}"
    );
    handle.stop().await.expect("stop");

    // The lag is true when read: a runner that cannot apply yet shows the append at once.
    let p = Misbehaving::new(Misbehaviour::Gated, &aggregate);
    let handle = spawn(Arc::clone(&p), fast("gated"));
    let status = handle.status().await;
    assert!(
        status.checkpoint.is_some() || status.total_lag() >= 1,
        "a runner that has not read its checkpoint yet is behind the whole log: {status:?}"
    );
    handle
        .wait_for(within, |s| s.checkpoint.is_some())
        .await
        .expect("the runner starts");
    let status = handle.status().await;
    // Events where positions number events; commits where they number commits (MongoDB).
    assert!(status.total_lag() >= 1, "three events not applied yet: {status:?}");
    p.gate.add_permits(1_000);
    handle
        .wait_until_caught_up(appended.position, within)
        .await
        .expect("applies once let through");
    let more = f
        .events
        .append(&stream, ExpectedVersion::Any, vec![ev("F", 5)])
        .await
        .expect("append");
    let status = handle.status().await;
    let applied = status.checkpoint.as_ref().is_some_and(|c| c.covers(more.position));
    assert!(
        applied || status.total_lag() >= 1,
        "right after an append the lag counts it until it is applied: {status:?}"
    );
    handle
        .wait_until_caught_up(more.position, within)
        .await
        .expect("caught up");
    assert_eq!(handle.status().await.total_lag(), 0);
    handle.stop().await.expect("stop");
}
