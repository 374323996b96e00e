//! Projection cases: contract items 11–13 — crashes, leases and fencing, poison events,
//! rebuilds, bad input.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::projection_support::{
    anomalies, expected_shapes, expected_tallies, fast, runner, settle, shape_ids, view_shapes, view_tallies, Dice,
    TallyProjection, POISON,
};
use super::support::{ev, report, unique};
use super::Fixture;
use crate::checkpoint::Checkpoint;
use crate::error::Error;
use crate::event::Position;
use crate::projection::{ErrorPolicy, ProjectionRunner, RunnerOptions, RunnerState, ViewKey};
use crate::raw::{Commit, ViewChange, ViewWrite};
use crate::stream::{ExpectedVersion, StreamId};

/// Contract 11: while writers append (two event types, to streams spread over every
/// partition), the runner is aborted at random points (at least 50 times, including
/// mid-commit) and restarted; at the end the view equals the fold of the events — none
/// skipped, none applied twice — in every document shape: one document per stream, one per
/// aggregate type, one global total, one per event type.
pub async fn projection_survives_crashes_without_skips_or_repeats(f: Fixture) {
    let aggregate = unique("Crash");
    let name = unique("crash");
    let projection = Arc::new(TallyProjection::new(&name, &aggregate));
    let key = ViewKey::new(&name, 1).expect("key");
    const WRITERS: usize = 16;
    let stress = f.stress;
    let streams: Vec<StreamId> = (0..WRITERS * 2)
        .map(|i| StreamId::new(&aggregate, format!("s{i}")).expect("stream"))
        .collect();
    // The writes are spread over the first restarts, so runners are killed while events still
    // arrive on every backend, however fast it appends.
    const SPREAD: u64 = 50;
    let done = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, streams, done, killed) = (
            Arc::clone(&f.events),
            streams.clone(),
            Arc::clone(&done),
            Arc::clone(&killed),
        );
        writers.push(tokio::spawn(async move {
            let mut written = 0;
            let mut i = 0u64;
            while written < stress.events_per_writer {
                while written * SPREAD > killed.load(Ordering::SeqCst) as u64 * stress.events_per_writer {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let s = &streams[w * 2 + (i % 2) as usize];
                let n = (1 + i % 3).min(stress.events_per_writer - written);
                let batch = (0..n)
                    .map(|k| {
                        let kind = if (i + k) % 2 == 0 { "Tallied" } else { "Adjusted" };
                        ev(kind, 1 + (w as u64) * 100_000 + i * 10 + k)
                    })
                    .collect();
                store.append(s, ExpectedVersion::Any, batch).await.expect("append");
                written += n;
                i += 1;
                tokio::task::yield_now().await;
            }
            done.fetch_add(1, Ordering::SeqCst);
        }));
    }
    let mut dice = Dice::new();
    let mut restarts = 0u32;
    // Sessions that applied events before they were killed. The kill comes a little sooner
    // after one that did and twice as late after one that did not, so most sessions work and
    // are then killed inside a page or a commit, on a fast store and a slow one alike.
    let mut working = 0u32;
    let mut reach = Duration::from_millis(30);
    while u64::from(restarts) < SPREAD || done.load(Ordering::SeqCst) < WRITERS {
        let calls = projection.calls.load(Ordering::SeqCst);
        // A killed runner's lease holds its successor off until it runs out: a short one keeps
        // the successors working (and losing it under load is one more fault the case rides out).
        let options = fast("crash-test").with_lease_ttl(Duration::from_millis(500));
        let handle = runner(&f, Arc::clone(&projection), options);
        // Abort anywhere: before the first read, inside a page, between a commit's parts.
        match dice.below(4) {
            0 => tokio::task::yield_now().await,
            _ => tokio::time::sleep(reach.mul_f64(dice.below(1_000) as f64 / 1_000.0)).await,
        }
        handle.abort();
        let _ = handle.join().await;
        restarts += 1;
        killed.fetch_add(1, Ordering::SeqCst);
        reach = if projection.calls.load(Ordering::SeqCst) == calls {
            (reach * 2).min(Duration::from_secs(2))
        } else {
            working += 1;
            reach.mul_f64(0.8).max(Duration::from_millis(2))
        };
        assert!(restarts < 2_000, "the writers never finished");
    }
    for w in writers {
        w.await.expect("writer");
    }
    let handle = runner(&f, Arc::clone(&projection), fast("crash-test"));
    settle(&f, &handle, Duration::from_secs(120)).await;
    let status = handle.status().await;
    if let Err(e) = handle.stop().await {
        panic!("the last runner ended with {e}; its status before the stop: {status:?}");
    }
    let fold = expected_tallies(&f, &streams).await;
    let view = view_tallies(&f, &key, &streams).await;
    let (skipped, twice) = anomalies(&view, &fold);
    let total: u64 = fold.values().map(|t| t.count).sum();
    let shapes = shape_ids(&aggregate, &["Tallied", "Adjusted"]);
    let shapes_fold = expected_shapes(&f, &streams).await;
    let shapes_view = view_shapes(&f, &key, &shapes).await;
    let shapes_off: u64 = shapes_fold
        .iter()
        .map(|(id, want)| want.count.abs_diff(shapes_view.get(id).map_or(0, |t| t.count)))
        .sum();
    report(
        f.label,
        &format!(
            "crash case: {restarts} restarts ({working} while applying), {total} events over {} partitions, skipped {skipped}, applied twice {twice}, shared documents off by {shapes_off}",
            f.events.capabilities().partitions
        ),
    );
    assert_eq!(total, WRITERS as u64 * stress.events_per_writer);
    assert!(
        working >= 5,
        "only {working} of {restarts} runners applied events before they were killed: the case tested little"
    );
    assert_eq!((skipped, twice), (0, 0), "after {restarts} crashes");
    assert_eq!(view, fold, "the view equals the fold");
    assert_eq!(shapes_view, shapes_fold, "every shared document equals the fold");
    assert_eq!(
        projection.most_inside.load(Ordering::SeqCst),
        1,
        "one handler at a time"
    );
}

/// Contract 12: a lease admits one owner; a runner that lost it is fenced (its commit and
/// renewal are refused and change nothing); of two runners only one applies, and the other
/// takes over within twice the lease TTL after the first dies.
pub async fn projection_lease_admits_one_runner_and_fences_the_stale_one(f: Fixture) {
    let store = &f.checkpoints;
    let partitions = f.events.capabilities().partitions;
    let key = ViewKey::new(unique("lease"), 1).expect("key");
    // Long enough that a loaded server (FerretDB scans every table, next to three other
    // backends' suites) answers the next two calls well inside it.
    let ttl = Duration::from_secs(3);
    let a = store
        .acquire(&key, "owner-a", ttl)
        .await
        .expect("acquire")
        .expect("free lease");
    assert!(
        store.acquire(&key, "owner-b", ttl).await.expect("acquire").is_none(),
        "a held lease is not granted to another owner"
    );
    let put = |id: &str, by: &str, offset: u64| ViewWrite {
        id: id.to_string(),
        change: ViewChange::Put {
            data: json!({ "by": by }),
            ttl: None,
        },
        position: Position { partition: 0, offset },
    };
    let mut first = Checkpoint::start(partitions);
    first.advance(Position {
        partition: 0,
        offset: 5,
    });
    store
        .commit(
            &a,
            Commit {
                writes: vec![put("doc", "a", 3)],
                checkpoint: Some(first.clone()),
                ..Commit::default()
            },
        )
        .await
        .expect("commit under the lease");
    // B takes over once A's lease expires.
    let deadline = Instant::now() + ttl * 20;
    let b = loop {
        if let Some(b) = store.acquire(&key, "owner-b", ttl).await.expect("acquire") {
            break b;
        }
        assert!(Instant::now() < deadline, "an expired lease must be granted");
        tokio::time::sleep(ttl / 10).await;
    };
    assert!(b.token > a.token, "a takeover gets a larger fencing token");
    let mut stale_checkpoint = first.clone();
    stale_checkpoint.advance(Position {
        partition: 0,
        offset: 9,
    });
    let refused = store
        .commit(
            &a,
            Commit {
                writes: vec![put("doc", "a-stale", 7), put("other", "a-stale", 7)],
                checkpoint: Some(stale_checkpoint),
                ..Commit::default()
            },
        )
        .await;
    assert!(
        matches!(refused, Err(Error::LeaseLost { .. })),
        "a fenced commit is refused: {refused:?}"
    );
    assert!(matches!(store.renew(&a, ttl).await, Err(Error::LeaseLost { .. })));
    let view = store.view(&key).expect("view");
    assert_eq!(
        view.get("doc").await.expect("get"),
        Some(json!({"by": "a"})),
        "unchanged"
    );
    assert_eq!(
        view.get("other").await.expect("get"),
        None,
        "nothing of the fenced commit"
    );
    assert_eq!(
        store.checkpoint(&key).await.expect("checkpoint"),
        Some(first),
        "unchanged"
    );
    store.release(&a).await.expect("releasing a lost lease does nothing");
    store
        .commit(
            &b,
            Commit {
                writes: vec![put("doc", "b", 8)],
                ..Commit::default()
            },
        )
        .await
        .expect("the holder commits");
    store.release(&b).await.expect("release");
    let again = store
        .acquire(&key, "owner-a", ttl)
        .await
        .expect("acquire")
        .expect("released");
    assert!(again.token > b.token);
    store.release(&again).await.expect("release");

    // Two runners: one applies, the other waits, and takes over when the first dies.
    let aggregate = unique("Lease");
    let name = unique("lease");
    let projection = Arc::new(TallyProjection::new(&name, &aggregate));
    let streams: Vec<StreamId> = (0..3)
        .map(|i| StreamId::new(&aggregate, format!("s{i}")).expect("stream"))
        .collect();
    for (i, s) in streams.iter().enumerate() {
        f.events
            .append(
                s,
                ExpectedVersion::Any,
                (0..5).map(|k| ev("Leased", i as u64 * 10 + k)).collect(),
            )
            .await
            .expect("append");
    }
    let runner_ttl = Duration::from_secs(2);
    let first = runner(&f, Arc::clone(&projection), fast("runner-1").with_lease_ttl(runner_ttl));
    first
        .wait_for(Duration::from_secs(30), |s| s.token.is_some())
        .await
        .expect("the first runner takes the lease");
    let second = runner(&f, Arc::clone(&projection), fast("runner-2").with_lease_ttl(runner_ttl));
    second
        .wait_for(Duration::from_secs(30), |s| s.state == RunnerState::WaitingForLease)
        .await
        .expect("the second runner waits for the lease");
    settle(&f, &first, Duration::from_secs(60)).await;
    assert_eq!(second.status().await.applied, 0, "the waiting runner applied nothing");
    first.abort();
    let died = Instant::now();
    let _ = first.join().await;
    let last = f
        .events
        .append(&streams[0], ExpectedVersion::Any, vec![ev("Leased", 99)])
        .await
        .expect("append");
    second
        .wait_until_caught_up(last.position, runner_ttl * 2 + Duration::from_secs(30))
        .await
        .expect("the second runner takes over");
    let took = died.elapsed();
    second
        .wait_for(Duration::from_secs(1), |s| s.token.is_some())
        .await
        .expect("it holds the lease");
    assert!(
        took < runner_ttl * 2 + Duration::from_secs(10),
        "takeover took {took:?} with a lease of {runner_ttl:?}"
    );
    second.stop().await.expect("stop");
    let key = ViewKey::new(&name, 1).expect("key");
    let fold = expected_tallies(&f, &streams).await;
    assert_eq!(view_tallies(&f, &key, &streams).await, fold, "the view equals the fold");
    assert_eq!(
        projection.most_inside.load(Ordering::SeqCst),
        1,
        "never two handlers at once"
    );
}

/// Contract 13: a poison event never blocks silently. With `Stop` the runner halts at it, with
/// the error in its status and its checkpoint just before it; with `Park` it is parked (its
/// position, error and attempts kept), the rest is applied, and a replay applies it once when
/// the handler is fixed.
pub async fn projection_poison_event_stops_or_parks(f: Fixture) {
    let aggregate = unique("Poison");
    let streams: Vec<StreamId> = (0..2)
        .map(|i| StreamId::new(&aggregate, format!("s{i}")).expect("stream"))
        .collect();
    f.events
        .append(&streams[0], ExpectedVersion::Any, (1..=4).map(|n| ev("P", n)).collect())
        .await
        .expect("append");
    let poison = f
        .events
        .append(&streams[1], ExpectedVersion::Any, vec![ev("P", 10), ev("P", POISON)])
        .await
        .expect("append");
    f.events
        .append(&streams[0], ExpectedVersion::Any, (5..=7).map(|n| ev("P", n)).collect())
        .await
        .expect("append");

    // Stop: halts at the poison event.
    let name = unique("stopper");
    let projection = Arc::new(TallyProjection::new(&name, &aggregate));
    let handle = runner(&f, Arc::clone(&projection), fast("stopper"));
    let failed = handle
        .wait_for(Duration::from_secs(60), |s| s.state == RunnerState::Failed)
        .await;
    let status = handle.status().await;
    assert!(failed.is_err() || status.state == RunnerState::Failed, "{status:?}");
    assert_eq!(status.state, RunnerState::Failed);
    assert!(
        status.last_error.as_deref().is_some_and(|e| e.contains("poison")),
        "{status:?}"
    );
    match handle.join().await {
        Err(Error::Handler { position, .. }) => assert_eq!(position, poison.position),
        other => panic!("the runner ends with the handler's error: {other:?}"),
    }
    let key = ViewKey::new(&name, 1).expect("key");
    let checkpoint = f
        .checkpoints
        .checkpoint(&key)
        .await
        .expect("checkpoint")
        .expect("saved");
    assert!(
        !checkpoint.covers(poison.position),
        "the checkpoint stops before the poison event"
    );
    assert_eq!(
        checkpoint.next(poison.position.partition),
        poison.position,
        "and right at it"
    );
    let view = view_tallies(&f, &key, &streams).await;
    assert_eq!(
        view.get("s1").map(|t| t.count),
        Some(1),
        "the event before it is applied"
    );

    // Park: the rest is applied; a replay applies the poison event once, when fixed.
    let name = unique("parker");
    let projection = Arc::new(TallyProjection::new(&name, &aggregate));
    let key = ViewKey::new(&name, 1).expect("key");
    let park = fast("parker").with_errors(ErrorPolicy {
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        ..ErrorPolicy::park_after(2)
    });
    let handle = runner(&f, Arc::clone(&projection), park);
    settle(&f, &handle, Duration::from_secs(60)).await;
    let parked = f.checkpoints.parked(&key).await.expect("parked");
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].position, poison.position);
    assert_eq!(parked[0].attempts, 3, "the first try and two retries");
    assert!(parked[0].error.contains("poison"));
    assert_eq!(handle.status().await.parked, 1);
    let view = view_tallies(&f, &key, &streams).await;
    assert_eq!(view.get("s0").map(|t| t.count), Some(7), "the rest is applied");
    assert_eq!(view.get("s1").map(|t| (t.count, t.sum)), Some((1, 10)));
    assert_eq!(handle.replay_parked().await.expect("replay while broken"), 0);
    assert_eq!(
        f.checkpoints.parked(&key).await.expect("parked").len(),
        1,
        "still parked"
    );
    projection.fixed.store(true, Ordering::SeqCst);
    assert_eq!(handle.replay_parked().await.expect("replay"), 1);
    assert_eq!(handle.replay_parked().await.expect("replay again"), 0, "replayed once");
    assert!(f.checkpoints.parked(&key).await.expect("parked").is_empty());
    assert_eq!(handle.status().await.parked, 0);
    let view = view_tallies(&f, &key, &streams).await;
    assert_eq!(
        view.get("s1").map(|t| (t.count, t.sum)),
        Some((2, 10 + POISON)),
        "applied once"
    );
    handle.stop().await.expect("stop");
}

/// Rebuild: version 2 runs from the start into its own view while version 1 serves, becomes
/// the active version once caught up, version 1 steps down and its view is dropped; the two
/// views are equal, and version 1 can no longer start.
pub async fn projection_rebuild_equals_the_live_view(f: Fixture) {
    let aggregate = unique("Rebuild");
    let name = unique("rebuilt");
    let streams: Vec<StreamId> = (0..4)
        .map(|i| StreamId::new(&aggregate, format!("s{i}")).expect("stream"))
        .collect();
    for round in 0..5u64 {
        for (i, s) in streams.iter().enumerate() {
            f.events
                .append(s, ExpectedVersion::Any, vec![ev("R", round * 10 + i as u64)])
                .await
                .expect("append");
        }
    }
    let v1 = runner(&f, Arc::new(TallyProjection::new(&name, &aggregate)), fast("v1"));
    settle(&f, &v1, Duration::from_secs(60)).await;
    let k1 = ViewKey::new(&name, 1).expect("key");
    let k2 = ViewKey::new(&name, 2).expect("key");
    assert_eq!(f.checkpoints.active_version(&name).await.expect("active"), Some(1));
    let live = view_tallies(&f, &k1, &streams).await;
    assert_eq!(live, expected_tallies(&f, &streams).await);

    let v2 = runner(
        &f,
        Arc::new(TallyProjection::new(&name, &aggregate).version(2)),
        fast("v2"),
    );
    let superseded = v1
        .wait_for(Duration::from_secs(60), |s| s.state == RunnerState::Superseded)
        .await;
    assert!(superseded.is_ok(), "v1 steps down: {:?}", v1.last_status());
    assert_eq!(f.checkpoints.active_version(&name).await.expect("active"), Some(2));
    let (active, _) = f.checkpoints.active_view(&name).await.expect("active view");
    assert_eq!(active, k2);
    let rebuilt = view_tallies(&f, &k2, &streams).await;
    assert_eq!(rebuilt, live, "the rebuilt view equals the live one");
    // v2 drops v1's view, documents and checkpoint, once v1 has let go of its lease. On a
    // store without transactions these are separate writes, so the case waits for each in
    // turn, and reads the documents only once the checkpoint is gone (a read racing the drop
    // of a collection fails on FerretDB).
    let deadline = Instant::now() + Duration::from_secs(60);
    while f.checkpoints.checkpoint(&k1).await.expect("checkpoint").is_some() {
        assert!(Instant::now() < deadline, "the old view's checkpoint was never dropped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while !view_tallies(&f, &k1, &streams).await.is_empty() {
        assert!(Instant::now() < deadline, "the old view's documents were never dropped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    v1.join().await.expect("v1 ended cleanly");
    let old = runner(&f, Arc::new(TallyProjection::new(&name, &aggregate)), fast("v1-again"));
    match old.join().await {
        Err(Error::Config(m)) => assert!(m.contains("older"), "{m}"),
        other => panic!("an older version must refuse to start: {other:?}"),
    }
    v2.stop().await.expect("stop");
}

/// Bad input around projections gets typed errors and changes nothing.
pub async fn projection_bad_input_is_refused(f: Fixture) {
    let aggregate = unique("Bad");
    let spawn = |projection: TallyProjection, options: RunnerOptions| {
        ProjectionRunner::new(Arc::new(projection), Arc::clone(&f.events), Arc::clone(&f.checkpoints))
            .with_options(options)
            .spawn()
            .map(|_| ())
    };
    let cases: Vec<(&str, TallyProjection, RunnerOptions)> = vec![
        ("empty name", TallyProjection::new("", &aggregate), fast("x")),
        (
            "name with a space",
            TallyProjection::new("has space", &aggregate),
            fast("x"),
        ),
        (
            "version 0",
            TallyProjection::new("ok", &aggregate).version(0),
            fast("x"),
        ),
        ("empty owner", TallyProjection::new("ok", &aggregate), fast("")),
        (
            "zero lease",
            TallyProjection::new("ok", &aggregate),
            fast("x").with_lease_ttl(Duration::ZERO),
        ),
        (
            "zero page",
            TallyProjection::new("ok", &aggregate),
            fast("x").with_page_size(0),
        ),
        (
            "bad filter",
            TallyProjection::new("ok", "bad aggregate type"),
            fast("x"),
        ),
    ];
    for (what, projection, options) in cases {
        match spawn(projection, options) {
            Err(Error::InvalidInput(_)) => {}
            other => panic!("{what}: expected InvalidInput, got {other:?}"),
        }
    }
    match f.checkpoints.active_view(&unique("never")).await {
        Err(Error::NotFound(_)) => {}
        other => panic!(
            "an unknown projection: expected NotFound, got {:?}",
            other.map(|(k, _)| k)
        ),
    }
    assert!(matches!(
        f.checkpoints.active_view("bad name").await.map(|(k, _)| k),
        Err(Error::InvalidInput(_))
    ));
    // A stored checkpoint of another layout (it names more partitions than the store has) is
    // an integrity failure: the runner stops before applying anything.
    let name = unique("layout");
    let key = ViewKey::new(&name, 1).expect("key");
    let lease = f
        .checkpoints
        .acquire(&key, "setup", Duration::from_secs(1))
        .await
        .expect("acquire")
        .expect("lease");
    let partitions = f.events.capabilities().partitions;
    f.checkpoints
        .commit(
            &lease,
            Commit {
                checkpoint: Some(Checkpoint::start(partitions + 2)),
                ..Commit::default()
            },
        )
        .await
        .expect("commit");
    f.checkpoints.release(&lease).await.expect("release");
    f.events
        .append(
            &StreamId::new(&aggregate, "s").expect("stream"),
            ExpectedVersion::Any,
            vec![ev("B", 1)],
        )
        .await
        .expect("append");
    let handle = runner(&f, Arc::new(TallyProjection::new(&name, &aggregate)), fast("layout"));
    match handle.join().await {
        Err(Error::Integrity(m)) => assert!(m.contains("partitions"), "{m}"),
        other => panic!("a checkpoint of another layout: expected Integrity, got {other:?}"),
    }
    assert_eq!(
        f.checkpoints.view(&key).expect("view").count(&[]).await.expect("count"),
        0,
        "nothing applied"
    );
    // A view document the store cannot take is refused when staged, before any commit.
    let mut too_big = Commit::default();
    too_big.writes.push(ViewWrite {
        id: String::new(),
        change: ViewChange::Delete,
        position: Position::START,
    });
    let lease = f
        .checkpoints
        .acquire(&key, "setup", Duration::from_secs(1))
        .await
        .expect("acquire")
        .expect("lease");
    assert!(matches!(
        f.checkpoints.commit(&lease, too_big).await,
        Err(Error::InvalidInput(_))
    ));
    f.checkpoints.release(&lease).await.expect("release");
}
