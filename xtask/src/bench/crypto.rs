//! Encrypted payloads (`cqrsx_core::crypto`): appends and loads through an
//! `EncryptedEventStore` beside the same work on the plain store, in the same run.

use std::sync::Arc;

use cqrsx_core::crypto::{EncryptedEventStore, KeyStore, Keys, LocalMasterKey, Policies, Protection, Subject};
use cqrsx_core::testkit::{Counter, CounterEvent};
use cqrsx_core::{EventCodec, EventStore, ExpectedVersion, Metadata, NewEvent, Repository, StreamId};
use serde_json::json;

use super::store::fresh_ids;
use super::{keep, median, time, BenchRow, Measure, Scale};
use crate::cmd::Result;

/// Streams loaded per load round.
const LOAD_STREAMS: usize = 20;
/// Events of each loaded stream.
const LOAD_EVENTS: usize = 100;
/// Concurrent writers of the append rows.
const WRITERS: usize = 4;

fn err(e: cqrsx_core::Error) -> String {
    e.to_string()
}

/// `Renamed` sealed whole; with `all`, `Added`'s `/by` too (every event protected).
fn policies(all: bool) -> Result<Policies> {
    let mut policies = Policies::new().protect(
        "Renamed",
        Protection::new(Subject::AggregateId).whole_payload(json!("[erased]")),
    );
    if all {
        let added = Protection::new(Subject::AggregateId)
            .field_erased_as("/by", json!(0))
            .map_err(err)?;
        policies = policies.protect("Added", added);
    }
    Ok(policies)
}

/// A counter's events: a `Renamed` every tenth, `Added` otherwise.
fn events(count: usize) -> Result<Vec<NewEvent>> {
    let codec = EventCodec::new(cqrsx_core::ContentType::Json);
    (0..count)
        .map(|i| {
            let event = if i % 10 == 9 {
                CounterEvent::Renamed(format!("Jane Doe, jane.doe{i}@example.com"))
            } else {
                CounterEvent::Added { by: i as i64 }
            };
            codec
                .encode(&event, Metadata::correlated(format!("req-{i}")))
                .map_err(err)
        })
        .collect()
}

async fn appends(store: Arc<dyn EventStore>, template: Vec<NewEvent>, per_writer: usize, tag: String) -> Result<()> {
    let batch = template.len();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&store);
            let template = template.clone();
            let stream = StreamId::new("CryptoBench", format!("{tag}-{w}"));
            tokio::spawn(async move {
                let stream = stream.map_err(err)?;
                for round in 0..per_writer {
                    let expected = ExpectedVersion::Exact((round * batch) as u64);
                    store
                        .append(&stream, expected, fresh_ids(&template))
                        .await
                        .map_err(err)?;
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Appends (one protected event each; batches of ten, one protected) and loads (100 events,
/// one in ten protected; all protected), encrypted against plain, rounds taking turns.
pub async fn rows(
    backend: &str,
    plain: Arc<dyn EventStore>,
    key_store: Arc<dyn KeyStore>,
    scale: Scale,
) -> Result<Vec<BenchRow>> {
    let run = cqrsx_core::Uuid::now_v7().simple().to_string();
    let keys = Arc::new(Keys::new(
        Arc::new(LocalMasterKey::new([0x5a; 32], "bench-master")),
        key_store,
    ));
    let some: Arc<dyn EventStore> = Arc::new(EncryptedEventStore::new(
        Arc::clone(&plain),
        Arc::clone(&keys),
        policies(false)?,
    ));
    let every: Arc<dyn EventStore> = Arc::new(EncryptedEventStore::new(Arc::clone(&plain), keys, policies(true)?));
    let mut rows = Vec::new();

    let one = events(10)?.split_off(9);
    let ten = events(10)?;
    for (case, template, batches) in [
        (
            "append 1 protected event (4 writers)",
            one,
            scale.append_events / WRITERS,
        ),
        (
            "append 10 events, 1 protected (4 writers)",
            ten,
            scale.append_events / WRITERS / 10,
        ),
    ] {
        let (mut ours, mut base) = (Vec::new(), Vec::new());
        for round in 0..scale.append_rounds {
            let ops = (batches * WRITERS * template.len()) as u64;
            base.push(
                time(
                    ops,
                    appends(
                        Arc::clone(&plain),
                        template.clone(),
                        batches,
                        format!("p{run}{round}{}", template.len()),
                    ),
                )
                .await?,
            );
            ours.push(
                time(
                    ops,
                    appends(
                        Arc::clone(&some),
                        template.clone(),
                        batches,
                        format!("e{run}{round}{}", template.len()),
                    ),
                )
                .await?,
            );
        }
        keep(
            &mut rows,
            BenchRow::new(
                backend,
                format!("encrypted {case}"),
                median(ours),
                "the same, plain",
                median(base),
            )
            .note("per event"),
        );
    }

    let history = events(LOAD_EVENTS)?;
    for (case, sealed) in [("1 in 10 protected", &some), ("all protected", &every)] {
        let tag = if Arc::ptr_eq(sealed, &some) { "s" } else { "a" };
        let (mut ours, mut base) = (Vec::new(), Vec::new());
        for (store, ids) in [(&plain, format!("lp{tag}{run}")), (sealed, format!("le{tag}{run}"))] {
            let repo = Repository::<Counter>::new(Arc::clone(store));
            for s in 0..LOAD_STREAMS {
                let stream = repo.stream_id(&format!("{ids}-{s}")).map_err(err)?;
                store
                    .append(&stream, ExpectedVersion::NoStream, fresh_ids(&history))
                    .await
                    .map_err(err)?;
            }
        }
        for _ in 0..scale.repeats.max(3) {
            for (store, ids, into) in [
                (&plain, format!("lp{tag}{run}"), &mut base),
                (sealed, format!("le{tag}{run}"), &mut ours),
            ] {
                let repo = Repository::<Counter>::new(Arc::clone(store));
                let measure: Measure = time(LOAD_STREAMS as u64, async {
                    for s in 0..LOAD_STREAMS {
                        let root = repo.load(&format!("{ids}-{s}")).await.map_err(err)?;
                        if root.version() != LOAD_EVENTS as u64 {
                            return Err(format!("loaded version {}", root.version()));
                        }
                    }
                    Ok(())
                })
                .await?;
                into.push(measure);
            }
        }
        keep(
            &mut rows,
            BenchRow::new(
                backend,
                format!("encrypted load of 100 events, {case}"),
                median(ours),
                "the same, plain",
                median(base),
            )
            .note("per load, keys cached"),
        );
    }
    Ok(rows)
}
