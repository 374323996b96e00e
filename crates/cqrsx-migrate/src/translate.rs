//! Translating projection checkpoints: a source checkpoint becomes the target position of the
//! first event the projection had not applied, in every target partition.

use std::collections::HashMap;

use cqrsx_core::{Checkpoint, EventFilter, EventStore, Position, Result};

/// Where every copied event is, in the source and in the target.
pub(crate) struct PositionMap {
    source_partitions: u32,
    /// Per target partition, in position order: each event's target position and, when it
    /// came from the source, its source position.
    target: Vec<Vec<(Position, Option<Position>)>>,
    /// The target's head when the map was built.
    target_head: Checkpoint,
}

/// Every event of every partition of `store`, in order, with its `(stream key, version)`.
async fn scan(store: &dyn EventStore, mut each: impl FnMut(Position, String, u64)) -> Result<()> {
    let filter = EventFilter::all();
    for partition in 0..store.capabilities().partitions {
        let mut from = Position::start_of(partition);
        loop {
            let page = store.read_all(from, 1000, &filter).await?;
            for e in page.events {
                each(e.position, e.stream.key().to_owned(), e.version);
            }
            if page.next == from {
                break;
            }
            from = page.next;
        }
    }
    Ok(())
}

impl PositionMap {
    /// Reads both logs whole (with the writers stopped).
    pub async fn build(source: &dyn EventStore, target: &dyn EventStore) -> Result<Self> {
        let mut at_source: HashMap<(String, u64), Position> = HashMap::new();
        scan(source, |p, k, v| {
            at_source.insert((k, v), p);
        })
        .await?;
        let target_head = target.head().await?;
        let mut by_partition: Vec<Vec<(Position, Option<Position>)>> =
            vec![Vec::new(); target.capabilities().partitions.max(1) as usize];
        scan(target, |p, k, v| {
            if let Some(list) = by_partition.get_mut(p.partition as usize) {
                list.push((p, at_source.get(&(k, v)).copied()));
            }
        })
        .await?;
        Ok(Self {
            source_partitions: source.capabilities().partitions,
            target: by_partition,
            target_head,
        })
    }

    /// The target checkpoint of a projection at `source` checkpoint, or why there is none: the
    /// events it applied are not a prefix of every target partition (it needs a rebuild).
    pub fn translate(&self, source: &Checkpoint) -> std::result::Result<Checkpoint, String> {
        if source.partitions() != self.source_partitions {
            return Err(format!(
                "its checkpoint has {} partitions, the source {}",
                source.partitions(),
                self.source_partitions
            ));
        }
        let mut next = Vec::with_capacity(self.target.len());
        for (p, events) in self.target.iter().enumerate() {
            let mut first_unapplied: Option<Position> = None;
            for (at, from) in events {
                let Some(from) = from else {
                    return Err(format!("target event at {at} did not come from the source"));
                };
                let applied = source.covers(*from);
                match first_unapplied {
                    None if !applied => first_unapplied = Some(*at),
                    Some(gap) if applied => {
                        return Err(format!(
                        "in target partition {p}, the event at {at} was applied but the one at {gap} before it was not"
                    ))
                    }
                    _ => {}
                }
            }
            let end = self.target_head.next(p as u32).offset;
            next.push(first_unapplied.map_or(end, |at| at.offset));
        }
        Checkpoint::from_offsets(next).map_err(|e| e.to_string())
    }
}
