//! cqrsx developer tasks.
//!
//! - `cargo xtask test` — fmt, clippy, unit tests and the conformance suite on every backend,
//!   starting (or installing) the servers it needs.
//! - `cargo xtask bench` — benchmarks, each beside a raw-driver baseline measured in the same run.
//! - `cargo xtask mongo-engine` — builds (once) and runs FerretDB 2 + DocumentDB, for tests
//!   pointed at it by hand.

#![allow(clippy::print_stdout)] // a CLI: what it prints is its output

mod bench;
mod cleanup;
mod cmd;
mod docker;
mod engine;
mod faults;
mod mongo_engine;
mod providers;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "xtask", about = "cqrsx developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// A backend of the test and bench matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The in-memory backend in cqrsx-core (and everything that needs no server).
    Memory,
    /// Redis, standalone and a 3-node cluster.
    Redis,
    /// MongoDB (or a MongoDB-wire server such as FerretDB).
    Mongo,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Redis => "redis",
            Backend::Mongo => "mongo",
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Format check, clippy, unit tests and the conformance suite on the chosen backends.
    Test {
        /// Backends to test (comma-separated).
        #[arg(long, value_delimiter = ',', default_values = ["memory", "redis", "mongo"])]
        backend: Vec<Backend>,
        /// Skip the fmt and clippy steps.
        #[arg(long)]
        no_lint: bool,
        /// As root on Debian: install Docker's engine if missing, run it in a private network
        /// namespace, and take the container path (testcontainers) for Redis standalone on it.
        /// Everything it starts is removed when the run ends.
        #[arg(long)]
        local_engine: bool,
    },
    /// The fault suite alone: runner processes and servers killed, lease holders frozen,
    /// failing handlers, on servers of its own (also a group of `test`).
    Faults {
        /// Backends to run it on (comma-separated).
        #[arg(long, value_delimiter = ',', default_values = ["redis", "mongo"])]
        backend: Vec<Backend>,
        /// Skip the meta-test (each scenario against a deliberately broken runner or store).
        #[arg(long)]
        no_meta: bool,
        /// Run one scenario alone.
        #[arg(long, value_enum)]
        only: Option<faults::Scenario>,
    },
    /// One projection runner process of the fault suite (started by it).
    #[command(hide = true)]
    FaultWorker(faults::worker::WorkerArgs),
    /// Benchmarks with same-run baselines; writes target/bench/*.json and target/bench/report.md.
    Bench {
        /// Backends to benchmark (comma-separated).
        #[arg(long, value_delimiter = ',', default_values = ["memory", "redis", "mongo"])]
        backend: Vec<Backend>,
        /// Fewer iterations, for a smoke run.
        #[arg(long)]
        quick: bool,
        /// Only this group of rows (`crypto`: encrypted against plain appends and loads).
        #[arg(long)]
        only: Option<String>,
    },
    /// Builds (once, cached) and starts FerretDB 2 + PostgreSQL + DocumentDB from
    /// `CQRSX_DOCUMENTDB_SRC`, prints its URI and serves until its standard input closes.
    MongoEngine {
        /// Instead of serving: write, SIGKILL PostgreSQL and FerretDB, restart on the same data
        /// and check that the acknowledged writes are there.
        #[arg(long)]
        crash_check: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any thread exists: it sets DOCKER_HOST for testcontainers.
    docker::route_through_relay();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            cmd::say(&format!("xtask: cannot start a runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Test {
                backend,
                no_lint,
                local_engine,
            } => test::run(&backend, !no_lint, local_engine).await,
            Command::Bench { backend, quick, only } => bench::run(&backend, quick, only.as_deref()).await,
            Command::Faults { backend, no_meta, only } => test::faults_alone(&backend, !no_meta, only).await,
            Command::FaultWorker(args) => faults::worker::run(args).await,
            Command::MongoEngine { crash_check } => mongo_engine::serve(crash_check).await,
        }
    });
    drop(runtime);
    docker::remove_relay_socket();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            cmd::say(&format!("xtask: {e}"));
            ExitCode::FAILURE
        }
    }
}
