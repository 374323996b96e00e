//! Replaying parked events: asked through the handle in the runner's own process, or through
//! the store by an operator in another ([`crate::ProjectionStore::request_replay`]).

use std::sync::Arc;

use tracing::{info, warn};

use super::Run;
use crate::error::Result;
use crate::event::EventFilter;
use crate::projection::store::Lease;
use crate::projection::view::Batch;

impl Run {
    /// Replays the parked events when an operator asked for it since the last replay, and
    /// records the requests handled.
    pub(super) async fn replay_on_request(&mut self, lease: &Lease) -> Result<()> {
        let requests = self.store.replay_requests(&self.key).await?;
        if requests.requested <= requests.handled {
            return Ok(());
        }
        let replayed = self.replay_parked(lease).await?;
        info!(
            request = requests.requested,
            replayed, "replayed the parked events on request"
        );
        self.store.replay_handled(&self.key, requests.requested, replayed).await
    }

    /// Replays every parked event; how many were applied.
    pub(super) async fn replay_parked(&mut self, lease: &Lease) -> Result<u64> {
        let parked = self.store.parked(&self.key).await?;
        let mut replayed = 0;
        for p in &parked {
            let page = self.events.read_all(p.position, 1, &EventFilter::all()).await?;
            let mut batch = Batch::new(Arc::clone(&self.store), self.key.clone());
            let Some(event) = page.events.into_iter().find(|e| e.position == p.position) else {
                // The event is gone (its stream was truncated or deleted): nothing to apply.
                self.commit(lease, batch, None, vec![p.position]).await?;
                continue;
            };
            match self.apply_one(&mut batch, &event).await? {
                Ok(()) => {
                    self.commit(lease, batch, None, vec![p.position]).await?;
                    replayed += 1;
                }
                Err((error, _)) => warn!(position = %p.position, error = %error, "a parked event still fails"),
            }
        }
        let left = self.store.parked(&self.key).await?.len() as u64;
        self.metrics.parked.set(left as f64);
        self.status.send_modify(|s| s.parked = left);
        Ok(replayed)
    }
}
