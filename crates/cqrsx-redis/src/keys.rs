//! Key layout. Every key of one stream, and the log of the stream's partition, share one hash
//! tag `{prefix:partition}`, so every script call touches a single Cluster slot by construction.

/// The keys of one store configuration.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
    partitions: u32,
}

/// The keys of one stream (its partition's log, counter and type indexes are per partition).
pub(crate) struct StreamKeys {
    pub(crate) partition: u32,
    pub(crate) events: String,
    pub(crate) meta: String,
}

/// FNV-1a: stable across processes and versions, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

impl Keys {
    pub(crate) fn new(prefix: &str, partitions: u32) -> Self {
        Self {
            prefix: prefix.to_string(),
            partitions: partitions.max(1),
        }
    }

    pub(crate) fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The partition a stream belongs to.
    pub(crate) fn partition_of(&self, stream_key: &str) -> u32 {
        fnv1a(stream_key.as_bytes()) % self.partitions
    }

    /// `{prefix:p}:` — the start of every key of partition `p`.
    pub(crate) fn partition_prefix(&self, partition: u32) -> String {
        format!("{{{}:{partition}}}:", self.prefix)
    }

    pub(crate) fn log(&self, partition: u32) -> String {
        format!("{}log", self.partition_prefix(partition))
    }

    /// The partition's position counter.
    pub(crate) fn seq(&self, partition: u32) -> String {
        format!("{}seq", self.partition_prefix(partition))
    }

    /// What an event type's index key starts with (the type follows).
    pub(crate) fn type_index_prefix(&self, partition: u32) -> String {
        format!("{}t:", self.partition_prefix(partition))
    }

    pub(crate) fn type_index(&self, partition: u32, event_type: &str) -> String {
        format!("{}{event_type}", self.type_index_prefix(partition))
    }

    pub(crate) fn stream(&self, stream_key: &str) -> StreamKeys {
        let partition = self.partition_of(stream_key);
        let p = self.partition_prefix(partition);
        StreamKeys {
            partition,
            events: format!("{p}s:{stream_key}"),
            meta: format!("{p}m:{stream_key}"),
        }
    }

    /// Every key an append to the stream touches, an event type's index standing for all.
    pub(crate) fn append_keys(&self, stream_key: &str, event_type: &str) -> Vec<String> {
        let StreamKeys {
            partition,
            events,
            meta,
        } = self.stream(stream_key);
        vec![
            events,
            meta,
            self.log(partition),
            self.seq(partition),
            self.type_index(partition, event_type),
        ]
    }

    /// Snapshot keys of a stream: a sorted set of versions, and one hash per snapshot.
    pub(crate) fn snapshot_index(&self, stream_key: &str) -> String {
        let p = self.partition_prefix(self.partition_of(stream_key));
        format!("{p}snap:{stream_key}")
    }

    /// The hash tag of one read-model collection.
    pub(crate) fn read_model(&self, collection: &str) -> String {
        format!("{{{}:rm:{collection}}}:", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Cluster hash slot of a key (CRC16/XMODEM of the hash tag), as Redis computes it.
    fn slot(key: &str) -> u16 {
        let bytes = key.as_bytes();
        let hashed = match key.find('{') {
            Some(open) => match key[open + 1..].find('}') {
                Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
                _ => bytes,
            },
            None => bytes,
        };
        let mut crc: u16 = 0;
        for b in hashed {
            crc ^= u16::from(*b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc % 16384
    }

    #[test]
    fn every_key_of_an_append_shares_one_slot() {
        let keys = Keys::new("app", 16);
        for id in ["Order/1", "User/{weird}", "A/b:c", "Order/ünïcode"] {
            let mut all = keys.append_keys(id, "X");
            all.push(keys.snapshot_index(id));
            let first = slot(&all[0]);
            for k in &all {
                assert_eq!(slot(k), first, "{k} is in another slot than {}", all[0]);
            }
        }
    }

    #[test]
    fn partitions_spread_over_slots() {
        let keys = Keys::new("app", 16);
        let slots: std::collections::HashSet<u16> = (0..16).map(|p| slot(&keys.log(p))).collect();
        assert!(slots.len() > 8, "partitions should land in different slots");
    }
}
