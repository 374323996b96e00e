//! The fault scenarios, written from the read side's contract (items 10–14): runner processes
//! killed with SIGKILL while 16 writers append, the server killed and restarted under them, a
//! lease holder frozen with SIGSTOP past its lease and resumed after a standby took over, and
//! handlers that panic, hang or fail transiently. Each ends by comparing the view, read from
//! the server's own structures, with a fold of the events read back stream by stream.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use cqrsx_core::{EventStore, ExpectedVersion, NewEvent, StreamId};
use serde_json::{json, Value};

use super::servers::Servers;
use super::target::{Stores, Target};
use super::worker::{document_ids, payload_n, Broken, Misbehave, StatusLine, Tally, Totals, POISON};
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
        }
    }
}

fn signal(pid: u32, sig: &str) {
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
async fn fold(events: &dyn EventStore, streams: &[StreamId]) -> Result<(BTreeMap<String, Value>, u64)> {
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
fn compare(view: &BTreeMap<String, Value>, want: &BTreeMap<String, Value>, counts: &mut Counts) {
    let count = |v: Option<&Value>| v.and_then(|v| v["count"].as_u64()).unwrap_or(0);
    for (id, expected) in want {
        let got = view.get(id);
        let (w, g) = (count(Some(expected)), count(got));
        counts.skipped += w.saturating_sub(g) + got.and_then(|v| v["gaps"].as_u64()).unwrap_or(0);
        counts.doubled += g.saturating_sub(w) + got.and_then(|v| v["repeats"].as_u64()).unwrap_or(0);
        if w == g && got != Some(expected) {
            counts
                .failures
                .push(format!("document {id}: {got:?}, the fold says {expected}"));
        }
    }
    counts.phantom += view.keys().filter(|id| !want.contains_key(*id)).count() as u64;
}

/// Whether the stored checkpoint covers everything the log holds now.
async fn caught_up(stores: &Stores, projection: &str) -> Result<bool> {
    let head = stores.events.head().await.map_err(|e| format!("head: {e}"))?;
    let Some(checkpoint) = stores.raw.checkpoint(projection).await? else {
        return Ok(head.positions().all(|p| p.offset <= 1));
    };
    let covered = head.positions().all(|p| checkpoint.next(p.partition) >= p);
    Ok(covered)
}

/// Runs a worker until the stored checkpoint covers the log, then compares the view with the
/// fold.
async fn settle_and_check(
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
async fn retry<T, F: std::future::Future<Output = Result<T>>>(read: impl Fn() -> F) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match read().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn note_writer_errors(errors: BTreeMap<String, u64>, counts: &mut Counts) {
    for (kind, n) in errors {
        if kind.starts_with("NOT") {
            counts
                .failures
                .push(format!("{n} appends failed with an error not marked retryable: {kind}"));
        }
    }
}

fn aggregates(label: &str) -> Vec<String> {
    let id = &cqrsx_core::Uuid::now_v7().simple().to_string()[20..];
    vec![format!("{label}A{id}"), format!("{label}B{id}")]
}

/// Runner processes SIGKILLed at random points, `kills` times, while 16 writers append.
pub async fn process_kills(base: &Target, size: Size, kills: u64, broken: Broken) -> Result<Counts> {
    let target = base.fresh("pk");
    let stores = target.connect(Duration::from_secs(60)).await?;
    let aggregates = aggregates("Pk");
    let projection = format!("pk{}", &cqrsx_core::Uuid::now_v7().simple().to_string()[20..]);
    let writers = Writers::start(Arc::clone(&stores.events), &aggregates, size);
    let mut counts = Counts::default();
    let mut dice = Dice::new();
    let pages = [1, 7, 32, 256];
    let spec = |owner: &str, dice: &mut Dice| {
        let mut spec = WorkerSpec::new(&projection, &aggregates, owner);
        spec.page = pages[dice.below(pages.len() as u64) as usize];
        spec.broken = broken;
        spec
    };
    while counts.process_kills < kills {
        // Mostly a restart under the same identity (it takes its lease back at once),
        // sometimes another owner (it waits for the lease), sometimes with a standby beside it.
        let owner = if dice.below(4) == 0 {
            format!("owner-{}", dice.below(1_000_000))
        } else {
            "stable".to_string()
        };
        let mut workers = vec![Worker::spawn(&target, &spec(&owner, &mut dice))?];
        if dice.below(5) == 0 {
            workers.push(Worker::spawn(&target, &spec("standby", &mut dice))?);
        }
        // Mostly once it has committed (however long a loaded machine takes to start it), so
        // that every kill lands among commits; sometimes as it takes its lease, or starts.
        match dice.below(5) {
            0 => {}
            1 => {
                let _ = workers[0]
                    .wait_for(Duration::from_secs(30), |s| s.token.is_some())
                    .await;
            }
            _ => {
                let _ = workers[0].wait_for(Duration::from_secs(30), |s| s.applied > 0).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(dice.below(600))).await;
        for w in &mut workers {
            if !w.alive() {
                counts
                    .failures
                    .push(format!("a runner exited by itself: {:?}", w.poll()));
            }
            w.kill();
        }
        counts.process_kills += 1;
        if counts.process_kills > 2_000 {
            return Err("too many kills".into());
        }
    }
    note_writer_errors(writers.stop().await, &mut counts);
    let mut last = spec("stable", &mut dice);
    last.page = 64;
    settle_and_check(&target, &stores, &last, &writers_streams(&aggregates), &mut counts).await?;
    Ok(counts)
}

fn writers_streams(aggregates: &[String]) -> Vec<StreamId> {
    (0..WRITERS)
        .flat_map(|w| {
            (0..2).filter_map(move |k| StreamId::new(&aggregates[(w + k) % aggregates.len()], format!("w{w}-{k}")).ok())
        })
        .collect()
}

/// The server SIGKILLed and started again on its data, `kills` times, under a runner and 16
/// writers; the runner must ride every outage out.
pub async fn server_kills(
    base: &Target,
    servers: &mut Servers,
    size: Size,
    kills: u64,
    outage: (Duration, Duration),
    broken: Broken,
) -> Result<Counts> {
    let target = base.fresh("sk");
    let stores = target.connect(Duration::from_secs(60)).await?;
    let aggregates = aggregates("Sk");
    let projection = format!("sk{}", &cqrsx_core::Uuid::now_v7().simple().to_string()[20..]);
    let writers = Writers::start(Arc::clone(&stores.events), &aggregates, size);
    let mut counts = Counts::default();
    let mut dice = Dice::new();
    let mut spec = WorkerSpec::new(&projection, &aggregates, "survivor");
    spec.ttl = Duration::from_secs(5);
    spec.page = 16;
    spec.broken = broken;
    let mut worker = Worker::spawn(&target, &spec)?;
    worker
        .wait_for(Duration::from_secs(60), |s| s.token.is_some())
        .await
        .map_err(|e| format!("the runner never took its lease: {e}"))?;
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(300 + dice.below(1_200))).await;
        let which = servers.kill(dice.below(1_000) as usize);
        counts.server_kills += 1;
        let spread = (outage.1.saturating_sub(outage.0)).as_millis() as u64;
        tokio::time::sleep(outage.0 + Duration::from_millis(dice.below(spread + 1))).await;
        servers.restart(which)?;
    }
    note_writer_errors(writers.stop().await, &mut counts);
    // The runner that lived through every kill catches up on its own.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if !worker.alive() {
            counts
                .failures
                .push(format!("the runner died under the outages: {:?}", worker.poll()));
            break;
        }
        if worker.poll().state == "Failed" {
            counts
                .failures
                .push(format!("the runner failed under the outages: {:?}", worker.poll()));
            break;
        }
        if caught_up(&stores, &projection).await.unwrap_or(false) {
            break;
        }
        if Instant::now() > deadline {
            counts.failures.push(format!(
                "the runner did not catch up after the outages: {:?}",
                worker.poll()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    worker.kill();
    spec.owner = "survivor".into();
    settle_and_check(&target, &stores, &spec, &writers_streams(&aggregates), &mut counts).await?;
    Ok(counts)
}

/// A lease holder frozen with SIGSTOP past its lease (at a commit, or anywhere), a standby
/// takes over and commits, then is killed; the holder resumed must land nothing — the
/// projection's whole stored state is compared before and after — and the view still equals
/// the fold in the end.
pub async fn frozen_holder(base: &Target, size: Size, rounds: u64, broken: Broken) -> Result<Counts> {
    let mut counts = Counts::default();
    let mut dice = Dice::new();
    for round in 0..rounds {
        let target = base.fresh("fz");
        let stores = target.connect(Duration::from_secs(60)).await?;
        let aggregates = aggregates("Fz");
        let projection = format!("fz{}", &cqrsx_core::Uuid::now_v7().simple().to_string()[20..]);
        let writers = Writers::start(
            Arc::clone(&stores.events),
            &aggregates,
            Size {
                events_per_writer: 0,
                ..size
            },
        );
        let ttl = Duration::from_secs(4);
        let mut a_spec = WorkerSpec::new(&projection, &aggregates, "holder");
        a_spec.ttl = ttl;
        a_spec.page = 8;
        a_spec.broken = broken;
        // Even rounds freeze the holder as it is about to send a commit.
        let at_commit = round % 2 == 0;
        if at_commit {
            a_spec.commit_pause = Duration::from_millis(400);
        }
        let mut a = Worker::spawn(&target, &a_spec)?;
        a.wait_for(Duration::from_secs(60), |s| s.applied > 0)
            .await
            .map_err(|e| format!("the holder never applied: {e}"))?;
        if at_commit {
            a.wait_for_commit(Duration::from_secs(60)).await?;
        } else {
            tokio::time::sleep(Duration::from_millis(dice.below(500))).await;
        }
        a.freeze();
        counts.freezes += 1;
        let mut b_spec = WorkerSpec::new(&projection, &aggregates, "standby");
        b_spec.ttl = ttl;
        b_spec.page = 8;
        let mut b = Worker::spawn(&target, &b_spec)?;
        // Well past the holder's page, so what the holder would write differs from what is
        // stored.
        let took = b
            .wait_for(ttl * 10, |s| s.token.is_some() && s.applied >= 48)
            .await
            .map_err(|e| format!("the standby never took over: {e}"));
        // Freeze the standby's commits by killing it: what is on the wire lands, then nothing.
        b.kill();
        took?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = retry(|| stores.raw.snapshot(&projection)).await?;
        a.resume();
        // Well inside what is left of the standby's lease, so the holder cannot take it back.
        tokio::time::sleep(ttl / 2).await;
        let after = retry(|| stores.raw.snapshot(&projection)).await?;
        if before != after {
            counts.stale_landed += 1;
            counts
                .failures
                .push(format!("round {round}: the resumed holder changed the stored state"));
        }
        if !a.alive() {
            counts
                .failures
                .push(format!("round {round}: the resumed holder died: {:?}", a.poll()));
        }
        a.kill();
        note_writer_errors(writers.stop().await, &mut counts);
        let last = WorkerSpec::new(&projection, &aggregates, "holder");
        settle_and_check(&target, &stores, &last, &writers_streams(&aggregates), &mut counts).await?;
    }
    Ok(counts)
}

/// Handlers that panic, hang or fail transiently, under each policy, in a real process: the
/// status says what happened and where, parked events are stored, and nothing else is lost.
pub async fn handlers(base: &Target, broken: Broken) -> Result<Counts> {
    let mut counts = Counts::default();
    let cases = [
        (Misbehave::Panic, false),
        (Misbehave::Panic, true),
        (Misbehave::Hang, false),
        (Misbehave::Hang, true),
        (Misbehave::Transient, false),
    ];
    for (how, park) in cases {
        let target = base.fresh("hd");
        let stores = target.connect(Duration::from_secs(60)).await?;
        let aggregates = aggregates("Hd");
        let projection = format!("hd{}", &cqrsx_core::Uuid::now_v7().simple().to_string()[20..]);
        let stream = StreamId::new(&aggregates[0], "s").map_err(|e| e.to_string())?;
        let events: Vec<NewEvent> = [1, POISON, 3]
            .iter()
            .filter_map(|n| NewEvent::json("Credited", &json!({ "n": n })).ok())
            .collect();
        let appended = stores
            .events
            .append(&stream, ExpectedVersion::Any, events)
            .await
            .map_err(|e| format!("append: {e}"))?;
        let poison = cqrsx_core::Position {
            offset: appended.position.offset - 1,
            ..appended.position
        };
        let mut spec = WorkerSpec::new(&projection, &aggregates, "handler");
        spec.misbehave = how;
        spec.park = park;
        spec.handler_timeout = Duration::from_millis(500);
        spec.broken = broken;
        let mut worker = Worker::spawn(&target, &spec)?;
        let label = format!("{how:?} under {}", if park { "park" } else { "stop" });
        let within = Duration::from_secs(120);
        let message = match how {
            Misbehave::Panic => "cannot take the poison event",
            Misbehave::Hang => "did not finish",
            _ => "restarting",
        };
        match (how, park) {
            (Misbehave::Transient, _) => match worker.wait_for(within, |s| s.applied >= 3).await {
                Ok(s) if s.state == "Failed" => counts.failures.push(format!("{label}: failed: {s:?}")),
                Ok(s) if !s.error.as_deref().is_some_and(|e| e.contains(message)) => counts
                    .failures
                    .push(format!("{label}: the status never showed the retries: {s:?}")),
                Ok(_) => {}
                Err(e) => counts.failures.push(format!("{label}: {e}")),
            },
            (_, false) => match worker.wait_for(within, |s| s.state == "Failed").await {
                Ok(s) => {
                    if !s.error.as_deref().is_some_and(|e| e.contains(message)) {
                        counts
                            .failures
                            .push(format!("{label}: the status lacks the handler's message: {s:?}"));
                    }
                    if s.error_position != Some(poison.to_string()) {
                        counts
                            .failures
                            .push(format!("{label}: the status lacks the event's position: {s:?}"));
                    }
                }
                Err(e) => counts
                    .failures
                    .push(format!("{label}: the runner never said it failed: {e}")),
            },
            (_, true) => match worker.wait_for(within, |s| s.parked >= 1 && s.applied >= 2).await {
                Ok(_) => {
                    let parked = stores.raw.parked(&projection).await?;
                    let stored = parked.get(&poison.to_string());
                    if !stored.is_some_and(|p| p["error"].as_str().is_some_and(|e| e.contains(message))) {
                        counts.failures.push(format!(
                            "{label}: the dead letter at {poison} is {stored:?} ({parked:?})"
                        ));
                    }
                }
                Err(e) => counts.failures.push(format!("{label}: the event was not parked: {e}")),
            },
        }
        if !worker.alive() {
            counts.failures.push(format!("{label}: the worker process died"));
        }
        worker.kill();
        // What was applied is exactly the events other than the failed one (all of them for a
        // transient failure).
        let view = stores.raw.view(&projection).await?;
        let total = view.get("total").and_then(|t| t["count"].as_u64()).unwrap_or(0);
        let expected = match (how, park) {
            (Misbehave::Transient, _) => 3,
            (_, true) => 2,
            (_, false) => 1,
        };
        if total != expected {
            counts.failures.push(format!(
                "{label}: the view's total counts {total} events, not {expected}"
            ));
        }
    }
    Ok(counts)
}
