//! The fault suite (`cargo xtask faults`, and a group of `cargo xtask test`): the read side's
//! guarantees checked from outside the library, with real processes and real servers — see
//! `scenarios.rs` for what each scenario does. Every row runs on servers of its own, which the
//! suite kills and starts again; a meta-test shows each scenario failing against a deliberately
//! broken runner or store.

mod harness;
mod scenarios;
mod servers;
mod shards;
mod target;
pub mod worker;

use std::io::Write;
use std::time::{Duration, Instant};

use harness::{Counts, Size};
use servers::Servers;
use target::Target;
use worker::Broken;

use crate::cmd::Result;
use crate::Backend;

/// One row of the suite's summary.
pub struct RowResult {
    pub backend: String,
    pub provider: String,
    pub counts: Counts,
    pub lines: Vec<String>,
}

impl RowResult {
    /// The line the summary prints under the row.
    pub fn summary(&self) -> String {
        let c = &self.counts;
        format!(
            "faults: {} process kills, {} server kills, {} frozen holders, {} events; skipped {}, doubled {}, phantom {}, stale commits landed {}",
            c.process_kills, c.server_kills, c.freezes, c.events, c.skipped, c.doubled, c.phantom, c.stale_landed
        )
    }
}

/// One scenario of the suite, to run it alone (`cargo xtask faults --only server-kills`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    ProcessKills,
    ServerKills,
    FrozenHolders,
    Handlers,
    ShardKills,
}

/// How many of each fault a row gets.
struct Plan {
    size: Size,
    process_kills: u64,
    /// Worker processes killed among those sharing a sharded projection.
    shard_kills: u64,
    server_kills: u64,
    frozen_rounds: u64,
    /// The lease TTL of the frozen-holder scenario. A write the holder sent before it froze
    /// must have landed (or died) before its lease runs out; on FerretDB 1, which applies a
    /// conditional update as separate read and write steps and can hold one for seconds on a
    /// loaded machine, the TTL is sized for that (see `ServerCapabilities::atomic_counters`).
    frozen_ttl: Duration,
}

/// Writes a line to the suite's log (and flushes it, so a run can be followed).
fn log(out: &mut (dyn Write + Send), line: &str) {
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs every scenario of one row; the partition counts it cycles through (Redis).
async fn row(
    name: &str,
    servers: &mut Servers,
    base: &Target,
    partitions: &[u32],
    plan: &Plan,
    only: Option<Scenario>,
    out: &mut (dyn Write + Send),
) -> Result<RowResult> {
    let runs = |s: Scenario| only.is_none_or(|o| o == s);
    let started = Instant::now();
    let mut counts = Counts::default();
    let mut lines = Vec::new();
    let mut record = |what: String, c: &Counts, out: &mut (dyn Write + Send)| {
        let line = format!(
            "{what}: {} events, skipped {}, doubled {}, phantom {}, stale {}{}",
            c.events,
            c.skipped,
            c.doubled,
            c.phantom,
            c.stale_landed,
            if c.failures.is_empty() {
                String::new()
            } else {
                format!("; FAILED: {}", c.failures.join("; "))
            }
        );
        log(out, &format!("{name}: {line}"));
        lines.push(line);
    };
    let share = |total: u64, i: usize| {
        total / partitions.len() as u64 + u64::from((i as u64) < total % partitions.len() as u64)
    };
    for (i, &p) in partitions.iter().enumerate().filter(|_| runs(Scenario::ProcessKills)) {
        let target = base.with_partitions(p);
        let kills = share(plan.process_kills, i);
        let c = scenarios::process_kills(&target, plan.size, kills, Broken::None).await?;
        record(format!("{kills} runner processes killed, {p} partition(s)"), &c, out);
        counts.add(c);
    }
    for (i, &p) in partitions.iter().enumerate().filter(|_| runs(Scenario::ServerKills)) {
        let target = base.with_partitions(p);
        let kills = share(plan.server_kills, i);
        // Outages from a blip to three times the clients' command timeout.
        let outage = (Duration::from_millis(200), Duration::from_millis(3_000));
        let c = scenarios::server_kills(&target, servers, plan.size, kills, outage, Broken::None).await?;
        record(format!("{kills} server kills, {p} partition(s)"), &c, out);
        counts.add(c);
    }
    let mid = base.with_partitions(partitions[partitions.len() / 2]);
    if runs(Scenario::FrozenHolders) {
        let c = scenarios::frozen_holder(&mid, plan.size, plan.frozen_rounds, plan.frozen_ttl, Broken::None).await?;
        record(format!("{} frozen lease holders", plan.frozen_rounds), &c, out);
        counts.add(c);
    }
    if runs(Scenario::ShardKills) {
        let c = shards::shard_kills(&mid, plan.size, plan.shard_kills, Broken::None).await?;
        record(
            format!("{} processes killed among 2-4 sharing 4 shards", plan.shard_kills),
            &c,
            out,
        );
        counts.add(c);
    }
    if runs(Scenario::Handlers) {
        let c = scenarios::handlers(&mid, Broken::None).await?;
        record("handlers that panic, hang, fail transiently".into(), &c, out);
        counts.add(c);
    }
    log(
        out,
        &format!("{name}: done in {:.0} s", started.elapsed().as_secs_f64()),
    );
    Ok(RowResult {
        backend: name.to_string(),
        provider: servers.description.clone(),
        counts,
        lines,
    })
}

/// The meta-test: each scenario must fail against a runner or store broken the way it guards
/// against (on a standalone Redis, the fastest server).
async fn meta(base: &Target, servers: &mut Servers, out: &mut (dyn Write + Send)) -> Result<Vec<String>> {
    let size = Size {
        events_per_writer: 10,
        pace: Duration::from_millis(100),
    };
    let mut missed = Vec::new();
    let mut check = |what: &str, c: Counts, out: &mut (dyn Write + Send)| {
        let caught = !c.clean();
        log(
            out,
            &format!(
                "meta: {what}: {} (skipped {}, doubled {}, phantom {}, stale {}, {} failures)",
                if caught { "caught" } else { "NOT CAUGHT" },
                c.skipped,
                c.doubled,
                c.phantom,
                c.stale_landed,
                c.failures.len()
            ),
        );
        if !caught {
            missed.push(what.to_string());
        }
    };
    let two = base.with_partitions(2);
    check(
        "process kills vs a checkpoint committed before its documents",
        scenarios::process_kills(&two, size, 10, Broken::CheckpointFirst).await?,
        out,
    );
    check(
        "process kills vs lost updates of a shared document",
        scenarios::process_kills(&two, size, 10, Broken::StaleShared).await?,
        out,
    );
    check(
        "server kills vs a runner that dies on a store error",
        scenarios::server_kills(
            &two,
            servers,
            size,
            2,
            (Duration::from_millis(2_500), Duration::from_millis(3_000)),
            Broken::DiesOnError,
        )
        .await?,
        out,
    );
    check(
        "a frozen holder vs writes around the fence",
        scenarios::frozen_holder(&two, size, 1, Duration::from_secs(4), Broken::Unfenced).await?,
        out,
    );
    check(
        "shard kills vs a store that grants a held shard's lease again",
        shards::shard_kills(&two, size, 6, Broken::DoubleGrant).await?,
        out,
    );
    check(
        "shard kills vs shards that apply every stream's events",
        shards::shard_kills(&two, size, 4, Broken::IgnoresShards).await?,
        out,
    );
    check(
        "failing handlers vs a runner that hides panics",
        scenarios::handlers(&two, Broken::HidesPanics).await?,
        out,
    );
    Ok(missed)
}

/// The suite on `backends` (every scenario, or `only` one); `out` gets its log. A row that
/// cannot be run is an error.
pub async fn run(
    backends: &[Backend],
    with_meta: bool,
    only: Option<Scenario>,
    out: &mut (dyn Write + Send),
) -> Result<Vec<RowResult>> {
    let mut rows = Vec::new();
    let redis_plan = Plan {
        size: Size {
            events_per_writer: 20,
            pace: Duration::from_millis(150),
        },
        process_kills: 30,
        shard_kills: 12,
        server_kills: 10,
        frozen_rounds: 2,
        frozen_ttl: Duration::from_secs(4),
    };
    for backend in backends {
        match backend {
            Backend::Memory => {}
            Backend::Redis => {
                let (mut servers, url) = Servers::redis()?;
                log(out, &format!("redis standalone: {}", servers.description));
                let base = Target::Redis {
                    url,
                    partitions: 1,
                    prefix: String::new(),
                };
                if with_meta {
                    let missed = meta(&base, &mut servers, out).await?;
                    if !missed.is_empty() {
                        return Err(format!("the fault suite's meta-test missed: {}", missed.join("; ")));
                    }
                }
                rows.push(
                    row(
                        "redis standalone",
                        &mut servers,
                        &base,
                        &[1, 2, 4],
                        &redis_plan,
                        only,
                        out,
                    )
                    .await?,
                );
                drop(servers);
                let (mut servers, nodes) = Servers::cluster()?;
                log(out, &format!("redis cluster: {}", servers.description));
                let base = Target::Cluster {
                    nodes,
                    partitions: 6,
                    prefix: String::new(),
                };
                rows.push(row("redis cluster", &mut servers, &base, &[6], &redis_plan, only, out).await?);
            }
            Backend::Mongo => {
                let (mut servers, uri) = Servers::ferretdb()?;
                log(out, &format!("mongo: {}", servers.description));
                let base = Target::Mongo {
                    uri,
                    database: String::new(),
                };
                let plan = Plan {
                    size: Size {
                        events_per_writer: 4,
                        pace: Duration::from_millis(1_500),
                    },
                    process_kills: 30,
                    shard_kills: 8,
                    server_kills: 10,
                    frozen_rounds: 2,
                    frozen_ttl: Duration::from_secs(15),
                };
                rows.push(row("mongo (FerretDB 1)", &mut servers, &base, &[1], &plan, only, out).await?);
                drop(servers);
                // The engine row, where the engine can be had (as in the matrix: its absence
                // fails the run once CQRSX_DOCUMENTDB_SRC names its sources).
                match tokio::task::spawn_blocking(Servers::documentdb).await {
                    Ok(Ok((mut servers, uri))) => {
                        log(out, &format!("mongo engine: {}", servers.description));
                        let base = Target::Mongo {
                            uri,
                            database: String::new(),
                        };
                        let plan = Plan {
                            size: Size {
                                events_per_writer: 10,
                                pace: Duration::from_millis(400),
                            },
                            frozen_ttl: Duration::from_secs(4),
                            ..plan
                        };
                        rows.push(
                            row(
                                "mongo (FerretDB 2 + DocumentDB)",
                                &mut servers,
                                &base,
                                &[1],
                                &plan,
                                only,
                                out,
                            )
                            .await?,
                        );
                    }
                    Ok(Err(why)) if std::env::var_os("CQRSX_DOCUMENTDB_SRC").is_some_and(|v| !v.is_empty()) => {
                        return Err(format!("the engine row of the fault suite cannot run: {why}"));
                    }
                    Ok(Err(why)) => log(out, &format!("mongo (FerretDB 2 + DocumentDB): NOT RUN: {why}")),
                    Err(e) => return Err(format!("the engine's start panicked: {e}")),
                }
            }
        }
    }
    Ok(rows)
}
