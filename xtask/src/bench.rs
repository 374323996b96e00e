//! `cargo xtask bench`: every figure beside a baseline measured in the same run.
//!
//! A row's ratio is always "ours relative to the baseline, higher is better": baseline time per
//! operation divided by ours. 0.8 means we take 25% longer than the raw driver doing the same
//! writes; above 1 means faster than the baseline (e.g. a snapshot load against a raw read of
//! every event).

mod codec;
mod crypto;
mod migrate;
mod mongo;
mod projection;
mod projection_typed;
mod redis;
mod sharded;
mod snapshot;
mod store;
mod telemetry;

use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cmd::{self, say, Result};
use crate::Backend;

/// Iteration counts.
#[derive(Clone, Copy)]
pub struct Scale {
    /// Events per append row.
    pub append_events: usize,
    /// Events of the large aggregate.
    pub large_aggregate: usize,
    /// Repetitions of latency measurements.
    pub repeats: usize,
    /// Rounds of each append row, ours and the baseline taking turns.
    pub append_rounds: usize,
    /// Codec iterations.
    pub codec_iterations: usize,
    /// Events of the projection throughput row.
    pub projection_events: usize,
    /// Appends per writer of the append→view latency row.
    pub latency_appends: usize,
    /// Read models of the largest read-model query row.
    pub read_models: usize,
    /// Events of the Redis memory row.
    pub memory_events: usize,
    /// Events of the migration rows.
    pub migration_events: usize,
    /// Streams they are spread over.
    pub migration_streams: usize,
}

impl Scale {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                append_events: 1_600,
                large_aggregate: 10_000,
                repeats: 3,
                append_rounds: 3,
                codec_iterations: 2_000,
                projection_events: 5_000,
                latency_appends: 10,
                read_models: 20_000,
                memory_events: 20_000,
                migration_events: 20_000,
                migration_streams: 200,
            }
        } else {
            Self {
                // Short rounds, many of them: ours and the baselines alternate every few
                // hundred milliseconds at most, finer than this VM's slow spells.
                append_events: 3_200,
                large_aggregate: 10_000,
                repeats: 10,
                append_rounds: 15,
                codec_iterations: 20_000,
                projection_events: 20_000,
                latency_appends: 40,
                read_models: 100_000,
                memory_events: 100_000,
                migration_events: 100_000,
                migration_streams: 1_000,
            }
        }
    }
}

/// Every store row of one backend: appends, loads, `read_all`, projections.
async fn subject_rows(subject: &store::Subject, scale: Scale) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    store::append_rows(subject, scale, &mut rows).await?;
    telemetry::rows(subject, scale, &mut rows).await?;
    store::load_rows(subject, scale, &mut rows).await?;
    store::read_all_rows(subject, &mut rows).await?;
    projection::rows(subject, scale, &mut rows).await?;
    sharded::rows(subject, scale, &mut rows).await?;
    Ok(rows)
}

/// [`subject_rows`], where a server that fails a whole group of rows (FerretDB 2 + DocumentDB
/// 0.108's backend can crash on a sorted `find` over a large commits collection) gets the
/// failure written down as a fact and the other groups still run.
async fn subject_rows_lenient(subject: &store::Subject, scale: Scale, facts: &mut Vec<Fact>) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    store::append_rows(subject, scale, &mut rows).await?;
    telemetry::rows(subject, scale, &mut rows).await?;
    store::load_rows(subject, scale, &mut rows).await?;
    if let Err(e) = store::read_all_rows(subject, &mut rows).await {
        facts.push(Fact::new(&subject.backend, "read_all rows", "not measured", "", "", e));
        // The server restarts its backends after a crash: give it a moment.
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
    if let Err(e) = projection::rows(subject, scale, &mut rows).await {
        facts.push(Fact::new(
            &subject.backend,
            "projection rows",
            "not measured",
            "",
            "",
            e,
        ));
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
    Ok(rows)
}

/// A measurement: `ops` operations in `elapsed`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Measure {
    /// Operations (events, loads, encodes) done.
    pub ops: u64,
    /// Wall time in seconds.
    pub secs: f64,
}

impl Measure {
    fn per_op_us(&self) -> f64 {
        self.secs * 1e6 / self.ops.max(1) as f64
    }

    fn per_sec(&self) -> f64 {
        self.ops as f64 / self.secs.max(1e-12)
    }
}

/// Times an async block that performs `ops` operations.
pub async fn time<F: Future<Output = Result<()>>>(ops: u64, work: F) -> Result<Measure> {
    let start = Instant::now();
    work.await?;
    Ok(Measure {
        ops,
        secs: start.elapsed().as_secs_f64(),
    })
}

/// Times `iterations` runs of a synchronous operation.
pub fn measure(iterations: usize, mut f: impl FnMut() -> Result<()>) -> Result<Measure> {
    let start = Instant::now();
    for _ in 0..iterations {
        f()?;
    }
    Ok(Measure {
        ops: iterations as u64,
        secs: start.elapsed().as_secs_f64(),
    })
}

/// One line of the report.
#[derive(Debug, Serialize)]
pub struct BenchRow {
    /// Backend (memory, redis, redis-cluster, mongo, codec, snapshot).
    pub backend: String,
    /// What is measured.
    pub case: String,
    /// Our figure.
    pub ours: Measure,
    /// What the baseline does.
    pub baseline_name: String,
    /// The baseline's figure.
    pub baseline: Measure,
    /// Extra facts (bytes, round trips).
    pub note: String,
}

impl BenchRow {
    /// A row; `note` may be empty.
    pub fn new(backend: &str, case: impl Into<String>, ours: Measure, baseline_name: &str, baseline: Measure) -> Self {
        Self {
            backend: backend.into(),
            case: case.into(),
            ours,
            baseline_name: baseline_name.into(),
            baseline,
            note: String::new(),
        }
    }

    /// Adds a note.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    fn ratio(&self) -> f64 {
        self.baseline.per_op_us() / self.ours.per_op_us().max(1e-12)
    }

    fn print(&self) {
        say(&format!(
            "{:<10} {:<46} {:>12.1} µs/op {:>12.0}/s | {:<28} {:>10.1} µs/op | ratio {:>5.2}  {}",
            self.backend,
            self.case,
            self.ours.per_op_us(),
            self.ours.per_sec(),
            self.baseline_name,
            self.baseline.per_op_us(),
            self.ratio(),
            self.note
        ));
    }
}

/// Runs the benchmarks of the chosen backends and writes the report.
pub async fn run(backends: &[Backend], quick: bool, only: Option<&str>) -> Result<()> {
    if cfg!(debug_assertions) {
        // Numbers from a debug build mean nothing: run the same command from a release build.
        let names: Vec<&str> = backends.iter().map(|b| b.name()).collect();
        let mut command = cmd::cargo();
        command.args([
            "run",
            "--quiet",
            "--release",
            "--package",
            "xtask",
            "--",
            "bench",
            "--backend",
        ]);
        command.arg(names.join(","));
        if quick {
            command.arg("--quick");
        }
        if let Some(only) = only {
            command.args(["--only", only]);
        }
        return cmd::run(&mut command);
    }
    let scale = Scale::new(quick);
    let out_dir = cmd::root().join("target").join("bench");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let mut all = Section::default();
    let mut groups: Vec<(&str, Section)> = Vec::new();
    match only {
        None => {}
        Some("crypto") => return crypto_only(backends, scale, &out_dir).await,
        Some(other) => return Err(format!("unknown group {other:?}; the only one is `crypto`")),
    }
    if backends.contains(&Backend::Memory) {
        say("=== codec ===");
        groups.push(("codec", codec::rows(scale)?.into()));
        say("=== snapshot serializers ===");
        groups.push(("snapshot", snapshot::rows(scale)?.into()));
        say("=== memory ===");
        groups.push(("memory", store::memory_rows(scale).await?.into()));
        say("=== crypto: memory ===");
        let crypto_rows = crypto::rows(
            "memory",
            std::sync::Arc::new(cqrsx_core::memory::InMemoryEventStore::new()),
            std::sync::Arc::new(cqrsx_core::crypto::InMemoryKeyStore::new()),
            scale,
        )
        .await?;
        groups.push(("crypto-memory", crypto_rows.into()));
    }
    let mut servers = Vec::new();
    if backends.contains(&Backend::Redis) {
        say("=== redis ===");
        let server = crate::providers::redis_standalone().await?;
        say(&format!("redis: {}", server.provider));
        let url = server
            .env
            .iter()
            .find(|(k, _)| k == "CQRSX_TEST_REDIS_URL")
            .map(|(_, v)| v.clone())
            .ok_or("the redis provider gave no URL")?;
        groups.push(("redis", redis::rows(&url, scale).await?));
        say("=== crypto: redis ===");
        groups.push(("crypto-redis", redis::crypto_rows(&url, scale).await?.into()));
        servers.push(server);
    }
    if backends.contains(&Backend::Mongo) {
        say("=== mongo ===");
        // CQRSX_MONGO_URI when set; else FerretDB 2 + DocumentDB, where its sources are named
        // (an index-backed engine, whose times mean something); else the matrix's provider.
        let server = if std::env::var_os("CQRSX_MONGO_URI").is_some() {
            crate::providers::mongo().await?
        } else {
            match crate::providers::mongo_engine().await {
                Ok(server) => server,
                Err(why) => {
                    say(&format!("mongo: FerretDB 2 + DocumentDB not used: {why}"));
                    crate::providers::mongo().await?
                }
            }
        };
        say(&format!("mongo: {}", server.provider));
        let uri = server
            .env
            .iter()
            .find(|(k, _)| k == "CQRSX_TEST_MONGO_URI")
            .map(|(_, v)| v.clone())
            .ok_or("the mongo provider gave no URI")?;
        groups.push(("mongo", mongo::rows(&uri, scale).await?));
        servers.push(server);
    }
    for (name, section) in groups {
        let json = serde_json::to_string_pretty(&section).map_err(|e| e.to_string())?;
        let path = out_dir.join(format!("{name}.json"));
        std::fs::write(&path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        all.rows.extend(section.rows);
        all.facts.extend(section.facts);
    }
    let report = markdown(&all);
    let path = out_dir.join("report.md");
    std::fs::write(&path, &report).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    say(&format!("\n{report}"));
    say(&format!("wrote {} and {}/*.json", path.display(), out_dir.display()));
    Ok(())
}

/// `--only crypto`: the encryption rows on memory and Redis (standalone).
async fn crypto_only(backends: &[Backend], scale: Scale, out_dir: &std::path::Path) -> Result<()> {
    let mut all = Section::default();
    if backends.contains(&Backend::Memory) {
        say("=== crypto: memory ===");
        let rows = crypto::rows(
            "memory",
            std::sync::Arc::new(cqrsx_core::memory::InMemoryEventStore::new()),
            std::sync::Arc::new(cqrsx_core::crypto::InMemoryKeyStore::new()),
            scale,
        )
        .await?;
        all.rows.extend(rows);
    }
    let mut servers = Vec::new();
    if backends.contains(&Backend::Redis) {
        say("=== crypto: redis ===");
        let server = crate::providers::redis_standalone().await?;
        say(&format!("redis: {}", server.provider));
        let url = server
            .env
            .iter()
            .find(|(k, _)| k == "CQRSX_TEST_REDIS_URL")
            .map(|(_, v)| v.clone())
            .ok_or("the redis provider gave no URL")?;
        all.rows.extend(redis::crypto_rows(&url, scale).await?);
        servers.push(server);
    }
    let json = serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?;
    let path = out_dir.join("crypto.json");
    std::fs::write(&path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    say(&format!("\n{}", markdown(&all)));
    say(&format!("wrote {}", path.display()));
    Ok(())
}

fn markdown(section: &Section) -> String {
    let rows = &section.rows;
    let mut md = String::from(
        "| backend | case | ours µs/op | ours ops/s | baseline | baseline µs/op | ratio | note |\n\
         |---|---|---:|---:|---|---:|---:|---|\n",
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {} | {:.1} | {:.0} | {} | {:.1} | {:.2} | {} |\n",
            r.backend,
            r.case,
            r.ours.per_op_us(),
            r.ours.per_sec(),
            r.baseline_name,
            r.baseline.per_op_us(),
            r.ratio(),
            r.note
        ));
    }
    if !section.facts.is_empty() {
        md.push_str("\n| backend | figure | ours | baseline | baseline's | note |\n|---|---|---:|---|---:|---|\n");
        for f in &section.facts {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                f.backend, f.case, f.ours, f.baseline_name, f.baseline, f.note
            ));
        }
    }
    md
}

/// A figure that is not a time: bytes, commands, round trips — ours beside a baseline's.
#[derive(Debug, Serialize)]
pub struct Fact {
    /// Backend.
    pub backend: String,
    /// What is measured.
    pub case: String,
    /// Our figure, with its unit.
    pub ours: String,
    /// What the baseline does.
    pub baseline_name: String,
    /// The baseline's figure.
    pub baseline: String,
    /// Extra facts.
    pub note: String,
}

impl Fact {
    /// A fact.
    pub fn new(
        backend: &str,
        case: impl Into<String>,
        ours: impl Into<String>,
        baseline_name: &str,
        baseline: impl Into<String>,
        note: impl Into<String>,
    ) -> Self {
        let fact = Self {
            backend: backend.into(),
            case: case.into(),
            ours: ours.into(),
            baseline_name: baseline_name.into(),
            baseline: baseline.into(),
            note: note.into(),
        };
        say(&format!(
            "{:<10} {:<46} {:>14} | {:<28} {:>14}  {}",
            fact.backend, fact.case, fact.ours, fact.baseline_name, fact.baseline, fact.note
        ));
        fact
    }
}

/// One group's rows and facts.
#[derive(Debug, Default, Serialize)]
pub struct Section {
    /// Timed rows with ratios.
    pub rows: Vec<BenchRow>,
    /// Figures that are not times.
    pub facts: Vec<Fact>,
}

impl From<Vec<BenchRow>> for Section {
    fn from(rows: Vec<BenchRow>) -> Self {
        Self {
            rows,
            facts: Vec::new(),
        }
    }
}

/// Prints and keeps a row.
pub fn keep(rows: &mut Vec<BenchRow>, row: BenchRow) {
    row.print();
    rows.push(row);
}

/// The median of several measurements of the same work.
pub fn median(mut measures: Vec<Measure>) -> Measure {
    measures.sort_by(|a, b| a.per_op_us().total_cmp(&b.per_op_us()));
    measures.get(measures.len() / 2).copied().unwrap_or(Measure {
        ops: 1,
        secs: Duration::ZERO.as_secs_f64(),
    })
}

/// The snapshot strategy of the "with snapshots" load rows.
pub fn snapshot_strategy(
    store: std::sync::Arc<dyn cqrsx_core::SnapshotStore>,
) -> std::sync::Arc<dyn cqrsx_core::SnapshotStrategy<cqrsx_core::testkit::Counter>> {
    use cqrsx_snapshot::{Always, Compression, Format, SnapshotManager, SnapshotSerializer};
    std::sync::Arc::new(
        SnapshotManager::new(store)
            .with_policy(Always)
            .with_serializer(SnapshotSerializer::new(Format::MessagePack, Compression::ZSTD_DEFAULT))
            .with_retention(cqrsx_snapshot::Retention::Newest(
                std::num::NonZeroUsize::MIN.saturating_add(1),
            )),
    )
}
