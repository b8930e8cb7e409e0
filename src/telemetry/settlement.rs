//! Settlement's telemetry events: feedback in, matching decisions,
//! settlement states, rail calls, the ledger check.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

use super::Event;
use super::catalog::*;
use super::throttle::{Throttle, ThrottleSite};

/// A feedback message was read from the feedback topic.
pub struct FeedbackReceived {
    /// `accepted`, `duplicate` or `invalid`.
    pub outcome: &'static str,
}

impl Event for FeedbackReceived {
    fn emit(self) {
        counter!(FEEDBACK_RECEIVED, "outcome" => self.outcome).increment(1);
    }
}

/// Matching decided what a feedback is.
pub struct FeedbackMatched {
    /// `matched`, `no_matching_purchase`, `ambiguous` or `not_rewarded`.
    pub outcome: &'static str,
}

impl Event for FeedbackMatched {
    fn emit(self) {
        counter!(FEEDBACK_MATCHED, "outcome" => self.outcome).increment(1);
    }
}

/// A settlement entered a state.
pub struct SettlementMoved<'a> {
    pub rail: &'static str,
    pub state: &'static str,
    pub settlement_id: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
    /// For `paid`: how long since the purchase.
    pub since_purchase: Option<Duration>,
}

impl Event for SettlementMoved<'_> {
    fn emit(self) {
        counter!(SETTLEMENT_TRANSITIONS, "rail" => self.rail, "state" => self.state).increment(1);
        if self.state == "paid" {
            let currency = bounded_currency(self.currency);
            counter!(SETTLEMENT_PAID_MINOR, "rail" => self.rail, "currency" => currency)
                .increment(u64::try_from(self.amount_minor).unwrap_or(0));
            if let Some(elapsed) = self.since_purchase {
                histogram!(SETTLEMENT_PURCHASE_TO_PAYOUT_SECONDS, "rail" => self.rail)
                    .record(elapsed.as_secs_f64());
            }
        }
        tracing::debug!(
            settlement_id = self.settlement_id,
            rail = self.rail,
            state = self.state,
            amount_minor = self.amount_minor,
            "settlement moved"
        );
    }
}

/// Rewards are configured in a handful of currencies; anything else is
/// folded into `other` so the label stays bounded.
fn bounded_currency(currency: &str) -> &'static str {
    match currency {
        "SEK" => "SEK",
        "EUR" => "EUR",
        "NOK" => "NOK",
        "DKK" => "DKK",
        _ => "other",
    }
}

/// Rail failures log at most one line a minute per call site.
static RAIL_FAILED_LOG: Throttle = Throttle::new(ThrottleSite::RailFailed, 60);

/// One call to a payout rail.
pub struct RailCalled<'a> {
    pub rail: &'static str,
    /// `submit` or `status`.
    pub operation: &'static str,
    /// `ok`, `transient`, `refused` or `config`.
    pub outcome: &'static str,
    pub elapsed: Duration,
    pub settlement_id: &'a str,
    pub detail: Option<&'a str>,
}

impl Event for RailCalled<'_> {
    fn emit(self) {
        counter!(RAIL_CALLS, "rail" => self.rail, "operation" => self.operation, "outcome" => self.outcome)
            .increment(1);
        histogram!(RAIL_CALL_SECONDS, "rail" => self.rail).record(self.elapsed.as_secs_f64());
        let Some(detail) = self.detail else { return };
        // Both are retried every few seconds while the cause lasts: the
        // throttle keeps one line a minute and says how many it dropped.
        let Some(suppressed) = RAIL_FAILED_LOG.allow() else {
            return;
        };
        if self.outcome == "config" {
            tracing::error!(
                rail = self.rail,
                settlement_id = self.settlement_id,
                detail,
                suppressed,
                "payout rail is not usable; payouts wait"
            );
        } else {
            tracing::warn!(
                rail = self.rail,
                operation = self.operation,
                outcome = self.outcome,
                settlement_id = self.settlement_id,
                detail,
                suppressed,
                "payout rail call failed"
            );
        }
    }
}

/// A settlement actor was restarted by its supervisor.
pub struct SettlementActorRestarted {
    /// `intake` or `settler`.
    pub actor: &'static str,
    /// `panic` or `consumer_error`.
    pub reason: &'static str,
}

impl Event for SettlementActorRestarted {
    fn emit(self) {
        counter!(SETTLEMENT_ACTOR_RESTARTS, "actor" => self.actor, "reason" => self.reason)
            .increment(1);
        tracing::warn!(
            actor = self.actor,
            reason = self.reason,
            "settlement actor restarted"
        );
    }
}

/// The periodic look at unfinished settlements and the ledger.
pub struct SettlementHealth<'a> {
    /// Since the oldest `pending` settlement was written.
    pub oldest_pending: Duration,
    /// Since the oldest `submitted` settlement was submitted.
    pub oldest_submitted: Duration,
    pub ledger_problems: &'a [String],
}

impl Event for SettlementHealth<'_> {
    fn emit(self) {
        gauge!(SETTLEMENT_OLDEST_UNFINISHED_SECONDS, "state" => "pending")
            .set(self.oldest_pending.as_secs_f64());
        gauge!(SETTLEMENT_OLDEST_UNFINISHED_SECONDS, "state" => "submitted")
            .set(self.oldest_submitted.as_secs_f64());
        let balanced = self.ledger_problems.is_empty();
        gauge!(LEDGER_BALANCED).set(if balanced { 1.0 } else { 0.0 });
        for problem in self.ledger_problems.iter().take(5) {
            tracing::error!(problem = problem.as_str(), "ledger check failed");
        }
    }
}
