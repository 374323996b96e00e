//! The live tail's wake-up where the server has change streams (a replica set or sharded
//! cluster): one task watches inserts into the commits collection and publishes the highest
//! commit number seen; waiting subscriptions watch that. Started on the first wait, stopped
//! with the store. Without change streams (FerretDB) subscriptions poll instead.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use cqrsx_core::raw::Wake;
use cqrsx_core::{Checkpoint, Result};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::Collection;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::event_store::layout::split;

struct Running {
    last: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

/// The change-stream tail of one event store.
pub(crate) struct Tail {
    commits: Collection<Document>,
    running: Mutex<Option<Running>>,
}

impl Drop for Tail {
    fn drop(&mut self) {
        let running = self.running.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = running.as_ref() {
            r.task.abort();
        }
    }
}

/// Follows inserts until aborted, re-opening the change stream after an error.
async fn follow(commits: Collection<Document>, last: watch::Sender<u64>) {
    let pipeline = [
        doc! { "$match": { "operationType": "insert" } },
        doc! { "$project": { "fullDocument.pos": 1, "operationType": 1, "documentKey": 1 } },
    ];
    loop {
        let mut changes = match commits.watch().pipeline(pipeline.clone()).await {
            Ok(changes) => changes,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open a change stream on the commits; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            match changes.try_next().await {
                Ok(Some(change)) => {
                    let pos = change.full_document.as_ref().and_then(|d| match d.get("pos") {
                        Some(Bson::Int64(p)) => u64::try_from(*p).ok(),
                        Some(Bson::Int32(p)) => u64::try_from(*p).ok(),
                        _ => None,
                    });
                    if let Some(pos) = pos {
                        last.send_if_modified(|seen| {
                            let newer = pos > *seen;
                            *seen = (*seen).max(pos);
                            newer
                        });
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "the change stream failed; re-opening it");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
            }
        }
    }
}

impl Tail {
    pub(crate) fn new(commits: Collection<Document>) -> Self {
        Self {
            commits,
            running: Mutex::new(None),
        }
    }

    fn watch(&self, reserved: u64) -> watch::Receiver<u64> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = running.as_ref().filter(|r| !r.task.is_finished()) {
            return r.last.clone();
        }
        let (tx, rx) = watch::channel(reserved);
        let task = tokio::spawn(follow(self.commits.clone(), tx));
        *running = Some(Running { last: rx.clone(), task });
        rx
    }

    /// Waits until a commit at or past the checkpoint was inserted. `reserved` is the counter's
    /// value when the wait began (what the tail starts from the first time).
    pub(crate) async fn wait(&self, checkpoint: &Checkpoint, reserved: u64, timeout: Duration) -> Result<Wake> {
        let (commit, index) = split(checkpoint.next(0).offset);
        // A checkpoint inside a commit has read all of it already: wait for the next one.
        let wanted = if index > 0 { commit + 1 } else { commit };
        let mut rx = self.watch(reserved);
        let woke = tokio::time::timeout(
            timeout,
            async move { rx.wait_for(|&seen| seen >= wanted).await.is_ok() },
        )
        .await;
        Ok(match woke {
            Ok(_) => Wake::Signalled,
            Err(_) => Wake::TimedOut,
        })
    }
}
