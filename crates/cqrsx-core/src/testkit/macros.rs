//! The macros that expand the conformance suite into one `#[tokio::test]` per case, and the
//! list of every case they expand.

use super::*;

/// The one list of conformance cases, in contract order. It calls `$callback!` with the names
/// after `$args`, so that [`CASES`] and [`crate::conformance_tests!`] come from the same list
/// and a case added here runs on every backend.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($callback:path; $($args:tt)*) => {
        $callback! { $($args)* ;
            append_with_wrong_expected_version_conflicts,
            concurrent_writers_never_duplicate_or_skip_versions,
            batch_append_is_all_or_nothing,
            retried_append_is_idempotent,
            event_ids_are_unique_in_any_order,
            read_returns_every_envelope_field_in_order,
            catch_up_reader_sees_every_event_once,
            read_all_pages_inside_batches,
            snapshot_store_never_hides_a_newer_snapshot,
            snapshot_load_equals_full_replay,
            truncate_and_delete_behave_as_documented,
            stream_catalogue_lists_every_stream,
            import_keeps_ids_versions_times_and_metadata,
            import_continues_every_stream_shape,
            import_racing_an_append_lets_exactly_one_win,
            retention_archives_only_what_policies_and_projections_allow,
            bad_input_is_rejected_and_writes_nothing,
            events_by_type_since_a_time,
            long_stream_reads_in_pages,
            read_store_crud,
            read_store_query_matches_reference_semantics,
            read_store_batches,
            read_store_ttl_as_declared,
            read_store_bad_input_writes_nothing,
            subscription_catches_up_from_zero_and_from_a_checkpoint,
            subscription_goes_live_and_wakes_on_appends,
            subscription_filters_by_type_and_aggregate_type,
            projection_survives_crashes_without_skips_or_repeats,
            projection_lease_admits_one_runner_and_fences_the_stale_one,
            projection_poison_event_stops_or_parks,
            projection_rebuild_equals_the_live_view,
            projection_bad_input_is_refused,
            projection_failing_handlers_are_contained,
            projection_forged_and_dropped_leases_write_nothing,
            projection_admin_reads_and_replay_requests,
            projection_shards_apply_each_stream_in_one_shard_once,
            projection_shards_rebalance_as_processes_join_stop_and_die,
            projection_shards_change_layout_and_version_without_a_gap,
            typed_projection_decodes_through_the_registry,
            views_read_the_active_version_of_every_shard,
            bad_input_catalogue,
            crypto_round_trip_holds_no_plaintext_at_rest,
            crypto_forget_erases_everywhere,
            crypto_rotation_keeps_old_versions_readable,
            crypto_tampering_is_typed,
            crypto_concurrent_first_keys_agree,
        }
    };
}

macro_rules! case_list {
    ($(;)? $($name:ident),* $(,)?) => {
        /// Every conformance case with its name, in contract order.
        pub const CASES: &[(&str, Case)] = &[
            $((stringify!($name), |f| Box::pin($name(f)))),*
        ];
    };
}

crate::__conformance_cases!(case_list;);

/// Expands into one `#[tokio::test]` per conformance case. `$fixture` is an async fn returning
/// a fresh [`Fixture`]; the calling crate needs `tokio` (with `macros`, `rt-multi-thread`).
///
/// ```text
/// async fn fixture() -> cqrsx_core::testkit::Fixture { /* fresh namespace */ }
/// cqrsx_core::conformance_tests!(fixture);
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($fixture:path) => {
        $crate::__conformance_cases!($crate::conformance_tests; @cases $fixture);
    };
    (@cases $fixture:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let fixture = $fixture().await;
                $crate::testkit::$case(fixture).await;
            }
        )*
    };
}
