//! The whole conformance suite and the snapshot manager's suite on real MongoDB: a single-node
//! replica set started in Docker with testcontainers. Compiled only with the `docker-tests`
//! feature, which `cargo xtask test` enables when a Docker engine answers; run by hand with
//! `cargo test -p cqrsx-mongo --features docker-tests --test docker`.

#![cfg(feature = "docker-tests")]

mod common;

use testcontainers::runners::AsyncRunner;
use testcontainers::ImageExt;
use testcontainers_modules::mongo::Mongo;

/// The MongoDB image tag the suite runs on.
const MONGO_TAG: &str = "8.0";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite_on_real_mongodb_in_docker() {
    let container = Mongo::repl_set()
        .with_tag(MONGO_TAG)
        .start()
        .await
        .expect("start mongo in Docker (this test needs a Docker engine)");
    let host = container.get_host().await.expect("host");
    let port = container.get_host_port_ipv4(27017).await.expect("port");
    let uri = format!("mongodb://{host}:{port}/?directConnection=true");

    let client = common::client(common::config_at(&uri)).await;
    let caps = client.capabilities().clone();
    assert!(caps.ferretdb.is_none(), "{caps:?}");
    assert!(
        caps.change_streams
            && caps.ttl_indexes
            && caps.indexed_queries
            && caps.atomic_counters
            && caps.unique_array_indexes,
        "a replica set has them all: {caps:?}"
    );

    let mut failed = Vec::new();
    for (name, case) in cqrsx_core::testkit::CASES.iter().chain(cqrsx_snapshot::testkit::CASES) {
        let fixture = common::fixture_with(common::config_at(&uri)).await;
        // Each case in its own task, so one failure names itself and the rest still run.
        if tokio::spawn(case(fixture)).await.is_err() {
            failed.push(*name);
        }
    }
    assert!(failed.is_empty(), "cases failed on MongoDB {MONGO_TAG}: {failed:?}");
}
