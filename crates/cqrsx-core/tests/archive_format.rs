//! The file archive's documented format, read with nothing but zstd and serde_json, and reads
//! across the archive and the hot store in small pages.

use std::sync::Arc;

use cqrsx_core::archive::{Archive, ArchivedEventStore, FileArchive};
use cqrsx_core::memory::InMemoryEventStore;
use cqrsx_core::{ContentType, Error, EventStore, ExpectedVersion, Metadata, NewEvent, StreamId};

fn temp_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("cqrsx-archive-test-{}", cqrsx_core::Uuid::now_v7().simple()))
}

#[tokio::test]
async fn a_segment_is_zstd_ndjson_with_the_documented_fields() -> cqrsx_core::Result<()> {
    let hot = Arc::new(InMemoryEventStore::new());
    let stream = StreamId::new("Order", "a.b/c")?;
    hot.append(
        &stream,
        ExpectedVersion::NoStream,
        vec![
            NewEvent::json("Opened", &serde_json::json!({"n": 1}))?.with_metadata(Metadata::correlated("k")),
            NewEvent::new("Packed", ContentType::MessagePack, vec![0x81, 0xa1, 0x6b, 0x05]).with_schema_version(3),
            NewEvent::json("Closed", &serde_json::json!({"n": 3}))?,
        ],
    )
    .await?;
    let events = hot.read_stream(&stream, 1, 10).await?;
    let dir = temp_dir();
    let archive = FileArchive::new(&dir);
    archive.put(&stream, &events).await?;
    archive.put(&stream, &events[1..]).await?; // a resumed put: nothing new

    let stream_dir = dir.join("Order").join("a%2Eb%2Fc");
    assert_eq!(archive.stream_dir(&stream), stream_dir);
    let names: Vec<String> = std::fs::read_dir(&stream_dir)
        .map_err(|e| Error::backend(false, e))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| Error::backend(false, e))?;
    assert_eq!(
        names,
        vec!["00000000000000000001-00000000000000000003.ndjson.zst".to_string()]
    );
    let packed = std::fs::read(stream_dir.join(&names[0])).map_err(|e| Error::backend(false, e))?;
    let text = String::from_utf8(zstd::decode_all(packed.as_slice()).map_err(|e| Error::backend(false, e))?)
        .map_err(|e| Error::backend(false, e))?;
    assert!(text.ends_with('\n'));
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .map_err(|e| Error::serialization("line", e))?;
    assert_eq!(lines.len(), 3);
    let mut keys: Vec<&str> = lines[1]
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "content_type",
            "event_id",
            "event_type",
            "metadata",
            "payload_hex",
            "position",
            "recorded_at_ms",
            "schema_version",
            "stream",
            "version"
        ]
    );
    assert_eq!(lines[1]["payload_hex"], "81a16b05");
    assert_eq!(lines[1]["content_type"], "application/msgpack");
    assert_eq!(lines[1]["schema_version"], 3);
    assert_eq!(lines[0]["stream"], "Order/a.b/c");
    assert_eq!(lines[0]["event_id"], events[0].event_id.to_string());
    assert_eq!(lines[2]["recorded_at_ms"], events[2].recorded_at.as_millis());
    assert_eq!(archive.read(&stream, 1, 10).await?, events);

    // A put that would leave a gap, and other ids at archived versions, are refused.
    let mut later = events[2].clone();
    later.version = 5;
    assert!(matches!(archive.put(&stream, &[later]).await, Err(Error::Integrity(_))));
    let mut forged = events[2].clone();
    forged.event_id = cqrsx_core::Uuid::now_v7();
    assert!(matches!(
        archive.put(&stream, &[forged]).await,
        Err(Error::EventIdReused { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn reads_page_across_the_archive_and_the_hot_store() -> cqrsx_core::Result<()> {
    let hot = Arc::new(InMemoryEventStore::new());
    let stream = StreamId::new("Order", "o1")?;
    for v in 0..30u64 {
        hot.append(
            &stream,
            ExpectedVersion::Exact(v),
            vec![NewEvent::json("Added", &serde_json::json!({"n": v + 1}))?],
        )
        .await?;
    }
    let all = hot.read_stream(&stream, 1, 100).await?;
    let dir = temp_dir();
    let archive = Arc::new(FileArchive::new(&dir));
    archive.put(&stream, &all[..6]).await?;
    archive.put(&stream, &all[6..17]).await?;
    assert_eq!(hot.truncate_before(&stream, 18).await?, 17);
    let through = ArchivedEventStore::new(hot.clone(), archive.clone());
    for page in [1, 4, 6, 7, 17, 100] {
        for from in [0, 1, 5, 17, 18, 29] {
            let mut got = Vec::new();
            let mut next = from;
            loop {
                let read = through.read_stream(&stream, next, page).await?;
                assert!(read.len() <= page);
                let Some(last) = read.last() else { break };
                next = last.version + 1;
                got.extend(read);
            }
            let want: Vec<u64> = all.iter().map(|e| e.version).filter(|v| *v >= from.max(1)).collect();
            assert_eq!(
                got.iter().map(|e| e.version).collect::<Vec<_>>(),
                want,
                "page {page} from {from}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
