//! Commands over projections: `projections list`, `projection status | parked |
//! replay-parked | rebuild`. Everything here reads or asks through the projection store;
//! nothing needs the projection's code, and nothing takes a runner's lease.

use std::time::{Duration, Instant};

use cqrsx_core::projection::{LeaseHolder, ParkedEvent, ViewKey};
use cqrsx_core::Checkpoint;
use serde_json::{json, Value};

use crate::args::{ProjectionCommand, Which};
use crate::output::{human, utc, Output, Table};
use crate::{Failure, Stores};

/// Seconds from an option, refused when negative or not a number.
fn seconds(option: &str, value: f64) -> Result<Duration, Failure> {
    if value.is_finite() && value >= 0.0 {
        Ok(Duration::from_secs_f64(value.min(1e7)))
    } else {
        Err(Failure::usage(format!("{option} {value} is not a number of seconds")))
    }
}

/// The version a command means: the one asked for, else the active one, else the newest.
async fn resolve(stores: &Stores, which: &Which) -> Result<ViewKey, Failure> {
    ViewKey::new(&which.name, which.version.unwrap_or(1))?;
    let views = stores.checkpoints.views().await?;
    let versions: Vec<u32> = views
        .iter()
        .filter(|k| k.projection() == which.name)
        .map(ViewKey::version)
        .collect();
    if versions.is_empty() {
        let mut known: Vec<&str> = views.iter().map(ViewKey::name).collect();
        known.sort_unstable();
        known.dedup();
        return Err(Failure::not_found(format!(
            "no projection {} in this store (known: {})",
            which.name,
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    }
    let version = match which.version {
        Some(v) if versions.contains(&v) => v,
        Some(v) => {
            return Err(Failure::not_found(format!(
                "projection {} has no version {v} (it has {versions:?})",
                which.name
            )))
        }
        None => match stores.checkpoints.active_version(&which.name).await? {
            Some(active) => active,
            None => versions.iter().copied().max().unwrap_or(1),
        },
    };
    Ok(ViewKey::new(&which.name, version)?)
}

/// A stored checkpoint, refused when it covers another number of partitions than the
/// connection reads (on Redis, a wrong `--partitions`).
pub(crate) async fn checkpoint_of(stores: &Stores, key: &ViewKey) -> Result<Option<Checkpoint>, Failure> {
    let checkpoint = stores.checkpoints.checkpoint(key).await?;
    let partitions = stores.events.capabilities().partitions;
    match checkpoint {
        Some(c) if c.partitions() != partitions => Err(crate::streams::layout_mismatch(&format!(
            "the checkpoint of {key} covers {} partition(s), this connection reads {partitions}",
            c.partitions()
        ))),
        other => Ok(other),
    }
}

/// How far `checkpoint` is behind the head, per partition.
pub(crate) fn lag(stores: &Stores, checkpoint: Option<&Checkpoint>, head: &Checkpoint) -> Vec<u64> {
    let start = Checkpoint::start(head.partitions());
    let checkpoint = checkpoint.unwrap_or(&start);
    head.positions()
        .map(|h| stores.events.distance(checkpoint.next(h.partition), h))
        .collect()
}

pub(crate) fn holder_json(holder: Option<&LeaseHolder>) -> Value {
    holder.map_or(Value::Null, |h| {
        json!({
            "owner": h.owner,
            "token": h.token,
            "expires_in_ms": u64::try_from(h.expires_in.as_millis()).unwrap_or(u64::MAX),
        })
    })
}

pub(crate) fn holder_text(holder: Option<&LeaseHolder>) -> String {
    holder.map_or("-".into(), |h| {
        format!("{} (token {}, {} left)", h.owner, h.token, human(h.expires_in))
    })
}

/// `projections list`.
pub async fn list(stores: &Stores) -> Result<Output, Failure> {
    let head = stores.events.head().await?;
    let mut table = Table::new(&[
        "PROJECTION",
        "VERSION",
        "ACTIVE",
        "CHECKPOINT",
        "LAG",
        "HOLDER",
        "PARKED",
    ]);
    let mut rows = Vec::new();
    for key in stores.checkpoints.views().await? {
        if key.is_member() {
            // A process's membership of a sharded projection, not a view.
            continue;
        }
        let active_version = stores.checkpoints.active_version(key.projection()).await?;
        let active = active_version == Some(key.version());
        // A version below the active one was replaced (and its view dropped): it has no lag.
        let superseded = active_version.is_some_and(|a| a > key.version());
        let checkpoint = checkpoint_of(stores, &key).await?;
        let lag: Option<u64> = (!superseded).then(|| lag(stores, checkpoint.as_ref(), &head).iter().sum());
        let holder = stores.checkpoints.holder(&key).await?;
        let parked = stores.checkpoints.parked(&key).await?.len();
        table.row(vec![
            key.projection().to_string(),
            key.version().to_string(),
            match (active, superseded) {
                (true, _) => "yes",
                (false, true) => "replaced",
                (false, false) => "no",
            }
            .into(),
            checkpoint.as_ref().map_or("-".into(), ToString::to_string),
            lag.map_or("-".into(), |l| l.to_string()),
            holder_text(holder.as_ref()),
            parked.to_string(),
        ]);
        rows.push(json!({
            "projection": key.projection(),
            "version": key.version(),
            "active": active,
            "superseded": superseded,
            "checkpoint": checkpoint.map(|c| c.to_string()),
            "lag": lag,
            "holder": holder_json(holder.as_ref()),
            "parked": parked,
        }));
    }
    Ok(Output {
        json: Value::Array(rows),
        text: table.render("no projections in this store"),
    })
}

/// `projection …`.
pub async fn run(stores: &Stores, command: &ProjectionCommand) -> Result<Output, Failure> {
    if let Some(keys) = sharded_layout(stores, command).await? {
        let name = command_which(command).name.as_str();
        return match command {
            ProjectionCommand::Status { .. } => crate::sharded::status(stores, name, &keys).await,
            ProjectionCommand::Parked { .. } => crate::sharded::parked(stores, name, &keys).await,
            ProjectionCommand::ReplayParked { wait, .. } => {
                crate::sharded::replay(stores, name, &keys, seconds("--wait", *wait)?).await
            }
            ProjectionCommand::Rebuild { yes, .. } => crate::sharded::rebuild(stores, name, &keys, *yes).await,
        };
    }
    match command {
        ProjectionCommand::Status { which, sample } => status(stores, which, seconds("--sample", *sample)?).await,
        ProjectionCommand::Parked { which } => parked(stores, which).await,
        ProjectionCommand::ReplayParked { which, wait } => replay(stores, which, seconds("--wait", *wait)?).await,
        ProjectionCommand::Rebuild { which, yes } => rebuild(stores, which, *yes).await,
    }
}

fn command_which(command: &ProjectionCommand) -> &Which {
    match command {
        ProjectionCommand::Status { which, .. }
        | ProjectionCommand::Parked { which }
        | ProjectionCommand::ReplayParked { which, .. }
        | ProjectionCommand::Rebuild { which, .. } => which,
    }
}

/// The shards a command's name means, when it names a sharded projection (one that has no
/// key of its own under the name, and shards that do).
async fn sharded_layout(stores: &Stores, command: &ProjectionCommand) -> Result<Option<Vec<ViewKey>>, Failure> {
    let which = command_which(command);
    ViewKey::new(&which.name, which.version.unwrap_or(1))?;
    let views = stores.checkpoints.views().await?;
    if views.iter().any(|k| k.projection() == which.name) {
        return Ok(None);
    }
    crate::sharded::layout(stores, which).await
}

async fn status(stores: &Stores, which: &Which, sample: Duration) -> Result<Output, Failure> {
    let key = resolve(stores, which).await?;
    let cp = &stores.checkpoints;
    let active = cp.active_version(key.projection()).await?;
    let first = checkpoint_of(stores, &key).await?;
    let started = Instant::now();
    let (rate, checkpoint) = if sample.is_zero() {
        (None, first)
    } else {
        tokio::time::sleep(sample).await;
        let second = checkpoint_of(stores, &key).await?;
        let start = Checkpoint::start(stores.events.capabilities().partitions);
        let (a, b) = (first.as_ref().unwrap_or(&start), second.as_ref().unwrap_or(&start));
        let moved: u64 = b
            .positions()
            .map(|p| stores.events.distance(a.next(p.partition), p))
            .sum();
        (Some(moved as f64 / started.elapsed().as_secs_f64()), second)
    };
    let head = stores.events.head().await?;
    let lag = lag(stores, checkpoint.as_ref(), &head);
    let holder = cp.holder(&key).await?;
    let parked = cp.parked(&key).await?;
    let requests = cp.replay_requests(&key).await?;
    let last_error = parked.iter().max_by_key(|p| p.parked_at);
    let state = match (&holder, active) {
        (_, Some(a)) if a > key.version() => "superseded",
        (Some(_), _) if lag.iter().all(|&l| l == 0) => "live",
        (Some(_), _) => "catching up",
        (None, _) if checkpoint.is_none() => "not running, never committed",
        (None, _) => "not running",
    };
    let rate_text = rate.map_or("not measured (--sample)".into(), |r| format!("{r:.1}"));
    let rows = [
        ("projection", key.to_string()),
        ("state", state.to_string()),
        ("active version", active.map_or("-".into(), |a| a.to_string())),
        (
            "checkpoint",
            checkpoint.as_ref().map_or("-".into(), ToString::to_string),
        ),
        ("lag", format!("{} (per partition: {lag:?})", lag.iter().sum::<u64>())),
        ("events/s", rate_text),
        ("lease holder", holder_text(holder.as_ref())),
        ("parked", parked.len().to_string()),
        (
            "last error",
            last_error.map_or("-".into(), |p| {
                format!("{} (parked {} at {})", p.error, utc(p.parked_at), p.position)
            }),
        ),
        (
            "replay requests",
            format!("{} made, {} handled", requests.requested, requests.handled),
        ),
    ];
    let text = rows.iter().map(|(k, v)| format!("{k:<16} {v}\n")).collect();
    Ok(Output {
        json: json!({
            "projection": key.projection(),
            "version": key.version(),
            "state": state,
            "active_version": active,
            "checkpoint": checkpoint.map(|c| c.to_string()),
            "lag": lag.iter().sum::<u64>(),
            "lag_per_partition": lag,
            "events_per_sec": rate,
            "holder": holder_json(holder.as_ref()),
            "parked": parked.len(),
            "last_error": last_error.map(|p| p.error.clone()),
            "replay_requests": { "requested": requests.requested, "handled": requests.handled },
        }),
        text,
    })
}

/// A parked event's row: position, stream, version, type, attempts, when, error.
pub(crate) fn parked_cells(p: &ParkedEvent) -> Vec<String> {
    vec![
        p.position.to_string(),
        p.stream.clone(),
        p.version.to_string(),
        p.event_type.clone(),
        p.attempts.to_string(),
        utc(p.parked_at),
        p.error.clone(),
    ]
}

/// A parked event as `--json` prints it.
pub(crate) fn parked_json(p: &ParkedEvent) -> Value {
    json!({
        "position": p.position.to_string(),
        "stream": p.stream,
        "version": p.version,
        "event_type": p.event_type,
        "attempts": p.attempts,
        "parked_at": utc(p.parked_at),
        "error": p.error,
    })
}

async fn parked(stores: &Stores, which: &Which) -> Result<Output, Failure> {
    let key = resolve(stores, which).await?;
    let parked = stores.checkpoints.parked(&key).await?;
    let mut table = Table::new(&[
        "POSITION",
        "STREAM",
        "VERSION",
        "TYPE",
        "ATTEMPTS",
        "PARKED AT",
        "ERROR",
    ]);
    for p in &parked {
        table.row(parked_cells(p));
    }
    Ok(Output {
        json: json!(parked.iter().map(parked_json).collect::<Vec<_>>()),
        text: table.render(&format!("no parked events in {key}")),
    })
}

async fn replay(stores: &Stores, which: &Which, wait: Duration) -> Result<Output, Failure> {
    let key = resolve(stores, which).await?;
    let cp = &stores.checkpoints;
    let before = cp.parked(&key).await?.len();
    if before == 0 {
        return Ok(Output {
            json: json!({ "projection": key.projection(), "version": key.version(), "request": null,
                          "handled": false, "replayed": 0, "still_parked": 0 }),
            text: format!("nothing parked in {key}: nothing to replay\n"),
        });
    }
    let request = cp.request_replay(&key).await?;
    let json = |handled: bool, replayed: u64, left: usize| {
        json!({ "projection": key.projection(), "version": key.version(), "request": request,
                "handled": handled, "replayed": replayed, "still_parked": left })
    };
    if wait.is_zero() {
        let who = match cp.holder(&key).await? {
            Some(h) => format!("{}, which holds its lease, handles it", h.owner),
            None => "no runner holds its lease now: the next one to start handles it".into(),
        };
        return Ok(Output {
            json: json(false, 0, before),
            text: format!("replay request {request} of {key} made; {who}\n"),
        });
    }
    let deadline = Instant::now() + wait;
    loop {
        let requests = cp.replay_requests(&key).await?;
        if requests.handled >= request {
            let left = cp.parked(&key).await?.len();
            return Ok(Output {
                json: json(true, requests.replayed, left),
                text: format!(
                    "{key}: replayed {} of {before} parked events; {left} still parked\n",
                    requests.replayed
                ),
            });
        }
        if Instant::now() >= deadline {
            let holder = cp.holder(&key).await?;
            return Err(Failure::timed_out(format!(
                "no runner handled replay request {request} of {key} within {}: {} (the request stays; the next runner to hold the lease handles it)",
                human(wait),
                match holder {
                    Some(h) => format!("{} holds the lease; is it stuck?", h.owner),
                    None => "no runner holds its lease; start one".into(),
                }
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn rebuild(stores: &Stores, which: &Which, yes: bool) -> Result<Output, Failure> {
    let key = resolve(stores, which).await?;
    if !yes {
        return Err(Failure::usage(format!(
            "rebuild drops {key}'s documents, checkpoint and parked events, and readers see the view empty until it is built again: add --yes"
        )));
    }
    if let Some(active) = stores.checkpoints.active_version(key.projection()).await? {
        if active > key.version() {
            return Err(Failure::usage(format!(
                "{key} was replaced by version {active}, which no runner of {key} builds again: rebuild the active version"
            )));
        }
    }
    let holder = stores.checkpoints.holder(&key).await?;
    stores.checkpoints.drop_view(&key).await?;
    let who = match &holder {
        Some(h) => format!("{} (its runner) builds it again from the first event", h.owner),
        None => "no runner holds it now: the next one to start builds it from the first event".into(),
    };
    Ok(Output {
        json: json!({ "projection": key.projection(), "version": key.version(), "dropped": true,
                      "holder": holder_json(holder.as_ref()) }),
        text: format!("dropped {key}'s documents, checkpoint and parked events; {who}\n"),
    })
}
