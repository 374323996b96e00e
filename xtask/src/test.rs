//! `cargo xtask test`: fmt, clippy, unit tests and the conformance suite on every backend.

use std::collections::{BTreeMap, BTreeSet};

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
}

/// The outcome of one `cargo test` run: per test name, whether it passed.
struct TestRun {
    success: bool,
    results: BTreeMap<String, bool>,
}

impl TestRun {
    /// Summarises the tests whose name `select` accepts into a row.
    fn row(&self, backend: &str, provider: &str, select: impl Fn(&str) -> bool) -> Row {
        let cases: Vec<&str> = cqrsx_core::testkit::CASES.iter().map(|(name, _)| *name).collect();
        let mut row = Row {
            backend: backend.into(),
            provider: provider.into(),
            passed: 0,
            failed: 0,
            conformance: 0,
            snapshot: 0,
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

fn cargo_test(packages: &[&str], extra: &[&str], env: &[(String, String)]) -> Result<TestRun> {
    let mut command = cmd::cargo();
    command.arg("test");
    for p in packages {
        command.args(["-p", p]);
    }
    command.args(extra);
    for (k, v) in env {
        command.env(k, v);
    }
    let (success, output) = cmd::run_capture(&mut command)?;
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
    Ok(TestRun { success, results })
}

/// Runs the matrix; fails if any step fails or any requested backend cannot be provided.
pub async fn run(backends: &[Backend], lint: bool) -> Result<()> {
    if lint {
        cmd::run(cmd::cargo().args(["fmt", "--all", "--", "--check"]))?;
        // All features, so that the examples' server backends and the Docker-only tests are
        // checked even where they cannot run.
        cmd::run(cmd::cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for backend in backends {
        say(&format!("\n=== {} ===", backend.name()));
        let outcome = match backend {
            Backend::Memory => memory().await,
            Backend::Redis => redis().await,
            Backend::Mongo => mongo().await,
        };
        match outcome {
            Ok((new_rows, success)) => {
                if !success || new_rows.iter().any(|r| r.failed > 0 || r.passed == 0) {
                    failures.push(format!("{}: tests failed", backend.name()));
                } else if let Some(r) = new_rows.iter().find(|r| !TestRun::complete(r)) {
                    failures.push(format!("{}: not every conformance / snapshot case ran", r.backend));
                }
                rows.extend(new_rows);
            }
            Err(e) => {
                failures.push(format!("{}: {e}", backend.name()));
                rows.push(Row {
                    backend: backend.name().into(),
                    provider: format!("NOT PROVIDED: {e}"),
                    passed: 0,
                    failed: 0,
                    conformance: 0,
                    snapshot: 0,
                });
            }
        }
    }
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
    }
    if failures.is_empty() {
        say("xtask test: all green");
        Ok(())
    } else {
        Err(format!("test matrix failed:\n  {}", failures.join("\n  ")))
    }
}

async fn memory() -> Result<(Vec<Row>, bool)> {
    let run = cargo_test(
        &[],
        &["--workspace", "--exclude", "cqrsx-redis", "--exclude", "cqrsx-mongo"],
        &[],
    )?;
    Ok((vec![run.row("memory", "in-process", |_| true)], run.success))
}

async fn redis() -> Result<(Vec<Row>, bool)> {
    let standalone: Provided = providers::redis_standalone().await?;
    say(&format!("redis standalone: {}", standalone.provider));
    let cluster: Provided = providers::redis_cluster().await?;
    say(&format!("redis cluster: {}", cluster.provider));
    let mut env = standalone.env.clone();
    env.extend(cluster.env.iter().cloned());
    let run = cargo_test(&["cqrsx-redis"], &[], &env)?;
    let var = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    crate::cleanup::redis(var("CQRSX_TEST_REDIS_URL"), None).await?;
    crate::cleanup::redis(None, var("CQRSX_TEST_REDIS_CLUSTER_NODES")).await?;
    let rows = vec![
        run.row("redis standalone", &standalone.provider, |n| {
            !n.starts_with("cluster::")
        }),
        run.row("redis cluster", &cluster.provider, |n| n.starts_with("cluster::")),
    ];
    Ok((rows, run.success))
}

async fn mongo() -> Result<(Vec<Row>, bool)> {
    let server = providers::mongo().await?;
    say(&format!("mongo: {}", server.provider));
    // With a Docker engine the suite also runs on real MongoDB (tests/docker.rs).
    let docker = providers::docker_answers().await;
    let extra: &[&str] = if docker { &["--features", "docker-tests"] } else { &[] };
    if docker {
        say("docker answers: the suite also runs on real MongoDB through testcontainers");
    }
    let run = cargo_test(&["cqrsx-mongo"], extra, &server.env)?;
    if let Some((_, uri)) = server.env.iter().find(|(k, _)| k == "CQRSX_TEST_MONGO_URI") {
        crate::cleanup::mongo(uri).await?;
    }
    Ok((vec![run.row("mongo", &server.provider, |_| true)], run.success))
}
