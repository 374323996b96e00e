//! Checkpoints: where a reader of the global log stands in every partition, and how a live
//! tail learned that it may move.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::Position;

/// Where a reader of the global log stands: the next position to read in every partition.
///
/// A checkpoint covers every partition of a store (Redis has several; the other backends one).
/// It only moves forward, and it is what a projection stores after it has applied everything
/// before it.
///
/// ```
/// use cqrsx_core::{Checkpoint, Position};
/// let mut checkpoint = Checkpoint::start(2);
/// checkpoint.advance(Position { partition: 1, offset: 8 });
/// assert!(checkpoint.covers(Position { partition: 1, offset: 7 }));
/// assert!(!checkpoint.covers(Position { partition: 0, offset: 1 }));
/// assert_eq!(checkpoint.to_string(), "1,8");
/// assert_eq!("1,8".parse::<Checkpoint>()?, checkpoint);
/// # Ok::<(), cqrsx_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Checkpoint {
    next: Vec<u64>,
}

impl Checkpoint {
    /// The start of every one of `partitions` partitions: a subscription from here sees
    /// everything.
    pub fn start(partitions: u32) -> Self {
        Self {
            next: vec![1; partitions.max(1) as usize],
        }
    }

    /// A checkpoint from the next offset of each partition, in partition order. Offsets start
    /// at 1; an empty list or an offset of 0 is refused.
    pub fn from_offsets(next: impl IntoIterator<Item = u64>) -> Result<Self> {
        let next: Vec<u64> = next.into_iter().collect();
        if next.is_empty() || next.len() > u32::MAX as usize {
            return Err(Error::InvalidInput(format!(
                "a checkpoint needs one offset per partition, got {}",
                next.len()
            )));
        }
        if let Some(p) = next.iter().position(|&n| n == 0) {
            return Err(Error::InvalidInput(format!(
                "checkpoint offset of partition {p} is 0; offsets start at 1"
            )));
        }
        let checkpoint = Self { next };
        checkpoint.validate()?;
        Ok(checkpoint)
    }

    /// Checks that every next offset is one a store can reach: at most one past the largest
    /// offset (2^53 - 1).
    pub fn validate(&self) -> Result<()> {
        let most = crate::event::MAX_NUMBER + 1;
        if let Some((p, n)) = self.next.iter().enumerate().find(|(_, &n)| n > most) {
            return Err(Error::InvalidInput(format!(
                "checkpoint offset {n} of partition {p} is past the largest offset a store gives (2^53 - 1)"
            )));
        }
        Ok(())
    }

    /// How many partitions it covers.
    pub fn partitions(&self) -> u32 {
        self.next.len() as u32
    }

    /// The next position to read in `partition` (the partition's start if it is not covered).
    pub fn next(&self, partition: u32) -> Position {
        Position {
            partition,
            offset: self.next.get(partition as usize).copied().unwrap_or(1),
        }
    }

    /// The next position of every partition, in partition order.
    pub fn positions(&self) -> impl Iterator<Item = Position> + '_ {
        self.next.iter().enumerate().map(|(p, &offset)| Position {
            partition: p as u32,
            offset,
        })
    }

    /// Whether the event at `position` is before this checkpoint (already read or applied).
    pub fn covers(&self, position: Position) -> bool {
        self.next
            .get(position.partition as usize)
            .is_some_and(|&next| position.offset < next)
    }

    /// Moves the partition of `next` forward to it (never back).
    pub fn advance(&mut self, next: Position) {
        if let Some(slot) = self.next.get_mut(next.partition as usize) {
            *slot = (*slot).max(next.offset);
        }
    }

    /// Sets the partition of `next` to it, forward or back (a runner that stops at a poison
    /// event sets the checkpoint to that event).
    pub(crate) fn set(&mut self, next: Position) {
        if let Some(slot) = self.next.get_mut(next.partition as usize) {
            *slot = next.offset.max(1);
        }
    }

    /// Whether this checkpoint is at or past `other` in every partition.
    pub fn includes(&self, other: &Checkpoint) -> bool {
        self.next.len() == other.next.len() && self.next.iter().zip(&other.next).all(|(a, b)| a >= b)
    }

    /// Checks the checkpoint against a store: the same partitions, and no partition past the
    /// store's head (a checkpoint from the future would silently skip what is written next).
    pub fn check_against(&self, head: &Checkpoint) -> Result<()> {
        if self.partitions() != head.partitions() {
            return Err(Error::InvalidInput(format!(
                "checkpoint covers {} partitions, the store has {}",
                self.partitions(),
                head.partitions()
            )));
        }
        if let Some(p) = (0..self.partitions()).find(|&p| self.next(p).offset > head.next(p).offset) {
            return Err(Error::InvalidInput(format!(
                "checkpoint is ahead of the log in partition {p}: next {} but the log ends before {}",
                self.next(p).offset,
                head.next(p).offset
            )));
        }
        Ok(())
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.next.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Checkpoint({self})")
    }
}

impl std::str::FromStr for Checkpoint {
    type Err = Error;

    /// Parses [`Checkpoint`]'s `Display` form: the next offsets, comma-separated.
    fn from_str(s: &str) -> Result<Self> {
        let offsets = s
            .split(',')
            .map(|part| {
                part.trim()
                    .parse::<u64>()
                    .map_err(|_| Error::InvalidInput(format!("checkpoint {s:?} is not a list of offsets")))
            })
            .collect::<Result<Vec<_>>>()?;
        Self::from_offsets(offsets)
    }
}

/// How a backend's live tail learned that events may have arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The backend's own signal fired (Redis `XREAD BLOCK`, a MongoDB change stream, an
    /// in-memory notify), or the log was already past the checkpoint.
    Signalled,
    /// The backend waited the whole timeout and saw nothing.
    TimedOut,
    /// The backend has no signal; the caller polls with back-off.
    Unsupported,
}
