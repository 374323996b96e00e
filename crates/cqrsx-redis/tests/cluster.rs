//! Cluster-only properties: appends never cross hash slots, and partitions spread the load.

mod common;

mod cluster {
    use std::collections::{HashMap, HashSet};
    use std::sync::Arc;

    use cqrsx_core::{EventStore, ExpectedVersion, NewEvent, StreamId};
    use cqrsx_redis::{RedisClientManager, RedisEventStore};
    use fred::prelude::*;
    use fred::types::{ClusterHash, CustomCommand};

    async fn keyslot(client: &RedisClientManager, key: &str) -> u16 {
        let cmd = CustomCommand::new_static("CLUSTER", ClusterHash::Random, false);
        client
            .client()
            .custom(cmd, vec!["KEYSLOT", key])
            .await
            .expect("CLUSTER KEYSLOT")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_key_of_an_append_is_in_one_slot_and_partitions_spread_over_nodes() {
        let client = RedisClientManager::connect(super::common::cluster_config())
            .await
            .expect("connect");
        let store = Arc::new(RedisEventStore::new(client.clone()));
        let mut partition_slots: HashMap<u32, u16> = HashMap::new();
        for i in 0..64 {
            let stream = StreamId::new("Slot", format!("s-{i}")).expect("stream");
            let keys = store.stream_keys(&stream);
            let mut slots = HashSet::new();
            for key in &keys {
                slots.insert(keyslot(&client, key).await);
            }
            assert_eq!(slots.len(), 1, "the keys of {stream} span slots {slots:?}: {keys:?}");
            let slot = slots.into_iter().next().expect("one slot");
            partition_slots.insert(store.partition_of(&stream), slot);
            // And the append itself (a multi-key script) is accepted by the cluster.
            let event = NewEvent::json("Touched", &serde_json::json!({"i": i})).expect("json");
            store
                .append(&stream, ExpectedVersion::NoStream, vec![event])
                .await
                .expect("an append on the cluster");
        }
        assert_eq!(partition_slots.len(), 8, "64 streams reach all 8 partitions");

        // The partitions' slots are owned by more than one node.
        let cmd = CustomCommand::new_static("CLUSTER", ClusterHash::Random, false);
        let shards: fred::types::Value = client.client().custom(cmd, vec!["SLOTS"]).await.expect("CLUSTER SLOTS");
        let ranges = shards.into_array();
        let owner = |slot: u16| {
            ranges.iter().position(|r| {
                let r = r.clone().into_array();
                let start = r.first().and_then(|v| v.as_u64()).unwrap_or(u64::MAX);
                let end = r.get(1).and_then(|v| v.as_u64()).unwrap_or(0);
                (start..=end).contains(&u64::from(slot))
            })
        };
        let owners: HashSet<Option<usize>> = partition_slots.values().map(|s| owner(*s)).collect();
        assert!(
            owners.len() > 1,
            "partitions should live on several nodes, got {owners:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_multi_key_command_across_slots_is_refused_by_the_cluster() {
        // The control experiment: the same kind of write without a shared hash tag fails, which
        // is why every cqrsx key carries one.
        let client = RedisClientManager::connect(super::common::cluster_config())
            .await
            .expect("connect");
        let a = "cqrsx-test-no-tag-a";
        let b = "cqrsx-test-no-tag-b";
        assert_ne!(keyslot(&client, a).await, keyslot(&client, b).await);
        let result: Result<(), _> = client.client().mset(vec![(a, "1"), (b, "2")]).await;
        assert!(result.is_err(), "MSET across slots must fail on a cluster");
    }
}
