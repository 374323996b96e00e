//! `cargo xtask test`: fmt, clippy, docs, then the unit tests and the conformance suite on every
//! backend — the backends' groups in parallel, each against servers of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

mod binaries;
mod plan;

use binaries::TestBinary;
use plan::{plan, Cleanup};

use crate::cmd::{self, say, Result};
use crate::docker;
use crate::engine::{self, LocalEngine};
use crate::providers;
use crate::Backend;

/// How long the fault suite may run beside the groups before it counts as hung.
const FAULT_SUITE_BOUND: std::time::Duration = std::time::Duration::from_secs(40 * 60);

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

/// The tests of one group, logged to a file of their own.
#[derive(Clone)]
struct Group {
    name: &'static str,
    /// The packages whose test binaries run.
    packages: Packages,
    /// Arguments to every test binary (a filter, a `--skip`).
    filter: Vec<String>,
    /// A cargo feature the group's package is tested with (the Docker-only tests): such a
    /// group runs a `cargo test` of its own, which builds the package again.
    feature: Option<&'static str>,
    /// Whether the group runs the workspace's doctests too.
    doctests: bool,
    env: Vec<(String, String)>,
    /// The network namespace the tests run in (that of xtask's own engine, whose container
    /// ports are reachable only from inside it).
    netns: Option<String>,
}

/// Which packages' test binaries a group runs.
#[derive(Clone, Copy)]
enum Packages {
    Only(&'static [&'static str]),
    AllBut(&'static [&'static str]),
}

impl Packages {
    fn contains(self, package: &str) -> bool {
        match self {
            Packages::Only(names) => names.contains(&package),
            Packages::AllBut(names) => !names.contains(&package),
        }
    }
}

fn log_dir() -> PathBuf {
    cmd::root().join("target").join("xtask-logs")
}

/// The commands that run a group's tests.
fn group_commands(group: &Group, binaries: &[TestBinary]) -> Vec<Command> {
    if let (Some(feature), Packages::Only(packages)) = (group.feature, group.packages) {
        // The feature is the first package's.
        let mut command = cmd::cargo();
        command.arg("test");
        for package in packages {
            command.args(["-p", package]);
        }
        command
            .args(["--features", &format!("{}/{feature}", packages[0]), "--"])
            .args(&group.filter);
        return vec![command];
    }
    let mut commands: Vec<Command> = binaries
        .iter()
        .filter(|b| group.packages.contains(&b.package))
        .map(|b| binaries::command(b, &group.filter, group.netns.as_deref()))
        .collect();
    if group.doctests {
        let mut command = cmd::cargo();
        command.args(["test", "--workspace", "--doc"]);
        commands.push(command);
    }
    commands
}

/// Runs a group's tests; returns the parsed run. Its output goes to `target/xtask-logs/`.
fn run_group(group: &Group, binaries: &[TestBinary]) -> Result<TestRun> {
    let dir = log_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let log = dir.join(format!("{}.log", group.name));
    let report = dir.join(format!("{}.report", group.name));
    let _ = std::fs::remove_file(&report);
    let _ = std::fs::remove_file(&log);
    let started = Instant::now();
    let (mut success, mut output) = (true, String::new());
    let commands = group_commands(group, binaries);
    if commands.is_empty() {
        return Err(format!("{}: no test binary to run", group.name));
    }
    for mut command in commands {
        for (k, v) in &group.env {
            command.env(k, v);
        }
        command.env("CQRSX_CASE_REPORT", &report);
        // Every binary runs, as `--no-fail-fast` would: one failure does not hide the rest.
        let (ok, out) = cmd::run_appended(&mut command, &log)?;
        success &= ok;
        output.push_str(&out);
    }
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

/// Runs the matrix; fails if any step fails or any requested backend cannot be provided.
///
/// With `local_engine`, the container path runs on a Docker engine of xtask's own (see
/// `engine.rs`) when this machine can have one.
pub async fn run(backends: &[Backend], lint_first: bool, local_engine: bool) -> Result<()> {
    let started = Instant::now();
    // The engine row's build (once per machine, cached) runs beside the lint and the test
    // build; its provider later takes the result.
    if backends.contains(&Backend::Mongo) {
        std::thread::spawn(|| {
            let _ = crate::mongo_engine::prepare();
        });
    }
    if lint_first {
        lint()?;
    }
    // Build every test target once, with progress on the terminal, before the groups run side
    // by side (each then only runs what is built).
    let binaries = std::sync::Arc::new(binaries::build()?);
    let engine = if local_engine { start_engine().await } else { None };
    let containers = match docker::status().await {
        docker::Status::Usable { engine } => format!("containers: testcontainers through {engine}"),
        docker::Status::NotUsed(reason) => format!("containers: not used: {reason}"),
    };
    say(&containers);
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
    // The fault suite runs beside the test groups, on servers of its own.
    let fault_backends: Vec<Backend> = backends.iter().copied().filter(|b| *b != Backend::Memory).collect();
    let faults = (!fault_backends.is_empty()).then(|| {
        tokio::spawn(async move {
            let path = log_dir().join("faults.log");
            std::fs::create_dir_all(log_dir()).map_err(|e| format!("cannot create the log directory: {e}"))?;
            let mut log = std::fs::File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            let started = Instant::now();
            // A hang detector: the suite takes about a quarter of this on the 2-core machine.
            let rows = tokio::time::timeout(
                FAULT_SUITE_BOUND,
                crate::faults::run(&fault_backends, true, None, &mut log),
            )
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "the fault suite did not end within {} min (its log so far: {})",
                    FAULT_SUITE_BOUND.as_secs() / 60,
                    path.display()
                ))
            });
            say(&format!(
                "--- faults: {} in {:.0} s (log: {})",
                if rows.as_ref().is_ok_and(|r| r.iter().all(|r| r.counts.clean())) {
                    "green"
                } else {
                    "FAILED"
                },
                started.elapsed().as_secs_f64(),
                path.display()
            ));
            rows
        })
    });
    say(&format!(
        "\n=== running {} test groups and the fault suite side by side ===",
        planned.iter().map(|p| p.groups.len()).sum::<usize>()
    ));
    let mut handles = Vec::new();
    for p in &planned {
        for (group, _) in &p.groups {
            let (group, binaries) = (group.clone(), binaries.clone());
            handles.push(tokio::task::spawn_blocking(move || run_group(&group, &binaries)));
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
                .map(|s| {
                    let mut row = run.row(s.backend, &s.provider, s.label, s.select);
                    row.reports.splice(0..0, s.notes.iter().cloned());
                    row
                })
                .collect();
            if !run.success || new_rows.iter().any(|r| r.failed > 0 || r.passed == 0) {
                failures.push(format!("{}: tests failed", p.backend.name()));
            } else if let Some(r) = new_rows.iter().find(|r| !TestRun::complete(r)) {
                failures.push(format!("{}: not every conformance / snapshot case ran", r.backend));
            }
            rows.extend(new_rows);
        }
        for n in &p.not_run {
            if n.required {
                failures.push(format!("{}: not run: {}", n.backend, n.why));
            }
            rows.push(Row {
                backend: n.backend.into(),
                provider: format!("NOT RUN: {}", n.why),
                passed: 0,
                failed: 0,
                conformance: 0,
                snapshot: 0,
                reports: Vec::new(),
            });
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
    let fault_rows = match faults {
        Some(task) => match task.await.map_err(|e| format!("fault suite: {e}")).and_then(|r| r) {
            Ok(rows) => {
                for r in rows.iter().filter(|r| !r.counts.clean()) {
                    failures.push(format!("faults, {}: {}", r.backend, r.counts.failures.join("; ")));
                }
                rows
            }
            Err(e) => {
                failures.push(format!("fault suite: {e}"));
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    let notes: Vec<String> = planned
        .iter()
        .flat_map(|p| &p.servers)
        .filter_map(|s| {
            s.no_container
                .as_ref()
                .map(|why| format!("  {} (container path not taken: {why})", s.provider))
        })
        .collect();
    // Containers go before the engine that runs them.
    drop(planned);
    drop(engine);
    say("\n=== summary ===");
    say(&containers);
    for note in &notes {
        say(note);
    }
    say(&format!(
        "{:<32} {:>7} {:>7} {:>12} {:>9}  provider",
        "backend", "passed", "failed", "conformance", "snapshot"
    ));
    for r in &rows {
        say(&format!(
            "{:<32} {:>7} {:>7} {:>9}/{:<2} {:>7}/{:<1}  {}",
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
            say(&format!("{:<32}   {line}", ""));
        }
    }
    if !fault_rows.is_empty() {
        say("fault suite (runner processes and servers killed, lease holders frozen, failing handlers):");
        for r in &fault_rows {
            say(&format!("{:<18} {}", r.backend, r.provider));
            say(&format!("{:<18}   {}", "", r.summary()));
            for line in &r.lines {
                say(&format!("{:<18}     {line}", ""));
            }
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

/// Starts xtask's own engine and makes it the one testcontainers uses; `None` (having said why)
/// when this machine cannot have one.
async fn start_engine() -> Option<LocalEngine> {
    match tokio::task::spawn_blocking(|| engine::start(providers::REDIS_TAG)).await {
        Ok(Ok(engine)) => {
            docker::use_local_engine(engine.endpoint(), engine.netns.clone());
            Some(engine)
        }
        Ok(Err(reason)) => {
            say(&format!("local engine: not set up: {reason}"));
            None
        }
        Err(e) => {
            say(&format!("local engine: not set up: {e}"));
            None
        }
    }
}

/// `cargo xtask faults`: the fault suite alone, its log on the terminal.
pub async fn faults_alone(backends: &[Backend], with_meta: bool, only: Option<crate::faults::Scenario>) -> Result<()> {
    let started = Instant::now();
    let mut out = std::io::stdout();
    let rows = crate::faults::run(backends, with_meta, only, &mut out).await?;
    say("\n=== fault suite ===");
    let mut failed = false;
    for r in &rows {
        say(&format!("{:<22} {}", r.backend, r.provider));
        say(&format!("{:<22} {}", "", r.summary()));
        for line in &r.lines {
            say(&format!("{:<22}   {line}", ""));
        }
        failed |= !r.counts.clean();
    }
    say(&format!("(in {:.0} s)", started.elapsed().as_secs_f64()));
    if failed {
        Err("the fault suite found broken guarantees".into())
    } else {
        Ok(())
    }
}
