//! The typed telemetry events. Each `emit` counts (and logs where an operator
//! needs the line); labels are bounded by the enums below.

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use reqwest::StatusCode;

use super::Event;
use super::catalog::*;
use super::throttle::{Throttle, ThrottleSite};
use crate::providers::ProviderKind;

/// How the webhook listener answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngressOutcome {
    Accepted,
    InvalidSignature,
    StaleTimestamp,
    Malformed,
    UnknownIntegration,
    TooLarge,
    Unavailable,
    /// Shed: more webhooks in flight than `server.max_inflight_webhooks`.
    Overloaded,
    /// The client did not send its body within `server.request_timeout_ms`.
    Timeout,
}

impl IngressOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            IngressOutcome::Accepted => "accepted",
            IngressOutcome::InvalidSignature => "invalid_signature",
            IngressOutcome::StaleTimestamp => "stale_timestamp",
            IngressOutcome::Malformed => "malformed",
            IngressOutcome::UnknownIntegration => "unknown_integration",
            IngressOutcome::TooLarge => "too_large",
            IngressOutcome::Unavailable => "unavailable",
            IngressOutcome::Overloaded => "overloaded",
            IngressOutcome::Timeout => "timeout",
        }
    }
}

/// A webhook request was answered.
pub struct WebhookAnswered {
    /// `None` when the path named no known provider.
    pub provider: Option<ProviderKind>,
    pub outcome: IngressOutcome,
    pub elapsed: Duration,
}

fn provider_label(provider: Option<ProviderKind>) -> &'static str {
    provider.map(ProviderKind::as_str).unwrap_or("unknown")
}

/// Refused webhooks log at most one line a minute: a forged-webhook flood
/// must not flood the log too.
static REFUSED_WEBHOOK_LOG: Throttle = Throttle::new(ThrottleSite::WebhookRefused, 60);

impl Event for WebhookAnswered {
    fn emit(self) {
        let provider = provider_label(self.provider);
        let refused = matches!(
            self.outcome,
            IngressOutcome::InvalidSignature
                | IngressOutcome::StaleTimestamp
                | IngressOutcome::Malformed
        );
        if refused && let Some(suppressed) = REFUSED_WEBHOOK_LOG.allow() {
            tracing::warn!(
                provider,
                outcome = self.outcome.as_str(),
                suppressed,
                "webhook refused"
            );
        }
        counter!(WEBHOOKS_RECEIVED, "provider" => provider, "outcome" => self.outcome.as_str())
            .increment(1);
        histogram!(WEBHOOK_ACK_SECONDS, "provider" => provider).record(self.elapsed.as_secs_f64());
    }
}

/// How processing of one bus event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessOutcome {
    Verified,
    Rejected,
    Duplicate,
    /// Older than the stored state of its transaction: recorded, not applied.
    Stale,
    Ignored,
    /// About kvitto's own payouts: handed to settlement.
    Settlement,
    Deadlettered,
}

impl ProcessOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessOutcome::Verified => "verified",
            ProcessOutcome::Rejected => "rejected",
            ProcessOutcome::Duplicate => "duplicate",
            ProcessOutcome::Stale => "stale",
            ProcessOutcome::Ignored => "ignored",
            ProcessOutcome::Settlement => "settlement",
            ProcessOutcome::Deadlettered => "deadlettered",
        }
    }
}

pub struct EventProcessed {
    pub provider: ProviderKind,
    pub outcome: ProcessOutcome,
    /// Since the webhook was accepted, when known.
    pub since_accepted: Option<Duration>,
}

impl Event for EventProcessed {
    fn emit(self) {
        let provider = self.provider.as_str();
        counter!(EVENTS_PROCESSED, "provider" => provider, "outcome" => self.outcome.as_str())
            .increment(1);
        // End to end means a transaction stored and published: duplicates,
        // stale and ignored events publish nothing and would only pull the
        // distribution towards the fast path.
        let published = matches!(
            self.outcome,
            ProcessOutcome::Verified | ProcessOutcome::Rejected
        );
        if published && let Some(elapsed) = self.since_accepted {
            histogram!(END_TO_END_SECONDS, "provider" => provider).record(elapsed.as_secs_f64());
        }
    }
}

/// The processing stages, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Decode,
    Deduplicate,
    Verify,
    Store,
    Publish,
    Commit,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Deduplicate => "deduplicate",
            Stage::Verify => "verify",
            Stage::Store => "store",
            Stage::Publish => "publish",
            Stage::Commit => "commit",
        }
    }
}

pub struct StageFinished {
    pub provider: ProviderKind,
    pub stage: Stage,
    pub elapsed: Duration,
}

impl Event for StageFinished {
    fn emit(self) {
        histogram!(STAGE_SECONDS, "provider" => self.provider.as_str(), "stage" => self.stage.as_str())
            .record(self.elapsed.as_secs_f64());
    }
}

/// Why an event was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// The payload could not be decoded.
    Undecodable,
    /// Processing kept failing (transiently or by panicking) past the
    /// attempt limit.
    AttemptsExhausted,
    /// The provider API refused permanently (credentials, bad answer).
    ProviderApi,
    /// The integration named on the message is no longer configured.
    UnknownIntegration,
    /// The database refused the event's data (a value it cannot hold, a row
    /// it cannot read back): retrying would fail the same way.
    StoreRejected,
}

impl DeadLetterReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Undecodable => "undecodable",
            DeadLetterReason::AttemptsExhausted => "attempts_exhausted",
            DeadLetterReason::ProviderApi => "provider_api",
            DeadLetterReason::UnknownIntegration => "unknown_integration",
            DeadLetterReason::StoreRejected => "store_rejected",
        }
    }
}

pub struct DeadLettered<'a> {
    pub provider: ProviderKind,
    pub reason: DeadLetterReason,
    pub event_id: &'a str,
    pub detail: &'a str,
}

impl Event for DeadLettered<'_> {
    fn emit(self) {
        counter!(DEADLETTER, "provider" => self.provider.as_str(), "reason" => self.reason.as_str())
            .increment(1);
        // Dead letters need an operator eventually, but nothing is lost: the
        // event is on the dead-letter topic with its reason.
        tracing::warn!(
            provider = %self.provider,
            reason = self.reason.as_str(),
            event_id = self.event_id,
            detail = self.detail,
            "event dead-lettered"
        );
    }
}

pub struct ActorRestarted {
    pub provider: ProviderKind,
    /// `panic` or `consumer_error`.
    pub reason: &'static str,
}

impl Event for ActorRestarted {
    fn emit(self) {
        counter!(ACTOR_RESTARTS, "provider" => self.provider.as_str(), "reason" => self.reason)
            .increment(1);
        tracing::warn!(provider = %self.provider, reason = self.reason, "processing actor restarted");
    }
}

pub struct VerificationMismatch {
    pub provider: ProviderKind,
    /// `amount`, `currency`, `state` or `unknown_to_provider`.
    pub reason: &'static str,
}

/// Verification mismatches log at most one line a minute.
static MISMATCH_LOG: Throttle = Throttle::new(ThrottleSite::VerificationMismatch, 60);

impl Event for VerificationMismatch {
    fn emit(self) {
        if let Some(suppressed) = MISMATCH_LOG.allow() {
            tracing::warn!(
                provider = %self.provider,
                reason = self.reason,
                suppressed,
                "webhook disagrees with the provider api"
            );
        }
        counter!(VERIFICATION_MISMATCHES, "provider" => self.provider.as_str(), "reason" => self.reason)
            .increment(1);
    }
}

pub struct ProviderApiCall {
    pub provider: ProviderKind,
    pub endpoint: &'static str,
    /// `None` when no answer came (timeout, connection refused).
    pub status: Option<StatusCode>,
    pub elapsed: Duration,
}

impl Event for ProviderApiCall {
    fn emit(self) {
        let status = match self.status.map(|s| s.as_u16() / 100) {
            Some(2) => "2xx",
            Some(3) => "3xx",
            Some(4) if self.status == Some(StatusCode::TOO_MANY_REQUESTS) => "429",
            Some(4) => "4xx",
            Some(5) => "5xx",
            _ => "error",
        };
        let provider = self.provider.as_str();
        counter!(PROVIDER_API_REQUESTS, "provider" => provider, "endpoint" => self.endpoint, "status" => status)
            .increment(1);
        histogram!(PROVIDER_API_SECONDS, "provider" => provider, "endpoint" => self.endpoint)
            .record(self.elapsed.as_secs_f64());
    }
}

pub struct ProviderApiRetry {
    pub provider: ProviderKind,
    pub endpoint: &'static str,
}

impl Event for ProviderApiRetry {
    fn emit(self) {
        counter!(PROVIDER_API_RETRIES, "provider" => self.provider.as_str(), "endpoint" => self.endpoint)
            .increment(1);
    }
}

/// Which kind of topic a bus write went to (a bounded label, unlike the
/// topic name, whose prefix is configurable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    Webhooks,
    Transactions,
    Deadletter,
}

impl TopicKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TopicKind::Webhooks => "webhooks",
            TopicKind::Transactions => "transactions",
            TopicKind::Deadletter => "deadletter",
        }
    }
}

pub struct BusPublished {
    pub topic: TopicKind,
    pub ok: bool,
    pub elapsed: Duration,
}

impl Event for BusPublished {
    fn emit(self) {
        let outcome = if self.ok { "ok" } else { "error" };
        counter!(BUS_PUBLISH, "topic" => self.topic.as_str(), "outcome" => outcome).increment(1);
        histogram!(BUS_PUBLISH_SECONDS, "topic" => self.topic.as_str())
            .record(self.elapsed.as_secs_f64());
    }
}

/// A worker's event failed transiently and will be retried (`true`), or the
/// worker is moving again (`false`).
pub struct EventRetrying {
    pub provider: ProviderKind,
    pub retrying: bool,
}

impl Event for EventRetrying {
    fn emit(self) {
        let provider = self.provider.as_str();
        gauge!(EVENT_RETRYING, "provider" => provider).set(if self.retrying { 1.0 } else { 0.0 });
        if self.retrying {
            counter!(EVENT_RETRIES, "provider" => provider).increment(1);
        }
    }
}

/// A webhook for a configured integration was refused for its signature
/// (missing or wrong) or its signed timestamp. Counted by integration, so a
/// rotated secret shows which merchant's integration it hit; the refusal is
/// logged, throttled, by [`WebhookAnswered`].
pub struct SignatureRefused<'a> {
    pub provider: ProviderKind,
    /// A configured integration id, never an id taken from an unknown path.
    pub integration: &'a str,
}

impl SignatureRefused<'_> {
    /// Exports the integration's counter at zero, so its first refusal is
    /// an increase rather than a series appearing.
    pub fn register(provider: ProviderKind, integration: &str) {
        counter!(SIGNATURE_FAILURES, "provider" => provider.as_str(), "integration" => integration.to_owned())
            .increment(0);
    }
}

impl Event for SignatureRefused<'_> {
    fn emit(self) {
        counter!(SIGNATURE_FAILURES, "provider" => self.provider.as_str(), "integration" => self.integration.to_owned())
            .increment(1);
    }
}

/// Held by a webhook request while it occupies one of the listener's
/// `server.max_inflight_webhooks` slots: `kvitto_webhooks_in_flight` counts
/// the live guards.
#[must_use = "the request counts as in flight only while the guard lives"]
pub struct WebhookInFlight(());

impl WebhookInFlight {
    pub fn start() -> WebhookInFlight {
        gauge!(WEBHOOKS_IN_FLIGHT).increment(1.0);
        WebhookInFlight(())
    }
}

impl Drop for WebhookInFlight {
    fn drop(&mut self) {
        gauge!(WEBHOOKS_IN_FLIGHT).decrement(1.0);
    }
}

/// Messages waiting on one partition of a provider's webhook topic: the
/// partition's end minus the group's committed offset.
pub struct ConsumerLag {
    pub provider: ProviderKind,
    pub partition: i32,
    pub messages: i64,
}

impl Event for ConsumerLag {
    fn emit(self) {
        gauge!(CONSUMER_LAG, "provider" => self.provider.as_str(), "partition" => self.partition.to_string())
            .set(self.messages.max(0) as f64);
    }
}

/// The flood throttle kept a log line back.
pub struct LogLinesSuppressed {
    pub site: ThrottleSite,
}

impl Event for LogLinesSuppressed {
    fn emit(self) {
        counter!(LOG_LINES_SUPPRESSED, "site" => self.site.as_str()).increment(1);
    }
}

// ---- Integration health (the health monitor, `crate::health`) ----

/// One check of an integration's provider API finished.
pub struct IntegrationChecked<'a> {
    pub provider: ProviderKind,
    /// The integration's label (`crate::health::integration_label`): its id,
    /// or a digest of it where the id is a secret path token. Bounded by the
    /// number of configured integrations.
    pub integration: &'a str,
    /// What the check before found; `None` for the first check.
    pub was_up: Option<bool>,
    /// `None` when the integration is up.
    pub failure: Option<&'a crate::health::ProbeFailure>,
    pub checked_at: chrono::DateTime<chrono::Utc>,
}

impl Event for IntegrationChecked<'_> {
    fn emit(self) {
        let provider = self.provider.as_str();
        let integration = self.integration.to_string();
        let up = if self.failure.is_none() { 1.0 } else { 0.0 };
        metrics::gauge!(INTEGRATION_UP, "provider" => provider, "integration" => integration.clone())
            .set(up);
        // Milliseconds as a fraction: Prometheus timestamps are float seconds.
        let checked_at = self.checked_at.timestamp_millis() as f64 / 1_000.0;
        metrics::gauge!(INTEGRATION_CHECK_TIMESTAMP, "provider" => provider, "integration" => integration)
            .set(checked_at);
        // Only changes are logged: a provider that stays down for a day
        // gives one WARN, not one per check.
        match (self.was_up, self.failure) {
            (Some(false), None) => {
                tracing::info!(
                    provider,
                    integration = self.integration,
                    "integration api is up again"
                );
            }
            (None | Some(true), Some(failure)) => {
                tracing::warn!(
                    provider,
                    integration = self.integration,
                    reason = failure.reason.as_str(),
                    detail = %failure.detail,
                    "integration api check failed"
                );
            }
            (None, None) => {
                tracing::debug!(
                    provider,
                    integration = self.integration,
                    "integration api is up"
                );
            }
            (Some(true), None) | (Some(false), Some(_)) => {}
        }
    }
}
