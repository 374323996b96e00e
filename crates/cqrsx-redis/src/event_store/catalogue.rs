//! The stream catalogue: per partition a sorted set of stream keys (`{prefix:p}:cat`, every
//! score 0, so `ZRANGEBYLEX` pages it in key byte order), written inside the append, import
//! and delete scripts on a stream's first write (one `ZADD` per stream, none per event), in the
//! stream's own hash slot. A listing merges the partitions' pages in key order, then reads each
//! listed stream's state.
//!
//! Stores written before the catalogue existed hold streams it does not name (an append to an
//! existing stream does not add it; its first write does):
//! [`RedisEventStore::fill_catalogue`] enters them, once.

use cqrsx_core::raw::StreamInfo;
use cqrsx_core::{Error, Result, StreamId};
use fred::prelude::*;
use futures::TryStreamExt;

use crate::keys::BUCKETS;

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

    /// Enters every stream of the store in the stream catalogue
    /// ([`cqrsx_core::EventStore::list_streams`]): needed once for a store written before the
    /// catalogue existed, harmless (and a pass over the store's keys) otherwise. Finds tiny
    /// streams in their partitions' buckets and the others by their meta hashes (a `SCAN` of
    /// every node), so deleted streams and streams whose events are all truncated are found
    /// too; a stream whose meta hash holds only a truncation point (truncated before it was
    /// ever written) is left out. Safe beside writers: an entry is only ever added. Returns
    /// how many streams it found.
    pub async fn fill_catalogue(&self) -> Result<u64> {
        let client = self.client.client();
        let mut found = 0;
        for p in 0..self.keys.partitions() {
            let mut streams: Vec<String> = Vec::new();
            let buckets: Vec<u32> = (0..BUCKETS).collect();
            for chunk in buckets.chunks(64) {
                let reads = chunk.iter().map(|&b| {
                    let key = self.keys.bucket(p, b);
                    async move { self.client.track(client.hkeys::<Vec<String>, _>(key)).await }
                });
                for fields in futures::future::join_all(reads).await {
                    streams.extend(fields?);
                }
            }
            let prefix = self.keys.meta_prefix(p);
            let pattern = format!("{}*", glob_escape(&prefix));
            let keys: Vec<Key> = if self.client.config().is_cluster() {
                client
                    .scan_cluster_buffered(pattern, Some(1000), None)
                    .try_collect()
                    .await
            } else {
                client.scan_buffered(pattern, Some(1000), None).try_collect().await
            }
            .map_err(crate::error::backend)?;
            let mut metas = Vec::new();
            for key in keys {
                let key = key.into_string().unwrap_or_default();
                if let Some(stream) = key.strip_prefix(&prefix) {
                    metas.push(stream.to_string());
                }
            }
            for chunk in metas.chunks(64) {
                let reads = chunk.iter().map(|stream| {
                    let key = format!("{prefix}{stream}");
                    async move { self.client.track(client.hexists::<bool, _, _>(key, "v")).await }
                });
                let written = futures::future::join_all(reads).await;
                for (stream, has) in chunk.iter().zip(written) {
                    if has? {
                        streams.push(stream.clone());
                    }
                }
            }
            // Only keys this layout names a stream by (a bucket field or meta key of another
            // shape is not a stream).
            streams.retain(|s| StreamId::parse(s).is_ok_and(|id| self.keys.partition_of(id.key()) == p));
            streams.sort_unstable();
            streams.dedup();
            found += streams.len() as u64;
            for chunk in streams.chunks(500) {
                let members: Vec<(f64, String)> = chunk.iter().map(|s| (0.0, s.clone())).collect();
                let _: i64 = self
                    .client
                    .track(client.zadd(self.keys.catalogue(p), None, None, false, false, members))
                    .await?;
            }
        }
        Ok(found)
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

/// `text` as a `SCAN` pattern matching itself only.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::glob_escape;

    #[test]
    fn a_prefix_matches_itself_as_a_pattern() {
        assert_eq!(glob_escape("{app:3}:m:"), "{app:3}:m:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
