//! [`FileArchive`]: archived segments as zstd-compressed newline-delimited JSON files.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{new_part, Archive};
use crate::error::{Error, Result};
use crate::event::{ContentType, Metadata, Position, RecordedEvent, Timestamp};
use crate::stream::StreamId;

/// The zstd level segments are written with.
const LEVEL: i32 = 3;
/// Longest encoded path component kept as is; longer ones are shortened with a hash.
const MAX_COMPONENT: usize = 200;

/// An [`Archive`] in a directory: one file per archived segment of a stream.
///
/// # Format
///
/// A segment of stream `Type/id` holding versions `first..=last` is the file
/// `{root}/{Type}/{id}/{first}-{last}.ndjson.zst`, where `first` and `last` are written in
/// decimal with 20 digits (zero-padded, so names sort by version), and `{Type}` and `{id}` are
/// the aggregate type and id with every byte other than `A-Z a-z 0-9 _ -` written as `%XX`
/// (upper-case hex; so `.` is `%2E` and no component is `.` or `..`); a component longer than
/// 200 bytes once encoded is cut to its first 160 bytes, then `~` and the 16 hex digits of the
/// FNV-1a 64 hash of the unencoded name (each record names its stream, and a read checks it).
///
/// The file is a zstd frame holding UTF-8 text: one JSON object per event, in version order,
/// each followed by `\n`:
///
/// ```text
/// {"stream":"Type/id","version":3,"event_id":"0190…","event_type":"Added","schema_version":1,
///  "content_type":"application/json","payload_hex":"7b226e223a337d","metadata":{…},
///  "recorded_at_ms":1733580000000,"position":{"partition":0,"offset":17}}
/// ```
///
/// `payload_hex` is the payload's bytes in lower-case hex; `metadata` is [`Metadata`]'s serde
/// form (`correlation_id`, `causation_id`, `user`, as [`Metadata::to_json`] writes it);
/// `position` is where the event was in the store it was archived from (not a position of any
/// log now). A segment is written to a temporary file `.{name}.tmp-{uuid}` in the same
/// directory, fsynced, renamed into place, and the directory fsynced: a segment file is
/// complete or absent. Files whose names do not have the segment form (such as temporary files
/// left by a crash) are ignored.
///
/// Puts are serialised within one `FileArchive` (clones share the lock); two processes must
/// not archive the same stream into one directory at the same time.
#[derive(Clone)]
pub struct FileArchive {
    root: PathBuf,
    lock: Arc<Mutex<()>>,
}

/// One line of a segment.
#[derive(Serialize, Deserialize)]
struct Line {
    stream: String,
    version: u64,
    event_id: Uuid,
    event_type: String,
    schema_version: u32,
    content_type: String,
    payload_hex: String,
    metadata: Metadata,
    recorded_at_ms: u64,
    position: Position,
}

impl FileArchive {
    /// An archive in directory `root` (created when the first segment is written).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            lock: Arc::new(Mutex::new(())),
        }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a stream's segments.
    pub fn stream_dir(&self, stream: &StreamId) -> PathBuf {
        self.root
            .join(component(stream.aggregate_type()))
            .join(component(stream.id()))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(FileArchive) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || work(this))
            .await
            .map_err(|e| Error::backend(false, format!("file archive task failed: {e}")))?
    }

    fn put_sync(&self, stream: &StreamId, events: &[RecordedEvent]) -> Result<()> {
        let _guard = self
            .lock
            .lock()
            .map_err(|_| Error::Integrity("file archive lock poisoned".into()))?;
        let dir = self.stream_dir(stream);
        let archived = segments(&dir)?.last().map_or(0, |s| s.1);
        let check = new_part(stream, events, archived, |from, n| {
            let read = self.read_sync(stream, from, n);
            async move { read }
        });
        // Every await inside is on a ready future: it completes in the first poll.
        let rest = futures::FutureExt::now_or_never(check)
            .ok_or_else(|| Error::Integrity("file archive check did not complete".into()))??;
        let (Some(first), Some(last)) = (rest.first(), rest.last()) else {
            return Ok(());
        };
        let mut text = Vec::new();
        for event in rest {
            serde_json::to_writer(&mut text, &line(event)).map_err(|e| Error::serialization("archive line", e))?;
            text.push(b'\n');
        }
        let packed = zstd::encode_all(text.as_slice(), LEVEL).map_err(|e| io_error("compress segment", e))?;
        fs::create_dir_all(&dir).map_err(|e| io_error("create archive directory", e))?;
        let name = format!("{:020}-{:020}.ndjson.zst", first.version, last.version);
        let tmp = dir.join(format!(".{name}.tmp-{}", Uuid::now_v7().simple()));
        let written = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(&packed)?;
            file.sync_all()?;
            fs::rename(&tmp, dir.join(&name))?;
            File::open(&dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_error("write archive segment", e));
        }
        tracing::debug!(stream = %stream, first = first.version, last = last.version, "archived segment");
        Ok(())
    }

    fn read_sync(&self, stream: &StreamId, from: u64, max_count: usize) -> Result<Vec<RecordedEvent>> {
        let dir = self.stream_dir(stream);
        let mut out: Vec<RecordedEvent> = Vec::new();
        for (first, last, path) in segments(&dir)? {
            if out.len() >= max_count {
                break;
            }
            if last < from {
                continue;
            }
            let _ = first;
            let file = File::open(&path).map_err(|e| io_error("open archive segment", e))?;
            let decoder = zstd::Decoder::new(file).map_err(|e| io_error("open archive segment", e))?;
            for text in BufReader::new(decoder).lines() {
                let text = text.map_err(|e| io_error("read archive segment", e))?;
                if text.is_empty() {
                    continue;
                }
                let event = event_of(stream, &text, &path)?;
                let next = out.last().map_or(from, |e| e.version + 1);
                if event.version < next {
                    // Versions archived twice by racing puts: the copies must agree.
                    if let Some(seen) = out.iter().find(|e| e.version == event.version) {
                        if seen.event_id != event.event_id {
                            return Err(Error::Integrity(format!(
                                "archive of {stream} holds two events at version {}",
                                event.version
                            )));
                        }
                    }
                    continue;
                }
                out.push(event);
                if out.len() >= max_count {
                    break;
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Archive for FileArchive {
    async fn put(&self, stream: &StreamId, events: &[RecordedEvent]) -> Result<()> {
        let (stream, events) = (stream.clone(), events.to_vec());
        self.blocking(move |this| this.put_sync(&stream, &events)).await
    }

    async fn read(&self, stream: &StreamId, from_version: u64, max_count: usize) -> Result<Vec<RecordedEvent>> {
        if max_count == 0 {
            return Ok(Vec::new());
        }
        let stream = stream.clone();
        self.blocking(move |this| this.read_sync(&stream, from_version, max_count))
            .await
    }

    async fn archived_version(&self, stream: &StreamId) -> Result<u64> {
        let dir = self.stream_dir(stream);
        self.blocking(move |_| Ok(segments(&dir)?.last().map_or(0, |s| s.1)))
            .await
    }
}

fn io_error(what: &str, e: std::io::Error) -> Error {
    Error::backend(
        matches!(e.kind(), std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut),
        format!("{what}: {e}"),
    )
}

/// A stream's segments, `(first, last, path)`, by first version; none for a missing directory.
fn segments(dir: &Path) -> Result<Vec<(u64, u64, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("list archive directory", e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list archive directory", e))?;
        let name = entry.file_name();
        let Some(range) = name.to_str().and_then(|n| n.strip_suffix(".ndjson.zst")) else {
            continue;
        };
        let Some((first, last)) = range.split_once('-') else {
            continue;
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(first) || !digits(last) {
            continue;
        }
        if let (Ok(first), Ok(last)) = (first.parse::<u64>(), last.parse::<u64>()) {
            if first <= last {
                found.push((first, last, entry.path()));
            }
        }
    }
    found.sort_by_key(|s| (s.0, s.1));
    Ok(found)
}

/// A name as a path component (see [`FileArchive`]'s format).
fn component(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    if out.len() > MAX_COMPONENT {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in name.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        out.truncate(160);
        out.push_str(&format!("~{hash:016x}"));
    }
    out
}

fn line(event: &RecordedEvent) -> Line {
    let mut payload_hex = String::with_capacity(event.payload.len() * 2);
    for byte in &event.payload {
        payload_hex.push_str(&format!("{byte:02x}"));
    }
    Line {
        stream: event.stream.key().to_string(),
        version: event.version,
        event_id: event.event_id,
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        content_type: event.content_type.as_str().to_string(),
        payload_hex,
        metadata: event.metadata.clone(),
        recorded_at_ms: event.recorded_at.as_millis(),
        position: event.position,
    }
}

fn event_of(stream: &StreamId, text: &str, path: &Path) -> Result<RecordedEvent> {
    let corrupt = |what: String| Error::Integrity(format!("archive segment {}: {what}", path.display()));
    let line: Line = serde_json::from_str(text).map_err(|e| corrupt(format!("unreadable line: {e}")))?;
    if line.stream != stream.key() {
        return Err(corrupt(format!("holds stream {}, not {stream}", line.stream)));
    }
    let hex = line.payload_hex.as_bytes();
    if hex.len() % 2 != 0 {
        return Err(corrupt("payload_hex has an odd length".into()));
    }
    let nibble = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let payload = hex
        .chunks(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| corrupt("payload_hex is not lower-case hex".into()))?;
    Ok(RecordedEvent {
        event_id: line.event_id,
        stream: stream.clone(),
        version: line.version,
        position: line.position,
        event_type: line.event_type,
        schema_version: line.schema_version,
        content_type: ContentType::parse(&line.content_type)?,
        payload,
        metadata: line.metadata,
        recorded_at: Timestamp(line.recorded_at_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_safe_file_names() {
        assert_eq!(component("Order"), "Order");
        assert_eq!(component("a.b/c"), "a%2Eb%2Fc");
        assert_eq!(component(".."), "%2E%2E");
        let long = component(&"ü".repeat(200));
        assert!(long.len() <= MAX_COMPONENT && long.contains('~'), "{long}");
        assert_ne!(component(&"x".repeat(300)), component(&format!("{}y", "x".repeat(299))));
    }
}
