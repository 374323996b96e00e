//! The stream catalogue: per partition a sorted set of stream keys (`{prefix:p}:cat`, every
//! score 0, so `ZRANGEBYLEX` pages it in key byte order), written inside the append, import
//! and delete scripts on a stream's first write (one `ZADD` per stream, none per event), in the
//! stream's own hash slot. A listing merges the partitions' pages in key order, then reads each
//! listed stream's state.
//!
//! Stores written before the catalogue existed hold streams it does not name: they appear once
//! they are written again (an append to an existing stream does not add it; its first write
//! did). Such a store needs its catalogue filled once, from its partition logs' `s` fields.

use cqrsx_core::{Error, Result, StreamId, StreamInfo};
use fred::prelude::*;

use super::layout::{meta_version, tiny_version, MetaVersion};
use super::RedisEventStore;

impl RedisEventStore {
    /// [`cqrsx_core::EventStore::list_streams`].
    pub(super) async fn catalogue_page(&self, after: Option<&StreamId>, max_count: usize) -> Result<Vec<StreamInfo>> {
        if max_count == 0 {
            return Ok(Vec::new());
        }
        // `(` makes the bound exclusive; members are compared as bytes.
        let min = after.map_or_else(|| "-".to_string(), |a| format!("({}", a.key()));
        let count = i64::try_from(max_count).unwrap_or(i64::MAX);
        let pages = (0..self.keys.partitions()).map(|p| {
            let client = self.client.client().clone();
            let key = self.keys.catalogue(p);
            let min = min.clone();
            async move {
                self.client
                    .track(client.zrangebylex::<Vec<String>, _, _, _>(key, min, "+", Some((0, count))))
                    .await
            }
        });
        let mut keys = Vec::new();
        for page in futures::future::join_all(pages).await {
            keys.extend(page?);
        }
        keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        keys.truncate(max_count);
        let states = keys.iter().map(|key| async move {
            let stream = StreamId::parse(key)
                .map_err(|e| Error::Integrity(format!("the stream catalogue names {key:?}: {e}")))?;
            let (version, deleted) = self.stream_state(&stream).await?;
            Ok::<_, Error>(StreamInfo {
                stream,
                version,
                deleted,
            })
        });
        futures::future::join_all(states).await.into_iter().collect()
    }

    /// A stream's version and whether it is deleted (0 and live for a stream never written).
    pub(super) async fn stream_state(&self, stream: &StreamId) -> Result<(u64, bool)> {
        let keys = self.keys.stream(stream.key());
        let client = self.client.client();
        // Its bucket first: a tiny stream's state only ever moves from there to its meta hash,
        // so a meta hash read after it is never older.
        let tiny: Option<Vec<u8>> = self.client.track(client.hget(keys.bucket, stream.key())).await?;
        let meta: Option<Vec<u8>> = self.client.track(client.hget(keys.meta, "v")).await?;
        if let (None, Some(tiny)) = (&meta, tiny) {
            let version = tiny_version(&tiny).ok_or_else(|| {
                Error::Integrity(format!(
                    "stream {stream} has the tiny state {:?}",
                    String::from_utf8_lossy(&tiny)
                ))
            })?;
            return Ok((version, false));
        }
        match meta.as_deref().map(meta_version) {
            None => Ok((0, false)),
            Some(Some(MetaVersion::Live(version))) => Ok((version, false)),
            Some(Some(MetaVersion::Deleted(version))) => Ok((version, true)),
            Some(None) => Err(Error::Integrity(format!(
                "stream {stream} has version {:?}",
                String::from_utf8_lossy(meta.as_deref().unwrap_or_default())
            ))),
        }
    }
}
