//! Snapshot policies: when the manager takes a snapshot after a save. Each policy is a small
//! type behind [`SnapshotPolicy`]; [`PolicyConfig`] builds them from configuration.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cqrsx_core::{Error, Result, StreamId, Timestamp};
use serde::{Deserialize, Serialize};

/// What a policy sees after a save.
#[derive(Debug, Clone)]
pub struct SnapshotContext<'a> {
    /// The aggregate's stream.
    pub stream: &'a StreamId,
    /// The stream version after the save.
    pub version: u64,
    /// Events written by this save.
    pub committed: u64,
    /// The version of the newest snapshot the aggregate was loaded from or saved with (0: none).
    pub last_snapshot_version: u64,
    /// When that snapshot was taken, when this process knows it.
    pub last_snapshot_at: Option<Timestamp>,
    /// The last measured load of this aggregate in this process.
    pub last_load: Option<LoadSample>,
    /// Now.
    pub now: Timestamp,
}

impl SnapshotContext<'_> {
    /// Events stored since the last snapshot: what the next load would replay.
    pub fn events_since_snapshot(&self) -> u64 {
        self.version.saturating_sub(self.last_snapshot_version)
    }

    /// The stream version before this save.
    pub fn previous_version(&self) -> u64 {
        self.version.saturating_sub(self.committed)
    }
}

/// One measured load: events replayed and the time the whole load took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSample {
    /// Events replayed on top of the snapshot (or from the start).
    pub events_replayed: u64,
    /// Wall time of the load.
    pub elapsed: Duration,
}

/// Decides whether to take a snapshot after a save.
pub trait SnapshotPolicy: Send + Sync + fmt::Debug {
    /// Whether to snapshot now.
    fn should_snapshot(&self, ctx: &SnapshotContext<'_>) -> bool;
}

/// Every `n` events since the last snapshot (`NewFrequencySnapshotPolicy(n)` of the Go cqrsx package).
#[derive(Debug, Clone, Copy)]
pub struct EveryNEvents(pub u64);

impl SnapshotPolicy for EveryNEvents {
    fn should_snapshot(&self, ctx: &SnapshotContext<'_>) -> bool {
        ctx.events_since_snapshot() >= self.0.max(1)
    }
}

/// When the version crosses a multiple of the interval (snapshots at 100, 200, 300… whatever
/// the batch sizes), so that every instance of an aggregate snapshots at the same versions.
#[derive(Debug, Clone, Copy)]
pub struct VersionInterval(pub u64);

impl SnapshotPolicy for VersionInterval {
    fn should_snapshot(&self, ctx: &SnapshotContext<'_>) -> bool {
        let interval = self.0.max(1);
        ctx.version / interval > ctx.previous_version() / interval
    }
}

/// When the last snapshot is older than the duration (or none is known) and there are new
/// events since it.
#[derive(Debug, Clone, Copy)]
pub struct TimeSinceLast(pub Duration);

impl SnapshotPolicy for TimeSinceLast {
    fn should_snapshot(&self, ctx: &SnapshotContext<'_>) -> bool {
        if ctx.events_since_snapshot() == 0 {
            return false;
        }
        match ctx.last_snapshot_at {
            None => true,
            Some(at) => ctx.now.as_millis().saturating_sub(at.as_millis()) >= self.0.as_millis() as u64,
        }
    }
}

/// After every save.
#[derive(Debug, Clone, Copy)]
pub struct Always;

impl SnapshotPolicy for Always {
    fn should_snapshot(&self, _ctx: &SnapshotContext<'_>) -> bool {
        true
    }
}

/// Never (snapshots only when asked with `SnapshotManager::take`).
#[derive(Debug, Clone, Copy)]
pub struct Never;

impl SnapshotPolicy for Never {
    fn should_snapshot(&self, _ctx: &SnapshotContext<'_>) -> bool {
        false
    }
}

/// When any of the policies says so.
#[derive(Debug, Clone)]
pub struct AnyOf(pub Vec<Arc<dyn SnapshotPolicy>>);

impl SnapshotPolicy for AnyOf {
    fn should_snapshot(&self, ctx: &SnapshotContext<'_>) -> bool {
        self.0.iter().any(|p| p.should_snapshot(ctx))
    }
}

/// When all of the policies say so (an empty list never snapshots).
#[derive(Debug, Clone)]
pub struct AllOf(pub Vec<Arc<dyn SnapshotPolicy>>);

impl SnapshotPolicy for AllOf {
    fn should_snapshot(&self, ctx: &SnapshotContext<'_>) -> bool {
        !self.0.is_empty() && self.0.iter().all(|p| p.should_snapshot(ctx))
    }
}

/// A closure as a policy.
///
/// ```
/// use cqrsx_snapshot::{FnPolicy, SnapshotPolicy};
/// let big_batches = FnPolicy::new(|ctx| ctx.committed >= 50);
/// # let _ = big_batches;
/// ```
pub struct FnPolicy<F>(F);

impl<F> FnPolicy<F>
where
    F: Fn(&SnapshotContext<'_>) -> bool + Send + Sync,
{
    /// Wraps `f`.
    pub fn new(f: F) -> Self {
        Self(f)
    }
}

impl<F> fmt::Debug for FnPolicy<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnPolicy")
    }
}

impl<F> SnapshotPolicy for FnPolicy<F>
where
    F: Fn(&SnapshotContext<'_>) -> bool + Send + Sync,
{
    fn should_snapshot(&self, ctx: &SnapshotContext<'_>) -> bool {
        (self.0)(ctx)
    }
}

/// Snapshots sooner when replay gets expensive: from the last measured load of the aggregate
/// it estimates what replaying the events since the last snapshot costs, and snapshots when
/// that reaches `target`. Never before `min_events`, always by `max_events`; without a
/// measurement only `max_events` applies.
#[derive(Debug, Clone, Copy)]
pub struct Adaptive {
    /// Replay time the policy tries to stay under.
    pub target: Duration,
    /// Fewest events since the last snapshot worth a snapshot.
    pub min_events: u64,
    /// Most events since the last snapshot, whatever the measurements say.
    pub max_events: u64,
}

impl Adaptive {
    /// Keeps estimated replay under `target`, between 10 and 1,000 events per snapshot.
    pub fn new(target: Duration) -> Self {
        Self {
            target,
            min_events: 10,
            max_events: 1_000,
        }
    }

    /// The estimated replay time of `events` at the measured per-event cost.
    pub fn estimate(sample: &LoadSample, events: u64) -> Option<Duration> {
        if sample.events_replayed == 0 {
            return None;
        }
        let per_event = sample.elapsed.as_nanos() / u128::from(sample.events_replayed);
        Some(Duration::from_nanos(
            u64::try_from(per_event * u128::from(events)).unwrap_or(u64::MAX),
        ))
    }
}

impl SnapshotPolicy for Adaptive {
    fn should_snapshot(&self, ctx: &SnapshotContext<'_>) -> bool {
        let since = ctx.events_since_snapshot();
        if since >= self.max_events.max(1) {
            return true;
        }
        if since < self.min_events.max(1) {
            return false;
        }
        ctx.last_load
            .and_then(|sample| Self::estimate(&sample, since))
            .is_some_and(|estimate| estimate >= self.target)
    }
}

/// A policy as configuration, also written as a short string (see [`FromStr`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PolicyConfig {
    /// [`EveryNEvents`].
    EveryEvents {
        /// Events between snapshots.
        events: u64,
    },
    /// [`VersionInterval`].
    VersionInterval {
        /// Versions between snapshots.
        interval: u64,
    },
    /// [`TimeSinceLast`].
    TimeSince {
        /// Seconds between snapshots.
        seconds: u64,
    },
    /// [`Always`].
    Always,
    /// [`Never`].
    Never,
    /// [`Adaptive`].
    Adaptive {
        /// Target replay time in milliseconds.
        target_ms: u64,
        /// Fewest events per snapshot.
        min_events: u64,
        /// Most events per snapshot.
        max_events: u64,
    },
    /// [`AnyOf`].
    Any {
        /// The policies.
        policies: Vec<PolicyConfig>,
    },
    /// [`AllOf`].
    All {
        /// The policies.
        policies: Vec<PolicyConfig>,
    },
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig::EveryEvents { events: 100 }
    }
}

impl PolicyConfig {
    /// Checks the numbers.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Config(format!("snapshot policy: {what}")));
        match self {
            PolicyConfig::EveryEvents { events: 0 } => bad("every needs at least 1 event"),
            PolicyConfig::VersionInterval { interval: 0 } => bad("version interval needs at least 1"),
            PolicyConfig::Adaptive {
                min_events, max_events, ..
            } if min_events > max_events || *max_events == 0 => bad("adaptive needs 1 ≤ min_events ≤ max_events"),
            PolicyConfig::Any { policies } | PolicyConfig::All { policies } => {
                if policies.is_empty() {
                    return bad("any/all need at least one policy");
                }
                policies.iter().try_for_each(PolicyConfig::validate)
            }
            _ => Ok(()),
        }
    }

    /// Builds the policy.
    pub fn build(&self) -> Result<Arc<dyn SnapshotPolicy>> {
        self.validate()?;
        Ok(match self {
            PolicyConfig::EveryEvents { events } => Arc::new(EveryNEvents(*events)),
            PolicyConfig::VersionInterval { interval } => Arc::new(VersionInterval(*interval)),
            PolicyConfig::TimeSince { seconds } => Arc::new(TimeSinceLast(Duration::from_secs(*seconds))),
            PolicyConfig::Always => Arc::new(Always),
            PolicyConfig::Never => Arc::new(Never),
            PolicyConfig::Adaptive {
                target_ms,
                min_events,
                max_events,
            } => Arc::new(Adaptive {
                target: Duration::from_millis(*target_ms),
                min_events: *min_events,
                max_events: *max_events,
            }),
            PolicyConfig::Any { policies } => Arc::new(AnyOf(policies.iter().map(Self::build).collect::<Result<_>>()?)),
            PolicyConfig::All { policies } => Arc::new(AllOf(policies.iter().map(Self::build).collect::<Result<_>>()?)),
        })
    }
}

impl FromStr for PolicyConfig {
    type Err = Error;

    /// Parses `every:100`, `version:50`, `time:60` (seconds), `always`, `never`,
    /// `adaptive:5` (target ms; `adaptive:5:10:1000` with min and max events) and
    /// `any(…,…)` / `all(…,…)` of those.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let bad = || {
            Error::Config(format!("snapshot policy {s:?}: expected every:N, version:N, time:SECS, always, never, adaptive:MS[:MIN:MAX], any(…) or all(…)"))
        };
        for (prefix, any) in [("any(", true), ("all(", false)] {
            if let Some(inner) = s.strip_prefix(prefix).and_then(|r| r.strip_suffix(')')) {
                let policies = split_top_level(inner)
                    .into_iter()
                    .map(str::parse)
                    .collect::<Result<Vec<PolicyConfig>>>()?;
                let config = if any {
                    PolicyConfig::Any { policies }
                } else {
                    PolicyConfig::All { policies }
                };
                config.validate()?;
                return Ok(config);
            }
        }
        let mut parts = s.split(':');
        let kind = parts.next().unwrap_or_default();
        let numbers = parts
            .map(|p| p.trim().parse::<u64>().map_err(|_| bad()))
            .collect::<Result<Vec<u64>>>()?;
        let config = match (kind, numbers.as_slice()) {
            ("every", [events]) => PolicyConfig::EveryEvents { events: *events },
            ("version", [interval]) => PolicyConfig::VersionInterval { interval: *interval },
            ("time", [seconds]) => PolicyConfig::TimeSince { seconds: *seconds },
            ("always", []) => PolicyConfig::Always,
            ("never", []) => PolicyConfig::Never,
            ("adaptive", [target_ms]) => PolicyConfig::Adaptive {
                target_ms: *target_ms,
                min_events: 10,
                max_events: 1_000,
            },
            ("adaptive", [target_ms, min_events, max_events]) => PolicyConfig::Adaptive {
                target_ms: *target_ms,
                min_events: *min_events,
                max_events: *max_events,
            },
            _ => return Err(bad()),
        };
        config.validate()?;
        Ok(config)
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> StreamId {
        StreamId::new("Order", "o-1").expect("stream")
    }

    fn ctx(stream: &StreamId, version: u64, committed: u64, last_snapshot_version: u64) -> SnapshotContext<'_> {
        SnapshotContext {
            stream,
            version,
            committed,
            last_snapshot_version,
            last_snapshot_at: None,
            last_load: None,
            now: Timestamp(1_000_000),
        }
    }

    #[test]
    fn every_n_events_counts_from_the_last_snapshot() {
        let s = stream();
        let p = EveryNEvents(100);
        assert!(!p.should_snapshot(&ctx(&s, 99, 5, 0)));
        assert!(p.should_snapshot(&ctx(&s, 100, 1, 0)));
        assert!(!p.should_snapshot(&ctx(&s, 150, 50, 100)));
        assert!(
            p.should_snapshot(&ctx(&s, 230, 30, 100)),
            "a batch that passes N also counts"
        );
    }

    #[test]
    fn version_interval_fires_when_a_multiple_is_crossed() {
        let s = stream();
        let p = VersionInterval(50);
        assert!(!p.should_snapshot(&ctx(&s, 49, 10, 0)));
        assert!(p.should_snapshot(&ctx(&s, 50, 1, 0)));
        assert!(p.should_snapshot(&ctx(&s, 57, 10, 0)), "crossed 50 inside the batch");
        assert!(
            !p.should_snapshot(&ctx(&s, 60, 3, 0)),
            "50 was crossed by an earlier save"
        );
        assert!(p.should_snapshot(&ctx(&s, 120, 80, 0)));
    }

    #[test]
    fn time_since_last_needs_age_and_new_events() {
        let s = stream();
        let p = TimeSinceLast(Duration::from_secs(60));
        let mut c = ctx(&s, 10, 1, 5);
        assert!(p.should_snapshot(&c), "no known snapshot time: due");
        c.last_snapshot_at = Some(Timestamp(c.now.0 - 59_000));
        assert!(!p.should_snapshot(&c));
        c.last_snapshot_at = Some(Timestamp(c.now.0 - 60_000));
        assert!(p.should_snapshot(&c));
        let c = ctx(&s, 5, 0, 5);
        assert!(!p.should_snapshot(&c), "nothing new since the snapshot");
    }

    #[test]
    fn always_never_and_closures() {
        let s = stream();
        let c = ctx(&s, 3, 1, 2);
        assert!(Always.should_snapshot(&c));
        assert!(!Never.should_snapshot(&c));
        assert!(FnPolicy::new(|c| c.committed == 1).should_snapshot(&c));
        assert!(!FnPolicy::new(|c| c.version > 3).should_snapshot(&c));
    }

    #[test]
    fn composites_combine_with_any_and_all() {
        let s = stream();
        let every10: Arc<dyn SnapshotPolicy> = Arc::new(EveryNEvents(10));
        let big: Arc<dyn SnapshotPolicy> = Arc::new(FnPolicy::new(|c| c.committed >= 5));
        let any = AnyOf(vec![Arc::clone(&every10), Arc::clone(&big)]);
        let all = AllOf(vec![every10, big]);
        assert!(any.should_snapshot(&ctx(&s, 10, 1, 0)));
        assert!(any.should_snapshot(&ctx(&s, 6, 6, 0)));
        assert!(!any.should_snapshot(&ctx(&s, 4, 1, 0)));
        assert!(!all.should_snapshot(&ctx(&s, 10, 1, 0)));
        assert!(all.should_snapshot(&ctx(&s, 10, 5, 0)));
        assert!(!AllOf(Vec::new()).should_snapshot(&ctx(&s, 10, 5, 0)));
    }

    #[test]
    fn adaptive_snapshots_sooner_as_measured_replay_grows() {
        let s = stream();
        let p = Adaptive {
            target: Duration::from_millis(10),
            min_events: 5,
            max_events: 500,
        };
        let mut c = ctx(&s, 100, 1, 0);
        assert!(!p.should_snapshot(&c), "no measurement: only max_events applies");
        c.last_load = Some(LoadSample {
            events_replayed: 100,
            elapsed: Duration::from_millis(1),
        });
        assert!(!p.should_snapshot(&c), "cheap replay: 100 events ≈ 1 ms");
        c.last_load = Some(LoadSample {
            events_replayed: 100,
            elapsed: Duration::from_millis(20),
        });
        assert!(p.should_snapshot(&c), "expensive replay: 100 events ≈ 20 ms");
        let mut few = ctx(&s, 4, 1, 0);
        few.last_load = c.last_load;
        assert!(!p.should_snapshot(&few), "below min_events");
        assert!(p.should_snapshot(&ctx(&s, 500, 1, 0)), "max_events always");
    }

    #[test]
    fn config_strings_parse_and_build() {
        let parsed: PolicyConfig = "any(every:100,time:60,all(version:10,adaptive:5:2:50))"
            .parse()
            .expect("parse");
        assert_eq!(
            parsed,
            PolicyConfig::Any {
                policies: vec![
                    PolicyConfig::EveryEvents { events: 100 },
                    PolicyConfig::TimeSince { seconds: 60 },
                    PolicyConfig::All {
                        policies: vec![
                            PolicyConfig::VersionInterval { interval: 10 },
                            PolicyConfig::Adaptive {
                                target_ms: 5,
                                min_events: 2,
                                max_events: 50
                            },
                        ]
                    },
                ]
            }
        );
        let policy = parsed.build().expect("build");
        let s = stream();
        assert!(policy.should_snapshot(&ctx(&s, 100, 1, 0)));
        for bad in ["every:0", "every", "sometimes", "every:x", "any()", "adaptive:5:10:2"] {
            let err = bad.parse::<PolicyConfig>().expect_err(bad);
            assert!(matches!(err, Error::Config(_)), "{bad}: {err}");
        }
    }
}
