//! Every metric kvitto exports, declared once with its help text.
//!
//! Names follow `kvitto_<subsystem>_<name>_<unit>`, counters end in `_total`,
//! durations are histograms in seconds. Labels carry bounded values only:
//! `provider`, `outcome`, `stage`, `reason`, `endpoint`, `status`, `topic`,
//! `site`, `partition` (bounded by the topic's partition count) and
//! `integration` (bounded by the configured integrations). The process
//! metrics (`process_*`) keep the standard Prometheus client names; see
//! [`super::process`].

use std::sync::OnceLock;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::process;
use super::throttle::ThrottleSite;

pub const WEBHOOKS_RECEIVED: &str = "kvitto_webhooks_received_total";
pub const WEBHOOK_ACK_SECONDS: &str = "kvitto_webhook_ack_duration_seconds";
pub const EVENTS_PROCESSED: &str = "kvitto_events_processed_total";
pub const STAGE_SECONDS: &str = "kvitto_processing_stage_duration_seconds";
pub const END_TO_END_SECONDS: &str = "kvitto_event_end_to_end_duration_seconds";
pub const DEADLETTER: &str = "kvitto_deadletter_total";
pub const ACTOR_RESTARTS: &str = "kvitto_actor_restarts_total";
pub const VERIFICATION_MISMATCHES: &str = "kvitto_verification_mismatches_total";
pub const PROVIDER_API_REQUESTS: &str = "kvitto_provider_api_requests_total";
pub const PROVIDER_API_SECONDS: &str = "kvitto_provider_api_request_duration_seconds";
pub const PROVIDER_API_RETRIES: &str = "kvitto_provider_api_retries_total";
pub const BUS_PUBLISH: &str = "kvitto_bus_publish_total";
pub const BUS_PUBLISH_SECONDS: &str = "kvitto_bus_publish_duration_seconds";
pub const BUILD_INFO: &str = "kvitto_build_info";
pub const EVENT_RETRYING: &str = "kvitto_pipeline_event_retrying";
pub const EVENT_RETRIES: &str = "kvitto_pipeline_event_retries_total";
pub const CONSUMER_LAG: &str = "kvitto_consumer_lag_messages";
pub const SIGNATURE_FAILURES: &str = "kvitto_webhook_signature_failures_total";
pub const WEBHOOKS_IN_FLIGHT: &str = "kvitto_webhooks_in_flight";
pub const LOG_LINES_SUPPRESSED: &str = "kvitto_log_lines_suppressed_total";

/// Buckets for request-scale latencies: 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets for end-to-end latency, which includes provider API calls and
/// retries: 5 ms to 5 min.
const END_TO_END_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Buckets for purchase-to-payout time, which includes waiting for the
/// customer's feedback: 1 s to 1 day.
const PURCHASE_TO_PAYOUT_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1_800.0, 3_600.0, 7_200.0, 21_600.0, 86_400.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns the handle
/// that renders `/metrics`.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(END_TO_END_SECONDS.into()),
                    END_TO_END_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(SETTLEMENT_PURCHASE_TO_PAYOUT_SECONDS.into()),
                        PURCHASE_TO_PAYOUT_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                })
                .expect("bucket lists are non-empty")
                .install_recorder()
                .expect("metrics recorder installed once");
            describe_all();
            register_fixed_series();
            process::start_collecting();
            handle
        })
        .clone()
}

/// Series whose labels are known at start are exported from the start, at
/// zero: a scrape shows them before anything happened, and `increase()`
/// sees the first event instead of a series appearing at 1.
fn register_fixed_series() {
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    gauge!(WEBHOOKS_IN_FLIGHT).set(0.0);
    for site in ThrottleSite::ALL {
        counter!(LOG_LINES_SUPPRESSED, "site" => site.as_str()).increment(0);
    }
}

fn describe_all() {
    describe_counter!(
        WEBHOOKS_RECEIVED,
        "Webhook requests answered, by provider and outcome."
    );
    describe_histogram!(
        WEBHOOK_ACK_SECONDS,
        Unit::Seconds,
        "Time from request to answer on the webhook listener, including the durable bus write."
    );
    describe_counter!(
        EVENTS_PROCESSED,
        "Bus events processed, by provider and outcome."
    );
    describe_histogram!(
        STAGE_SECONDS,
        Unit::Seconds,
        "Time spent in each processing stage."
    );
    describe_histogram!(
        END_TO_END_SECONDS,
        Unit::Seconds,
        "Time from webhook acceptance to the transaction being stored and published."
    );
    describe_counter!(
        DEADLETTER,
        "Events sent to the dead-letter topic, by provider and reason."
    );
    describe_counter!(
        ACTOR_RESTARTS,
        "Processing actor restarts by their supervisor, by reason."
    );
    describe_counter!(
        VERIFICATION_MISMATCHES,
        "Transactions whose webhook disagreed with the provider API, by reason."
    );
    describe_counter!(
        PROVIDER_API_REQUESTS,
        "Provider API calls, by endpoint and status class."
    );
    describe_histogram!(
        PROVIDER_API_SECONDS,
        Unit::Seconds,
        "Provider API call latency."
    );
    describe_counter!(
        PROVIDER_API_RETRIES,
        "Provider API calls retried after a transient failure."
    );
    describe_counter!(
        BUS_PUBLISH,
        "Messages written to the bus, by topic kind and outcome."
    );
    describe_histogram!(
        BUS_PUBLISH_SECONDS,
        Unit::Seconds,
        "Time for the bus to confirm a write."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label says which build is running."
    );
    describe_gauge!(
        EVENT_RETRYING,
        "1 while the provider's worker is retrying an event after transient failures."
    );
    describe_counter!(
        EVENT_RETRIES,
        "Processing attempts that failed transiently and will be retried."
    );
    describe_gauge!(
        CONSUMER_LAG,
        Unit::Count,
        "Messages on a provider's webhook topic partition not yet committed by kvitto's group."
    );
    describe_counter!(
        SIGNATURE_FAILURES,
        "Webhooks for a configured integration refused for their signature or timestamp."
    );
    describe_gauge!(
        WEBHOOKS_IN_FLIGHT,
        Unit::Count,
        "Webhook requests being read, verified or written to the bus right now."
    );
    describe_counter!(
        LOG_LINES_SUPPRESSED,
        "Log lines dropped by the flood throttle, by call site."
    );
    describe_integration_health();
    describe_settlement();
}

// ---- Integration health (the health monitor, `crate::health`) ----

pub const INTEGRATION_UP: &str = "kvitto_integration_up";
pub const INTEGRATION_CHECK_TIMESTAMP: &str = "kvitto_integration_check_timestamp_seconds";

fn describe_integration_health() {
    describe_gauge!(
        INTEGRATION_UP,
        "1 when the last check of the integration's provider API succeeded (reachable, credentials accepted), else 0."
    );
    describe_gauge!(
        INTEGRATION_CHECK_TIMESTAMP,
        Unit::Seconds,
        "Unix time of the integration's last completed provider API check."
    );
}

// ---- Settlement (`crate::settlement`) ----

pub const FEEDBACK_RECEIVED: &str = "kvitto_feedback_received_total";
pub const FEEDBACK_MATCHED: &str = "kvitto_feedback_match_outcomes_total";
pub const SETTLEMENT_TRANSITIONS: &str = "kvitto_settlements_total";
pub const SETTLEMENT_PAID_MINOR: &str = "kvitto_settlement_paid_minor_units_total";
pub const SETTLEMENT_PURCHASE_TO_PAYOUT_SECONDS: &str =
    "kvitto_settlement_purchase_to_payout_duration_seconds";
pub const RAIL_CALLS: &str = "kvitto_settlement_rail_calls_total";
pub const RAIL_CALL_SECONDS: &str = "kvitto_settlement_rail_call_duration_seconds";
pub const SETTLEMENT_OLDEST_UNFINISHED_SECONDS: &str =
    "kvitto_settlement_oldest_unfinished_age_seconds";
pub const SETTLEMENT_ACTOR_RESTARTS: &str = "kvitto_settlement_actor_restarts_total";
pub const LEDGER_BALANCED: &str = "kvitto_ledger_balanced";

/// The labels settlement series take, for registering them at zero.
pub const RAILS: [&str; 2] = ["stripe", "swish"];

fn describe_settlement() {
    describe_counter!(
        FEEDBACK_RECEIVED,
        "Feedback messages read from the feedback topic, by outcome (accepted, duplicate, invalid)."
    );
    describe_counter!(
        FEEDBACK_MATCHED,
        "Feedback matching decisions, by outcome (matched, no_matching_purchase, ambiguous, not_rewarded)."
    );
    describe_counter!(
        SETTLEMENT_TRANSITIONS,
        "Settlements entering a state, by rail and state."
    );
    describe_counter!(
        SETTLEMENT_PAID_MINOR,
        "Reward amounts paid out, in minor units (öre), by rail and currency."
    );
    describe_histogram!(
        SETTLEMENT_PURCHASE_TO_PAYOUT_SECONDS,
        Unit::Seconds,
        "Time from the purchase to its reward being paid, by rail."
    );
    describe_counter!(
        RAIL_CALLS,
        "Payout rail calls, by rail, operation and outcome (ok, transient, refused, config)."
    );
    describe_histogram!(
        RAIL_CALL_SECONDS,
        Unit::Seconds,
        "Payout rail call latency, by rail."
    );
    describe_gauge!(
        SETTLEMENT_OLDEST_UNFINISHED_SECONDS,
        Unit::Seconds,
        "How long the oldest unfinished settlement has waited, by state: pending since written, submitted since submission."
    );
    describe_counter!(
        SETTLEMENT_ACTOR_RESTARTS,
        "Settlement actor restarts by their supervisor, by actor and reason."
    );
    describe_gauge!(
        LEDGER_BALANCED,
        "1 when the last ledger check found every journal balanced and every balance agreeing with the settlements, else 0."
    );
    for outcome in ["accepted", "duplicate", "invalid"] {
        counter!(FEEDBACK_RECEIVED, "outcome" => outcome).increment(0);
    }
    for rail in RAILS {
        for state in ["pending", "submitted", "paid", "failed", "canceled"] {
            counter!(SETTLEMENT_TRANSITIONS, "rail" => rail, "state" => state).increment(0);
        }
        // Zero from the start, so a rail's first failure shows in increase().
        for operation in ["submit", "status"] {
            for outcome in ["ok", "transient", "refused", "config"] {
                counter!(RAIL_CALLS, "rail" => rail, "operation" => operation, "outcome" => outcome)
                    .increment(0);
            }
        }
    }
    for state in ["pending", "submitted"] {
        gauge!(SETTLEMENT_OLDEST_UNFINISHED_SECONDS, "state" => state).set(0.0);
    }
}
