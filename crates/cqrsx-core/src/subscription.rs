//! Catch-up subscriptions: every committed event from a [`Checkpoint`] on, over every partition,
//! as a [`futures::Stream`] that turns into a live tail once it has caught up, and says so.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{BoxStream, Stream, StreamExt};

use crate::checkpoint::{Checkpoint, Wake};
use crate::error::{Error, Result};
use crate::event::{AllPage, EventFilter, Position, RecordedEvent};
use crate::event_store::EventStore;

/// What a [`Subscription`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionMessage {
    /// Matching events of one partition in position order, and the checkpoint just past what
    /// this page read (it may have moved past events the filter dropped, so `events` can be
    /// empty).
    Events {
        /// The events.
        events: Vec<RecordedEvent>,
        /// Where the subscription stands after this page.
        checkpoint: Checkpoint,
    },
    /// Every partition has been read to its end: what follows is live.
    CaughtUp {
        /// Where the subscription stands.
        checkpoint: Checkpoint,
    },
    /// While live, a read came back full: the subscriber is behind and catches up again.
    FellBehind {
        /// Where the subscription stands.
        checkpoint: Checkpoint,
    },
}

/// How a [`Subscription`] reads.
#[derive(Debug, Clone)]
pub struct SubscriptionOptions {
    /// Where to start; the start of the log when `None`.
    pub from: Option<Checkpoint>,
    /// Which events to deliver.
    pub filter: EventFilter,
    /// Events per read (1 to 10,000).
    pub page_size: usize,
    /// Whether to follow the log live after catching up (true) or end there (false).
    pub live: bool,
    /// Longest wait on the backend's signal before reading again anyway.
    pub max_wait: Duration,
    /// First pause of a polling tail (backends without a signal); it doubles while nothing
    /// arrives, up to `max_poll`.
    pub min_poll: Duration,
    /// Longest pause of a polling tail.
    pub max_poll: Duration,
}

/// The largest page a subscription reads at once.
pub(crate) const MAX_PAGE_SIZE: usize = 10_000;

impl Default for SubscriptionOptions {
    fn default() -> Self {
        Self {
            from: None,
            filter: EventFilter::all(),
            page_size: 512,
            live: true,
            max_wait: Duration::from_secs(1),
            min_poll: Duration::from_millis(5),
            max_poll: Duration::from_millis(500),
        }
    }
}

impl SubscriptionOptions {
    /// Starts at `checkpoint`.
    pub fn with_start(mut self, checkpoint: Checkpoint) -> Self {
        self.from = Some(checkpoint);
        self
    }

    /// Delivers only events that pass `filter`.
    pub fn with_filter(mut self, filter: EventFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Reads `page_size` events at a time.
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size;
        self
    }

    /// Follows the log live after catching up (`true`, the default), or ends there (`false`).
    pub fn with_live(mut self, live: bool) -> Self {
        self.live = live;
        self
    }

    /// Polling pauses of the live tail where the backend has no signal.
    pub fn with_poll_between(mut self, min: Duration, max: Duration) -> Self {
        self.min_poll = min;
        self.max_poll = max;
        self
    }

    fn validate(&self, partitions: u32) -> Result<()> {
        if self.page_size == 0 || self.page_size > MAX_PAGE_SIZE {
            return Err(Error::InvalidInput(format!(
                "page size must be 1..={MAX_PAGE_SIZE}, got {}",
                self.page_size
            )));
        }
        if self.max_wait.is_zero() || self.min_poll.is_zero() || self.max_poll < self.min_poll {
            return Err(Error::InvalidInput(
                "subscription waits must be positive, and max_poll at least min_poll".into(),
            ));
        }
        if let Some(from) = &self.from {
            if from.partitions() != partitions {
                return Err(Error::InvalidInput(format!(
                    "checkpoint covers {} partitions, the store has {partitions}",
                    from.partitions()
                )));
            }
        }
        crate::event_store::validate_filter(&self.filter)
    }
}

/// A catch-up subscription: a [`Stream`] of [`SubscriptionMessage`]s.
///
/// It reads every partition from its checkpoint to the end, page by page (round-robin, so one
/// busy partition does not starve the others), says [`SubscriptionMessage::CaughtUp`], then
/// follows the log live: it waits on the backend's own signal where the backend has one
/// ([`crate::event_store::EventStoreCapabilities::live_signal`]) and otherwise polls, backing off from
/// `min_poll` to `max_poll` while nothing arrives. A live read that comes back full says
/// [`SubscriptionMessage::FellBehind`] and catches up again. Every matching committed event is
/// delivered exactly once, in position order per partition; an error ends the stream.
///
/// ```
/// use std::sync::Arc;
/// use futures::TryStreamExt;
/// use cqrsx_core::{memory::InMemoryEventStore, EventStore, ExpectedVersion, NewEvent, StreamId};
/// use cqrsx_core::subscription::{subscribe, SubscriptionOptions};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> cqrsx_core::Result<()> {
/// let store = Arc::new(InMemoryEventStore::new());
/// let stream = StreamId::new("User", "u-1")?;
/// store.append(&stream, ExpectedVersion::NoStream, vec![NewEvent::json("Created", &1)?]).await?;
/// let events: Vec<_> = subscribe(store, SubscriptionOptions::default().with_live(false))?
///     .events()
///     .try_collect()
///     .await?;
/// assert_eq!(events.len(), 1);
/// # Ok(()) }
/// ```
pub struct Subscription {
    inner: BoxStream<'static, Result<SubscriptionMessage>>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl Stream for Subscription {
    type Item = Result<SubscriptionMessage>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl Subscription {
    /// The events alone, flattened out of the pages (the signals are dropped).
    pub fn events(self) -> BoxStream<'static, Result<RecordedEvent>> {
        self.flat_map(|message| {
            let items: Vec<Result<RecordedEvent>> = match message {
                Ok(SubscriptionMessage::Events { events, .. }) => events.into_iter().map(Ok).collect(),
                Ok(_) => Vec::new(),
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(items)
        })
        .boxed()
    }
}

/// Subscribes to `store` with `options`. The options are checked at once; the checkpoint is
/// checked against the store's head on the first read.
pub fn subscribe(store: Arc<dyn EventStore>, options: SubscriptionOptions) -> Result<Subscription> {
    let partitions = store.capabilities().partitions;
    options.validate(partitions)?;
    let checkpoint = options.from.clone().unwrap_or_else(|| Checkpoint::start(partitions));
    let state = Reader {
        drained: vec![false; partitions as usize],
        turn: 0,
        mode: Mode::Starting,
        backoff: options.min_poll,
        queue: VecDeque::new(),
        done: false,
        store,
        options,
        checkpoint,
    };
    let inner = futures::stream::unfold(state, |mut reader| async move {
        let item = reader.next_message().await?;
        Some((item, reader))
    })
    .boxed();
    Ok(Subscription { inner })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Starting,
    CatchingUp,
    Live,
}

struct Reader {
    store: Arc<dyn EventStore>,
    options: SubscriptionOptions,
    checkpoint: Checkpoint,
    /// Per partition: the last catch-up read found nothing new.
    drained: Vec<bool>,
    /// The partition the next catch-up read goes to.
    turn: usize,
    mode: Mode,
    backoff: Duration,
    queue: VecDeque<SubscriptionMessage>,
    done: bool,
}

impl Reader {
    async fn next_message(&mut self) -> Option<Result<SubscriptionMessage>> {
        loop {
            if let Some(message) = self.queue.pop_front() {
                return Some(Ok(message));
            }
            if self.done {
                return None;
            }
            let step = match self.mode {
                Mode::Starting => self.start().await,
                Mode::CatchingUp => self.catch_up().await,
                Mode::Live => self.follow().await,
            };
            if let Err(e) = step {
                self.done = true;
                return Some(Err(e));
            }
        }
    }

    /// Checks the checkpoint against the store's head before the first read.
    async fn start(&mut self) -> Result<()> {
        let head = self.store.head().await?;
        self.checkpoint.check_against(&head)?;
        self.mode = Mode::CatchingUp;
        Ok(())
    }

    /// Applies a page: moves the checkpoint and queues the page if it moved.
    fn take(&mut self, from: Position, page: AllPage) -> bool {
        let moved = page.next.offset > from.offset;
        if moved {
            self.checkpoint.advance(page.next);
            self.queue.push_back(SubscriptionMessage::Events {
                events: page.events,
                checkpoint: self.checkpoint.clone(),
            });
        }
        moved
    }

    /// One catch-up read of the next partition that is not drained, or the switch to live.
    async fn catch_up(&mut self) -> Result<()> {
        let partitions = self.drained.len();
        let Some(p) = (0..partitions)
            .map(|i| (self.turn + i) % partitions)
            .find(|&p| !self.drained[p])
        else {
            self.queue.push_back(SubscriptionMessage::CaughtUp {
                checkpoint: self.checkpoint.clone(),
            });
            self.mode = Mode::Live;
            self.done = !self.options.live;
            self.backoff = self.options.min_poll;
            return Ok(());
        };
        self.turn = (p + 1) % partitions;
        let from = self.checkpoint.next(p as u32);
        let page = self
            .store
            .read_all(from, self.options.page_size, &self.options.filter)
            .await?;
        self.drained[p] = !self.take(from, page);
        Ok(())
    }

    /// One live round: read every partition (at once), then wait if nothing was new.
    async fn follow(&mut self) -> Result<()> {
        let reads = self.checkpoint.positions().map(|from| {
            let store = Arc::clone(&self.store);
            let filter = &self.options.filter;
            let page_size = self.options.page_size;
            async move { (from, store.read_all(from, page_size, filter).await) }
        });
        let mut moved = false;
        let mut full = false;
        for (from, page) in futures::future::join_all(reads).await {
            let page = page?;
            full |= page.events.len() >= self.options.page_size;
            moved |= self.take(from, page);
        }
        if full {
            self.queue.push_back(SubscriptionMessage::FellBehind {
                checkpoint: self.checkpoint.clone(),
            });
            self.mode = Mode::CatchingUp;
            self.drained.iter_mut().for_each(|d| *d = false);
            return Ok(());
        }
        if moved {
            self.backoff = self.options.min_poll;
            return Ok(());
        }
        match self
            .store
            .wait_for_append(&self.checkpoint, self.options.max_wait)
            .await?
        {
            Wake::Signalled | Wake::TimedOut => {}
            Wake::Unsupported => {
                tokio::time::sleep(self.backoff).await;
                self.backoff = (self.backoff * 2).min(self.options.max_poll);
            }
        }
        Ok(())
    }
}
