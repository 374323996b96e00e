//! The runner's lease renewal: a task that renews the lease every third of its TTL and reports
//! when another runner took it over.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

use crate::error::Error;
use crate::projection::store::{Lease, ProjectionStore};

/// Renews a lease every third of its TTL until dropped; reports a loss.
pub(super) struct Renewal {
    task: tokio::task::JoinHandle<()>,
    pub(super) lost: watch::Receiver<Option<String>>,
}

impl Drop for Renewal {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Renewal {
    pub(super) fn start(store: Arc<dyn ProjectionStore>, lease: Lease, ttl: Duration) -> Self {
        let (tx, lost) = watch::channel(None);
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                match store.renew(&lease, ttl).await {
                    Ok(()) => {}
                    Err(Error::LeaseLost { .. }) => {
                        let _ = tx.send(Some(format!("lease of {} was taken over", lease.key)));
                        return;
                    }
                    Err(e) => warn!(error = %e, "could not renew the projection lease; retrying"),
                }
            }
        });
        Self { task, lost }
    }
}
