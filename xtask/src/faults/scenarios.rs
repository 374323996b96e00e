//! The fault scenarios, written from the read side's contract (items 10–14): runner processes
//! killed with SIGKILL while 16 writers append, the server killed and restarted under them, a
//! lease holder frozen with SIGSTOP past its lease and resumed after a standby took over, and
//! handlers that panic, hang or fail transiently. Each ends by comparing the view, read from
//! the server's own structures, with a fold of the events read back stream by stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrsx_core::{ExpectedVersion, NewEvent, StreamId};
use serde_json::json;

use super::harness::{
    aggregates, caught_up, note_writer_errors, retry, settle_and_check, writers_streams, Counts, Dice, Size, Worker,
    WorkerSpec, Writers,
};
use super::servers::Servers;
use super::target::Target;
use super::worker::{Broken, Misbehave, POISON};
use crate::cmd::Result;

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
pub async fn frozen_holder(base: &Target, size: Size, rounds: u64, ttl: Duration, broken: Broken) -> Result<Counts> {
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
        // What was on the wire lands within moments on most servers; a loaded FerretDB 1
        // can take seconds to finish the killed standby's writes. Wait until the stored
        // state holds still, so that a change after the resume is the holder's.
        let mut before = retry(|| stores.raw.snapshot(&projection)).await?;
        let settle = Instant::now() + Duration::from_secs(30);
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = retry(|| stores.raw.snapshot(&projection)).await?;
            if now == before || Instant::now() > settle {
                before = now;
                break;
            }
            before = now;
        }
        a.resume();
        // Well inside what is left of the standby's lease, so the holder cannot take it back.
        tokio::time::sleep(ttl / 2).await;
        let after = retry(|| stores.raw.snapshot(&projection)).await?;
        if before != after {
            counts.stale_landed += 1;
            counts.failures.push(format!(
                "round {round}: the resumed holder changed the stored state: {}",
                changes(&before, &after)
            ));
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

/// The lines of a raw snapshot that a change removed and added (a few, shortened).
fn changes(before: &str, after: &str) -> String {
    let short = |l: &str| l.chars().take(400).collect::<String>();
    let gone = before.lines().filter(|l| !after.contains(l)).take(3).map(short);
    let new = after.lines().filter(|l| !before.contains(l)).take(3).map(short);
    let mut out: Vec<String> = gone.map(|l| format!("- {l}")).collect();
    out.extend(new.map(|l| format!("+ {l}")));
    out.join(" | ")
}
