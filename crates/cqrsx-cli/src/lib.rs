//! The `cqrsx` command line, as a library: [`run`] executes a parsed [`Cli`] against a set of
//! [`Stores`] and writes what it prints to any writer. The `cqrsx` binary connects the stores
//! from its options (or the `CQRSX_*` environment) and calls it; a service can embed the same
//! commands over the stores it already holds (an in-memory store only this way).
//!
//! Exit codes ([`Failure::code`]): 0 done; 1 the store failed or could not be reached; 2 bad
//! usage or input (nothing was sent); 3 no such stream, projection or collection; 4 a wait
//! ran out (a replay no runner handled in time).

mod args;
mod output;
mod projections;
mod sharded;
mod streams;

#[cfg(any(feature = "redis", feature = "mongo"))]
pub mod connect;

use std::io::Write;
use std::sync::Arc;

use cqrsx_core::{Error, EventStore, ProjectionStore, ReadStore, SnapshotStore};

pub use args::{
    Cli, Command, Connection, EventsCommand, ProjectionCommand, ProjectionsCommand, ReadModelsCommand,
    SnapshotsCommand, StreamCommand, StreamsCommand, Which,
};

/// The stores a command reads and operates.
pub struct Stores {
    /// The event store.
    pub events: Arc<dyn EventStore>,
    /// The snapshot store.
    pub snapshots: Arc<dyn SnapshotStore>,
    /// Projection state: versions, checkpoints, leases, parked events.
    pub checkpoints: Arc<dyn ProjectionStore>,
    /// Opens the read store of a read-model collection.
    #[allow(clippy::type_complexity)]
    pub read_models: Box<dyn Fn(&str) -> cqrsx_core::Result<Arc<dyn ReadStore>> + Send + Sync>,
}

/// Why a command failed: the exit code and a one-line message that names what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The process exit code (see the crate documentation).
    pub code: u8,
    /// One line.
    pub message: String,
}

impl Failure {
    /// Bad usage or input: exit code 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(2, message)
    }

    /// Nothing of that name: exit code 3.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(3, message)
    }

    /// A wait ran out: exit code 4.
    pub fn timed_out(message: impl Into<String>) -> Self {
        Self::new(4, message)
    }

    /// A store that could not be reached or configured, with the options that name it.
    pub(crate) fn connecting(error: Error, options: &str) -> Self {
        match error {
            // A setting that cannot work: nothing was sent.
            Error::Config(_) | Error::InvalidInput(_) => Self::usage(format!("{error} (check {options})")),
            Error::Connect { .. } => Self::new(1, format!("{error} (check {options})")),
            other => other.into(),
        }
    }

    /// Whether the command stopped because its reader closed the output: not an error (the
    /// binary exits 0 and prints nothing).
    pub fn is_closed_output(&self) -> bool {
        self.code == 0
    }

    fn new(code: u8, message: impl Into<String>) -> Self {
        let message: String = message.into();
        Self {
            code,
            message: message.split_whitespace().collect::<Vec<_>>().join(" "),
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        match &error {
            Error::InvalidInput(_) => Self::usage(error.to_string()),
            Error::NotFound(_) | Error::StreamDeleted { .. } => Self::not_found(error.to_string()),
            Error::Config(_) => Self::new(
                1,
                format!("{error} (check --redis, --mongo, --prefix or the CQRSX_* variables)"),
            ),
            Error::Connect { .. } => Self::new(1, format!("{error} (is the server up, and is its address right?)")),
            // A standalone connection to a Cluster node: the server answers MOVED.
            _ if error.to_string().contains("MOVED ") => Self::new(
                1,
                format!("{error} (this server is a Redis Cluster node: connect with --redis-cluster)"),
            ),
            _ => Self::new(1, error.to_string()),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<&clap::Error> for Failure {
    /// A command line clap refused, as one line: its first, and where to read more.
    fn from(error: &clap::Error) -> Self {
        let rendered = error.to_string();
        // The message is the first paragraph (a list of missing arguments included).
        let first: Vec<&str> = rendered
            .trim_start()
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect();
        let first = first.join(" ");
        let first = first.trim_start_matches("error: ");
        Self::usage(format!("{first} (see --help)"))
    }
}

/// Writes to the command's output; a closed pipe (`cqrsx stream tail | head -1`) ends the
/// command quietly ([`Failure::is_closed_output`]).
fn emit(out: &mut (dyn Write + Send), text: &str) -> Result<(), Failure> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => Failure::new(0, ""),
            _ => Failure::new(1, format!("cannot write the output: {e}")),
        })
}

/// A `--limit` as a count of items.
fn count(limit: u64) -> usize {
    usize::try_from(limit).unwrap_or(usize::MAX)
}

/// Runs one command against `stores`, writing what it prints to `out`.
pub async fn run(cli: &Cli, stores: &Stores, out: &mut (dyn Write + Send)) -> Result<(), Failure> {
    let output = match &cli.command {
        Command::Streams {
            command: StreamsCommand::List { aggregate_type, limit },
        } => streams::list(stores, aggregate_type.as_deref(), count(*limit)).await?,
        Command::Stream {
            command: StreamCommand::Show { id, from, limit },
        } => streams::show(stores, id, *from, count(*limit)).await?,
        Command::Stream {
            command:
                StreamCommand::Tail {
                    aggregate_type,
                    event_type,
                    from,
                    max,
                    duration,
                },
        } => {
            let tail = streams::Tail {
                aggregate_type: aggregate_type.clone(),
                event_type: event_type.clone(),
                from: from.clone(),
                max: *max,
                duration: *duration,
                json: cli.json,
            };
            return streams::tail(stores, &tail, out).await;
        }
        Command::Events {
            command:
                EventsCommand::ByType {
                    event_type,
                    since,
                    limit,
                },
        } => streams::by_type(stores, event_type, since, count(*limit)).await?,
        Command::Snapshots {
            command: SnapshotsCommand::List { id },
        } => streams::snapshots(stores, id).await?,
        Command::ReadModels {
            command:
                ReadModelsCommand::Query {
                    collection,
                    filters,
                    sort,
                    limit,
                },
        } => streams::query(stores, collection, filters, sort, *limit).await?,
        Command::Projections {
            command: ProjectionsCommand::List,
        } => projections::list(stores).await?,
        Command::Projection { command } => projections::run(stores, command).await?,
    };
    if cli.json {
        let text = serde_json::to_string_pretty(&output.json)
            .map_err(|e| Failure::new(1, format!("cannot print JSON: {e}")))?;
        emit(out, &format!("{text}\n"))
    } else {
        emit(out, &output.text)
    }
}
