//! Key layout. Every key of one stream, and the log of the stream's partition, share one hash
//! tag `{prefix:partition}`, so every script call touches a single Cluster slot by construction.

/// The keys of one store configuration.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
    partitions: u32,
    /// `{prefix:p}:` of each partition `p`, made once: every append builds keys from it.
    tags: Vec<String>,
}

/// The keys of one stream (its partition's log, counter and type indexes are per partition).
pub(crate) struct StreamKeys {
    pub(crate) partition: u32,
    /// The stream's commits: one entry per commit at `<first version>-0` with its first
    /// position (`g`), event count (`n`) and, while the stream's ids only increase, its event
    /// ids (`i`).
    pub(crate) index: String,
    /// `v`: the version, followed by the largest event id while the ids only increase, or `d`
    /// and the version once deleted (the tombstone); `tr` the truncation point; and, once the
    /// ids are out of order, each event id's version.
    pub(crate) meta: String,
    /// The shared hash holding the stream's state while it is tiny (see `small.lua`), under the
    /// stream key.
    pub(crate) bucket: String,
}

/// The number of shared hashes per partition that hold tiny streams (see `small.lua`). Fixed
/// for a store's life: a tiny stream is found in its bucket by this number.
pub(crate) const BUCKETS: u32 = 1024;

/// FNV-1a: stable across processes and versions, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

fn tag(prefix: &str, partition: u32) -> String {
    format!("{{{prefix}:{partition}}}:")
}

impl Keys {
    pub(crate) fn new(prefix: &str, partitions: u32) -> Self {
        let partitions = partitions.max(1);
        Self {
            prefix: prefix.to_string(),
            partitions,
            tags: (0..partitions).map(|p| tag(prefix, p)).collect(),
        }
    }

    pub(crate) fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The partition a stream belongs to.
    pub(crate) fn partition_of(&self, stream_key: &str) -> u32 {
        fnv1a(stream_key.as_bytes()) % self.partitions
    }

    /// A key of partition `p`: `{prefix:p}:` followed by `parts`. (A partition this layout does
    /// not have, as a caller's position may name, still gets its key, which holds nothing.)
    fn key(&self, partition: u32, parts: &[&str]) -> String {
        let made;
        let tag = match self.tags.get(partition as usize) {
            Some(tag) => tag.as_str(),
            None => {
                made = tag(&self.prefix, partition);
                made.as_str()
            }
        };
        let mut key = String::with_capacity(tag.len() + parts.iter().map(|p| p.len()).sum::<usize>());
        key.push_str(tag);
        for part in parts {
            key.push_str(part);
        }
        key
    }

    pub(crate) fn log(&self, partition: u32) -> String {
        self.key(partition, &["log"])
    }

    /// The partition's position counter.
    pub(crate) fn seq(&self, partition: u32) -> String {
        self.key(partition, &["seq"])
    }

    /// The partition's stream catalogue: a sorted set of the stream keys (`Type/id`) of every
    /// stream appended to, imported or deleted in the partition, all with score 0, so
    /// `ZRANGEBYLEX` pages it in key byte order.
    pub(crate) fn catalogue(&self, partition: u32) -> String {
        self.key(partition, &["cat"])
    }

    /// What the meta hash key of every stream of the partition starts with (the stream key
    /// follows).
    pub(crate) fn meta_prefix(&self, partition: u32) -> String {
        self.key(partition, &["m:"])
    }

    /// The partition's tiny streams' bucket `b` (`b < BUCKETS`).
    pub(crate) fn bucket(&self, partition: u32, b: u32) -> String {
        self.key(partition, &["b:", &b.to_string()])
    }

    /// The partition's partially truncated commits: first position -> events removed.
    pub(crate) fn trim(&self, partition: u32) -> String {
        self.key(partition, &["trim"])
    }

    /// An event type's index in a partition: one entry per commit holding the type.
    pub(crate) fn type_index(&self, partition: u32, event_type: &str) -> String {
        self.key(partition, &["t:", event_type])
    }

    pub(crate) fn stream(&self, stream_key: &str) -> StreamKeys {
        let partition = self.partition_of(stream_key);
        // (The bits that chose the partition do not choose the bucket too.)
        let bucket = (fnv1a(stream_key.as_bytes()) / self.partitions) % BUCKETS;
        StreamKeys {
            partition,
            index: self.key(partition, &["s:", stream_key]),
            meta: self.key(partition, &["m:", stream_key]),
            bucket: self.bucket(partition, bucket),
        }
    }

    /// Every key an append to the stream touches, an event type's index standing for all.
    pub(crate) fn append_keys(&self, stream_key: &str, event_type: &str) -> Vec<String> {
        let StreamKeys {
            partition,
            index,
            meta,
            bucket,
        } = self.stream(stream_key);
        vec![
            index,
            meta,
            self.log(partition),
            self.seq(partition),
            self.trim(partition),
            self.type_index(partition, event_type),
            bucket,
        ]
    }

    /// Snapshot keys of a stream: a sorted set of versions, and one hash per snapshot.
    pub(crate) fn snapshot_index(&self, stream_key: &str) -> String {
        self.key(self.partition_of(stream_key), &["snap:", stream_key])
    }

    /// The hash tag of one projection: its leases, checkpoints, dead letters and views.
    pub(crate) fn projection(&self, name: &str) -> String {
        format!("{{{}:pj:{name}}}:", self.prefix)
    }

    /// The set of every projection version a lease was granted for (`<name>:<version>`).
    pub(crate) fn projection_versions(&self) -> String {
        format!("{{{}:pj}}:versions", self.prefix)
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
    fn keys_are_the_partition_tag_and_their_parts() {
        let keys = Keys::new("app", 4);
        assert_eq!(keys.log(3), "{app:3}:log");
        assert_eq!(keys.type_index(1, "Added"), "{app:1}:t:Added");
        let stream = keys.stream("Order/1");
        let p = stream.partition;
        assert_eq!(stream.index, format!("{{app:{p}}}:s:Order/1"));
        assert_eq!(stream.meta, format!("{{app:{p}}}:m:Order/1"));
        assert_eq!(keys.snapshot_index("Order/1"), format!("{{app:{p}}}:snap:Order/1"));
        assert_eq!(keys.log(9), "{app:9}:log", "a partition the layout does not have");
    }

    #[test]
    fn the_append_script_reads_the_stream_key_and_event_type_from_the_keys_ends() {
        // `append.lua` takes them from character #log of the meta hash and type index keys.
        for (prefix, partitions) in [("app", 4), ("a", 1), ("a-much-longer:prefix", 300)] {
            let keys = Keys::new(prefix, partitions);
            for id in ["Order/1", "User/{weird}", "Order/ünïcode"] {
                let stream = keys.stream(id);
                let p = stream.partition;
                let from = keys.log(p).len() - 1;
                assert_eq!(&stream.meta[from..], id);
                assert_eq!(&keys.type_index(p, "Ädded")[from..], "Ädded");
            }
        }
    }

    #[test]
    fn buckets_share_the_stream_slot_and_spread_apart_from_partitions() {
        let keys = Keys::new("app", 4);
        let mut used = std::collections::HashSet::new();
        for i in 0..20_000 {
            let stream = keys.stream(&format!("Order/{i}"));
            assert_eq!(slot(&stream.bucket), slot(&stream.meta));
            used.insert(stream.bucket);
        }
        // 4 partitions of 1,024 buckets each: the bits that chose the partition do not choose
        // the bucket too.
        assert!(used.len() > 4 * 1000, "{} buckets used", used.len());
    }

    #[test]
    fn partitions_spread_over_slots() {
        let keys = Keys::new("app", 16);
        let slots: std::collections::HashSet<u16> = (0..16).map(|p| slot(&keys.log(p))).collect();
        assert!(slots.len() > 8, "partitions should land in different slots");
    }
}

#[cfg(test)]
mod script_keys {
    //! Redis requires a script to declare every key it touches in `KEYS`: Cluster proxies and
    //! managed services route and check scripts by those keys. This check reads every script
    //! and fails on a command whose key does not come from `KEYS`.

    /// Commands the scripts use that take no key.
    const KEYLESS: &[&str] = &["TIME"];

    /// Each script with its name (`log.lua`, a library of pure functions, calls Redis not at all).
    const SCRIPTS: &[(&str, &str)] = &[
        ("append.lua", include_str!("lua/append.lua")),
        ("by_type.lua", include_str!("lua/by_type.lua")),
        ("checks.lua", include_str!("lua/checks.lua")),
        ("delete.lua", include_str!("lua/delete.lua")),
        ("docs.lua", include_str!("lua/docs.lua")),
        ("docs_write.lua", include_str!("lua/docs_write.lua")),
        ("import.lua", include_str!("lua/import.lua")),
        ("projection.lua", include_str!("lua/projection.lua")),
        ("query.lua", include_str!("lua/query.lua")),
        ("read_model.lua", include_str!("lua/read_model.lua")),
        ("read_stream.lua", include_str!("lua/read_stream.lua")),
        ("small.lua", include_str!("lua/small.lua")),
        ("snapshot.lua", include_str!("lua/snapshot.lua")),
        ("top.lua", include_str!("lua/top.lua")),
        ("truncate.lua", include_str!("lua/truncate.lua")),
    ];

    /// The arguments of a call starting at `rest` (just after `redis.call(`), split at
    /// top-level commas.
    fn arguments(rest: &str) -> Vec<String> {
        let (mut depth, mut args, mut current, mut quote) = (0i32, Vec::new(), String::new(), None);
        for c in rest.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => {
                    quote = None;
                    current.push(c);
                }
                (Some(_), c) => current.push(c),
                (None, '\'' | '"') => {
                    quote = Some(c);
                    current.push(c);
                }
                (None, '(' | '[' | '{') => {
                    depth += 1;
                    current.push(c);
                }
                (None, ')') if depth == 0 => break,
                (None, ')' | ']' | '}') => {
                    depth -= 1;
                    current.push(c);
                }
                (None, ',') if depth == 0 => args.push(std::mem::take(&mut current)),
                (None, c) => current.push(c),
            }
        }
        args.push(current);
        args.into_iter().map(|a| a.trim().to_string()).collect()
    }

    /// Every (command, key expression) of a script, with the commands that take no key left out.
    fn keys_used(source: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (at, _) in source.match_indices("redis.call(") {
            let args = arguments(&source[at + "redis.call(".len()..]);
            let command = args[0].trim_matches(|c| c == '\'' || c == '"').to_uppercase();
            if KEYLESS.contains(&command.as_str()) {
                continue;
            }
            let keys = if command == "DEL" { &args[1..] } else { &args[1..2] };
            out.extend(keys.iter().map(|k| (command.clone(), k.clone())));
        }
        out
    }

    #[test]
    fn every_script_declares_every_key_it_touches() {
        for (name, source) in SCRIPTS {
            let used = keys_used(source);
            assert!(!used.is_empty(), "{name}: no Redis calls found, is the parser broken?");
            for (command, key) in used {
                assert!(
                    key.starts_with("KEYS["),
                    "{name}: {command} touches {key:?}, which is not one of the script's KEYS"
                );
            }
        }
    }

    #[test]
    fn the_scripts_and_the_crate_agree_on_small_streams() {
        let line = format!("local SMALL = {}\n", crate::SMALL_STREAM_EVENTS);
        assert!(include_str!("lua/small.lua").contains(&line), "small.lua: {line:?}");
    }

    #[test]
    fn the_check_catches_a_key_built_from_data() {
        let bad = "local k = ARGV[1] .. 'x'\nredis.call('GET', k)\nredis.call('TIME')";
        assert_eq!(keys_used(bad), vec![("GET".to_string(), "k".to_string())]);
        let good = "redis.call('DEL', KEYS[1], KEYS[2 + n])";
        assert!(keys_used(good).iter().all(|(_, k)| k.starts_with("KEYS[")));
    }
}
