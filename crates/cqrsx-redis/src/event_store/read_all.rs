//! `read_all`: a page of one partition's log.
//!
//! The log is read with plain `XRANGE`s, each in a `MULTI` with an `HLEN` of the partition's
//! partially truncated commits, and filtered here. No entry passes through Lua: a script that
//! reads entries costs the server several times the `XRANGE` itself, as every field of every
//! entry becomes a Lua string.
//!
//! When some commit of the partition is partially truncated, a second `MULTI` reads how many
//! events each commit of the page lost together with the same range of the log again, so the
//! page is one consistent state even if a truncation ran between the two.

use std::collections::HashMap;

use cqrsx_core::raw::AllPage;
use cqrsx_core::{EventFilter, Position, RecordedEvent, Result};
use fred::prelude::*;
use fred::types::Value;

use super::layout::Commit;
use super::RedisEventStore;
use crate::error::protocol;
use crate::reply::{array, int, raw_int};

/// How many events one `read_all` call examines at most, so a selective filter over a long log
/// cannot keep a reader busy for long; the page then ends early with `next` moved past what was
/// seen.
const SCAN_BUDGET: usize = 10_000;

/// The widest window of positions one `XRANGE` reads.
const CHUNK: usize = 1_000;

/// A page being collected.
struct Collector<'a> {
    filter: &'a EventFilter,
    partition: u32,
    from: u64,
    max: usize,
    events: Vec<RecordedEvent>,
    /// The position after the last event seen.
    next: u64,
}

impl Collector<'_> {
    fn full(&self) -> bool {
        self.events.len() >= self.max
    }

    /// Takes the commit's events at or after `from`, and after the first `cut` (removed by a
    /// truncation), that pass the filter, while there is room.
    fn take(&mut self, commit: &Commit, cut: u64) -> Result<()> {
        let last = commit.first + commit.count - 1;
        if last < self.from {
            return Ok(());
        }
        let filter = self.filter;
        let aggregate = commit.stream.aggregate_type();
        if !(filter.aggregate_types.is_empty() || filter.aggregate_types.iter().any(|a| a == aggregate)) {
            self.next = last + 1;
            return Ok(());
        }
        let lo = self.from.saturating_sub(commit.first).max(cut);
        let room = self.max - self.events.len();
        let (mut taken, mut last_taken, mut stopped) = (0usize, 0u64, false);
        let events = commit.events(self.partition, |k, event_type| {
            if k < lo || !(filter.event_types.is_empty() || filter.event_types.iter().any(|t| t == event_type)) {
                return false;
            }
            if taken == room {
                stopped = true;
                return false;
            }
            taken += 1;
            last_taken = k;
            true
        })?;
        self.events.extend(events);
        self.next = if stopped {
            commit.first + last_taken + 1
        } else {
            last + 1
        };
        Ok(())
    }
}

impl RedisEventStore {
    /// A page of `from`'s partition: at most `max_count` events that pass `filter`.
    pub(super) async fn read_log(&self, from: Position, max_count: usize, filter: &EventFilter) -> Result<AllPage> {
        let p = from.partition;
        let (log, trim) = (self.keys.log(p), self.keys.trim(p));
        let mut page = Collector {
            filter,
            partition: p,
            from: from.offset,
            max: max_count,
            events: Vec::new(),
            next: from.offset,
        };
        let mut budget = SCAN_BUDGET.max(max_count);
        let unfiltered = filter.event_types.is_empty() && filter.aggregate_types.is_empty();
        // The next position no commit read so far holds; the first trip also reads the commit
        // that holds `from` when it starts before it.
        let mut pos = from.offset;
        let mut first_trip = true;
        let mut window = max_count;
        loop {
            // Positions are dense, so the commits starting in [pos, pos + window) hold the
            // window's events: an unfiltered page needs a window of exactly the missing events
            // (commits of any size), a filtered one doubles it each trip.
            window = if unfiltered {
                max_count - page.events.len()
            } else if first_trip {
                window
            } else {
                window.saturating_mul(2)
            }
            .clamp(1, budget.clamp(1, CHUNK));
            let end = pos.saturating_add(window as u64);
            let trx = self.client.client().multi();
            let calls = async {
                let () = trx.hlen(&trim).await?;
                if first_trip {
                    let () = trx.xrevrange(&log, format!("({pos}-0"), "-", Some(1)).await?;
                }
                let () = trx
                    .xrange(&log, format!("{pos}-0"), format!("({end}-0"), Some(window as u64))
                    .await?;
                // The first commit past the window: where the next one starts (past any hole
                // deleted streams left), or none at the end of the log.
                let () = trx.xrange(&log, format!("{end}-0"), "+", Some(1)).await?;
                trx.exec::<Value>(true).await
            };
            let mut replies = array(self.client.track(calls).await?)?.into_iter();
            let trimmed = replies
                .next()
                .as_ref()
                .and_then(int)
                .ok_or_else(|| protocol("HLEN of truncated commits"))?;
            let mut commits = Vec::with_capacity(window + 2);
            let mut more = false;
            for (i, reply) in replies.enumerate() {
                let entries = array(reply)?;
                // The first trip's replies: the commit before `from`, the window, the next
                // commit; a later trip's: the window, the next commit.
                more = !entries.is_empty() && i == usize::from(first_trip) + 1;
                for entry in entries {
                    commits.push(Commit::parse(entry)?);
                }
            }
            let Some(last) = commits.last() else {
                break;
            };
            pos = last.first + last.count;
            let cuts = if trimmed > 0 {
                let (again, cuts) = self.reread_with_cuts(&log, &trim, &commits).await?;
                commits = again;
                cuts
            } else {
                HashMap::new()
            };
            for commit in &commits {
                page.take(commit, cuts.get(&commit.first).copied().unwrap_or(0))?;
                budget = budget.saturating_sub(usize::try_from(commit.count).unwrap_or(usize::MAX));
                if page.full() {
                    break;
                }
            }
            first_trip = false;
            if page.full() || budget == 0 || !more {
                break;
            }
        }
        page.events.truncate(max_count);
        Ok(AllPage {
            events: page.events,
            next: Position {
                partition: p,
                offset: page.next.max(from.offset),
            },
        })
    }

    /// The log between the first and the last of `commits` again, with how many events each
    /// commit has lost to truncation, read in one `MULTI`.
    async fn reread_with_cuts(
        &self,
        log: &str,
        trim: &str,
        commits: &[Commit],
    ) -> Result<(Vec<Commit>, HashMap<u64, u64>)> {
        let firsts: Vec<String> = commits.iter().map(|c| c.first.to_string()).collect();
        let (Some(lo), Some(hi)) = (firsts.first(), firsts.last()) else {
            return Ok((Vec::new(), HashMap::new()));
        };
        let trx = self.client.client().multi();
        let calls = async {
            let () = trx.hmget(trim, firsts.clone()).await?;
            let () = trx.xrange(log, format!("{lo}-0"), format!("{hi}-0"), None).await?;
            trx.exec::<Value>(true).await
        };
        let mut replies = array(self.client.track(calls).await?)?.into_iter();
        let cut_values = array(replies.next().unwrap_or(Value::Null))?;
        let mut cuts = HashMap::new();
        for (commit, cut) in commits.iter().zip(&cut_values) {
            if !matches!(cut, Value::Null) {
                let cut = raw_int(cut).ok_or_else(|| protocol("a truncated commit's count is not a number"))?;
                cuts.insert(commit.first, cut);
            }
        }
        let again = array(replies.next().unwrap_or(Value::Null))?
            .into_iter()
            .map(Commit::parse)
            .collect::<Result<Vec<_>>>()?;
        Ok((again, cuts))
    }
}
