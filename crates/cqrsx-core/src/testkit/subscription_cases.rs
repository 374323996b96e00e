//! Subscription cases: contract item 10 — catch-up from any checkpoint, the live tail, filters.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use super::support::{ev, unique};
use super::Fixture;
use crate::checkpoint::{Checkpoint, Wake};
use crate::error::Error;
use crate::event::{EventFilter, NewEvent, RecordedEvent};
use crate::event_store::EventStore;
use crate::stream::{ExpectedVersion, StreamId};
use crate::subscription::{subscribe, SubscriptionMessage, SubscriptionOptions};

/// The independent fold: every event of `streams`, read stream by stream.
async fn fold(store: &dyn EventStore, streams: &[StreamId]) -> BTreeMap<(String, u64), RecordedEvent> {
    let mut all = BTreeMap::new();
    for s in streams {
        for e in store.read_stream(s, 1, usize::MAX).await.expect("read stream") {
            all.insert((s.key().to_string(), e.version), e);
        }
    }
    all
}

/// Reads a subscription to its `CaughtUp`, checking order and the checkpoints on the way;
/// returns the events and the final checkpoint.
async fn catch_up(store: &Arc<dyn EventStore>, options: SubscriptionOptions) -> (Vec<RecordedEvent>, Checkpoint) {
    let mut sub = subscribe(Arc::clone(store), options.with_live(false)).expect("subscribe");
    let mut events: Vec<RecordedEvent> = Vec::new();
    let mut last: Option<Checkpoint> = None;
    // A store that never lets the reader reach its head must fail the case, not hang it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while let Some(message) = tokio::time::timeout_at(deadline, sub.try_next())
        .await
        .expect("the catch-up did not reach the head within 120 s")
        .expect("subscription")
    {
        match message {
            SubscriptionMessage::Events {
                events: page,
                checkpoint,
            } => {
                if let Some(before) = &last {
                    assert!(checkpoint.includes(before), "checkpoints only move forward");
                }
                for e in &page {
                    assert!(checkpoint.covers(e.position), "the page's checkpoint covers its events");
                    if let Some(prev) = events
                        .iter()
                        .rev()
                        .find(|p| p.position.partition == e.position.partition)
                    {
                        assert!(e.position > prev.position, "position order within a partition");
                    }
                }
                events.extend(page);
                last = Some(checkpoint);
            }
            SubscriptionMessage::CaughtUp { checkpoint } => {
                assert!(sub.next().await.is_none(), "an until-caught-up subscription ends there");
                return (events, checkpoint);
            }
            SubscriptionMessage::FellBehind { .. } => panic!("a catch-up read never falls behind"),
        }
    }
    panic!("the subscription ended without saying it caught up")
}

fn keyed(events: &[RecordedEvent]) -> BTreeMap<(String, u64), RecordedEvent> {
    let mut map = BTreeMap::new();
    for e in events {
        let previous = map.insert((e.stream.key().to_string(), e.version), e.clone());
        assert!(previous.is_none(), "{} v{} delivered twice", e.stream, e.version);
    }
    map
}

/// Writes `commits` commits of 1–5 events, mixing two event types, over `streams`.
async fn write_mixed(store: &dyn EventStore, streams: &[StreamId], commits: usize, start: u64) {
    for c in 0..commits {
        let s = &streams[c % streams.len()];
        let n = 1 + (c as u64 * 7) % 5;
        let batch: Vec<NewEvent> = (0..n)
            .map(|k| {
                ev(
                    if (c as u64 + k) % 3 == 0 { "SubB" } else { "SubA" },
                    start + c as u64 * 10 + k,
                )
            })
            .collect();
        store.append(s, ExpectedVersion::Any, batch).await.expect("append");
    }
}

/// Contract 10: a subscription from the start, and from any checkpoint it reported, yields
/// exactly the events an independent fold over every stream finds — each once, in position
/// order per partition — and a checkpoint from the future or of another layout is refused.
pub async fn subscription_catches_up_from_zero_and_from_a_checkpoint(f: Fixture) {
    let aggregate = unique("Sub");
    let streams: Vec<StreamId> = (0..6)
        .map(|i| StreamId::new(&aggregate, format!("s{i}")).expect("stream"))
        .collect();
    write_mixed(&*f.events, &streams, 40, 0).await;
    let filter = EventFilter::aggregate_types([aggregate.clone()]);
    let options = || {
        SubscriptionOptions::default()
            .with_filter(filter.clone())
            .with_page_size(7)
    };

    let (all, end) = catch_up(&f.events, options()).await;
    let expected = fold(&*f.events, &streams).await;
    assert_eq!(keyed(&all), expected, "catch-up from zero equals the fold");

    // From a checkpoint in the middle: exactly the rest.
    let mut sub = subscribe(Arc::clone(&f.events), options().with_live(false)).expect("subscribe");
    let mut seen = Vec::new();
    let mut middle = None;
    while let Some(message) = sub.try_next().await.expect("subscription") {
        if let SubscriptionMessage::Events { events, checkpoint } = message {
            seen.extend(events);
            if seen.len() >= all.len() / 2 {
                middle = Some(checkpoint);
                break;
            }
        }
    }
    let middle = middle.expect("a checkpoint halfway");
    let (rest, end_again) = catch_up(&f.events, options().with_start(middle.clone())).await;
    assert_eq!(end_again, end, "both reads end at the same checkpoint");
    let mut joined = keyed(&seen);
    for (k, e) in keyed(&rest) {
        assert!(
            joined.insert(k, e).is_none(),
            "an event before the checkpoint came again"
        );
    }
    assert_eq!(joined, expected, "halfway checkpoint + the rest equals the fold");
    assert!(rest.iter().all(|e| !middle.covers(e.position)));

    // From the end: only what is written afterwards.
    write_mixed(&*f.events, &streams, 9, 5_000).await;
    let (new, _) = catch_up(&f.events, options().with_start(end.clone())).await;
    let after = fold(&*f.events, &streams).await;
    let fresh: BTreeMap<_, _> = after.into_iter().filter(|(k, _)| !expected.contains_key(k)).collect();
    assert_eq!(
        keyed(&new),
        fresh,
        "a subscription from the end sees only the new events"
    );

    // Checkpoints the store cannot have: refused with InvalidInput, before any event.
    let head = f.events.head().await.expect("head");
    let future = Checkpoint::from_offsets(head.positions().map(|p| p.offset + 1_000_000)).expect("checkpoint");
    let mut sub = subscribe(Arc::clone(&f.events), options().with_start(future)).expect("subscribe");
    match sub.try_next().await {
        Err(Error::InvalidInput(m)) => assert!(m.contains("ahead"), "{m}"),
        other => panic!("a checkpoint from the future must be refused: {other:?}"),
    }
    let other_layout = Checkpoint::start(head.partitions() + 1);
    assert!(matches!(
        subscribe(Arc::clone(&f.events), options().with_start(other_layout)),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        subscribe(Arc::clone(&f.events), options().with_page_size(0)),
        Err(Error::InvalidInput(_))
    ));
}

/// Contract 10, live: after catching up, events appended by concurrent writers arrive (within
/// a bound, no sleeps), each once; and the backend's wake-up signal is what it declares.
pub async fn subscription_goes_live_and_wakes_on_appends(f: Fixture) {
    let aggregate = unique("Live");
    let filter = EventFilter::aggregate_types([aggregate.clone()]);
    let caps = f.events.capabilities();

    // The declared signal: a wait wakes on an append, times out without one, or says it has
    // no signal at once.
    let head = f.events.head().await.expect("head");
    if caps.live_signal {
        let store = Arc::clone(&f.events);
        let s = StreamId::new(&aggregate, "wake").expect("stream");
        let started = Instant::now();
        let (wake, ()) = tokio::join!(f.events.wait_for_append(&head, Duration::from_secs(20)), async {
            tokio::task::yield_now().await;
            store
                .append(&s, ExpectedVersion::Any, vec![ev("Woke", 1)])
                .await
                .expect("append");
        });
        assert_eq!(wake.expect("wait"), Wake::Signalled);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the signal woke the waiter long before its timeout"
        );
        let now = f.events.head().await.expect("head");
        let quiet = f
            .events
            .wait_for_append(&now, Duration::from_millis(300))
            .await
            .expect("wait");
        assert_eq!(quiet, Wake::TimedOut, "no append, no wake-up");
    } else {
        let started = Instant::now();
        let wake = f
            .events
            .wait_for_append(&head, Duration::from_secs(20))
            .await
            .expect("wait");
        assert_eq!(wake, Wake::Unsupported, "a backend without a signal says so");
        assert!(started.elapsed() < Duration::from_secs(5), "and returns at once");
    }

    let (tx, mut rx) = mpsc::unbounded_channel();
    let options = SubscriptionOptions::default()
        .with_filter(filter)
        .with_page_size(50)
        .with_poll_between(Duration::from_millis(2), Duration::from_millis(50));
    let mut sub = subscribe(Arc::clone(&f.events), options).expect("subscribe");
    let reader = tokio::spawn(async move {
        while let Some(message) = sub.next().await {
            if tx.send(message).is_err() {
                return;
            }
        }
    });
    let deadline = Duration::from_secs(60);
    let mut before = Vec::new();
    loop {
        match tokio::time::timeout(deadline, rx.recv()).await {
            Ok(Some(Ok(SubscriptionMessage::CaughtUp { .. }))) => break,
            Ok(Some(Ok(SubscriptionMessage::Events { events, .. }))) => before.extend(events),
            other => panic!("expected the catch-up to end: {other:?}"),
        }
    }
    assert_eq!(
        before.len() as u64,
        u64::from(caps.live_signal),
        "only the wake-up event"
    );

    const WRITERS: u64 = 4;
    const COMMITS: u64 = 15;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, aggregate) = (Arc::clone(&f.events), aggregate.clone());
        writers.push(tokio::spawn(async move {
            let s = StreamId::new(&aggregate, format!("w{w}")).expect("stream");
            let mut ids = Vec::new();
            for c in 0..COMMITS {
                let batch: Vec<NewEvent> = (0..1 + c % 3).map(|k| ev("Live", w * 1000 + c * 10 + k)).collect();
                ids.extend(batch.iter().map(|e| e.event_id));
                store.append(&s, ExpectedVersion::Any, batch).await.expect("append");
            }
            ids
        }));
    }
    let mut written = HashSet::new();
    for w in writers {
        written.extend(w.await.expect("writer"));
    }
    let mut live = HashSet::new();
    while live.len() < written.len() {
        match tokio::time::timeout(deadline, rx.recv()).await {
            Ok(Some(Ok(SubscriptionMessage::Events { events, .. }))) => {
                for e in events {
                    assert!(live.insert(e.event_id), "{} delivered twice", e.event_id);
                }
            }
            Ok(Some(Ok(_))) => {}
            other => panic!(
                "live events stopped arriving after {} of {}: {other:?}",
                live.len(),
                written.len()
            ),
        }
    }
    assert_eq!(live, written, "every appended event arrived live, once");
    reader.abort();
}

/// Contract 10, filters: event-type and aggregate-type filters, alone and together, across
/// batches that mix types, deliver exactly the matching events of the fold.
pub async fn subscription_filters_by_type_and_aggregate_type(f: Fixture) {
    let (p, q) = (unique("FiltP"), unique("FiltQ"));
    let (x, y, z) = (unique("X"), unique("Y"), unique("Z"));
    let streams: Vec<StreamId> = [&p, &q, &p, &q]
        .iter()
        .enumerate()
        .map(|(i, a)| StreamId::new(a.as_str(), format!("f{i}")).expect("stream"))
        .collect();
    let types = [&x, &y, &z];
    for round in 0..6u64 {
        for (i, s) in streams.iter().enumerate() {
            let batch: Vec<NewEvent> = (0..4u64)
                .map(|k| ev(types[((round + k + i as u64) % 3) as usize], round * 100 + k))
                .collect();
            f.events.append(s, ExpectedVersion::Any, batch).await.expect("append");
        }
    }
    let everything = fold(&*f.events, &streams).await;
    let cases = [
        EventFilter::event_types([x.clone()]),
        EventFilter::event_types([x.clone(), z.clone()]),
        EventFilter::aggregate_types([p.clone()]),
        EventFilter {
            event_types: vec![y.clone()],
            aggregate_types: vec![q.clone()],
        },
    ];
    for filter in cases {
        let (got, _) = catch_up(
            &f.events,
            SubscriptionOptions::default()
                .with_filter(filter.clone())
                .with_page_size(5),
        )
        .await;
        let want: BTreeMap<_, _> = everything
            .iter()
            .filter(|(_, e)| filter.matches(&e.event_type, e.aggregate_type()))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        assert!(!want.is_empty(), "{filter:?} matches something");
        assert_eq!(keyed(&got), want, "{filter:?}");
    }
    let bad = EventFilter::event_types(["has space"]);
    assert!(matches!(
        subscribe(Arc::clone(&f.events), SubscriptionOptions::default().with_filter(bad)),
        Err(Error::InvalidInput(_))
    ));
}
