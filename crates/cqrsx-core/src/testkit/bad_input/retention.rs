//! The catalogue's retention and archive kinds: policies without rules or with numbers out of
//! range, configurations that cannot work, archive puts that do not fit, and a strict run over
//! events a projection has not applied.

use std::sync::Arc;
use std::time::Duration;

use super::{Catalogue, Expect, Seeded};
use crate::archive::{Archive, StoreArchive};
use crate::event::RecordedEvent;
use crate::event_store::{EventStore, MAX_NUMBER};
use crate::memory::InMemoryEventStore;
use crate::retention::{RetentionJob, RetentionPolicy};
use crate::stream::StreamId;

pub(super) async fn check(c: &mut Catalogue<'_>, seeded: &Seeded) {
    let f = c.f;
    let ty = seeded.aggregate.clone();
    let policy = || RetentionPolicy::new(&ty).expect("policy");
    let job = || {
        RetentionJob::new(Arc::clone(&f.events))
            .with_snapshots(Arc::clone(&f.snapshots))
            .with_projections(Arc::clone(&f.checkpoints))
    };
    let cold = Arc::new(InMemoryEventStore::new());
    let archive = StoreArchive::new(cold.clone());
    let events: Vec<RecordedEvent> = f.events.read_stream(&seeded.s, 1, 10).await.expect("read seed");
    use Expect::*;

    c.check("retention: policy for an invalid aggregate type", InvalidInput, async {
        RetentionPolicy::new("A B")
    })
    .await;
    c.check("retention: policy without a rule", InvalidInput, async {
        job().with_policy(policy()).map(|_| ())
    })
    .await;
    c.check("retention: two policies for one aggregate type", InvalidInput, async {
        job()
            .with_policy(policy().keep_before_snapshot(1))?
            .with_policy(policy().keep_younger_than(Duration::from_secs(1)))
            .map(|_| ())
    })
    .await;
    c.check(
        "retention: events kept before a snapshot past 2^53 - 1",
        InvalidInput,
        async {
            job()
                .with_policy(policy().keep_before_snapshot(MAX_NUMBER + 1))
                .map(|_| ())
        },
    )
    .await;
    c.check("retention: age past 2^53 - 1 ms", InvalidInput, async {
        job()
            .with_policy(policy().delete_untouched_after(Duration::from_millis(MAX_NUMBER + 1)))
            .map(|_| ())
    })
    .await;
    c.check(
        "retention: archiving untouched streams without an archive",
        Config,
        async {
            job()
                .with_policy(policy().archive_untouched_after(Duration::ZERO))?
                .run()
                .await
        },
    )
    .await;
    c.check("retention: the snapshot rule without a snapshot store", Config, async {
        RetentionJob::new(Arc::clone(&f.events))
            .with_policy(policy().keep_before_snapshot(0))?
            .run()
            .await
    })
    .await;
    c.check("retention: strict run over events not yet applied", Unapplied, async {
        job()
            .with_archive(Arc::new(archive.clone()))
            .refuse_unapplied(true)
            .with_policy(policy().keep_younger_than(Duration::ZERO))?
            .run()
            .await
    })
    .await;
    let other = StreamId::new(&ty, "other").expect("stream");
    c.check("archive: events of another stream", InvalidInput, async {
        archive.put(&other, &events).await
    })
    .await;
    let gapped = [events[0].clone(), events[2].clone()];
    c.check("archive: versions that jump", InvalidInput, async {
        archive.put(&seeded.s, &gapped).await
    })
    .await;
    assert!(
        cold.list_streams(None, 10).await.expect("cold catalogue").is_empty(),
        "refused archive puts wrote nothing"
    );
}
