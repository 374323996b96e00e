//! [`MongoClientManager`]: the driver's pool, health, metrics, server capabilities and the
//! idempotent schema set-up.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrsx_core::raw::OperationStats;
use cqrsx_core::{ConnectFailure, Error, Result};
use mongodb::bson::{doc, Document};
use mongodb::event::command::CommandEvent;
use mongodb::event::EventHandler;
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Database, IndexModel};

use crate::capabilities::ServerCapabilities;
use crate::config::{redact_uri, MongoConfig};
use crate::error::{backend, command_code};

/// "NamespaceExists": the collection is already there.
const NAMESPACE_EXISTS: i32 = 48;
/// "IndexNotFound".
const INDEX_NOT_FOUND: i32 = 27;
/// "NotImplemented" (FerretDB for TTL indexes).
const NOT_IMPLEMENTED: i32 = 238;
/// "IndexOptionsConflict" / "IndexKeySpecsConflict": an index of that name exists differently.
const INDEX_CONFLICTS: [i32; 2] = [85, 86];
/// Answers to a collection or index creation that racing creations of the same schema can get,
/// and that a repeat of the (idempotent) creation gets past: InternalError (1: PostgreSQL's
/// "deadlock detected" under DocumentDB, when several clients create the same collections and
/// indexes at once), LockTimeout (24), WriteConflict (112), IndexBuildAlreadyInProgress (276),
/// InterruptedAtShutdown / InterruptedDueToReplStateChange (11600, 11602).
const DDL_RACES: [i32; 6] = [1, 24, 112, 276, 11600, 11602];
/// How often a schema statement is repeated after one of [`DDL_RACES`].
const DDL_ATTEMPTS: usize = 12;

/// A point-in-time view of the client's metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MongoMetrics {
    /// Store operations issued.
    pub operations: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Median latency over the recent window.
    pub p50: Duration,
    /// 95th percentile latency.
    pub p95: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

/// Server commands this client sent, counted from the driver's command monitoring: what a call
/// costs in server operations and in sequential round trips, whatever the server's speed.
#[derive(Debug, Default)]
pub(crate) struct CommandCounter {
    commands: AtomicU64,
    get_mores: AtomicU64,
    round_trips: AtomicU64,
    in_flight: AtomicI64,
}

/// Server commands a client sent so far ([`MongoClientManager::commands`]); subtract two
/// readings to get a call's cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommandCount {
    /// Server commands started (`find`, `insert`, `getMore`, …).
    pub commands: u64,
    /// Of those, `getMore`: the further batches of a cursor (so `commands - get_mores` is the
    /// number of queries and writes).
    pub get_mores: u64,
    /// Sequential round trips: commands that started while no other was in flight. Commands
    /// sent together (in parallel) share one.
    pub round_trips: u64,
}

impl std::ops::Sub for CommandCount {
    type Output = CommandCount;
    fn sub(self, earlier: CommandCount) -> CommandCount {
        CommandCount {
            commands: self.commands - earlier.commands,
            get_mores: self.get_mores - earlier.get_mores,
            round_trips: self.round_trips - earlier.round_trips,
        }
    }
}

impl CommandCounter {
    fn observe(&self, event: &CommandEvent) {
        match event {
            CommandEvent::Started(started) => {
                self.commands.fetch_add(1, Ordering::SeqCst);
                if started.command_name == "getMore" {
                    self.get_mores.fetch_add(1, Ordering::SeqCst);
                }
                if self.in_flight.fetch_add(1, Ordering::SeqCst) == 0 {
                    self.round_trips.fetch_add(1, Ordering::SeqCst);
                }
            }
            CommandEvent::Succeeded(_) | CommandEvent::Failed(_) => {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            _ => {}
        }
    }

    /// The counts so far.
    pub(crate) fn read(&self) -> CommandCount {
        CommandCount {
            commands: self.commands.load(Ordering::SeqCst),
            get_mores: self.get_mores.load(Ordering::SeqCst),
            round_trips: self.round_trips.load(Ordering::SeqCst),
        }
    }
}

/// The MongoDB connection every store shares. Cheap to clone.
#[derive(Clone)]
pub struct MongoClientManager {
    client: Client,
    database: Database,
    config: Arc<MongoConfig>,
    capabilities: Arc<ServerCapabilities>,
    stats: Arc<OperationStats>,
    commands: Arc<CommandCounter>,
}

impl std::fmt::Debug for MongoClientManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoClientManager")
            .field("config", &self.config)
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

impl MongoClientManager {
    /// Connects and pings (see `connect.rs`, which detects the capabilities next).
    pub(crate) async fn open(config: MongoConfig) -> Result<Self> {
        config.validate()?;
        let target = redact_uri(&config.uri);
        let mut options = tokio::time::timeout(config.connect_timeout, ClientOptions::parse(&config.uri))
            .await
            .map_err(|_| Error::Connect {
                failure: ConnectFailure::Timeout,
                target: target.clone(),
                source: None,
            })?
            .map_err(|e| crate::error::connect_error(&target, e))?;
        probe(&options, &target, config.connect_timeout).await?;
        options.max_pool_size = Some(config.max_pool_size);
        options.connect_timeout = Some(config.connect_timeout);
        options.server_selection_timeout = Some(config.server_selection_timeout);
        options.app_name.get_or_insert_with(|| "cqrsx".into());
        let commands = Arc::new(CommandCounter::default());
        let counter = Arc::clone(&commands);
        options.command_event_handler = Some(EventHandler::callback(move |event| counter.observe(&event)));
        let client = Client::with_options(options).map_err(backend)?;
        let database = client.database(&config.database);
        let manager = Self {
            client,
            database,
            config: Arc::new(config),
            capabilities: Arc::new(ServerCapabilities::default()),
            stats: Arc::new(OperationStats::default()),
            commands,
        };
        let first = tokio::time::timeout(
            manager.config.connect_timeout + Duration::from_millis(250),
            manager.database.run_command(doc! { "ping": 1 }),
        )
        .await;
        match first {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(crate::error::connect_error(&target, e)),
            Err(_) => {
                return Err(Error::Connect {
                    failure: ConnectFailure::Timeout,
                    target,
                    source: None,
                })
            }
        }
        Ok(manager)
    }

    /// The manager with the capabilities detected on its server (what the config assumes
    /// applied over them).
    pub(crate) fn with_detected(mut self, detected: ServerCapabilities) -> Self {
        self.capabilities = Arc::new(self.config.assume.apply(detected));
        tracing::info!(capabilities = ?self.capabilities, "connected to MongoDB");
        self
    }

    /// The config this manager was built from.
    pub fn config(&self) -> &MongoConfig {
        &self.config
    }

    /// What the server supports.
    pub fn capabilities(&self) -> &ServerCapabilities {
        &self.capabilities
    }

    /// The database every cqrsx collection lives in.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// The driver client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Round-trips a ping.
    pub async fn ping(&self) -> Result<Duration> {
        let started = Instant::now();
        self.track(self.database.run_command(doc! { "ping": 1 })).await?;
        Ok(started.elapsed())
    }

    /// Server commands sent so far (the driver's command monitoring): read before and after a
    /// call to see its cost in operations and sequential round trips.
    pub fn commands(&self) -> CommandCount {
        self.commands.read()
    }

    /// Current metrics.
    pub fn metrics(&self) -> MongoMetrics {
        let latencies = self.stats.latencies();
        MongoMetrics {
            operations: self.stats.operations(),
            errors: self.stats.errors(),
            p50: latencies.p50,
            p95: latencies.p95,
            p99: latencies.p99,
        }
    }

    /// Runs one driver call under the socket timeout, recording latency and outcome.
    pub(crate) async fn track<T>(
        &self,
        call: impl std::future::IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T> {
        self.track_raw(call).await.map_err(Tracked::into_error)
    }

    /// Runs a write that a stale copy of could undo: a guarded upsert of a view document or a
    /// read model, the checkpoint, a lease. Under the socket timeout where the server applies a
    /// conditional update of one document atomically; where it does not (FerretDB 1.x reads the
    /// document, tests the filter and writes it back as separate steps, see
    /// [`crate::ServerCapabilities::atomic_counters`]), a write given up on would keep running
    /// at the server beside its retry and the writes after it, and could land last with what
    /// it read before them. There it runs to its reply, or to the end of its connection (a
    /// killed server takes the write with it).
    pub(crate) async fn track_write<T>(
        &self,
        call: impl std::future::IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T> {
        self.track_write_raw(call).await.map_err(Tracked::into_error)
    }

    /// Like [`Self::track_write`], keeping the driver error.
    pub(crate) async fn track_write_raw<T>(
        &self,
        call: impl std::future::IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> std::result::Result<T, Tracked> {
        if self.capabilities.atomic_counters {
            return self.track_raw(call).await;
        }
        let started = Instant::now();
        let result = call.into_future().await.map_err(Tracked::Driver);
        self.stats.record(started.elapsed(), result.is_ok());
        result
    }

    /// Like [`Self::track`], but keeps the driver error for callers that inspect it (duplicate
    /// keys).
    pub(crate) async fn track_raw<T>(
        &self,
        call: impl std::future::IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> std::result::Result<T, Tracked> {
        let started = Instant::now();
        let result = tokio::time::timeout(self.config.socket_timeout, call.into_future()).await;
        let elapsed = started.elapsed();
        let result = match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Tracked::Driver(e)),
            Err(_) => Err(Tracked::Timeout(self.config.socket_timeout)),
        };
        self.stats.record(elapsed, result.is_ok());
        result
    }

    /// Creates the commits, counters and snapshots collections and every index they need.
    /// Idempotent and safe to run from many processes at once.
    pub async fn initialize_event_sourcing_schema(&self) -> Result<()> {
        let events = self.config.events_collection();
        let counters = self.config.counters_collection();
        let snapshots = self.config.snapshots_collection();
        for name in [&events, &counters, &snapshots] {
            self.create_collection(name).await?;
        }
        let unique = |name: &str| IndexOptions::builder().name(name.to_string()).unique(true).build();
        let plain = |name: &str| IndexOptions::builder().name(name.to_string()).build();
        // A commit's `_id` is its version slot, where racing writers collide; this index
        // serves stream reads and guards the slot a second time.
        self.create_commit_index(&events, doc! { "stream": 1, "v0": 1 }, "stream_v0")
            .await?;
        self.create_indexes(
            &events,
            vec![
                // One commit or filler per global position: a late writer meets the filler a
                // reader put in its place and reserves again.
                IndexModel::builder()
                    .keys(doc! { "pos": 1 })
                    .options(unique("position"))
                    .build(),
                // Where the server enforces unique array indexes, this one refuses an event id
                // twice in a stream (fillers, which have no stream, are left out).
                IndexModel::builder()
                    .keys(doc! { "stream": 1, "ids": 1 })
                    .options(if self.capabilities.unique_array_indexes {
                        IndexOptions::builder()
                            .name("stream_ids_unique".to_string())
                            .unique(true)
                            .partial_filter_expression(doc! { "stream": { "$exists": true } })
                            .build()
                    } else {
                        plain("stream_ids")
                    })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "types": 1, "ts": 1 })
                    .options(plain("types_time"))
                    .build(),
            ],
        )
        .await?;
        self.create_indexes(
            &snapshots,
            vec![IndexModel::builder()
                .keys(doc! { "s": 1, "v": 1 })
                .options(unique("stream_version"))
                .build()],
        )
        .await?;
        Ok(())
    }

    /// A unique index over fields of commits only: partial (`stream` exists), so that fillers,
    /// which have none of those fields, do not collide on them — a unique index holds a missing
    /// field as null, and the second filler would be refused (on MongoDB and DocumentDB; SQLite
    /// under FerretDB 1.x holds nulls as distinct). Where the server has no partial indexes
    /// (FerretDB 1.x answers NotImplemented) the plain index, which is right there. An older
    /// plain index of the same name is replaced.
    async fn create_commit_index(&self, collection: &str, keys: Document, name: &str) -> Result<()> {
        let coll = self.database.collection::<Document>(collection);
        let model = |partial: bool| {
            let mut options = IndexOptions::builder().name(name.to_string()).unique(true).build();
            if partial {
                options.partial_filter_expression = Some(doc! { "stream": { "$exists": true } });
            }
            IndexModel::builder().keys(keys.clone()).options(options).build()
        };
        match self.ddl("create index", || coll.create_index(model(true))).await {
            Ok(_) => Ok(()),
            Err(Tracked::Driver(e)) if command_code(&e) == Some(NOT_IMPLEMENTED) => {
                self.create_indexes(collection, vec![model(false)]).await
            }
            Err(Tracked::Driver(e)) if command_code(&e).is_some_and(|c| INDEX_CONFLICTS.contains(&c)) => {
                tracing::info!(
                    collection,
                    index = name,
                    "replacing a plain index with the partial one fillers need"
                );
                match self.ddl("drop index", || coll.drop_index(name)).await {
                    Ok(()) => {}
                    // Another client replaced it first.
                    Err(Tracked::Driver(e)) if command_code(&e) == Some(INDEX_NOT_FOUND) => {}
                    Err(e) => return Err(e.into_error()),
                }
                self.create_indexes(collection, vec![model(true)]).await
            }
            Err(e) => Err(e.into_error()),
        }
    }

    /// Runs one schema statement, repeating it (after a jittered pause that grows) while it
    /// meets a race with other clients creating the same schema.
    async fn ddl<T, F>(&self, what: &str, mut call: impl FnMut() -> F) -> std::result::Result<T, Tracked>
    where
        F: std::future::IntoFuture<Output = mongodb::error::Result<T>>,
    {
        let mut attempt = 0;
        loop {
            match self.track_raw(call()).await {
                Err(Tracked::Driver(e))
                    if attempt + 1 < DDL_ATTEMPTS && command_code(&e).is_some_and(|c| DDL_RACES.contains(&c)) =>
                {
                    attempt += 1;
                    tracing::debug!(what, attempt, error = %e, "schema statement raced another client; repeating it");
                    cqrsx_core::telemetry::record_backend_retry("mongo", "schema");
                    tokio::time::sleep(crate::backoff::ddl_backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    pub(crate) async fn create_collection(&self, name: &str) -> Result<()> {
        match self
            .ddl("create collection", || self.database.create_collection(name))
            .await
        {
            Ok(()) => Ok(()),
            Err(Tracked::Driver(e)) if command_code(&e) == Some(NAMESPACE_EXISTS) => Ok(()),
            Err(e) => Err(e.into_error()),
        }
    }

    pub(crate) async fn create_indexes(&self, collection: &str, indexes: Vec<IndexModel>) -> Result<()> {
        let coll = self.database.collection::<Document>(collection);
        for index in indexes {
            match self.ddl("create index", || coll.create_index(index.clone())).await {
                Ok(_) => {}
                Err(Tracked::Driver(e)) if command_code(&e) == Some(NOT_IMPLEMENTED) => {
                    tracing::warn!(collection, index = ?index.keys, error = %e, "server cannot build this index");
                }
                Err(Tracked::Driver(e)) if command_code(&e).is_some_and(|c| INDEX_CONFLICTS.contains(&c)) => {
                    return Err(Error::Config(format!(
                        "collection {collection} has an index that conflicts with cqrsx's {:?}: {e}",
                        index.keys
                    )));
                }
                Err(e) => return Err(e.into_error()),
            }
        }
        Ok(())
    }

    /// Creates one index; whether the server built it (capability probes).
    pub(crate) async fn create_indexes_quietly(&self, collection: &str, index: IndexModel) -> bool {
        let coll = self.database.collection::<Document>(collection);
        self.ddl("create index", || coll.create_index(index.clone()))
            .await
            .is_ok()
    }
}

/// Says hello to one server the way the driver will, in MongoDB's wire protocol (an `OP_MSG`
/// `hello`), and tells by the reply's header whether something answered as MongoDB.
async fn hello(address: &str, target: &str) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fail = |failure, source: Option<cqrsx_core::raw::BoxError>| Error::Connect {
        failure,
        target: target.to_string(),
        source,
    };
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| fail(ConnectFailure::from_io(e.kind()), Some(Box::new(e))))?;
    const OP_MSG: i32 = 2013;
    let body = mongodb::bson::to_vec(&doc! { "hello": 1, "$db": "admin" }).map_err(|e| Error::backend(false, e))?;
    let length = i32::try_from(16 + 4 + 1 + body.len()).unwrap_or(i32::MAX);
    let mut message = Vec::with_capacity(length as usize);
    for field in [length, 1, 0, OP_MSG, 0] {
        message.extend_from_slice(&field.to_le_bytes());
    }
    message.push(0);
    message.extend_from_slice(&body);
    let not_mongodb = |why: String| fail(ConnectFailure::Protocol, Some(Box::new(std::io::Error::other(why))));
    stream
        .write_all(&message)
        .await
        .map_err(|e| fail(ConnectFailure::from_io(e.kind()), Some(Box::new(e))))?;
    let mut header = [0u8; 16];
    stream.read_exact(&mut header).await.map_err(|e| {
        let failure = ConnectFailure::from_io(e.kind());
        fail(
            failure,
            Some(Box::new(std::io::Error::new(
                e.kind(),
                format!("no MongoDB reply: {e}"),
            ))),
        )
    })?;
    let op = i32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    if op != OP_MSG && op != 1 {
        return Err(not_mongodb(format!(
            "the server answered {:?}, not a MongoDB message",
            String::from_utf8_lossy(&header)
        )));
    }
    Ok(())
}

/// Checks each configured server before the driver's server selection (which reports every
/// cause alike): whether nothing listens (refused), nothing answers (timeout), the name does not
/// resolve, or something else than MongoDB answers. Passes when any server answers as MongoDB;
/// TLS connections and DNS seed lists are left to the driver.
async fn probe(options: &ClientOptions, target: &str, timeout: Duration) -> Result<()> {
    if options
        .tls
        .as_ref()
        .is_some_and(|t| matches!(t, mongodb::options::Tls::Enabled(_)))
    {
        return Ok(());
    }
    let mut failure = None;
    for host in &options.hosts {
        let mongodb::options::ServerAddress::Tcp { host, port } = host else {
            return Ok(());
        };
        let address = format!("{host}:{}", port.unwrap_or(27017));
        match tokio::time::timeout(timeout, hello(&address, target)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(_) => {
                failure.get_or_insert(Error::Connect {
                    failure: ConnectFailure::Timeout,
                    target: target.to_string(),
                    source: None,
                });
            }
        }
    }
    failure.map_or(Ok(()), Err)
}

/// A failed tracked call, before conversion.
pub(crate) enum Tracked {
    Driver(mongodb::error::Error),
    Timeout(Duration),
}

impl Tracked {
    pub(crate) fn into_error(self) -> Error {
        match self {
            Tracked::Driver(e) => backend(e),
            Tracked::Timeout(t) => Error::backend(true, TimeoutError(t)),
        }
    }
}

/// An operation that outlived the socket timeout.
#[derive(Debug, thiserror::Error)]
#[error("MongoDB operation timed out after {0:?}")]
pub struct TimeoutError(Duration);
