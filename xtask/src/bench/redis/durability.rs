//! What waiting for a replica costs a single-event append: the same appends, one writer, with
//! `AppendDurability::replicas(1)` and without, in alternating rounds on the bench's server,
//! with a replica of its own started for them.

use std::time::{Duration, Instant};

use cqrsx_core::{EventStore, ExpectedVersion, StreamId};
use cqrsx_redis::{AppendDurability, RedisClientManager, RedisEventStore};
use fred::prelude::*;

use super::{error, Fact, Scale};
use crate::bench::store::{fresh_ids, sample_events};
use crate::cmd::{say, which, Result};
use crate::providers::{free_port, start_redis, Guard};

/// Starts a replica of `host:port` on a free port, and waits until its link is up.
async fn replica_of(host: &str, port: u16) -> Result<Option<Guard>> {
    if which("redis-server").is_none() {
        return Ok(None);
    }
    let own = free_port()?;
    let replica = start_redis("bench-replica", &["--replicaof", host, &port.to_string()], own)?;
    let config = cqrsx_redis::RedisConfig::default().with_host("127.0.0.1", own);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(client) = RedisClientManager::connect(config.clone()).await {
            let info: String = client
                .client()
                .info(Some(fred::types::InfoKind::Replication))
                .await
                .map_err(error)?;
            let _ = client.quit().await;
            if info.contains("master_link_status:up") {
                return Ok(Some(replica));
            }
        }
        if Instant::now() > deadline {
            return Err("the bench replica never linked to its primary".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `host` and `port` of a `redis://[user:pass@]host:port[/db]` URL.
fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split("://").nth(1)?;
    let rest = rest.rsplit('@').next()?;
    let address = rest.split('/').next()?;
    let (host, port) = address.rsplit_once(':')?;
    Some((host.to_string(), port.parse().ok()?))
}

/// One round: `appends` single-event appends to a fresh stream; µs per append.
async fn round(store: &RedisEventStore, stream: &StreamId, appends: usize) -> Result<f64> {
    let template = sample_events(1)?;
    let started = Instant::now();
    for i in 0..appends {
        store
            .append(stream, ExpectedVersion::Exact(i as u64), fresh_ids(&template))
            .await
            .map_err(error)?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / appends as f64)
}

pub(super) async fn facts(
    client: &RedisClientManager,
    run_id: &str,
    scale: Scale,
    facts: &mut Vec<Fact>,
) -> Result<()> {
    const ROUNDS: usize = 9;
    let config = client.config();
    let (host, port) = match config.url.as_deref().and_then(host_port) {
        Some(address) => address,
        None => (config.host.clone(), config.port),
    };
    let Some(_replica) = replica_of(&host, port).await? else {
        say("redis: no durability cost fact: no redis-server to start a replica with");
        return Ok(());
    };
    let plain = RedisEventStore::new(client.clone());
    let durable = plain
        .with_durability(Some(AppendDurability::replicas(1)))
        .map_err(error)?;
    let appends = (scale.append_events / 10).max(100);
    let (mut waiting, mut not) = (Vec::new(), Vec::new());
    for r in 0..ROUNDS {
        let stream = |side: &str| StreamId::new("BenchWait", format!("{run_id}-{side}{r}")).map_err(error);
        waiting.push(round(&durable, &stream("w")?, appends).await?);
        not.push(round(&plain, &stream("p")?, appends).await?);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (waiting, not) = (median(waiting), median(not));
    facts.push(Fact::new(
        "redis",
        "single-event append waiting for 1 replica (AppendDurability::replicas(1))",
        format!("{waiting:.1} µs"),
        "the same append, not waiting",
        format!("{not:.1} µs"),
        format!(
            "{appends} appends × {ROUNDS} rounds, one writer, median round, a local replica; waiting costs {:.1} µs per append ({:.2}×)",
            waiting - not,
            waiting / not
        ),
    ));
    Ok(())
}
