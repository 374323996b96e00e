//! `cargo xtask test`: fmt, clippy, docs, then the unit tests and the conformance suite on every
//! backend — the backends' groups in parallel, each against servers of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

use cqrsx_mongo::{MongoClientManager, MongoConfig};

use crate::cmd::{self, say, Result};
use crate::providers::{self, Provided};
use crate::Backend;

/// One row of the final summary.
struct Row {
    backend: String,
    provider: String,
    passed: usize,
    failed: usize,
    conformance: usize,
    snapshot: usize,
    /// What the cases measured and reported (e.g. the crash case's counts).
    reports: Vec<String>,
}

/// The outcome of one `cargo test` run: per test name, whether it passed.
struct TestRun {
    success: bool,
    results: BTreeMap<String, bool>,
    report: Vec<String>,
}

impl TestRun {
    /// Summarises the tests whose name `select` accepts into a row, with the report lines of
    /// fixtures labelled `label`.
    fn row(&self, backend: &str, provider: &str, label: &str, select: impl Fn(&str) -> bool) -> Row {
        let cases: Vec<&str> = cqrsx_core::testkit::CASES.iter().map(|(name, _)| *name).collect();
        let mut row = Row {
            backend: backend.into(),
            provider: provider.into(),
            passed: 0,
            failed: 0,
            conformance: 0,
            snapshot: 0,
            // The same case can run in several test binaries: each line once.
            reports: self
                .report
                .iter()
                .filter_map(|line| line.strip_prefix(label).and_then(|l| l.strip_prefix(": ")))
                .map(str::to_string)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        };
        // A case counts once however many test binaries run it.
        let (mut conformance, mut snapshot) = (BTreeSet::new(), BTreeSet::new());
        for (name, ok) in self.results.iter().filter(|(name, _)| select(name)) {
            if *ok {
                row.passed += 1;
                let leaf = name.rsplit("::").next().unwrap_or(name);
                if cases.contains(&leaf) {
                    conformance.insert(leaf);
                }
                if cqrsx_snapshot::testkit::CASES.iter().any(|(name, _)| *name == leaf) {
                    snapshot.insert(leaf);
                }
            } else {
                row.failed += 1;
            }
        }
        row.conformance = conformance.len();
        row.snapshot = snapshot.len();
        row
    }

    /// Whether the row ran every conformance and snapshot case.
    fn complete(row: &Row) -> bool {
        row.conformance == cqrsx_core::testkit::CASES.len() && row.snapshot == cqrsx_snapshot::testkit::CASES.len()
    }
}

/// A `cargo test` of one group, logged to a file of its own.
struct Group {
    name: &'static str,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

fn log_dir() -> PathBuf {
    cmd::root().join("target").join("xtask-logs")
}

/// Runs a group's tests; returns the parsed run. Its output goes to `target/xtask-logs/`.
fn run_group(group: &Group) -> Result<TestRun> {
    let dir = log_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let log = dir.join(format!("{}.log", group.name));
    let report = dir.join(format!("{}.report", group.name));
    let _ = std::fs::remove_file(&report);
    let mut command = cmd::cargo();
    command.arg("test").args(&group.args);
    for (k, v) in &group.env {
        command.env(k, v);
    }
    command.env("CQRSX_CASE_REPORT", &report);
    let started = Instant::now();
    let (success, output) = cmd::run_logged(&mut command, &log)?;
    let mut results = BTreeMap::new();
    for line in output.lines() {
        let Some(rest) = line.strip_prefix("test ") else {
            continue;
        };
        if let Some(name) = rest.strip_suffix(" ... ok") {
            results.insert(name.to_string(), true);
        } else if let Some(name) = rest.strip_suffix(" ... FAILED") {
            results.insert(name.to_string(), false);
        }
    }
    let failed = results.values().filter(|ok| !**ok).count();
    say(&format!(
        "--- {}: {} passed, {failed} failed in {:.0} s (log: {})",
        group.name,
        results.len() - failed,
        started.elapsed().as_secs_f64(),
        log.display()
    ));
    if !success {
        // The failures' own output, from the log.
        let failures = output
            .split_once("\nfailures:\n")
            .map(|(_, rest)| rest.to_string())
            .unwrap_or_else(|| {
                output
                    .lines()
                    .rev()
                    .take(60)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        say(&format!("--- {} failed:\n{failures}", group.name));
    }
    let report = std::fs::read_to_string(&report)
        .map(|r| r.lines().map(str::to_string).collect())
        .unwrap_or_default();
    Ok(TestRun {
        success,
        results,
        report,
    })
}

/// The lint steps: fmt, clippy (every feature, so the examples' server backends and the
/// Docker-only tests are checked even where they cannot run), and the docs without warnings.
fn lint() -> Result<()> {
    cmd::run(cmd::cargo().args(["fmt", "--all", "--", "--check"]))?;
    cmd::run(cmd::cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    cmd::run(
        cmd::cargo()
            .args(["doc", "--workspace", "--no-deps", "--all-features"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )
}

/// What a backend's group needs: its servers (kept alive until the tests end) and how to run.
struct Planned {
    backend: Backend,
    groups: Vec<(Group, Vec<RowSpec>)>,
    /// Kept alive until the matrix ends.
    _servers: Vec<Provided>,
    /// Runs after the group's tests (the servers' test data is removed).
    cleanup: Vec<Cleanup>,
}

/// How to cut a group's results into a summary row.
struct RowSpec {
    backend: &'static str,
    provider: String,
    /// The label of the row's fixtures in the cases' reports.
    label: &'static str,
    select: fn(&str) -> bool,
}

enum Cleanup {
    Redis(Option<String>, Option<String>),
    Mongo(String),
}

fn any(_: &str) -> bool {
    true
}

async fn plan(backend: Backend) -> Result<Planned> {
    match backend {
        Backend::Memory => Ok(Planned {
            backend,
            groups: vec![(
                Group {
                    name: "memory",
                    args: ["--workspace", "--exclude", "cqrsx-redis", "--exclude", "cqrsx-mongo"]
                        .map(String::from)
                        .to_vec(),
                    env: Vec::new(),
                },
                vec![RowSpec {
                    backend: "memory",
                    provider: "in-process".into(),
                    label: "memory",
                    select: any,
                }],
            )],
            _servers: Vec::new(),
            cleanup: Vec::new(),
        }),
        Backend::Redis => {
            let standalone = providers::redis_standalone().await?;
            say(&format!("redis standalone: {}", standalone.provider));
            let cluster = providers::redis_cluster().await?;
            say(&format!("redis cluster: {}", cluster.provider));
            let mut env = standalone.env.clone();
            env.extend(cluster.env.iter().cloned());
            let var = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            let cleanup = vec![
                Cleanup::Redis(var("CQRSX_TEST_REDIS_URL"), None),
                Cleanup::Redis(None, var("CQRSX_TEST_REDIS_CLUSTER_NODES")),
            ];
            let rows = vec![
                RowSpec {
                    backend: "redis standalone",
                    provider: standalone.provider.clone(),
                    label: "redis standalone",
                    select: |n| !n.starts_with("cluster::"),
                },
                RowSpec {
                    backend: "redis cluster",
                    provider: cluster.provider.clone(),
                    label: "redis cluster",
                    select: |n| n.starts_with("cluster::"),
                },
            ];
            Ok(Planned {
                backend,
                groups: vec![(
                    Group {
                        name: "redis",
                        args: ["-p", "cqrsx-redis"].map(String::from).to_vec(),
                        env,
                    },
                    rows,
                )],
                _servers: vec![standalone, cluster],
                cleanup,
            })
        }
        Backend::Mongo => {
            let server = providers::mongo().await?;
            say(&format!("mongo: {}", server.provider));
            let uri = server
                .env
                .iter()
                .find(|(k, _)| k == "CQRSX_TEST_MONGO_URI")
                .map(|(_, v)| v.clone())
                .ok_or("the mongo provider gave no URI")?;
            // With a Docker engine the suite also runs on real MongoDB (tests/docker.rs).
            let docker = providers::docker_answers().await;
            let mut args = vec!["-p".to_string(), "cqrsx-mongo".to_string()];
            if docker {
                say("docker answers: the suite also runs on real MongoDB through testcontainers");
                args.extend(["--features".to_string(), "docker-tests".to_string()]);
            }
            let mut groups = vec![(
                Group {
                    name: "mongo",
                    args,
                    env: server.env.clone(),
                },
                vec![RowSpec {
                    backend: "mongo",
                    provider: server.provider.clone(),
                    label: "mongo",
                    select: any,
                }],
            )];
            let limited = match MongoClientManager::connect(MongoConfig::default().with_uri(&uri)).await {
                Ok(client) => {
                    let caps = client.capabilities();
                    !caps.indexed_queries || !caps.atomic_counters
                }
                Err(e) => return Err(format!("cannot reach {}: {e}", server.provider)),
            };
            if limited {
                // The code path real MongoDB takes, run here too: the server's limitations that
                // only cost speed are assumed away (the capability override, a testing aid).
                let mut env = server.env.clone();
                env.push((
                    "CQRSX_TEST_MONGO_ASSUME".into(),
                    "indexed_queries,atomic_counters".into(),
                ));
                groups.push((
                    Group {
                        name: "mongo-plain",
                        args: ["-p", "cqrsx-mongo"].map(String::from).to_vec(),
                        env,
                    },
                    vec![RowSpec {
                        backend: "mongo, plain path",
                        provider: format!("{} assuming indexed_queries, atomic_counters", server.provider),
                        label: "mongo",
                        select: any,
                    }],
                ));
            }
            Ok(Planned {
                backend,
                groups,
                _servers: vec![server],
                cleanup: vec![Cleanup::Mongo(uri)],
            })
        }
    }
}

/// Runs the matrix; fails if any step fails or any requested backend cannot be provided.
pub async fn run(backends: &[Backend], lint_first: bool) -> Result<()> {
    let started = Instant::now();
    if lint_first {
        lint()?;
    }
    // Build every test target once, with progress on the terminal, before the groups run side
    // by side (each then only runs what is built).
    cmd::run(cmd::cargo().args(["test", "--workspace", "--no-run"]))?;
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut planned = Vec::new();
    for backend in backends {
        match plan(*backend).await {
            Ok(p) => planned.push(p),
            Err(e) => {
                failures.push(format!("{}: {e}", backend.name()));
                rows.push(Row {
                    backend: backend.name().into(),
                    provider: format!("NOT PROVIDED: {e}"),
                    passed: 0,
                    failed: 0,
                    conformance: 0,
                    snapshot: 0,
                    reports: Vec::new(),
                });
            }
        }
    }
    say(&format!(
        "\n=== running {} test groups side by side ===",
        planned.iter().map(|p| p.groups.len()).sum::<usize>()
    ));
    let mut handles = Vec::new();
    for p in &planned {
        for (group, _) in &p.groups {
            let group = Group {
                name: group.name,
                args: group.args.clone(),
                env: group.env.clone(),
            };
            handles.push(tokio::task::spawn_blocking(move || run_group(&group)));
        }
    }
    let mut outcomes = Vec::new();
    for handle in handles {
        outcomes.push(handle.await.map_err(|e| format!("test group: {e}"))?);
    }
    let mut outcomes = outcomes.into_iter();
    for p in &planned {
        for (_, specs) in &p.groups {
            let run = outcomes.next().ok_or("a test group's outcome is missing")??;
            let new_rows: Vec<Row> = specs
                .iter()
                .map(|s| run.row(s.backend, &s.provider, s.label, s.select))
                .collect();
            if !run.success || new_rows.iter().any(|r| r.failed > 0 || r.passed == 0) {
                failures.push(format!("{}: tests failed", p.backend.name()));
            } else if let Some(r) = new_rows.iter().find(|r| !TestRun::complete(r)) {
                failures.push(format!("{}: not every conformance / snapshot case ran", r.backend));
            }
            rows.extend(new_rows);
        }
        for c in &p.cleanup {
            let cleaned = match c {
                Cleanup::Redis(url, nodes) => crate::cleanup::redis(url.as_deref(), nodes.as_deref()).await,
                Cleanup::Mongo(uri) => crate::cleanup::mongo(uri).await,
            };
            if let Err(e) = cleaned {
                failures.push(format!("{}: cleanup: {e}", p.backend.name()));
            }
        }
    }
    drop(planned);
    say("\n=== summary ===");
    say(&format!(
        "{:<18} {:>7} {:>7} {:>12} {:>9}  provider",
        "backend", "passed", "failed", "conformance", "snapshot"
    ));
    for r in &rows {
        say(&format!(
            "{:<18} {:>7} {:>7} {:>9}/{:<2} {:>7}/{:<1}  {}",
            r.backend,
            r.passed,
            r.failed,
            r.conformance,
            cqrsx_core::testkit::CASES.len(),
            r.snapshot,
            cqrsx_snapshot::testkit::CASES.len(),
            r.provider
        ));
        for line in &r.reports {
            say(&format!("{:<18}   {line}", ""));
        }
    }
    say(&format!("(in {:.0} s)", started.elapsed().as_secs_f64()));
    if failures.is_empty() {
        say("xtask test: all green");
        Ok(())
    } else {
        Err(format!("test matrix failed:\n  {}", failures.join("\n  ")))
    }
}
