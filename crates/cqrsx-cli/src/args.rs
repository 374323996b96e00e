//! The command line: connection options, then one command.

use clap::{Args, Parser, Subcommand};

/// Inspect and operate a cqrsx store: streams, events, projections, snapshots, read models.
///
/// Connects with the same configuration the libraries read (`CQRSX_REDIS_URL`,
/// `CQRSX_REDIS_PREFIX`, `CQRSX_REDIS_PARTITIONS`, `CQRSX_MONGO_URI`, `CQRSX_MONGO_DATABASE`,
/// `CQRSX_MONGO_PREFIX`, …); the options below override it. Use the service's own settings:
/// a different key prefix, database or partition count reads another store.
#[derive(Debug, Parser)]
#[command(name = "cqrsx", version, about, long_about = None)]
pub struct Cli {
    /// Where the store is.
    #[command(flatten)]
    pub connection: Connection,
    /// Print JSON (one document; one line per event for `stream tail`) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the store is: one backend, from the options or the environment.
#[derive(Debug, Clone, Default, Args)]
pub struct Connection {
    /// A Redis server (`redis://host:port`); overrides `CQRSX_REDIS_URL`.
    #[arg(long, global = true, value_name = "URL")]
    pub redis: Option<String>,
    /// Redis Cluster nodes (`host:port,host:port`); overrides `CQRSX_REDIS_CLUSTER_NODES`.
    #[arg(long, global = true, value_name = "NODES")]
    pub redis_cluster: Option<String>,
    /// A MongoDB server (`mongodb://…`); overrides `CQRSX_MONGO_URI`.
    #[arg(long, global = true, value_name = "URI")]
    pub mongo: Option<String>,
    /// The Redis key prefix or the MongoDB collection prefix the service uses.
    #[arg(long, global = true)]
    pub prefix: Option<String>,
    /// The MongoDB database.
    #[arg(long, global = true)]
    pub database: Option<String>,
    /// The Redis partition count the service uses.
    #[arg(long, global = true)]
    pub partitions: Option<u32>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Streams: `streams list`.
    Streams {
        /// What to do with them.
        #[command(subcommand)]
        command: StreamsCommand,
    },
    /// One stream, or the live log: `stream show ID`, `stream tail`.
    Stream {
        /// What to do.
        #[command(subcommand)]
        command: StreamCommand,
    },
    /// Events across streams: `events by-type T --since TIME`.
    Events {
        /// What to do.
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Every projection version the store holds.
    Projections {
        /// What to do.
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// One projection: status, parked events, replay, rebuild.
    Projection {
        /// What to do.
        #[command(subcommand)]
        command: ProjectionCommand,
    },
    /// Snapshots of a stream: `snapshots list ID`.
    Snapshots {
        /// What to do.
        #[command(subcommand)]
        command: SnapshotsCommand,
    },
    /// Read-model collections: `read-models query COLLECTION`.
    #[command(name = "read-models")]
    ReadModels {
        /// What to do.
        #[command(subcommand)]
        command: ReadModelsCommand,
    },
}

/// `streams …`
#[derive(Debug, Subcommand)]
pub enum StreamsCommand {
    /// Lists streams with their versions (reads the global log: time grows with the events).
    List {
        /// Only streams of this aggregate type.
        #[arg(long = "type", value_name = "TYPE")]
        aggregate_type: Option<String>,
        /// At most this many streams.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
        limit: u64,
    },
}

/// `stream …`
#[derive(Debug, Subcommand)]
pub enum StreamCommand {
    /// A stream's events, oldest first.
    Show {
        /// The stream, as `Type/id`.
        id: String,
        /// From this version on.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// At most this many events.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
        limit: u64,
    },
    /// Follows the global log live, printing each event as it is committed.
    Tail {
        /// Only events of streams of this aggregate type.
        #[arg(long = "type", value_name = "TYPE")]
        aggregate_type: Option<String>,
        /// Only events of this event type.
        #[arg(long)]
        event_type: Option<String>,
        /// Where to start: `now` (the default), `start`, or a checkpoint (`12,0,7`: the next
        /// offset of each partition, as `projection status` shows it).
        #[arg(long, default_value = "now")]
        from: String,
        /// End after this many events.
        #[arg(long)]
        max: Option<u64>,
        /// End after this many seconds.
        #[arg(long = "for", value_name = "SECONDS")]
        duration: Option<f64>,
    },
}

/// `events …`
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Events of one type recorded since a time.
    ByType {
        /// The event type.
        event_type: String,
        /// `2026-12-07T10:00:00Z`, milliseconds since the epoch, or an age (`90s`, `15m`, `2h`,
        /// `7d`).
        #[arg(long)]
        since: String,
        /// At most this many events.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
        limit: u64,
    },
}

/// `projections …`
#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Every projection version: active or not, checkpoint, lag, lease holder, parked events.
    List,
}

/// Which projection version a command means.
#[derive(Debug, Clone, Args)]
pub struct Which {
    /// The projection's name.
    pub name: String,
    /// Its version (default: the active one, else the newest).
    #[arg(long)]
    pub version: Option<u32>,
}

/// `projection …`
#[derive(Debug, Subcommand)]
pub enum ProjectionCommand {
    /// State, checkpoint, lag per partition, events/s, last error, lease holder and expiry.
    Status {
        /// The projection.
        #[command(flatten)]
        which: Which,
        /// Seconds between the two checkpoint reads that measure events/s (0: do not measure).
        #[arg(long, default_value_t = 1.0)]
        sample: f64,
    },
    /// The parked events, with the handler's error.
    Parked {
        /// The projection.
        #[command(flatten)]
        which: Which,
    },
    /// Asks the runner holding the lease to apply the parked events again through its handler,
    /// and waits for the answer.
    ReplayParked {
        /// The projection.
        #[command(flatten)]
        which: Which,
        /// Seconds to wait for the runner (0: request and return).
        #[arg(long, default_value_t = 60.0)]
        wait: f64,
    },
    /// Drops the version's documents, checkpoint and parked events; the runner holding it
    /// builds it again from the first event (readers see it fill up again).
    Rebuild {
        /// The projection.
        #[command(flatten)]
        which: Which,
        /// Confirms the drop.
        #[arg(long)]
        yes: bool,
    },
}

/// `snapshots …`
#[derive(Debug, Subcommand)]
pub enum SnapshotsCommand {
    /// A stream's snapshots, newest first.
    List {
        /// The stream, as `Type/id`.
        id: String,
    },
}

/// `read-models …`
#[derive(Debug, Subcommand)]
pub enum ReadModelsCommand {
    /// Documents of a collection that match every filter.
    Query {
        /// The collection.
        collection: String,
        /// `field=value`, `field!=value`, `field>value`, `field>=value`, `field<value`,
        /// `field<=value`, `field^=prefix`, `field?` (exists); values are JSON, else strings.
        #[arg(long = "filter", value_name = "CONDITION")]
        filters: Vec<String>,
        /// `field` or `field:desc`; repeat for more keys.
        #[arg(long = "sort", value_name = "FIELD")]
        sort: Vec<String>,
        /// At most this many documents.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
        limit: u64,
    },
}
