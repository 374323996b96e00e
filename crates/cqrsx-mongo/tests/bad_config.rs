//! The MongoDB part of the bad-input catalogue: every config setting and environment variable
//! at and past its edges is refused with `Error::Config`, naming the setting, before anything
//! connects.

use std::collections::HashMap;
use std::time::Duration;

use cqrsx_core::Error;
use cqrsx_mongo::MongoConfig;

/// A kind: its name, the variables set, what the error must name.
type VariableCase = (&'static str, Vec<(&'static str, &'static str)>, &'static str);

fn from(vars: &[(&str, &str)]) -> Result<MongoConfig, Error> {
    let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    MongoConfig::from_lookup(|name| vars.get(name).cloned())
}

#[test]
fn every_bad_setting_and_variable_is_a_config_error_naming_it() {
    let (zero, second) = (Duration::ZERO, Duration::from_secs(1));
    let settings: Vec<(&str, MongoConfig, &str)> = vec![
        (
            "uri of another scheme",
            MongoConfig::default().with_uri("http://x"),
            "uri",
        ),
        ("redis uri", MongoConfig::default().with_uri("redis://x"), "uri"),
        ("empty database", MongoConfig::default().with_database(""), "database"),
        (
            "database with a dot",
            MongoConfig::default().with_database("a.b"),
            "database",
        ),
        (
            "database with $",
            MongoConfig::default().with_database("a$"),
            "database",
        ),
        (
            "database with a space",
            MongoConfig::default().with_database("a b"),
            "database",
        ),
        (
            "database with a slash",
            MongoConfig::default().with_database("a/b"),
            "database",
        ),
        (
            "database with NUL",
            MongoConfig::default().with_database("a\0"),
            "database",
        ),
        (
            "database of 64",
            MongoConfig::default().with_database("d".repeat(64)),
            "database",
        ),
        (
            "pool size 0",
            MongoConfig::default().with_max_pool_size(0),
            "max_pool_size",
        ),
        (
            "zero connect timeout",
            MongoConfig::default().with_timeouts(zero, second, second),
            "connect_timeout",
        ),
        (
            "zero socket timeout",
            MongoConfig::default().with_timeouts(second, zero, second),
            "socket_timeout",
        ),
        (
            "zero server selection timeout",
            MongoConfig::default().with_timeouts(second, second, zero),
            "server_selection_timeout",
        ),
        (
            "zero gap timeout",
            MongoConfig::default().with_gap_timeout(zero),
            "gap_timeout",
        ),
        (
            "collection prefix with $",
            MongoConfig::default().with_collection_prefix("a$"),
            "prefix",
        ),
        (
            "collection prefix system.",
            MongoConfig::default().with_collection_prefix("system."),
            "prefix",
        ),
        (
            "empty events collection",
            MongoConfig::default().with_collections("", "c", "s"),
            "events_collection",
        ),
        (
            "empty counters collection",
            MongoConfig::default().with_collections("e", "", "s"),
            "counters_collection",
        ),
        (
            "empty snapshots collection",
            MongoConfig::default().with_collections("e", "c", ""),
            "snapshots_collection",
        ),
        (
            "events collection with NUL",
            MongoConfig::default().with_collections("e\0", "c", "s"),
            "events_collection",
        ),
        (
            "two collections of one name",
            MongoConfig::default().with_collections("e", "e", "s"),
            "different names",
        ),
    ];
    let variables: Vec<VariableCase> = vec![
        (
            "CQRSX_MONGO_URI of another scheme",
            vec![("CQRSX_MONGO_URI", "postgres://x")],
            "uri",
        ),
        (
            "CQRSX_MONGO_DATABASE with a dot",
            vec![("CQRSX_MONGO_DATABASE", "a.b")],
            "database",
        ),
        (
            "CQRSX_MONGO_POOL_SIZE not a number",
            vec![("CQRSX_MONGO_POOL_SIZE", "many")],
            "CQRSX_MONGO_POOL_SIZE",
        ),
        (
            "CQRSX_MONGO_POOL_SIZE 0",
            vec![("CQRSX_MONGO_POOL_SIZE", "0")],
            "max_pool_size",
        ),
        (
            "CQRSX_MONGO_POOL_SIZE negative",
            vec![("CQRSX_MONGO_POOL_SIZE", "-3")],
            "CQRSX_MONGO_POOL_SIZE",
        ),
        (
            "CQRSX_MONGO_PREFIX with $",
            vec![("CQRSX_MONGO_PREFIX", "x$")],
            "prefix",
        ),
        (
            "CQRSX_MONGO_ASSUME unknown",
            vec![("CQRSX_MONGO_ASSUME", "transactions")],
            "capability",
        ),
        (
            "CQRSX_MONGO_ASSUME not a boolean",
            vec![("CQRSX_MONGO_ASSUME", "indexed_queries=yes")],
            "capability",
        ),
        (
            "CQRSX_MONGO_CONNECT_TIMEOUT_MS not a number",
            vec![("CQRSX_MONGO_CONNECT_TIMEOUT_MS", "1s")],
            "CQRSX_MONGO_CONNECT_TIMEOUT_MS",
        ),
        (
            "CQRSX_MONGO_CONNECT_TIMEOUT_MS 0",
            vec![("CQRSX_MONGO_CONNECT_TIMEOUT_MS", "0")],
            "connect_timeout",
        ),
    ];
    let outcomes = settings
        .into_iter()
        .map(|(kind, config, needle)| (kind, config.validate(), needle))
        .chain(
            variables
                .into_iter()
                .map(|(kind, vars, needle)| (kind, from(&vars).map(drop), needle)),
        );
    cqrsx_core::testkit::expect_config_errors("mongo", outcomes);
    from(&[
        ("CQRSX_MONGO_DATABASE", &"d".repeat(63)),
        ("CQRSX_MONGO_ASSUME", "atomic_counters=false"),
    ])
    .expect("the longest valid database name, a valid assumption");
}
