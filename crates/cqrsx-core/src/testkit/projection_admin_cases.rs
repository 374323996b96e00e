//! What an operator reads and asks of a projection from outside its runner: the versions a
//! store holds, who holds a lease, and a replay of parked events requested through the store.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::projection_support::{fast, runner, settle, view_tallies, TallyProjection, POISON};
use super::support::{ev, unique};
use super::Fixture;
use crate::projection::{ErrorPolicy, ReplayRequests, ViewKey};
use crate::stream::{ExpectedVersion, StreamId};

/// Waits until the lease holder has handled request `n`; the requests then.
async fn handled(f: &Fixture, key: &ViewKey, n: u64) -> ReplayRequests {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let requests = f.checkpoints.replay_requests(key).await.expect("replay requests");
        if requests.handled >= n {
            return requests;
        }
        assert!(Instant::now() < deadline, "request {n} was not handled: {requests:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Contract 13 (operating): `views` lists every version a lease was granted for; `holder`
/// names the runner holding a lease, its token and how long it stays, and nobody once it
/// was released; a replay requested through the store is handled by the runner holding the
/// lease — through its handler, once, recorded as handled with what it applied, even when that
/// runner is killed around the request and another takes over — and a handled mark never moves
/// back.
pub async fn projection_admin_reads_and_replay_requests(f: Fixture) {
    let aggregate = unique("Admin");
    let name = unique("admin");
    let key = ViewKey::new(&name, 1).expect("key");
    assert!(
        !f.checkpoints.views().await.expect("views").contains(&key),
        "not run yet"
    );
    assert_eq!(f.checkpoints.holder(&key).await.expect("holder"), None);
    assert_eq!(
        f.checkpoints.replay_requests(&key).await.expect("requests"),
        ReplayRequests::default()
    );

    let streams: Vec<StreamId> = (0..2)
        .map(|i| StreamId::new(&aggregate, format!("s{i}")).expect("stream"))
        .collect();
    f.events
        .append(&streams[0], ExpectedVersion::Any, (1..=3).map(|n| ev("A", n)).collect())
        .await
        .expect("append");
    f.events
        .append(&streams[1], ExpectedVersion::Any, vec![ev("A", 10), ev("A", POISON)])
        .await
        .expect("append");
    let projection = Arc::new(TallyProjection::new(&name, &aggregate));
    let park = fast("operator-test").with_errors(ErrorPolicy {
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        ..ErrorPolicy::park_after(1)
    });
    let handle = runner(&f, Arc::clone(&projection), park);
    settle(&f, &handle, Duration::from_secs(60)).await;
    assert_eq!(f.checkpoints.parked(&key).await.expect("parked").len(), 1);

    assert!(
        f.checkpoints.views().await.expect("views").contains(&key),
        "listed once run"
    );
    let holder = f.checkpoints.holder(&key).await.expect("holder").expect("held");
    assert_eq!(holder.owner, "operator-test");
    assert_eq!(Some(holder.token), handle.status().await.token);
    assert!(
        holder.expires_in > Duration::ZERO && holder.expires_in <= Duration::from_secs(2),
        "{holder:?}"
    );

    // Still broken: the replay is handled and applies nothing.
    assert_eq!(f.checkpoints.request_replay(&key).await.expect("request"), 1);
    let requests = handled(&f, &key, 1).await;
    assert_eq!((requests.requested, requests.replayed), (1, 0), "{requests:?}");
    assert_eq!(
        f.checkpoints.parked(&key).await.expect("parked").len(),
        1,
        "still parked"
    );

    // Fixed: the next request applies the event once.
    // Fixed, and the runner killed at some point around the request — before its check, in
    // the middle of the replay, or after it — without releasing its lease: the runner that
    // takes over handles what is left, and the event is applied once.
    projection.fixed.store(true, Ordering::SeqCst);
    assert_eq!(f.checkpoints.request_replay(&key).await.expect("request"), 2);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    tokio::time::sleep(Duration::from_millis(u64::from(nanos % 900))).await;
    handle.abort();
    let _ = handle.join().await;
    let handle = runner(&f, Arc::clone(&projection), fast("operator-test-2"));
    let requests = handled(&f, &key, 2).await;
    assert_eq!(requests.handled, 2, "{requests:?}");
    // 1 when one runner replayed and recorded it; 0 when the killed one's replay landed and
    // the successor found nothing left to replay.
    assert!(requests.replayed <= 1, "{requests:?}");
    assert!(f.checkpoints.parked(&key).await.expect("parked").is_empty());
    let view = view_tallies(&f, &key, &streams).await;
    assert_eq!(
        view.get("s1").map(|t| (t.count, t.sum)),
        Some((2, 10 + POISON)),
        "applied once"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        f.checkpoints.replay_requests(&key).await.expect("requests"),
        requests,
        "a handled request is not handled again"
    );

    // A handled mark never moves back.
    f.checkpoints.replay_handled(&key, 1, 99).await.expect("handled");
    assert_eq!(f.checkpoints.replay_requests(&key).await.expect("requests"), requests);

    // The killed runner's lease runs out (it may have handled the request itself); then the
    // successor holds it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let holder = f.checkpoints.holder(&key).await.expect("holder");
        if holder.as_ref().is_some_and(|h| h.owner == "operator-test-2") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the successor never held the lease: {holder:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.stop().await.expect("stop");
    assert_eq!(f.checkpoints.holder(&key).await.expect("holder"), None, "released");
    assert!(
        f.checkpoints.views().await.expect("views").contains(&key),
        "still listed"
    );
}
