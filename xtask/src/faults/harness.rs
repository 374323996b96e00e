//! The fault suite's tools: worker processes and the status they print, sixteen writers that
//! ride out outages, the fold the view must equal and the comparison with what the server
//! holds.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use cqrsx_core::{EventStore, ExpectedVersion, NewEvent, StreamId};
use serde_json::{json, Value};

use super::target::{Stores, Target};
use super::worker::{document_ids, payload_n, Broken, Misbehave, StatusLine, Tally, Totals};
use crate::cmd::Result;

/// A small pseudo-random sequence (xorshift), seeded from the clock.
pub struct Dice(u64);

impl Dice {
    pub fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7);
        Self(seed | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// What a scenario saw.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub process_kills: u64,
    pub server_kills: u64,
    pub freezes: u64,
    pub events: u64,
    pub skipped: u64,
    pub doubled: u64,
    pub phantom: u64,
    pub stale_landed: u64,
    /// What went wrong besides the counts (a runner that died, a lying status, …).
    pub failures: Vec<String>,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.process_kills += other.process_kills;
        self.server_kills += other.server_kills;
        self.freezes += other.freezes;
        self.events += other.events;
        self.skipped += other.skipped;
        self.doubled += other.doubled;
        self.phantom += other.phantom;
        self.stale_landed += other.stale_landed;
        self.failures.extend(other.failures);
    }

    /// Whether the contract held.
    pub fn clean(&self) -> bool {
        self.skipped == 0
            && self.doubled == 0
            && self.phantom == 0
            && self.stale_landed == 0
            && self.failures.is_empty()
    }
}

/// How hard a row pushes its backend.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// Events each of the 16 writers appends at least (they go on until the faults are done).
    pub events_per_writer: u64,
    /// The pause between a writer's appends.
    pub pace: Duration,
}

/// A worker process and the status lines it prints.
pub struct Worker {
    child: Child,
    lines: mpsc::Receiver<StatusLine>,
    last: StatusLine,
    seen_commit: bool,
}

/// How a worker is started.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub projection: String,
    pub aggregates: Vec<String>,
    pub owner: String,
    pub ttl: Duration,
    pub page: usize,
    pub misbehave: Misbehave,
    pub park: bool,
    pub handler_timeout: Duration,
    pub broken: Broken,
    pub commit_pause: Duration,
    /// Shards to run the projection as (1: unsharded).
    pub shards: u16,
}

impl WorkerSpec {
    pub fn new(projection: &str, aggregates: &[String], owner: &str) -> Self {
        Self {
            projection: projection.to_string(),
            aggregates: aggregates.to_vec(),
            owner: owner.to_string(),
            ttl: Duration::from_secs(2),
            page: 64,
            misbehave: Misbehave::None,
            park: false,
            handler_timeout: Duration::from_secs(30),
            broken: Broken::None,
            commit_pause: Duration::ZERO,
            shards: 1,
        }
    }
}

pub(super) fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Worker {
    pub fn spawn(target: &Target, spec: &WorkerSpec) -> Result<Self> {
        let exe = std::env::current_exe().map_err(|e| format!("the xtask binary: {e}"))?;
        let value_name = |v: &dyn std::fmt::Debug| format!("{v:?}").to_lowercase().replace('_', "-");
        let broken = match spec.broken {
            Broken::CheckpointFirst => "checkpoint-first".to_string(),
            Broken::StaleShared => "stale-shared".to_string(),
            Broken::DiesOnError => "dies-on-error".to_string(),
            Broken::HidesPanics => "hides-panics".to_string(),
            Broken::DoubleGrant => "double-grant".to_string(),
            Broken::IgnoresShards => "ignores-shards".to_string(),
            other => value_name(&other),
        };
        let mut command = Command::new(exe);
        command
            .arg("fault-worker")
            .arg("--target")
            .arg(serde_json::to_string(target).map_err(|e| e.to_string())?)
            .args(["--projection", &spec.projection])
            .args(["--aggregates", &spec.aggregates.join(",")])
            .args(["--owner", &spec.owner])
            .args(["--ttl-ms", &spec.ttl.as_millis().to_string()])
            .args(["--page", &spec.page.to_string()])
            .args(["--misbehave", &value_name(&spec.misbehave)])
            .args(["--handler-timeout-ms", &spec.handler_timeout.as_millis().to_string()])
            .args(["--broken", &broken])
            .args(["--commit-pause-ms", &spec.commit_pause.as_millis().to_string()])
            .args(["--shards", &spec.shards.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if spec.park {
            command.arg("--park");
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start a fault worker: {e}"))?;
        let stdout = child.stdout.take().ok_or("a fault worker without stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if let Ok(status) = serde_json::from_str::<StatusLine>(&line) {
                    if tx.send(status).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Self {
            child,
            lines,
            last: StatusLine::default(),
            seen_commit: false,
        })
    }

    /// Takes in the lines printed so far; the last status.
    pub fn poll(&mut self) -> &StatusLine {
        while let Ok(line) = self.lines.try_recv() {
            if line.commit.is_some() {
                self.seen_commit = true;
            } else {
                self.last = line;
            }
        }
        &self.last
    }

    /// Waits until the status satisfies `condition`, for at most `within`.
    pub async fn wait_for(&mut self, within: Duration, condition: impl Fn(&StatusLine) -> bool) -> Result<StatusLine> {
        let deadline = Instant::now() + within;
        loop {
            if condition(self.poll()) {
                return Ok(self.last.clone());
            }
            if !self.alive() {
                return Err(format!("the worker exited; its last status: {:?}", self.last));
            }
            if Instant::now() > deadline {
                return Err(format!("no such status within {within:?}; the last: {:?}", self.last));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the worker announces a commit (`commit_pause`).
    pub async fn wait_for_commit(&mut self, within: Duration) -> Result<()> {
        self.seen_commit = false;
        let deadline = Instant::now() + within;
        while !self.seen_commit {
            self.poll();
            if Instant::now() > deadline {
                return Err(format!("no commit within {within:?}; the last status: {:?}", self.last));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn freeze(&self) {
        signal(self.child.id(), "-STOP");
    }

    pub fn resume(&self) {
        signal(self.child.id(), "-CONT");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// Sixteen writers appending mixed batches (1 to 4 events of two types) to two streams each,
/// of two aggregate types, pausing up to `pace` between appends, until stopped; every batch is
/// sent again with the same event ids until it is acknowledged, so a server outage loses
/// nothing and duplicates nothing.
pub struct Writers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    errors: Arc<Mutex<BTreeMap<String, u64>>>,
}

pub const WRITERS: usize = 16;

impl Writers {
    pub fn start(events: Arc<dyn EventStore>, aggregates: &[String], size: Size) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(Mutex::new(BTreeMap::new()));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let own: Vec<StreamId> = (0..2)
                .filter_map(|k| StreamId::new(&aggregates[(w + k) % aggregates.len()], format!("w{w}-{k}")).ok())
                .collect();
            let (events, stop, errors) = (Arc::clone(&events), Arc::clone(&stop), Arc::clone(&errors));
            tasks.push(tokio::spawn(async move {
                let mut dice = Dice::new();
                let mut appended = 0u64;
                let mut i = 0u64;
                // At least `events_per_writer`, then on until stopped.
                while appended < size.events_per_writer || !stop.load(Ordering::SeqCst) {
                    let n = 1 + dice.below(4);
                    let batch: Vec<NewEvent> = (0..n)
                        .filter_map(|k| {
                            let kind = if (i + k).is_multiple_of(3) {
                                "Debited"
                            } else {
                                "Credited"
                            };
                            NewEvent::json(kind, &json!({ "n": 1 + w as u64 * 1_000_000 + i * 10 + k })).ok()
                        })
                        .collect();
                    let stream = &own[(i % 2) as usize];
                    loop {
                        match events.append(stream, ExpectedVersion::Any, batch.clone()).await {
                            Ok(_) => break,
                            Err(e) => {
                                let kind = if e.is_retryable() {
                                    "retryable".to_string()
                                } else {
                                    format!("NOT retryable: {e}")
                                };
                                *errors
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .entry(kind)
                                    .or_default() += 1;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                    appended += n;
                    i += 1;
                    tokio::time::sleep(Duration::from_micros(dice.below(size.pace.as_micros() as u64 + 1))).await;
                }
            }));
        }
        Self { tasks, stop, errors }
    }

    /// Stops the writers once each has appended its minimum; what their appends met.
    pub async fn stop(self) -> BTreeMap<String, u64> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        self.errors.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The view the events call for: every document shape (see `worker::document_ids`).
pub(super) async fn fold(events: &dyn EventStore, streams: &[StreamId]) -> Result<(BTreeMap<String, Value>, u64)> {
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut totals: BTreeMap<String, Totals> = BTreeMap::new();
    let mut count = 0;
    for s in streams {
        let read = events
            .read_stream(s, 1, usize::MAX)
            .await
            .map_err(|e| format!("read_stream {s}: {e}"))?;
        for e in read {
            count += 1;
            let n = payload_n(&e);
            let [stream, aggregate, total, kind] = document_ids(&e);
            let t = tallies.entry(stream).or_default();
            t.count += 1;
            t.sum += n;
            t.last = e.version;
            for id in [aggregate, total, kind] {
                let t = totals.entry(id).or_default();
                t.count += 1;
                t.sum += n;
            }
        }
    }
    let mut view = BTreeMap::new();
    for (id, t) in tallies {
        view.insert(id, serde_json::to_value(t).map_err(|e| e.to_string())?);
    }
    for (id, t) in totals {
        view.insert(id, serde_json::to_value(t).map_err(|e| e.to_string())?);
    }
    Ok((view, count))
}

/// Compares the raw view with the fold: events skipped, applied twice, and documents that
/// should not exist.
pub(super) fn compare(view: &BTreeMap<String, Value>, want: &BTreeMap<String, Value>, counts: &mut Counts) {
    let count = |v: Option<&Value>| v.and_then(|v| v["count"].as_u64()).unwrap_or(0);
    let mut differing = 0;
    for (id, expected) in want {
        let got = view.get(id);
        let (w, g) = (count(Some(expected)), count(got));
        counts.skipped += w.saturating_sub(g) + got.and_then(|v| v["gaps"].as_u64()).unwrap_or(0);
        counts.doubled += g.saturating_sub(w) + got.and_then(|v| v["repeats"].as_u64()).unwrap_or(0);
        // Every document that differs is named (a few of them), so a failure carries its evidence.
        if got != Some(expected) && differing < 6 {
            differing += 1;
            counts
                .failures
                .push(format!("document {id}: {got:?}, the fold says {expected}"));
        }
    }
    counts.phantom += view.keys().filter(|id| !want.contains_key(*id)).count() as u64;
}

/// Whether the stored checkpoint covers everything the log holds now.
pub(super) async fn caught_up(stores: &Stores, projection: &str) -> Result<bool> {
    let head = stores.events.head().await.map_err(|e| format!("head: {e}"))?;
    let Some(checkpoint) = stores.raw.checkpoint(projection).await? else {
        return Ok(head.positions().all(|p| p.offset <= 1));
    };
    let covered = head.positions().all(|p| checkpoint.next(p.partition) >= p);
    Ok(covered)
}

/// Runs a worker until the stored checkpoint covers the log, then compares the view with the
/// fold.
pub(super) async fn settle_and_check(
    target: &Target,
    stores: &Stores,
    spec: &WorkerSpec,
    streams: &[StreamId],
    counts: &mut Counts,
) -> Result<()> {
    let mut worker = Worker::spawn(target, spec)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        // A read that fails (the server is still coming back) is tried again.
        if caught_up(stores, &spec.projection).await.unwrap_or(false) {
            break;
        }
        if !worker.alive() {
            counts
                .failures
                .push(format!("the last runner exited: {:?}", worker.poll()));
            return Ok(());
        }
        if Instant::now() > deadline {
            counts.failures.push(format!(
                "the last runner did not catch up in 10 minutes: {:?}",
                worker.poll()
            ));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.kill();
    let (want, events) = retry(|| fold(stores.events.as_ref(), streams)).await?;
    let view = retry(|| stores.raw.view(&spec.projection)).await?;
    counts.events += events;
    compare(&view, &want, counts);
    Ok(())
}

/// Tries a read until it succeeds, for at most a minute (the server may be coming back).
pub(super) async fn retry<T, F: std::future::Future<Output = Result<T>>>(read: impl Fn() -> F) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match read().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

pub(super) fn note_writer_errors(errors: BTreeMap<String, u64>, counts: &mut Counts) {
    for (kind, n) in errors {
        if kind.starts_with("NOT") {
            counts
                .failures
                .push(format!("{n} appends failed with an error not marked retryable: {kind}"));
        }
    }
}

pub(super) fn aggregates(label: &str) -> Vec<String> {
    let id = &cqrsx_core::Uuid::now_v7().simple().to_string()[20..];
    vec![format!("{label}A{id}"), format!("{label}B{id}")]
}

pub(super) fn writers_streams(aggregates: &[String]) -> Vec<StreamId> {
    (0..WRITERS)
        .flat_map(|w| {
            (0..2).filter_map(move |k| StreamId::new(&aggregates[(w + k) % aggregates.len()], format!("w{w}-{k}")).ok())
        })
        .collect()
}
