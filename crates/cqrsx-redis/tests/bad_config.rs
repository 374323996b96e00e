//! The Redis part of the bad-input catalogue: every config setting and environment variable
//! at and past its edges is refused with `Error::Config`, naming the setting, before anything
//! connects.

use std::collections::HashMap;
use std::time::Duration;

use cqrsx_core::Error;
use cqrsx_redis::RedisConfig;

/// A kind: its name, the variables set, what the error must name.
type VariableCase = (&'static str, Vec<(&'static str, &'static str)>, &'static str);

fn from(vars: &[(&str, &str)]) -> Result<RedisConfig, Error> {
    let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    RedisConfig::from_lookup(|name| vars.get(name).cloned())
}

#[test]
fn every_bad_setting_and_variable_is_a_config_error_naming_it() {
    let zero = Duration::ZERO;
    let second = Duration::from_secs(1);
    let settings: Vec<(&str, RedisConfig, &str)> = vec![
        ("pool size 0", RedisConfig::default().with_pool_size(0), "pool_size"),
        (
            "pool size 1025",
            RedisConfig::default().with_pool_size(1025),
            "pool_size",
        ),
        ("partitions 0", RedisConfig::default().with_partitions(0), "partitions"),
        (
            "partitions 1025",
            RedisConfig::default().with_partitions(1025),
            "partitions",
        ),
        (
            "append concurrency 0",
            RedisConfig::default().with_append_concurrency(0),
            "append_concurrency",
        ),
        (
            "append concurrency 4097",
            RedisConfig::default().with_append_concurrency(4097),
            "append_concurrency",
        ),
        (
            "empty key prefix",
            RedisConfig::default().with_key_prefix(""),
            "key_prefix",
        ),
        (
            "key prefix of 65",
            RedisConfig::default().with_key_prefix("p".repeat(65)),
            "key_prefix",
        ),
        (
            "brace in the key prefix",
            RedisConfig::default().with_key_prefix("a{b"),
            "key_prefix",
        ),
        (
            "closing brace in the key prefix",
            RedisConfig::default().with_key_prefix("a}b"),
            "key_prefix",
        ),
        (
            "space in the key prefix",
            RedisConfig::default().with_key_prefix("a b"),
            "key_prefix",
        ),
        (
            "control character in the key prefix",
            RedisConfig::default().with_key_prefix("a\u{1}"),
            "key_prefix",
        ),
        (
            "zero dial timeout",
            RedisConfig::default().with_timeouts(zero, second, second),
            "dial_timeout",
        ),
        (
            "zero read timeout",
            RedisConfig::default().with_timeouts(second, zero, second),
            "read_timeout",
        ),
        (
            "zero write timeout",
            RedisConfig::default().with_timeouts(second, second, zero),
            "write_timeout",
        ),
        (
            "zero connect timeout",
            RedisConfig::default().with_connect_timeout(zero),
            "connect_timeout",
        ),
        (
            "url of another scheme",
            RedisConfig::default().with_url("http://x"),
            "url",
        ),
        (
            "url that does not parse",
            RedisConfig::default().with_url("redis://"),
            "url",
        ),
        (
            "url with a bad port",
            RedisConfig::default().with_url("redis://host:notaport"),
            "url",
        ),
        ("empty host", RedisConfig::default().with_host("", 6379), "host"),
        (
            "cluster node without a port",
            RedisConfig::default().with_cluster_nodes(["nohost"]),
            "cluster node",
        ),
        (
            "cluster node with a bad port",
            RedisConfig::default().with_cluster_nodes(["h:port"]),
            "cluster node",
        ),
        (
            "cluster node port past 65535",
            RedisConfig::default().with_cluster_nodes(["h:70000"]),
            "cluster node",
        ),
        (
            "cluster node without a host",
            RedisConfig::default().with_cluster_nodes([":6379"]),
            "cluster node",
        ),
        (
            "a database on a cluster",
            RedisConfig::default().with_cluster_nodes(["h:1"]).with_database(2),
            "database 0",
        ),
    ];
    let variables: Vec<VariableCase> = vec![
        (
            "CQRSX_REDIS_DB not a number",
            vec![("CQRSX_REDIS_DB", "one")],
            "CQRSX_REDIS_DB",
        ),
        (
            "CQRSX_REDIS_DB past 255",
            vec![("CQRSX_REDIS_DB", "256")],
            "CQRSX_REDIS_DB",
        ),
        (
            "CQRSX_REDIS_DB negative",
            vec![("CQRSX_REDIS_DB", "-1")],
            "CQRSX_REDIS_DB",
        ),
        (
            "CQRSX_REDIS_POOL_SIZE not a number",
            vec![("CQRSX_REDIS_POOL_SIZE", "many")],
            "CQRSX_REDIS_POOL_SIZE",
        ),
        (
            "CQRSX_REDIS_POOL_SIZE 0",
            vec![("CQRSX_REDIS_POOL_SIZE", "0")],
            "pool_size",
        ),
        (
            "CQRSX_REDIS_PARTITIONS not a number",
            vec![("CQRSX_REDIS_PARTITIONS", "8.5")],
            "CQRSX_REDIS_PARTITIONS",
        ),
        (
            "CQRSX_REDIS_PARTITIONS 0",
            vec![("CQRSX_REDIS_PARTITIONS", "0")],
            "partitions",
        ),
        (
            "CQRSX_REDIS_APPEND_CONCURRENCY not a number",
            vec![("CQRSX_REDIS_APPEND_CONCURRENCY", "x")],
            "CQRSX_REDIS_APPEND_CONCURRENCY",
        ),
        (
            "CQRSX_REDIS_PREFIX with a brace",
            vec![("CQRSX_REDIS_PREFIX", "{p")],
            "key_prefix",
        ),
        (
            "CQRSX_REDIS_URL of another scheme",
            vec![("CQRSX_REDIS_URL", "mongodb://x")],
            "url",
        ),
        (
            "CQRSX_REDIS_CLUSTER_NODES without ports",
            vec![("CQRSX_REDIS_CLUSTER_NODES", "a,b")],
            "cluster node",
        ),
        (
            "CQRSX_REDIS_CONNECT_TIMEOUT_MS not a number",
            vec![("CQRSX_REDIS_CONNECT_TIMEOUT_MS", "3s")],
            "CQRSX_REDIS_CONNECT_TIMEOUT_MS",
        ),
        (
            "CQRSX_REDIS_CONNECT_TIMEOUT_MS 0",
            vec![("CQRSX_REDIS_CONNECT_TIMEOUT_MS", "0")],
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
    cqrsx_core::testkit::expect_config_errors("redis standalone", outcomes);
    // Valid edges are accepted.
    from(&[
        ("CQRSX_REDIS_DB", "255"),
        ("CQRSX_REDIS_POOL_SIZE", "1024"),
        ("CQRSX_REDIS_PARTITIONS", "1024"),
    ])
    .expect("the largest valid values");
}
