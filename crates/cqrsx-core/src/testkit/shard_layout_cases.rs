//! A sharded projection changing its layout and its version while readers read: a layout of
//! another shard count is built beside the one serving and read only once every shard of it
//! caught up; a raised version takes over shard by shard, the old runners step down as
//! superseded, and the old views are dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::projection_support::{expected_tallies, fast, Tally, TallyProjection};
use super::support::{ev, report, unique};
use super::Fixture;
use crate::event::{EventFilter, RecordedEvent};
use crate::projection::{
    HandlerResult, Projection, RunnerState, Shard, ShardedHandle, ShardedRunner, View, ViewKey, Views,
};
use crate::stream::{ExpectedVersion, StreamId};

/// A hang detector, sized for a loaded machine.
const BOUND: Duration = Duration::from_secs(60);

/// The suite's tally projection with a handler that takes a little while, so that a layout
/// being built stays half built long enough for a reader to see it.
struct Slow(TallyProjection);

#[async_trait]
impl Projection for Slow {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn version(&self) -> u32 {
        self.0.version
    }
    fn filter(&self) -> EventFilter {
        self.0.filter()
    }
    async fn apply(&self, event: &RecordedEvent, view: &mut View<'_>) -> HandlerResult {
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.0.apply(event, view).await
    }
}

fn spawn(f: &Fixture, name: &str, aggregate: &str, version: u32, shards: u16, owner: &str) -> ShardedHandle {
    let projection = Arc::new(Slow(TallyProjection::new(name, aggregate).version(version)));
    ShardedRunner::new(projection, Arc::clone(&f.events), Arc::clone(&f.checkpoints), shards)
        .with_options(fast(owner))
        .with_fault(f.shard_fault)
        .spawn()
        .expect("spawn a sharded runner")
}

/// Every stream's document count as `Views` reads it now (0 for none; all 0 before the
/// projection has an active layout).
async fn read_all(views: &Views, name: &str, streams: &[StreamId]) -> Vec<u64> {
    let mut counts = Vec::new();
    for s in streams {
        // A reader rides out a transient error (a loaded server's timeout) and reads again.
        let mut tries = 0;
        let doc: Option<Tally> = loop {
            match views.get(name, s.id()).await {
                Err(crate::Error::NotFound(_)) => break None,
                Err(e) if e.is_retryable() && tries < 5 => tries += 1,
                other => break other.expect("read through Views"),
            }
        };
        counts.push(doc.map_or(0, |t| t.count));
    }
    counts
}

/// The keys `Views` reads now, as `name.v{version}` strings.
async fn active(views: &Views, name: &str) -> Vec<String> {
    views
        .active(name)
        .await
        .map(|keys| keys.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}

/// A layout of 4 shards started beside the 2 serving: readers keep every document whole
/// until the 4 have caught up, then read them; a raised version takes over, the old runners
/// end superseded, and the old views are dropped.
pub async fn projection_shards_change_layout_and_version_without_a_gap(f: Fixture) {
    let name = unique("lay");
    let aggregate = unique("Lay");
    let streams: Vec<StreamId> = (0..12)
        .map(|i| StreamId::new(&aggregate, format!("s{i}")).expect("stream"))
        .collect();
    for (i, s) in streams.iter().enumerate() {
        let batch = (0..40).map(|k| ev("Tallied", (i * 40 + k) as u64 + 1)).collect();
        f.events
            .append(s, ExpectedVersion::NoStream, batch)
            .await
            .expect("append");
    }
    let want: Vec<u64> = {
        let fold = expected_tallies(&f, &streams).await;
        streams
            .iter()
            .map(|s| fold.get(s.id()).map_or(0, |t| t.count))
            .collect()
    };
    let views = Views::new(Arc::clone(&f.checkpoints));
    let two = spawn(&f, &name, &aggregate, 1, 2, "two");
    let started = Instant::now();
    while read_all(&views, &name, &streams).await != want {
        assert!(started.elapsed() < BOUND, "{}: the 2 shards never caught up", f.label);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Another layout at the same version: built beside, never read half built.
    let four = spawn(&f, &name, &aggregate, 1, 4, "four");
    let started = Instant::now();
    loop {
        let keys = active(&views, &name).await;
        let seen = read_all(&views, &name, &streams).await;
        assert_eq!(
            seen, want,
            "{}: while 4 shards were built beside 2, a reader of {keys:?} saw documents that were not whole",
            f.label
        );
        if keys.len() == 4 {
            break;
        }
        assert!(
            started.elapsed() < BOUND,
            "{}: the 4 shards never became the read layout: {keys:?}",
            f.label
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    two.stop().await.expect("stop the 2-shard processes");

    // A raised version of the 4 shards: each shard takes over; the old runners step down.
    let next = spawn(&f, &name, &aggregate, 2, 4, "next");
    let started = Instant::now();
    loop {
        let keys = active(&views, &name).await;
        assert_eq!(read_all(&views, &name, &streams).await, want, "{}: {keys:?}", f.label);
        if keys.iter().all(|k| k.ends_with(".v2")) && keys.len() == 4 {
            break;
        }
        assert!(
            started.elapsed() < BOUND,
            "{}: version 2 never took over: {keys:?}",
            f.label
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let old_keys: Vec<ViewKey> = Shard::all(4)
        .expect("shards")
        .into_iter()
        .map(|s| ViewKey::sharded(&name, 1, s).expect("key"))
        .collect();
    loop {
        let states: Vec<RunnerState> = four.local_status().iter().map(|s| s.state).collect();
        assert!(
            !states.contains(&RunnerState::Failed),
            "{}: an old runner failed instead of stepping down: {:?}",
            f.label,
            four.local_status()
        );
        let mut left = 0;
        for key in &old_keys {
            left += f.checkpoints.view(key).expect("view").count(&[]).await.expect("count");
        }
        let done = states.iter().all(|s| *s == RunnerState::Superseded) && states.len() == 4 && left == 0;
        if done {
            break;
        }
        assert!(
            started.elapsed() < BOUND,
            "{}: version 1 did not step down and drop its views: states {states:?}, {left} old documents left",
            f.label
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    four.stop().await.expect("stop the version 1 processes");
    next.stop().await.expect("stop the version 2 processes");
    report(
        f.label,
        &format!(
            "a new layout and a new version took over with no reader seeing a gap, in {:.1?}",
            started.elapsed()
        ),
    );
}
