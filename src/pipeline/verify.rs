//! Verification: the provider's API answer is the truth, and the webhook's
//! claim is checked against it.
//!
//! A claim that disagrees with the truth on amount (beyond the tolerance),
//! currency, or whether money moved makes the transaction `rejected` with the
//! reason; the stored facts are always the provider's.

use chrono::{DateTime, Utc};

use crate::canonical::{LineItem, PaymentState, Verdict};
use crate::providers::{Claim, ProviderTruth};

/// The facts a transaction is stored with.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub amount_minor: i64,
    pub currency: String,
    pub state: PaymentState,
    pub occurred_at: DateTime<Utc>,
    pub source_version: i64,
    pub line_items: Vec<LineItem>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub facts: Facts,
    pub verdict: Verdict,
    /// Human-readable, for the stored row and the published event.
    pub rejection_reason: Option<String>,
    /// Bounded metric label: `amount`, `currency`, `state`, `reference`.
    pub mismatch: Option<&'static str>,
    /// Whether the facts are the provider API's answer (current when read)
    /// rather than the webhook's claim (as new as its `source_version`).
    pub from_truth: bool,
}

/// Compares a webhook's claim with the provider's answer, and the place the
/// provider gives with the location the integration stands for.
pub fn against_truth(
    claim: &Claim,
    truth: &ProviderTruth,
    tolerance_minor: i64,
    expected_location: Option<&str>,
) -> Decision {
    let facts = Facts {
        amount_minor: truth.amount_minor,
        currency: truth.currency.clone(),
        state: truth.state,
        occurred_at: truth.occurred_at,
        source_version: truth.source_version.max(claim.source_version),
        line_items: if truth.line_items.is_empty() {
            claim.line_items.clone()
        } else {
            truth.line_items.clone()
        },
    };
    let location = expected_location.and_then(|expected| match truth.location_ref.as_deref() {
        Some(actual) if actual != expected => Some((
            "location",
            format!("location_mismatch: integration location {expected}, provider {actual}"),
        )),
        _ => None,
    });
    match location.or_else(|| mismatch(claim, truth, tolerance_minor)) {
        None => Decision {
            facts,
            verdict: Verdict::Verified,
            rejection_reason: None,
            mismatch: None,
            from_truth: true,
        },
        Some((label, reason)) => Decision {
            facts,
            verdict: Verdict::Rejected,
            rejection_reason: Some(reason),
            mismatch: Some(label),
            from_truth: true,
        },
    }
}

fn mismatch(
    claim: &Claim,
    truth: &ProviderTruth,
    tolerance_minor: i64,
) -> Option<(&'static str, String)> {
    if claim.transaction_ref != truth.transaction_ref {
        return Some((
            "reference",
            format!(
                "reference_mismatch: webhook {}, provider {}",
                claim.transaction_ref, truth.transaction_ref
            ),
        ));
    }
    if let Some(currency) = &claim.currency
        && !currency.eq_ignore_ascii_case(&truth.currency)
    {
        return Some((
            "currency",
            format!(
                "currency_mismatch: webhook {currency}, provider {}",
                truth.currency
            ),
        ));
    }
    if let Some(amount) = claim.amount_minor
        && amount.abs_diff(truth.amount_minor) > tolerance_minor.unsigned_abs()
    {
        return Some((
            "amount",
            format!(
                "amount_mismatch: webhook {amount}, provider {} (minor units)",
                truth.amount_minor
            ),
        ));
    }
    // A payment may move on between the webhook and the lookup (approved,
    // then completed). Only a claim that money moved which the provider
    // denies is a disagreement.
    let denied = matches!(truth.state, PaymentState::Failed | PaymentState::Canceled);
    if claim.state == Some(PaymentState::Completed) && denied {
        return Some((
            "state",
            format!(
                "state_mismatch: webhook completed, provider {}",
                truth.state.as_str()
            ),
        ));
    }
    None
}

/// Only what an unsigned callback may say: which transaction it is about.
pub fn hint(claim: &Claim) -> Claim {
    Claim {
        transaction_ref: claim.transaction_ref.clone(),
        source_version: claim.source_version,
        ..Claim::default()
    }
}

/// The facts of a claim trusted on its signature alone; `None` when the
/// webhook does not carry enough to store a transaction.
pub fn from_claim(claim: &Claim) -> Option<Facts> {
    Some(Facts {
        amount_minor: claim.amount_minor?,
        currency: claim.currency.clone()?,
        state: claim.state?,
        occurred_at: claim.occurred_at?,
        source_version: claim.source_version,
        line_items: claim.line_items.clone(),
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn truth() -> ProviderTruth {
        ProviderTruth {
            transaction_ref: "pay_1".into(),
            amount_minor: 14950,
            currency: "SEK".into(),
            state: PaymentState::Completed,
            occurred_at: Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap(),
            source_version: 10,
            location_ref: None,
            line_items: vec![],
        }
    }

    fn claim(amount_minor: i64) -> Claim {
        Claim {
            transaction_ref: "pay_1".into(),
            amount_minor: Some(amount_minor),
            currency: Some("SEK".into()),
            state: Some(PaymentState::Completed),
            source_version: 5,
            ..Claim::default()
        }
    }

    #[test]
    fn amount_within_tolerance_is_verified() {
        let decision = against_truth(&claim(14951), &truth(), 1, None);
        assert_eq!(decision.verdict, Verdict::Verified);
        assert_eq!(
            decision.facts.amount_minor, 14950,
            "stored facts are the provider's"
        );
        assert_eq!(decision.facts.source_version, 10);
    }

    #[test]
    fn amount_beyond_tolerance_is_rejected_with_reason() {
        let decision = against_truth(&claim(14952), &truth(), 1, None);
        assert_eq!(decision.verdict, Verdict::Rejected);
        assert_eq!(decision.mismatch, Some("amount"));
        assert!(decision.rejection_reason.unwrap().contains("14952"));
    }

    #[test]
    fn currency_disagreement_is_rejected() {
        let mut c = claim(14950);
        c.currency = Some("EUR".into());
        assert_eq!(
            against_truth(&c, &truth(), 1, None).mismatch,
            Some("currency")
        );
    }

    #[test]
    fn completed_claim_for_canceled_payment_is_rejected() {
        let mut t = truth();
        t.state = PaymentState::Canceled;
        assert_eq!(
            against_truth(&claim(14950), &t, 1, None).mismatch,
            Some("state")
        );
    }

    #[test]
    fn pending_claim_for_completed_payment_is_progress_not_mismatch() {
        let mut c = claim(14950);
        c.state = Some(PaymentState::Pending);
        let decision = against_truth(&c, &truth(), 1, None);
        assert_eq!(decision.verdict, Verdict::Verified);
        assert_eq!(decision.facts.state, PaymentState::Completed);
    }

    #[test]
    fn transaction_at_another_provider_location_is_rejected() {
        let mut t = truth();
        t.location_ref = Some("L-OTHER".into());
        let decision = against_truth(&claim(14950), &t, 1, Some("L-MINE"));
        assert_eq!(decision.mismatch, Some("location"));
        assert_eq!(
            against_truth(&claim(14950), &t, 1, None).verdict,
            Verdict::Verified
        );
        t.location_ref = Some("L-MINE".into());
        assert_eq!(
            against_truth(&claim(14950), &t, 1, Some("L-MINE")).verdict,
            Verdict::Verified
        );
    }

    #[test]
    fn unsigned_hint_carries_only_the_reference() {
        let hinted = hint(&claim(1));
        assert_eq!(hinted.amount_minor, None);
        assert_eq!(
            against_truth(&hinted, &truth(), 1, None).verdict,
            Verdict::Verified
        );
    }

    #[test]
    fn claim_without_amount_cannot_be_trusted_alone() {
        let c = Claim {
            transaction_ref: "order".into(),
            ..Claim::default()
        };
        assert_eq!(from_claim(&c), None);
    }
}
