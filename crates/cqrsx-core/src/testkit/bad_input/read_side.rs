//! The catalogue's read side: subscriptions, checkpoints and projections.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use serde_json::json;

use crate::testkit::support::unique;

use super::{put, Catalogue, Expect, Seeded};
use crate::checkpoint::Checkpoint;
use crate::error::Error;
use crate::event::EventFilter;
use crate::event::Position;
use crate::projection::{ProjectionRunner, RunnerOptions, ViewKey, MAX_LEASE_TTL, MIN_LEASE_TTL};
use crate::raw::Lease;
use crate::read_store::MAX_TTL;
use crate::subscription::{subscribe, SubscriptionOptions};
use crate::testkit::projection_support::TallyProjection;

pub(super) async fn check(c: &mut Catalogue<'_>, seeded: &Seeded) {
    let f = c.f;
    let store = Arc::clone(&f.events);
    let partitions = seeded.partitions;
    let view_key = seeded.view_key.clone();
    let lease = seeded.lease.clone();
    use Expect::*;

    // Subscriptions and checkpoints.
    let sub = |options: SubscriptionOptions| {
        let store = Arc::clone(&store);
        async move { subscribe(store, options).map(|_| ()) }
    };
    c.check(
        "subscribe: page size 0",
        InvalidInput,
        sub(SubscriptionOptions::default().with_page_size(0)),
    )
    .await;
    c.check(
        "subscribe: page size 10,001",
        InvalidInput,
        sub(SubscriptionOptions::default().with_page_size(10_001)),
    )
    .await;
    c.check(
        "subscribe: checkpoint of another layout",
        InvalidInput,
        sub(SubscriptionOptions::default().with_start(Checkpoint::start(partitions + 1))),
    )
    .await;
    c.check(
        "subscribe: bad type in the filter",
        InvalidInput,
        sub(SubscriptionOptions::default().with_filter(EventFilter::event_types(["A B"]))),
    )
    .await;
    c.check("subscribe: checkpoint from the future", InvalidInput, async {
        let head = store.head().await?;
        let future = Checkpoint::from_offsets(head.positions().map(|p| p.offset + 1_000))?;
        let mut sub = subscribe(Arc::clone(&store), SubscriptionOptions::default().with_start(future))?;
        sub.try_next().await.map(|_| ())
    })
    .await;
    c.check("checkpoint: offset 0", InvalidInput, async {
        Checkpoint::from_offsets([0])
    })
    .await;
    c.check("checkpoint: an offset past 2^53", InvalidInput, async {
        Checkpoint::from_offsets([1 << 60])
    })
    .await;
    c.check("checkpoint: no partitions", InvalidInput, async {
        Checkpoint::from_offsets([])
    })
    .await;
    c.check("checkpoint: not numbers", InvalidInput, async {
        "1,x".parse::<Checkpoint>()
    })
    .await;

    // Projections: names, options, leases, view writes.
    let checkpoints = Arc::clone(&f.checkpoints);
    c.check("projection: empty name", InvalidInput, async { ViewKey::new("", 1) })
        .await;
    c.check("projection: name with a space", InvalidInput, async {
        ViewKey::new("a b", 1)
    })
    .await;
    c.check("projection: name over 128 bytes", InvalidInput, async {
        ViewKey::new("p".repeat(129), 1)
    })
    .await;
    c.check("projection: version 0", InvalidInput, async { ViewKey::new("p", 0) })
        .await;
    c.check("projection: unknown name", NotFound, async {
        checkpoints.active_view(&unique("unknown")).await.map(|(k, _)| k)
    })
    .await;
    c.check("projection: impossible name", InvalidInput, async {
        checkpoints.active_view("a b").await.map(|(k, _)| k)
    })
    .await;
    c.check(
        "lease: empty owner",
        InvalidInput,
        checkpoints.acquire(&view_key, "", Duration::from_secs(1)),
    )
    .await;
    c.check("lease: held by another owner", Valid, async {
        match checkpoints
            .acquire(&view_key, "someone-else", Duration::from_secs(1))
            .await?
        {
            None => Ok(()),
            Some(_) => Err(Error::InvalidInput("a held lease was granted".into())),
        }
    })
    .await;
    c.check(
        "view write: empty document id",
        InvalidInput,
        checkpoints.commit(&lease, put("", json!({"a": 1}), None)),
    )
    .await;
    c.check(
        "view write: not an object",
        InvalidInput,
        checkpoints.commit(&lease, put("d", json!([1]), None)),
    )
    .await;
    c.check(
        "view write: $ field",
        InvalidInput,
        checkpoints.commit(&lease, put("d", json!({"$a": 1}), None)),
    )
    .await;
    c.check(
        "view write: zero TTL",
        InvalidInput,
        checkpoints.commit(&lease, put("d", json!({"a": 1}), Some(Duration::ZERO))),
    )
    .await;
    c.check(
        "view write: TTL over 100 years",
        InvalidInput,
        checkpoints.commit(&lease, put("d", json!({"a": 1}), Some(MAX_TTL * 2))),
    )
    .await;
    c.check("view write: a position past 2^53", InvalidInput, async {
        let mut commit = put("d", json!({"a": 1}), None);
        commit.writes[0].position.offset = 1 << 60;
        checkpoints.commit(&lease, commit).await
    })
    .await;
    c.check("commit: a checkpoint past 2^53", InvalidInput, async {
        let far: Checkpoint = serde_json::from_value(json!({ "next": [1u64 << 60] }))
            .map_err(|e| Error::serialization("checkpoint", e))?;
        let mut commit = put("d", json!({"a": 1}), None);
        commit.checkpoint = Some(far);
        checkpoints.commit(&lease, commit).await
    })
    .await;
    let stale = Lease {
        token: lease.token.saturating_sub(1),
        ..lease.clone()
    };
    c.check(
        "view write: a lease that was taken over",
        LeaseLost,
        checkpoints.commit(&stale, put("d", json!({"a": 2}), None)),
    )
    .await;
    c.check(
        "lease: renew one that was taken over",
        LeaseLost,
        checkpoints.renew(&stale, Duration::from_secs(1)),
    )
    .await;

    // Lease TTLs: refused before anything is sent, and no token moves.
    let fresh = ViewKey::new(unique("ttl"), 1).expect("key");
    for (kind, ttl) in [
        ("lease: zero TTL", Duration::ZERO),
        (
            "lease: TTL under the shortest",
            MIN_LEASE_TTL - Duration::from_millis(1),
        ),
        ("lease: TTL over a day", MAX_LEASE_TTL + Duration::from_millis(1)),
        ("lease: TTL over 100 years", MAX_TTL * 2),
        ("lease: TTL of Duration::MAX", Duration::MAX),
    ] {
        c.check(kind, InvalidInput, checkpoints.acquire(&fresh, "ttl", ttl))
            .await;
    }
    for (kind, ttl) in [
        ("lease: renew with a zero TTL", Duration::ZERO),
        ("lease: renew with Duration::MAX", Duration::MAX),
    ] {
        c.check(kind, InvalidInput, checkpoints.renew(&lease, ttl)).await;
    }
    c.check("lease: refused TTLs moved no token", Valid, async {
        let granted = checkpoints.acquire(&fresh, "ttl", MIN_LEASE_TTL).await?;
        let token = granted.as_ref().map(|l| l.token);
        if let Some(l) = &granted {
            checkpoints.release(l).await?;
        }
        match token {
            Some(1) => Ok(()),
            other => Err(Error::InvalidInput(format!(
                "the first granted token is {other:?}, not 1"
            ))),
        }
    })
    .await;

    // Runner options and waits.
    let runner = |options: RunnerOptions| {
        let projection = Arc::new(TallyProjection::new(&unique("opts"), &seeded.aggregate));
        ProjectionRunner::new(projection, Arc::clone(&f.events), Arc::clone(&checkpoints)).with_options(options)
    };
    c.check("runner: zero handler timeout", InvalidInput, async {
        runner(RunnerOptions::default().with_handler_timeout(Duration::ZERO))
            .spawn()
            .map(|_| ())
    })
    .await;
    c.check("runner: handler timeout of Duration::MAX", InvalidInput, async {
        runner(RunnerOptions::default().with_handler_timeout(Duration::MAX))
            .spawn()
            .map(|_| ())
    })
    .await;
    c.check("runner: lease TTL of Duration::MAX", InvalidInput, async {
        runner(RunnerOptions::default().with_lease_ttl(Duration::MAX))
            .spawn()
            .map(|_| ())
    })
    .await;
    c.check("runner: zero polling pause", InvalidInput, async {
        runner(RunnerOptions::default().with_poll_between(Duration::ZERO, Duration::from_millis(5)))
            .spawn()
            .map(|_| ())
    })
    .await;
    c.check("runner: page of 10,001 events", InvalidInput, async {
        runner(RunnerOptions::default().with_page_size(10_001))
            .spawn()
            .map(|_| ())
    })
    .await;
    let handle = runner(RunnerOptions::default().with_owner("waits"))
        .spawn()
        .expect("a runner for the waits");
    let far = Duration::from_secs(3_600);
    c.check(
        "wait: a position in a partition the store does not have",
        InvalidInput,
        handle.wait_until_caught_up(
            Position {
                partition: partitions,
                offset: 1,
            },
            far,
        ),
    )
    .await;
    c.check(
        "wait: offset 0",
        InvalidInput,
        handle.wait_until_caught_up(
            Position {
                partition: 0,
                offset: 0,
            },
            far,
        ),
    )
    .await;
    c.check(
        "wait: an offset past 2^53",
        InvalidInput,
        handle.wait_until_caught_up(
            Position {
                partition: 0,
                offset: 1 << 53,
            },
            far,
        ),
    )
    .await;
    handle.stop().await.expect("stop the runner of the waits");
}
