//! The projection commit log's layout: document ids, sequence numbers, how a commit becomes
//! records, and how a record becomes guarded writes. Nothing here talks to the server.
//!
//! Every commit of a projection version is first written as one or more *records* of its
//! log, each inserted under a unique `_id` — `(tenure, slot)`, where the tenure is the fencing
//! token of the lease that wrote it — and only then *applied*: every document it changes is
//! written guarded by the commit's sequence number (`_s`), so applying a record twice, or an
//! older record after a newer one, changes nothing.

use cqrsx_core::projection::{ParkedEvent, ViewKey};
use cqrsx_core::raw::{Commit, ViewChange, ViewWrite};
use cqrsx_core::{Error, Position, Result};
use mongodb::bson::{self, doc, Bson, DateTime, Document};

use crate::error::corrupt;

/// Separates the parts of a state document's `_id` (below every character of a name).
const SEP: char = '\u{1f}';
/// The character after [`SEP`]: the upper bound of a prefix range.
const AFTER_SEP: char = '\u{20}';

/// A record holds at most this many bytes of changes; a larger commit is split into a group
/// of records (BSON documents hold at most 16 MiB).
pub(super) const RECORD_BYTES: usize = 8 * 1024 * 1024;

/// A commit's place in the log: the tenure (fencing token) that wrote it and its slot in that
/// tenure (slots start at 1). As one number it orders every commit of a projection version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Seq {
    pub(super) tenure: u64,
    pub(super) slot: u32,
}

impl Seq {
    /// The number every document a commit writes carries, and is guarded by.
    pub(super) fn number(self) -> i64 {
        // Tenures are fencing tokens, far below 2^31 for any projection.
        let tenure = i64::try_from(self.tenure.min(i64::MAX as u64 >> 32)).unwrap_or(0);
        (tenure << 32) | i64::from(self.slot)
    }
}

fn key_part(key: &ViewKey) -> String {
    format!("{}{SEP}{}", key.projection(), key.version())
}

/// A lease claim: one per fencing token, inserted once, never removed while the view lives.
pub(super) fn claim_id(key: &ViewKey, token: u64) -> String {
    format!("claim{SEP}{}{SEP}{token:020}", key_part(key))
}

/// A log record.
pub(super) fn record_id(key: &ViewKey, seq: Seq) -> String {
    format!("log{SEP}{}{SEP}{:020}{SEP}{:010}", key_part(key), seq.tenure, seq.slot)
}

/// The `_id` range of every record of `key`.
pub(super) fn log_range(key: &ViewKey) -> (String, String) {
    let prefix = format!("log{SEP}{}{SEP}", key_part(key));
    (prefix.clone(), format!("{}{AFTER_SEP}", prefix.trim_end_matches(SEP)))
}

/// The `_id` range of the records of one tenure.
pub(super) fn tenure_range(key: &ViewKey, tenure: u64) -> (String, String) {
    let prefix = format!("log{SEP}{}{SEP}{tenure:020}", key_part(key));
    (format!("{prefix}{SEP}"), format!("{prefix}{AFTER_SEP}"))
}

/// The applied checkpoint: the last record applied, and the checkpoint after it.
pub(super) fn cp_id(key: &ViewKey) -> String {
    format!("cp{SEP}{}", key_part(key))
}

pub(super) fn parked_id(key: &ViewKey, position: Position) -> String {
    format!(
        "parked{SEP}{}{SEP}{}:{}",
        key_part(key),
        position.partition,
        position.offset
    )
}

/// The drop floor: the sequence below which a document of the view was written before the
/// view was last dropped.
pub(super) fn floor_id(key: &ViewKey) -> String {
    format!("floor{SEP}{}", key_part(key))
}

/// The operator's replay requests of a view (`r` made, `h` handled, `n` replayed by the last).
pub(super) fn request_id(key: &ViewKey) -> String {
    format!("rq{SEP}{}", key_part(key))
}

pub(super) fn active_id(key: &ViewKey) -> String {
    format!("active{SEP}{}", key_part(key))
}

pub(super) fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn expiry(ttl: std::time::Duration) -> DateTime {
    let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    DateTime::from_millis(DateTime::now().timestamp_millis().saturating_add(ms))
}

/// The guard every applied write carries: only a document written by an older commit (or
/// none) is changed.
pub(super) fn older_than(seq: i64) -> Document {
    doc! { "$or": [ { "_s": { "$lt": seq } }, { "_s": { "$exists": false } } ] }
}

/// A view change as it is kept in a record: `{i: id, d: document, x: expiry}` or
/// `{i: id, del: true}`.
fn encode_write(write: &ViewWrite) -> Result<Document> {
    Ok(match &write.change {
        ViewChange::Put { data, ttl } => {
            let d = match Bson::try_from(data.clone()) {
                Ok(Bson::Document(d)) => d,
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "view document {} cannot be stored in BSON",
                        write.id
                    )))
                }
            };
            let mut w = doc! { "i": &write.id, "d": d };
            if let Some(ttl) = ttl {
                w.insert("x", expiry(*ttl));
            }
            w
        }
        ViewChange::Delete => doc! { "i": &write.id, "del": true },
    })
}

fn encode_parked(key: &ViewKey, p: &ParkedEvent) -> Result<Document> {
    let mut d = bson::to_document(p).map_err(|e| Error::serialization("parked event", e))?;
    d.insert("_id", parked_id(key, p.position));
    Ok(d)
}

fn bson_len(d: &Document) -> usize {
    bson::to_vec(d).map(|v| v.len()).unwrap_or(RECORD_BYTES)
}

/// The records of one commit, from `first` on: its changes packed into records of at most
/// [`RECORD_BYTES`]; the last one carries the checkpoint, the activation and `end`. Every
/// record names the commit (`c`) and the group's first slot (`g`).
pub(super) fn encode_commit(
    key: &ViewKey,
    commit: &Commit,
    activate: bool,
    id: &str,
    first: Seq,
) -> Result<Vec<Document>> {
    let mut parts: Vec<(Vec<Document>, Vec<Document>)> = vec![(Vec::new(), Vec::new())];
    let mut size = 0;
    let mut add = |doc: Document, parked: bool| {
        let len = bson_len(&doc);
        let last = parts.last().is_some_and(|(w, p)| !w.is_empty() || !p.is_empty());
        if last && size + len > RECORD_BYTES {
            parts.push((Vec::new(), Vec::new()));
            size = 0;
        }
        size += len;
        if let Some((writes, parks)) = parts.last_mut() {
            if parked {
                parks.push(doc);
            } else {
                writes.push(doc);
            }
        }
    };
    for write in &commit.writes {
        add(encode_write(write)?, false);
    }
    for p in &commit.parked {
        add(encode_parked(key, p)?, true);
    }
    let count = parts.len();
    let mut records = Vec::with_capacity(count);
    for (i, (writes, parked)) in parts.into_iter().enumerate() {
        let seq = Seq {
            tenure: first.tenure,
            slot: first.slot + i as u32,
        };
        let mut record = doc! {
            "_id": record_id(key, seq),
            "kind": "log",
            "c": id,
            "g": i64::from(first.slot),
            "w": writes,
            "pk": parked,
        };
        if i + 1 == count {
            record.insert("end", true);
            let replayed: Vec<String> = commit.replayed.iter().map(|p| parked_id(key, *p)).collect();
            record.insert("rp", replayed);
            if let Some(checkpoint) = &commit.checkpoint {
                record.insert("cp", checkpoint.to_string());
            }
            if activate {
                record.insert("act", true);
            }
        }
        records.push(record);
    }
    Ok(records)
}

/// A seal: a record of no commit, inserted by the next holder at the slot after the last
/// record of an older tenure, so that tenure can write nothing more.
pub(super) fn seal(key: &ViewKey, seq: Seq, by: u64) -> Document {
    doc! { "_id": record_id(key, seq), "kind": "log", "c": "seal", "seal": true, "by": i64_of(by) }
}

/// A record read back.
#[derive(Debug)]
pub(super) struct Record {
    pub(super) seq: Seq,
    pub(super) commit: Option<String>,
    pub(super) group: u32,
    pub(super) end: bool,
    pub(super) doc: Document,
}

impl Record {
    pub(super) fn parse(key: &ViewKey, doc: Document) -> Result<Self> {
        let id = doc
            .get_str("_id")
            .map_err(|_| corrupt("a projection log record without an id"))?;
        let bad = || corrupt(format!("projection log record {id:?} of {key}"));
        let mut parts = id.rsplit(SEP);
        let slot = parts.next().and_then(|s| s.parse::<u32>().ok()).ok_or_else(bad)?;
        let tenure = parts.next().and_then(|s| s.parse::<u64>().ok()).ok_or_else(bad)?;
        let sealed = doc.get_bool("seal").unwrap_or(false);
        let commit = if sealed {
            None
        } else {
            Some(doc.get_str("c").map_err(|_| bad())?.to_string())
        };
        let group = match doc.get("g") {
            Some(Bson::Int64(g)) => u32::try_from(*g).map_err(|_| bad())?,
            None if sealed => slot,
            _ => return Err(bad()),
        };
        Ok(Self {
            seq: Seq { tenure, slot },
            commit,
            group,
            end: doc.get_bool("end").unwrap_or(false),
            doc,
        })
    }

    /// Whether this record is a seal (no commit).
    pub(super) fn is_seal(&self) -> bool {
        self.commit.is_none()
    }
}

/// The guarded writes of one record, applied under sequence number `seq`: the view
/// documents' `update` statements, and the state collection's (dead letters parked and
/// replayed).
pub(super) struct Applied {
    pub(super) views: Vec<Document>,
    pub(super) state: Vec<Document>,
}

/// The guarded statements that apply `record` under `seq` (the number of its group's last
/// record, so all of a commit's documents carry one number).
pub(super) fn statements(key: &ViewKey, record: &Document, seq: i64) -> Result<Applied> {
    let bad = |what: &str| corrupt(format!("a projection log record of {key}: {what}"));
    let mut views = Vec::new();
    for w in record.get_array("w").map_err(|_| bad("no writes"))? {
        let w = w.as_document().ok_or_else(|| bad("a write is not a document"))?;
        let id = w.get_str("i").map_err(|_| bad("a write without an id"))?;
        let replacement = if w.get_bool("del").unwrap_or(false) {
            doc! { "_del": true, "_s": seq }
        } else {
            let mut r = doc! { "d": w.get_document("d").map_err(|_| bad("a write without data"))?.clone() };
            if let Ok(x) = w.get_datetime("x") {
                r.insert("exp", *x);
            }
            r.insert("_s", seq);
            r
        };
        let mut q = older_than(seq);
        q.insert("_id", id);
        views.push(doc! { "q": q, "u": replacement, "upsert": true });
    }
    let mut state = Vec::new();
    for p in record.get_array("pk").map_err(|_| bad("no dead letters"))? {
        let mut p = p
            .as_document()
            .ok_or_else(|| bad("a dead letter is not a document"))?
            .clone();
        let id = p
            .get_str("_id")
            .map_err(|_| bad("a dead letter without an id"))?
            .to_string();
        p.remove("_id");
        p.insert("kind", "parked");
        p.insert("p", key.projection());
        p.insert("v", i64::from(key.version()));
        p.insert("live", true);
        p.insert("_s", seq);
        let mut q = older_than(seq);
        q.insert("_id", id);
        state.push(doc! { "q": q, "u": p, "upsert": true });
    }
    if let Ok(replayed) = record.get_array("rp") {
        for id in replayed {
            let id = id.as_str().ok_or_else(|| bad("a replayed id is not a string"))?;
            let mut q = older_than(seq);
            q.insert("_id", id);
            state.push(doc! { "q": q, "u": { "$set": { "live": false, "_s": seq } }, "upsert": false });
        }
    }
    Ok(Applied { views, state })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrsx_core::Checkpoint;
    use serde_json::json;

    fn key() -> ViewKey {
        ViewKey::new("orders", 3).expect("key")
    }

    #[test]
    fn ids_order_as_their_sequence_and_ranges_hold_only_their_own() {
        let k = key();
        let seqs = [
            Seq { tenure: 1, slot: 1 },
            Seq { tenure: 1, slot: 2 },
            Seq { tenure: 1, slot: 10 },
            Seq { tenure: 2, slot: 1 },
            Seq { tenure: 10, slot: 1 },
        ];
        for pair in seqs.windows(2) {
            assert!(record_id(&k, pair[0]) < record_id(&k, pair[1]), "{pair:?}");
            assert!(pair[0].number() < pair[1].number(), "{pair:?}");
        }
        let (lo, hi) = log_range(&k);
        let (tlo, thi) = tenure_range(&k, 2);
        for s in seqs {
            let id = record_id(&k, s);
            assert!(lo <= id && id < hi, "{id:?} in the log's range");
            assert_eq!(tlo <= id && id < thi, s.tenure == 2, "{id:?} in tenure 2's range");
        }
        // Another version, and a projection whose name extends this one's, fall outside.
        let other = record_id(&ViewKey::new("orders", 30).expect("key"), seqs[0]);
        let longer = record_id(&ViewKey::new("orders_x", 3).expect("key"), seqs[0]);
        for id in [other, longer] {
            assert!(!(lo <= id && id < hi), "{id:?} outside the log's range");
        }
    }

    #[test]
    fn a_large_commit_is_a_group_whose_last_record_carries_the_checkpoint() {
        let big = "x".repeat(3 * 1024 * 1024);
        let commit = Commit {
            writes: (0..5)
                .map(|i| ViewWrite {
                    id: format!("d{i}"),
                    change: ViewChange::Put {
                        data: json!({ "s": big }),
                        ttl: None,
                    },
                    position: Position::START,
                })
                .collect(),
            checkpoint: Some(Checkpoint::start(1)),
            ..Commit::default()
        };
        let records = encode_commit(&key(), &commit, false, "c1", Seq { tenure: 4, slot: 7 }).expect("encode");
        assert!(records.len() >= 2, "{} records", records.len());
        for (i, r) in records.iter().enumerate() {
            let parsed = Record::parse(&key(), r.clone()).expect("parse");
            assert_eq!(
                parsed.seq,
                Seq {
                    tenure: 4,
                    slot: 7 + i as u32
                }
            );
            assert_eq!(parsed.group, 7);
            assert_eq!(parsed.end, i + 1 == records.len());
            assert_eq!(r.get_str("cp").is_ok(), i + 1 == records.len());
            assert!(bson_len(r) < 16 * 1024 * 1024);
        }
        let writes: usize = records
            .iter()
            .map(|r| r.get_array("w").map(|w| w.len()).unwrap_or(0))
            .sum();
        assert_eq!(writes, 5);
    }

    #[test]
    fn every_applied_statement_is_guarded_by_the_sequence() {
        let commit = Commit {
            writes: vec![
                ViewWrite {
                    id: "a".into(),
                    change: ViewChange::Put {
                        data: json!({ "n": 1 }),
                        ttl: None,
                    },
                    position: Position::START,
                },
                ViewWrite {
                    id: "b".into(),
                    change: ViewChange::Delete,
                    position: Position::START,
                },
            ],
            replayed: vec![Position::START],
            ..Commit::default()
        };
        let records = encode_commit(&key(), &commit, false, "c", Seq { tenure: 1, slot: 1 }).expect("encode");
        let applied = statements(&key(), &records[0], 42).expect("statements");
        assert_eq!(applied.views.len(), 2);
        assert_eq!(applied.state.len(), 1);
        for s in applied.views.iter().chain(&applied.state) {
            let q = s.get_document("q").expect("q");
            assert_eq!(
                q.get_array("$or").expect("guard"),
                older_than(42).get_array("$or").expect("guard")
            );
        }
    }
}
