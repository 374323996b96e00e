//! FerretDB 2 on PostgreSQL 15 with Microsoft's DocumentDB extension: the Mongo-wire server of
//! the engine row. Built once from the sources in `CQRSX_DOCUMENTDB_SRC` (the recipe of
//! `../shared/mongo-engine/README.md`) into a cache outside the clone, keyed by the sources'
//! checksums, and started on free loopback ports with a data directory of its own
//! ([`DocumentDbServer`]), so that a second run on the same machine starts in seconds.
//!
//! The cache, `${XDG_CACHE_HOME:-$HOME/.cache}/cqrsx/documentdb-<key>/`, holds the files the
//! extensions install (`files/`, laid out from `/`), the FerretDB binary (`bin/ferretdb`), the
//! build's log and how long it took (`built`). PostgreSQL loads extensions only from its own
//! directories, so the cached files are copied there (as root) when they are missing or differ.

mod build;
mod serve;
mod server;

use std::path::PathBuf;
use std::time::Duration;

pub use build::prepare;
pub use serve::serve;
pub use server::DocumentDbServer;

/// The FerretDB release, from the Go module proxy.
pub const FERRETDB_VERSION: &str = "v2.7.0";
/// The PostgreSQL major version the extensions are built for (Debian 12's).
pub(super) const PG_MAJOR: &str = "15";
/// Part of the cache key: change it when the build steps change, so old builds are not reused.
pub(super) const RECIPE: &str = "recipe 1: pgvector, pg_cron, documentdb core + api + extended_rum, with_llvm=no";
/// What the build and the server need from Debian (the recipe's list).
pub(super) const APT_PACKAGES: [&str; 13] = [
    "build-essential",
    "pkg-config",
    "postgresql-15",
    "postgresql-server-dev-15",
    "postgresql-15-postgis-3",
    "postgresql-15-rum",
    "libbson-dev",
    "libpcre2-dev",
    "libintelrdfpmath-dev",
    "libkrb5-dev",
    "libicu-dev",
    "systemtap-sdt-dev",
    "postgresql-client-15",
];
/// The settings of the recipe (the port, socket and address are given on the command line),
/// but for one: `synchronous_commit` stays on. With it off, a commit is acknowledged before its
/// WAL leaves PostgreSQL's shared memory, so a SIGKILL of the server loses acknowledged writes
/// (measured: 34 of the last 200 inserts). With it on and `fsync` off, the WAL is handed to the
/// kernel before the reply: a killed server loses nothing, a crashed machine may.
pub(super) const SETTINGS: &str = "\
# cqrsx: the DocumentDB engine's settings (../shared/mongo-engine/README.md)
max_connections = 300
shared_preload_libraries = 'pg_cron,pg_documentdb_core,pg_documentdb'
cron.database_name = 'postgres'
cron.log_run = off
cron.log_statement = off
documentdb.enableUserCrud = true
fsync = off
synchronous_commit = on
full_page_writes = off
documentdb.rum_library_load_option = 'require_documentdb_extended_rum'
documentdb.alternate_index_handler_name = 'extended_rum'
documentdb.defaultUseCompositeOpClass = true
documentdb.enableIndexOrderbyPushdown = true
documentdb.useFileBasedPersistedCursors = true
autovacuum_naptime = 1s
autovacuum_analyze_scale_factor = 0.01
";
/// How long a server may take to accept connections (a crash recovery on a loaded machine
/// included): a hang detector, not a speed check.
pub(super) const READY_WITHIN: Duration = Duration::from_secs(180);

pub(super) fn pg_bin(program: &str) -> PathBuf {
    PathBuf::from(format!("/usr/lib/postgresql/{PG_MAJOR}/bin")).join(program)
}
