//! The projection commands over a projection run as shards (`ShardedRunner`): the name alone
//! means every shard of its layout — `status` shows each shard's holder, checkpoint and lag,
//! `parked` every shard's dead letters, `replay-parked` asks each shard's holder, `rebuild`
//! drops every shard. One shard is named as it is stored, `NAME.s{i}of{n}`, and takes the
//! commands of any projection.

use std::time::{Duration, Instant};

use cqrsx_core::projection::{Shard, ViewKey};
use serde_json::{json, Value};

use crate::args::Which;
use crate::output::{human, Output, Table};
use crate::projections::{checkpoint_of, holder_json, holder_text, lag, parked_cells, parked_json};
use crate::{Failure, Stores};

/// The shards `which` names when it is a sharded projection: every shard of the layout at the
/// version asked for (else the active one, else the newest) with the most shards; `None` when
/// no shard of it was ever run.
pub async fn layout(stores: &Stores, which: &Which) -> Result<Option<Vec<ViewKey>>, Failure> {
    let views = stores.checkpoints.views().await?;
    let shards: Vec<&ViewKey> = views
        .iter()
        .filter(|k| k.shard().is_some() && k.name() == which.name)
        .collect();
    if shards.is_empty() {
        return Ok(None);
    }
    let version = match which.version {
        Some(v) if shards.iter().any(|k| k.version() == v) => v,
        Some(v) => {
            return Err(Failure::not_found(format!(
                "sharded projection {} has no version {v}",
                which.name
            )))
        }
        None => {
            let mut active = None;
            for key in &shards {
                active = active.max(stores.checkpoints.active_version(key.projection()).await?);
            }
            active.unwrap_or_else(|| shards.iter().map(|k| k.version()).max().unwrap_or(1))
        }
    };
    let count = shards
        .iter()
        .filter(|k| k.version() == version)
        .filter_map(|k| k.shard().map(|s| s.count()))
        .max()
        .unwrap_or(2);
    let keys = Shard::all(count)?
        .into_iter()
        .map(|shard| ViewKey::sharded(&which.name, version, shard))
        .collect::<cqrsx_core::Result<Vec<_>>>()?;
    Ok(Some(keys))
}

/// `projection status NAME` of a sharded projection: one row per shard, and the processes
/// sharing it (the member slots' holders).
pub async fn status(stores: &Stores, name: &str, keys: &[ViewKey]) -> Result<Output, Failure> {
    let cp = &stores.checkpoints;
    let head = stores.events.head().await?;
    let mut table = Table::new(&["SHARD", "VERSION", "CHECKPOINT", "LAG", "HOLDER", "PARKED"]);
    let mut shards = Vec::new();
    let mut total_lag = 0;
    let mut total_parked = 0;
    for key in keys {
        let checkpoint = checkpoint_of(stores, key).await?;
        let lag = lag(stores, checkpoint.as_ref(), &head);
        let holder = cp.holder(key).await?;
        let parked = cp.parked(key).await?.len();
        total_lag += lag.iter().sum::<u64>();
        total_parked += parked;
        table.row(vec![
            key.projection().to_string(),
            key.version().to_string(),
            checkpoint.as_ref().map_or("-".into(), ToString::to_string),
            lag.iter().sum::<u64>().to_string(),
            holder_text(holder.as_ref()),
            parked.to_string(),
        ]);
        shards.push(json!({
            "shard": key.projection(),
            "version": key.version(),
            "checkpoint": checkpoint.map(|c| c.to_string()),
            "lag": lag.iter().sum::<u64>(),
            "lag_per_partition": lag,
            "holder": holder_json(holder.as_ref()),
            "parked": parked,
        }));
    }
    let mut members = Vec::new();
    if let Some(first) = keys.first().and_then(ViewKey::shard) {
        for slot in Shard::all(first.count())? {
            let key = ViewKey::member(name, keys[0].version(), slot)?;
            if let Some(holder) = cp.holder(&key).await? {
                members.push(holder.owner);
            }
        }
    }
    let version = keys.first().map_or(1, ViewKey::version);
    let text = format!(
        "{name}.v{version}: {} shards, lag {total_lag}, parked {total_parked}; processes sharing it: {}\n{}",
        keys.len(),
        if members.is_empty() {
            "none".to_string()
        } else {
            members.join(", ")
        },
        table.render("")
    );
    Ok(Output {
        json: json!({
            "projection": name,
            "version": version,
            "shards": shards,
            "lag": total_lag,
            "parked": total_parked,
            "members": members,
        }),
        text,
    })
}

/// `projection parked NAME`: every shard's parked events, shard by shard.
pub async fn parked(stores: &Stores, name: &str, keys: &[ViewKey]) -> Result<Output, Failure> {
    let mut table = Table::new(&[
        "SHARD",
        "POSITION",
        "STREAM",
        "VERSION",
        "TYPE",
        "ATTEMPTS",
        "PARKED AT",
        "ERROR",
    ]);
    let mut rows = Vec::new();
    for key in keys {
        for p in stores.checkpoints.parked(key).await? {
            let mut cells = vec![key.projection().to_string()];
            cells.extend(parked_cells(&p));
            table.row(cells);
            let mut row = parked_json(&p);
            row["shard"] = json!(key.projection());
            rows.push(row);
        }
    }
    Ok(Output {
        json: Value::Array(rows),
        text: table.render(&format!("no parked events in any shard of {name}")),
    })
}

/// `projection replay-parked NAME`: a replay request to each shard with parked events; with
/// `--wait`, until each was handled.
pub async fn replay(stores: &Stores, name: &str, keys: &[ViewKey], wait: Duration) -> Result<Output, Failure> {
    let cp = &stores.checkpoints;
    let mut requests = Vec::new();
    for key in keys {
        if !cp.parked(key).await?.is_empty() {
            requests.push((key.clone(), cp.request_replay(key).await?));
        }
    }
    let deadline = Instant::now() + wait;
    let mut results = Vec::new();
    let mut replayed_total = 0;
    for (key, request) in &requests {
        let mut handled = None;
        while !wait.is_zero() {
            let state = cp.replay_requests(key).await?;
            if state.handled >= *request {
                handled = Some(state.replayed);
                break;
            }
            if Instant::now() >= deadline {
                return Err(Failure::timed_out(format!(
                    "no runner handled replay request {request} of {key} within {} (the requests stay; each shard's next holder handles them)",
                    human(wait)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        replayed_total += handled.unwrap_or(0);
        results.push(json!({
            "shard": key.projection(),
            "request": request,
            "handled": handled.is_some(),
            "replayed": handled.unwrap_or(0),
            "still_parked": cp.parked(key).await?.len(),
        }));
    }
    let text = if requests.is_empty() {
        format!("nothing parked in any shard of {name}: nothing to replay\n")
    } else if wait.is_zero() {
        format!(
            "replay requested of {} shard(s) of {name}; each shard's lease holder handles its request\n",
            requests.len()
        )
    } else {
        format!(
            "{name}: {} shard(s) replayed {replayed_total} parked event(s)\n",
            requests.len()
        )
    };
    Ok(Output {
        json: json!({ "projection": name, "shards": results, "replayed": replayed_total }),
        text,
    })
}

/// `projection rebuild NAME --yes`: drops every shard; each shard's holder builds it again.
pub async fn rebuild(stores: &Stores, name: &str, keys: &[ViewKey], yes: bool) -> Result<Output, Failure> {
    if !yes {
        return Err(Failure::usage(format!(
            "rebuild drops the documents, checkpoints and parked events of all {} shards of {name}, and readers see them empty until they are built again: add --yes",
            keys.len()
        )));
    }
    for key in keys {
        if let Some(active) = stores.checkpoints.active_version(key.projection()).await? {
            if active > key.version() {
                return Err(Failure::usage(format!(
                    "{key} was replaced by version {active}: rebuild the active version"
                )));
            }
        }
    }
    let mut dropped = Vec::new();
    for key in keys {
        let holder = stores.checkpoints.holder(key).await?;
        stores.checkpoints.drop_view(key).await?;
        dropped.push(json!({ "shard": key.projection(), "holder": holder_json(holder.as_ref()) }));
    }
    Ok(Output {
        json: json!({ "projection": name, "dropped": dropped }),
        text: format!(
            "dropped all {} shards of {name}; each shard's runner builds it again from the first event\n",
            keys.len()
        ),
    })
}
