//! Commands over events, snapshots and read models: `streams list`, `stream show`,
//! `stream tail`, `events by-type`, `snapshots list`, `read-models query`.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use cqrsx_core::query::Op;
use cqrsx_core::subscription::{subscribe, SubscriptionMessage, SubscriptionOptions};
use cqrsx_core::{Checkpoint, Error, EventFilter, Filter, Query, RecordedEvent, StreamId, Timestamp};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::output::{event_json, parse_since, payload, short, utc, Output, Table};
use crate::{emit, Failure, Stores};

/// What is read disagrees with where it was read from: the connection's layout (on Redis, the
/// partition count) is not the service's.
pub fn layout_mismatch(what: &str) -> Failure {
    Failure::usage(format!(
        "{what}: this connection does not lay the store out as its service does (on Redis, --partitions or CQRSX_REDIS_PARTITIONS must be the service's count)"
    ))
}

fn not_found(stream: &StreamId) -> Failure {
    Failure::not_found(format!(
        "no stream {stream} in this store (`cqrsx streams list` shows them; on Redis, --partitions must be the service's count)"
    ))
}

fn stream_id(id: &str) -> Result<StreamId, Failure> {
    StreamId::parse(id).map_err(|e| Failure::usage(format!("{e} (for example: User/42)")))
}

/// Events as a table, or as a JSON array.
fn events_output(events: &[RecordedEvent], with_stream: bool, empty: &str) -> Output {
    let mut headers = vec!["VERSION", "TYPE", "POSITION", "RECORDED", "PAYLOAD"];
    if with_stream {
        headers.insert(0, "STREAM");
    }
    let mut table = Table::new(&headers);
    for e in events {
        let mut row = vec![
            e.version.to_string(),
            e.event_type.clone(),
            e.position.to_string(),
            utc(e.recorded_at),
            short(&payload(e), 60),
        ];
        if with_stream {
            row.insert(0, e.stream.key().to_string());
        }
        table.row(row);
    }
    Output {
        json: Value::Array(events.iter().map(event_json).collect()),
        text: table.render(empty),
    }
}

/// `streams list`: every stream seen in the global log, with its version now.
pub async fn list(stores: &Stores, aggregate_type: Option<&str>, limit: usize) -> Result<Output, Failure> {
    let filter = match aggregate_type {
        Some(t) => EventFilter::aggregate_types([t]),
        None => EventFilter::all(),
    };
    let options = SubscriptionOptions::default()
        .with_filter(filter)
        .with_page_size(1000)
        .with_live(false);
    let mut subscription = subscribe(Arc::clone(&stores.events), options)?;
    // Stream -> (events seen, the last one's time).
    let mut seen: BTreeMap<StreamId, (u64, Timestamp)> = BTreeMap::new();
    while let Some(message) = subscription.next().await {
        match message? {
            SubscriptionMessage::Events { events, .. } => {
                for e in events {
                    let entry = seen.entry(e.stream.clone()).or_insert((0, e.recorded_at));
                    entry.0 += 1;
                    entry.1 = entry.1.max(e.recorded_at);
                }
            }
            SubscriptionMessage::CaughtUp { .. } => break,
            SubscriptionMessage::FellBehind { .. } => {}
        }
    }
    let total = seen.len();
    let mut table = Table::new(&["STREAM", "TYPE", "VERSION", "EVENTS", "LAST EVENT"]);
    let mut rows = Vec::new();
    for (stream, (events, last)) in seen.into_iter().take(limit) {
        let version = match stores.events.stream_version(&stream).await {
            Ok(0) => {
                return Err(layout_mismatch(&format!(
                    "stream {stream} is in the global log but reads as empty"
                )))
            }
            Ok(v) => json!(v),
            Err(Error::StreamDeleted { .. }) => json!("deleted"),
            Err(e) => return Err(e.into()),
        };
        table.row(vec![
            stream.key().to_string(),
            stream.aggregate_type().to_string(),
            version.to_string().trim_matches('"').to_string(),
            events.to_string(),
            utc(last),
        ]);
        rows.push(json!({
            "stream": stream.key(),
            "aggregate_type": stream.aggregate_type(),
            "version": version,
            "events": events,
            "last_event_at": utc(last),
        }));
    }
    let mut text = table.render("no streams");
    if total > limit {
        text.push_str(&format!("({} more streams: raise --limit)\n", total - limit));
    }
    Ok(Output {
        json: Value::Array(rows),
        text,
    })
}

/// `stream show ID`.
pub async fn show(stores: &Stores, id: &str, from: u64, limit: usize) -> Result<Output, Failure> {
    let stream = stream_id(id)?;
    let version = stores.events.stream_version(&stream).await?;
    if version == 0 {
        return Err(not_found(&stream));
    }
    let events = stores.events.read_stream(&stream, from.max(1), limit).await?;
    let mut out = events_output(&events, false, "no events from that version");
    out.text = format!("{stream}  version {version}\n{}", out.text);
    out.json = json!({ "stream": stream.key(), "version": version, "events": out.json });
    Ok(out)
}

/// `events by-type T --since TIME`.
pub async fn by_type(stores: &Stores, event_type: &str, since: &str, limit: usize) -> Result<Output, Failure> {
    let since = parse_since(since, Timestamp::now())?;
    let events = stores.events.events_by_type(event_type, since, limit).await?;
    Ok(events_output(&events, true, "no events of that type since then"))
}

/// `snapshots list ID`.
pub async fn snapshots(stores: &Stores, id: &str) -> Result<Output, Failure> {
    let stream = stream_id(id)?;
    let list = stores.snapshots.list(&stream).await?;
    if list.is_empty() && stores.events.stream_version(&stream).await? == 0 {
        return Err(not_found(&stream));
    }
    let mut table = Table::new(&["VERSION", "SCHEMA", "CONTENT", "BYTES", "CREATED"]);
    let mut rows = Vec::new();
    for s in &list {
        table.row(vec![
            s.version.to_string(),
            s.schema_version.to_string(),
            s.content_type.clone(),
            s.size.to_string(),
            utc(s.created_at),
        ]);
        rows.push(json!({
            "version": s.version,
            "schema_version": s.schema_version,
            "content_type": s.content_type,
            "size": s.size,
            "created_at": utc(s.created_at),
        }));
    }
    Ok(Output {
        json: Value::Array(rows),
        text: table.render(&format!("no snapshots of {stream}")),
    })
}

/// One `--filter` condition.
fn condition(text: &str) -> Result<Filter, Failure> {
    if let Some(field) = text.strip_suffix('?') {
        return Ok(Filter::new(field, Op::Exists, true));
    }
    // Two-character operators first: `>=` must not read as `>`.
    let ops = [
        ("!=", Op::Ne),
        (">=", Op::Gte),
        ("<=", Op::Lte),
        ("^=", Op::Prefix),
        ("=", Op::Eq),
        (">", Op::Gt),
        ("<", Op::Lt),
    ];
    let (at, symbol, op) = ops
        .into_iter()
        .filter_map(|(symbol, op)| text.find(symbol).map(|at| (at, symbol, op)))
        .min_by_key(|(at, symbol, _)| (*at, std::cmp::Reverse(symbol.len())))
        .ok_or_else(|| {
            Failure::usage(format!(
                "--filter {text:?} has no operator: use field=value, field>=10, field^=pre or field?"
            ))
        })?;
    let (field, raw) = (&text[..at], &text[at + symbol.len()..]);
    if field.is_empty() {
        return Err(Failure::usage(format!("--filter {text:?} names no field")));
    }
    if raw.is_empty() {
        return Err(Failure::usage(format!(
            "--filter {text:?} has no value (for an empty string: {field}{symbol}\"\")"
        )));
    }
    let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
    Ok(Filter::new(field, op, value))
}

/// `read-models query COLLECTION`.
pub async fn query(
    stores: &Stores,
    collection: &str,
    filters: &[String],
    sort: &[String],
    limit: u64,
) -> Result<Output, Failure> {
    let mut query = Query::all();
    for f in filters {
        query = query.filter(condition(f)?);
    }
    for s in sort {
        query = match s.rsplit_once(':').map(|(f, d)| (f, d.to_ascii_lowercase())) {
            Some((field, d)) if d == "desc" => query.sort_desc(field),
            Some((field, d)) if d == "asc" => query.sort_asc(field),
            Some((_, d)) => {
                return Err(Failure::usage(format!(
                    "--sort {s:?}: the direction {d:?} is not asc or desc"
                )))
            }
            None => query.sort_asc(s.as_str()),
        };
    }
    query = query.page(0, limit);
    query.validate()?;
    let store = (stores.read_models)(collection)?;
    let docs = store.query(&query).await?;
    let mut table = Table::new(&["ID", "DOCUMENT"]);
    for d in &docs {
        table.row(vec![d.id.clone(), short(&d.data, 100)]);
    }
    Ok(Output {
        json: Value::Array(docs.iter().map(|d| json!({ "id": d.id, "data": d.data })).collect()),
        text: table.render("no matching documents"),
    })
}

/// What `stream tail` follows.
pub struct Tail {
    pub aggregate_type: Option<String>,
    pub event_type: Option<String>,
    pub from: String,
    pub max: Option<u64>,
    pub duration: Option<f64>,
    pub json: bool,
}

/// `stream tail`: prints each event as it is committed, until `--max` events or `--for`
/// seconds (or forever).
pub async fn tail(stores: &Stores, tail: &Tail, out: &mut (dyn Write + Send)) -> Result<(), Failure> {
    let partitions = stores.events.capabilities().partitions;
    let start = match tail.from.as_str() {
        "now" => stores.events.head().await?,
        "start" => Checkpoint::start(partitions),
        other => {
            let checkpoint: Checkpoint = other.parse().map_err(|e: Error| {
                Failure::usage(format!("--from {other:?} is not now, start or a checkpoint: {e}"))
            })?;
            if checkpoint.partitions() != partitions {
                return Err(Failure::usage(format!(
                    "--from {other:?} has {} partitions; this store has {partitions}",
                    checkpoint.partitions()
                )));
            }
            checkpoint
        }
    };
    let filter = EventFilter {
        event_types: tail.event_type.iter().cloned().collect(),
        aggregate_types: tail.aggregate_type.iter().cloned().collect(),
    };
    let options = SubscriptionOptions::default()
        .with_start(start)
        .with_filter(filter)
        .with_poll_between(Duration::from_millis(20), Duration::from_millis(250));
    let mut subscription = subscribe(Arc::clone(&stores.events), options)?;
    let duration = match tail.duration {
        Some(s) if !(s.is_finite() && s >= 0.0) => return Err(Failure::usage(format!("--for {s} is not a duration"))),
        Some(s) => Duration::from_secs_f64(s.min(1e9)),
        None => Duration::MAX,
    };
    let deadline = tokio::time::Instant::now().checked_add(duration);
    let mut printed = 0;
    while tail.max.is_none_or(|m| printed < m) {
        let next = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, subscription.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => subscription.next().await,
        };
        let Some(message) = next else { break };
        let SubscriptionMessage::Events { events, .. } = message? else {
            continue;
        };
        for e in events {
            if tail.max.is_some_and(|m| printed >= m) {
                break;
            }
            let line = if tail.json {
                event_json(&e).to_string()
            } else {
                format!(
                    "{}  {}  {} v{}  {}  {}",
                    utc(e.recorded_at),
                    e.position,
                    e.stream,
                    e.version,
                    e.event_type,
                    short(&payload(&e), 80)
                )
            };
            emit(out, &format!("{line}\n"))?;
            printed += 1;
        }
    }
    Ok(())
}
