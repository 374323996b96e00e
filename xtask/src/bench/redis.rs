//! Redis rows, on the same server as ours: appends against a raw `XADD` (information), a
//! minimal checked append (one script: version check, `XADD`s, version write) and the unchecked
//! two-step append a user would otherwise write (version read, then `RPUSH` per event + `HSET` +
//! `EXPIRE` in one pipeline); reads against a raw `XRANGE` + decode; memory per stored event;
//! read-model queries against a raw read of the same index.

use std::sync::Arc;
use std::time::Instant;

use cqrsx_core::query::Op;
use cqrsx_core::{Filter, Query, ReadStore};
use cqrsx_redis::{
    RedisClientManager, RedisConfig, RedisEventStore, RedisProjectionStore, RedisReadStore, RedisSnapshotStore,
};
use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::Value;

use super::store::{fresh_ids, AppendBaseline, Subject};
use super::{keep, BenchRow, Fact, Scale, Section};
mod baselines;
mod durability;

use crate::cmd::{say, Result};
use baselines::{metadata_json, run_script, CheckedAppend, RawXadd, TwoStep, LAYOUT_ONLY};

pub(super) fn error(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// One section of the server's `INFO`.
async fn info(client: &RedisClientManager, section: fred::types::InfoKind) -> Result<String> {
    client.client().info(Some(section)).await.map_err(error)
}

async fn used_memory(client: &RedisClientManager) -> Result<u64> {
    info(client, fred::types::InfoKind::Memory)
        .await?
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "INFO memory without used_memory".into())
}

/// Bytes per stored event at stream lengths 1, 10, 100 and 10,000 (`memory_events` events at
/// each, in commits of up to 10 events): `used_memory` before and after, ours against raw
/// `XADD`s of the same fields, beside the payload.
async fn memory_facts(client: &RedisClientManager, run_id: &str, scale: Scale, facts: &mut Vec<Fact>) -> Result<()> {
    // An order-sized payload (224 bytes of JSON, as the outside measurement used), so that the
    // ratio to it means what it would in a service.
    let template = (0..10)
        .map(|i| {
            let padding = "x".repeat(224 - r#"{"order":"o-0000","note":""}"#.len());
            let payload = format!(r#"{{"order":"o-{i:04}","note":"{padding}"}}"#);
            let mut event = cqrsx_core::NewEvent::json("OrderNoted", &serde_json::json!({})).map_err(error)?;
            event.payload = payload.into_bytes();
            event.metadata = cqrsx_core::Metadata::correlated(format!("req-{i}"));
            Ok(event)
        })
        .collect::<Result<Vec<_>>>()?;
    let payload: usize = template.iter().map(|e| e.payload.len()).sum::<usize>() / template.len();
    let with_metadata: usize = template
        .iter()
        .map(|e| e.payload.len() + metadata_json(e).map(|m| m.len()).unwrap_or(0))
        .sum::<usize>()
        / template.len();
    // Key names as long as a service's (the default prefix is `cqrsx`): a key's name is part of
    // what it costs, and the run id alone is 33 characters.
    let short = &run_id[run_id.len().saturating_sub(4)..];
    for length in [1usize, 10, 100, 10_000] {
        let (ours, raw) = memory_at(
            client,
            &format!("{short}{}", length.ilog10()),
            length,
            scale.memory_events,
            &template,
        )
        .await?;
        let events = (scale.memory_events / length).max(1) * length;
        let target = if length == 1 { 2.0 } else { 1.5 };
        facts.push(Fact::new(
            "redis",
            format!("memory per stored event, streams of {length} ({events} events)"),
            format!("{ours:.0} B"),
            "raw XADD of the same fields",
            format!("{raw:.0} B"),
            format!(
                "payload {payload} B ({with_metadata} B with metadata): ours {:.2}× the payload (target ≤ {target}×), {:.2}× with metadata",
                ours / payload as f64,
                ours / with_metadata as f64
            ),
        ));
    }
    Ok(())
}

/// Bytes per event of ours and of raw `XADD`s, streams of `length` events, `total` in all.
async fn memory_at(
    client: &RedisClientManager,
    run_id: &str,
    length: usize,
    total: usize,
    template: &[cqrsx_core::NewEvent],
) -> Result<(f64, f64)> {
    let config = client.config().clone().with_key_prefix(format!("m{run_id}"));
    let ours = RedisClientManager::connect(config).await.map_err(error)?;
    let store = RedisEventStore::new(ours.clone());
    let raw = RawXadd(client.clone());
    let streams = (total / length).max(1);
    let batch = length.min(template.len());
    let before = used_memory(client).await?;
    for s in 0..streams {
        let stream = cqrsx_core::StreamId::new("BenchMemory", format!("m{s}")).map_err(error)?;
        for b in 0..length / batch {
            let events = fresh_ids(&template[..batch]);
            let expected = cqrsx_core::ExpectedVersion::Exact((b * batch) as u64);
            cqrsx_core::EventStore::append(&store, &stream, expected, events)
                .await
                .map_err(error)?;
        }
    }
    let middle = used_memory(client).await?;
    for s in 0..streams {
        let key = format!("r{run_id}:BenchMemory/m{s}");
        for _ in 0..length / batch {
            raw.write(&key, &fresh_ids(&template[..batch])).await?;
        }
    }
    let after = used_memory(client).await?;
    let _ = ours.quit().await;
    let events = (streams * length) as f64;
    Ok((
        middle.saturating_sub(before) as f64 / events,
        after.saturating_sub(middle) as f64 / events,
    ))
}

/// The server's own time (`INFO commandstats`) of the script calls since the last reset, in
/// microseconds.
async fn script_usec(client: &RedisClientManager) -> Result<f64> {
    let usec = info(client, fred::types::InfoKind::CommandStats)
        .await?
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| l.split(',').find_map(|f| f.strip_prefix("usec=")))
        .map(|v| v.trim().parse::<f64>().map_err(error))
        .sum::<Result<f64>>()?;
    Ok(usec)
}

async fn reset_stats(client: &RedisClientManager) -> Result<()> {
    client
        .client()
        .custom::<(), _>(fred::cmd!("CONFIG"), vec!["RESETSTAT"])
        .await
        .map_err(error)
}

/// One side of the append cost facts: `appends` single-event appends by `append`, one writer;
/// wall and server microseconds per append.
async fn append_cost<F, Fut>(client: &RedisClientManager, appends: usize, mut append: F) -> Result<(f64, f64)>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    reset_stats(client).await?;
    let started = Instant::now();
    for i in 0..appends {
        append(i).await?;
    }
    let wall = started.elapsed().as_secs_f64() * 1e6 / appends as f64;
    Ok((wall, script_usec(client).await? / appends as f64))
}

/// Where a single-event append's time goes: the server's own time per call (ours, the checked
/// baseline, and our layout's six commands with no checks), against the wall time per append.
/// The difference of two sides' server times is what their scripts cost; the rest of a wall
/// time is the client and the round trip.
async fn append_cost_facts(
    client: &RedisClientManager,
    run_id: &str,
    scale: Scale,
    facts: &mut Vec<Fact>,
) -> Result<()> {
    // Many short rounds, each side's median reported, as the append rows do: a slow spell of
    // the machine then lands on no side alone.
    const ROUNDS: usize = 15;
    // A prefix of its own: the live tails the projection rows started follow the main
    // prefix's logs, and would wake on these appends.
    let config = client.config().clone().with_key_prefix(format!("cost-{run_id}"));
    let client = &RedisClientManager::connect(config).await.map_err(error)?;
    if let Err(e) = reset_stats(client).await {
        say(&format!(
            "redis: no append cost facts: the server refuses CONFIG RESETSTAT ({e})"
        ));
        return Ok(());
    }
    let store = RedisEventStore::new(client.clone());
    let checked = CheckedAppend::new(client.clone());
    let layout = Script::from_lua(LAYOUT_ONLY);
    let template = super::store::sample_events(1)?;
    let metadata = metadata_json(&template[0])?;
    let appends = (scale.append_events / 5).max(100);
    let (mut ours, mut theirs, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let stream = cqrsx_core::StreamId::new("BenchCost", format!("{run_id}-r{round}")).map_err(error)?;
        ours.push(
            append_cost(client, appends, |i| {
                let (store, stream) = (&store, &stream);
                let events = fresh_ids(&template);
                async move {
                    let expected = cqrsx_core::ExpectedVersion::Exact(i as u64);
                    cqrsx_core::EventStore::append(store, stream, expected, events)
                        .await
                        .map(|_| ())
                        .map_err(error)
                }
            })
            .await?,
        );
        let key = format!("cost-{run_id}-r{round}");
        theirs.push(
            append_cost(client, appends, |_| {
                let (checked, key, events) = (&checked, &key, fresh_ids(&template));
                async move { checked.write(key, &events).await }
            })
            .await?,
        );
        let tag = format!("{{cost-{run_id}-layout-r{round}}}:");
        let keys: Vec<String> = [
            "log",
            "seq",
            "s:BenchCost/layout",
            "m:BenchCost/layout",
            &format!("t:{}", template[0].event_type),
        ]
        .iter()
        .map(|k| format!("{tag}{k}"))
        .collect();
        bare.push(
            append_cost(client, appends, |_| {
                let event = fresh_ids(&template).remove(0);
                let (layout, keys, metadata) = (&layout, &keys, &metadata);
                let make = move || {
                    let mut arg = event.event_id.as_bytes().to_vec();
                    arg.push(1);
                    arg.extend_from_slice(event.event_id.as_bytes());
                    arg.extend_from_slice(&event.payload);
                    arg.extend_from_slice(metadata.as_bytes());
                    let args: Vec<Value> = vec![Value::Bytes(arg.into())];
                    Ok((keys.clone(), args))
                };
                async move { run_script(client, layout, make).await.map(|_| ()) }
            })
            .await?,
        );
    }
    // The median round by wall time, each side.
    let median = |mut sides: Vec<(f64, f64)>| {
        sides.sort_by(|a, b| a.0.total_cmp(&b.0));
        sides[sides.len() / 2]
    };
    let (ours, theirs, bare) = (median(ours), median(theirs), median(bare));
    let note = format!("{appends} appends × {ROUNDS} rounds, one writer, median round");
    let times = |(wall, server): (f64, f64)| format!("{server:.1} µs of {wall:.1} µs");
    facts.push(Fact::new(
        "redis",
        "single-event append: server time per call (INFO commandstats)",
        times(ours),
        "checked append",
        times(theirs),
        format!(
            "{note}; of the {:.1} µs between the wall times, {:.1} µs is the scripts' difference on the server",
            ours.0 - theirs.0,
            ours.1 - theirs.1
        ),
    ));
    facts.push(Fact::new(
        "redis",
        "single-event append: our layout's six commands with no checks",
        times(bare),
        "checked append",
        times(theirs),
        format!(
            "{note}; checked / six commands alone = {:.2}: what no store writing this layout passes",
            theirs.0 / bare.0
        ),
    ));
    Ok(())
}

/// Rounds of the read-model rows.
const READ_MODEL_ROUNDS: usize = 5;

/// Top 10 by an indexed field, and a count, at two collection sizes, against a raw read of
/// the same index (`ZRANGE … REV` of ten ids, `ZCARD`).
async fn read_model_rows(client: &RedisClientManager, scale: Scale, rows: &mut Vec<BenchRow>) -> Result<()> {
    let collection = "benchrm";
    let store = RedisReadStore::new(client.clone(), collection)
        .and_then(|s| s.with_index("score"))
        .map_err(error)?;
    // The index `RedisReadStore` keeps for a numeric field (see `read_store.rs`).
    let index = format!("{{{}:rm:{collection}}}:x:score", client.config().key_prefix);
    let queries = 200u64;
    let mut saved = 0usize;
    for size in [scale.read_models / 10, scale.read_models] {
        while saved < size {
            let docs = (saved..(saved + 1_000).min(size))
                .map(|i| cqrsx_core::Document {
                    id: format!("m{i}"),
                    data: serde_json::json!({ "score": (i * 7_919) % 1_000_003, "name": format!("model {i}") }),
                })
                .collect();
            store.save_many(docs).await.map_err(error)?;
            saved = (saved + 1_000).min(size);
        }
        let indexed: u64 = client.client().zcard(&index).await.map_err(error)?;
        if indexed != size as u64 {
            return Err(format!("the index {index} holds {indexed} ids, not {size}"));
        }
        let top = Query::all().sort_desc("score").page(0, 10);
        let range = [Filter::new("score", Op::Gte, 500_000)];
        // Ours and the raw reads take turns for a few rounds, each side reporting its median
        // round, so a slow spell of the machine does not land on one side only.
        let (mut ours_top, mut raw_top, mut ours_count, mut raw_count) = (vec![], vec![], vec![], vec![]);
        for _ in 0..READ_MODEL_ROUNDS {
            ours_top.push(
                super::time(queries, async {
                    for _ in 0..queries {
                        let docs = store.query(&top).await.map_err(error)?;
                        if docs.len() != 10 {
                            return Err(format!("the top-10 query returned {} documents", docs.len()));
                        }
                    }
                    Ok(())
                })
                .await?,
            );
            raw_top.push(
                super::time(queries, async {
                    for _ in 0..queries {
                        let ids: Vec<String> = client
                            .client()
                            .zrange(&index, 0, 9, None, true, None, false)
                            .await
                            .map_err(error)?;
                        if ids.len() != 10 {
                            return Err(format!("ZRANGE returned {} ids", ids.len()));
                        }
                    }
                    Ok(())
                })
                .await?,
            );
            ours_count.push(
                super::time(queries, async {
                    for _ in 0..queries {
                        store.count(&range).await.map_err(error)?;
                    }
                    Ok(())
                })
                .await?,
            );
            raw_count.push(
                super::time(queries, async {
                    for _ in 0..queries {
                        let _: u64 = client
                            .client()
                            .zcount(&index, 500_000.0, f64::INFINITY)
                            .await
                            .map_err(error)?;
                    }
                    Ok(())
                })
                .await?,
            );
        }
        let note = format!("{READ_MODEL_ROUNDS} rounds of {queries} queries, medians");
        keep(
            rows,
            BenchRow::new(
                "redis",
                format!("read-model top 10 by an indexed field, {size} models"),
                super::median(ours_top),
                "ZRANGE REV of the index (10 ids only)",
                super::median(raw_top),
            )
            .note(format!(
                "{note}; ours returns the 10 documents; target ≥ 0.5 and flat in the size"
            )),
        );
        let (ours, raw) = (super::median(ours_count), super::median(raw_count));
        keep(
            rows,
            BenchRow::new(
                "redis",
                format!("read-model count of a range, {size} models"),
                ours,
                "ZCOUNT of the index",
                raw,
            )
            .note(note),
        );
    }
    Ok(())
}

/// Redis rows on a standalone server at `url`.
/// The encryption rows (`--only crypto`) on this server, with the Redis key store.
pub async fn crypto_rows(url: &str, scale: Scale) -> Result<Vec<super::BenchRow>> {
    let run_id = format!("b{}", cqrsx_core::Uuid::now_v7().simple());
    let config = RedisConfig::default()
        .with_url(url)
        .with_key_prefix(format!("bench-{run_id}"))
        .with_pool_size(16);
    let client = RedisClientManager::connect(config).await.map_err(error)?;
    super::crypto::rows(
        "redis",
        Arc::new(RedisEventStore::new(client.clone())),
        Arc::new(cqrsx_redis::RedisKeyStore::new(client)),
        scale,
    )
    .await
}

pub async fn rows(url: &str, scale: Scale) -> Result<Section> {
    let run_id = format!("b{}", cqrsx_core::Uuid::now_v7().simple());
    let config = RedisConfig::default()
        .with_url(url)
        .with_key_prefix(format!("bench-{run_id}"))
        .with_pool_size(16);
    let client = RedisClientManager::connect(config).await.map_err(error)?;
    let subject = Subject {
        backend: "redis".into(),
        events: Arc::new(RedisEventStore::new(client.clone())),
        snapshots: super::snapshot_strategy(Arc::new(RedisSnapshotStore::new(client.clone()))),
        checkpoints: Arc::new(RedisProjectionStore::new(client.clone())),
        baseline: Arc::new(RawXadd(client.clone())),
        comparable: vec![
            Arc::new(CheckedAppend::new(client.clone())),
            Arc::new(TwoStep(client.clone())),
        ],
        run_id: run_id.clone(),
    };
    let target = |name: &'static str| {
        let config = RedisConfig::default()
            .with_url(url)
            .with_key_prefix(format!("bench-{run_id}-migrate-{name}"))
            .with_pool_size(16);
        async move {
            let client = RedisClientManager::connect(config).await.map_err(error)?;
            Ok(Arc::new(RedisEventStore::new(client)) as Arc<dyn cqrsx_core::EventStore>)
        }
    };
    if std::env::var("CQRSX_BENCH_ONLY").as_deref() == Ok("migration") {
        let mut rows = Vec::new();
        super::migrate::rows("redis", scale, target, &mut rows).await?;
        return Ok(Section {
            rows,
            facts: Vec::new(),
        });
    }
    let before = client.metrics();
    let started = Instant::now();
    let mut rows = super::subject_rows(&subject, scale).await?;
    let after = client.metrics();
    if let Some(first) = rows.first_mut() {
        first.note = format!(
            "{}; client p50 {:?}, p99 {:?} over {} ops",
            first.note,
            after.p50,
            after.p99,
            after.operations - before.operations
        );
    }
    read_model_rows(&client, scale, &mut rows).await?;
    super::migrate::rows("redis", scale, target, &mut rows).await?;
    let mut facts = Vec::new();
    memory_facts(&client, &run_id, scale, &mut facts).await?;
    // In a task of its own, as every writer of the append rows is: a future polled by the
    // runtime's main thread wakes more slowly, and the facts would not describe those rows.
    let (cost_client, cost_run) = (client.clone(), run_id.clone());
    let cost = tokio::spawn(async move {
        let mut facts = Vec::new();
        append_cost_facts(&cost_client, &cost_run, scale, &mut facts).await?;
        Ok::<_, String>(facts)
    });
    facts.extend(cost.await.map_err(error)??);
    durability::facts(&client, &run_id, scale, &mut facts).await?;
    say(&format!("redis rows took {:.0} s", started.elapsed().as_secs_f64()));
    Ok(Section { rows, facts })
}
