//! The one canonical shape every provider's transaction is enriched into.
//!
//! This is what kvitto stores and what it publishes on `kvitto.transactions`;
//! its JSON form is versioned (see `docs/topics.md`) and only grows.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::providers::ProviderKind;

/// The payment's own state, as the provider reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentState {
    /// Authorised but not captured or not final yet.
    Pending,
    /// Money moved: the purchase really happened.
    Completed,
    Failed,
    Canceled,
    Refunded,
}

impl PaymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentState::Pending => "pending",
            PaymentState::Completed => "completed",
            PaymentState::Failed => "failed",
            PaymentState::Canceled => "canceled",
            PaymentState::Refunded => "refunded",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            PaymentState::Pending,
            PaymentState::Completed,
            PaymentState::Failed,
            PaymentState::Canceled,
            PaymentState::Refunded,
        ]
        .into_iter()
        .find(|state| state.as_str() == value)
    }
}

/// kvitto's verdict on a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The provider's API (or, for `signature-only` integrations, the signed
    /// webhook) confirms the transaction as stored.
    Verified,
    /// The webhook and the provider's API disagree; see `rejection_reason`.
    Rejected,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Verified => "verified",
            Verdict::Rejected => "rejected",
        }
    }
}

/// How a transaction was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerificationMode {
    /// Looked up on the provider's API; the API's answer is the truth.
    Api,
    /// Trusted on the strength of the webhook's signature alone.
    SignatureOnly,
}

impl VerificationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            VerificationMode::Api => "api",
            VerificationMode::SignatureOnly => "signature-only",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    pub name: String,
    /// Decimal string as the provider sent it ("1", "0.5" for weighed goods).
    pub quantity: String,
    pub unit_price_minor: Option<i64>,
    pub total_minor: Option<i64>,
    pub sku: Option<String>,
}

/// One purchase, as kvitto decided it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    /// Stable across updates: derived from provider, integration and the
    /// provider's transaction id.
    pub id: Uuid,
    pub provider: ProviderKind,
    pub integration_id: String,
    pub business_id: String,
    pub location_id: String,
    pub provider_transaction_id: String,
    pub verdict: Verdict,
    pub rejection_reason: Option<String>,
    pub verification: VerificationMode,
    pub state: PaymentState,
    /// Integer minor units in the currency's own exponent (öre for SEK).
    pub amount_minor: i64,
    /// ISO 4217, upper case.
    pub currency: String,
    pub occurred_at: DateTime<Utc>,
    /// The same instant in Europe/Stockholm, RFC 3339 with its offset.
    pub occurred_at_local: String,
    pub line_items: Vec<LineItem>,
    /// The provider event ids that contributed, oldest first.
    pub source_event_ids: Vec<String>,
    /// Orders updates: a stored transaction is only replaced by a higher one.
    pub source_version: i64,
    /// Incremented each time the stored transaction changes.
    pub revision: i64,
    pub updated_at: DateTime<Utc>,
}

/// The namespace for transaction ids (UUID v5).
const TRANSACTION_NAMESPACE: Uuid = Uuid::from_u128(0x6b76_6974_746f_4000_8000_7472_616e_7361);

/// The stable id of a provider transaction within one integration.
pub fn transaction_id(provider: ProviderKind, integration_id: &str, transaction_ref: &str) -> Uuid {
    let name = format!("{provider}/{integration_id}/{transaction_ref}");
    Uuid::new_v5(&TRANSACTION_NAMESPACE, name.as_bytes())
}

/// Renders an instant in Stockholm local time with its offset.
pub fn stockholm_local(instant: DateTime<Utc>) -> String {
    instant
        .with_timezone(&chrono_tz::Europe::Stockholm)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn stockholm_local_follows_daylight_saving() {
        let winter = Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap();
        let summer = Utc.with_ymd_and_hms(2026, 7, 15, 12, 0, 0).unwrap();
        assert_eq!(stockholm_local(winter), "2026-01-15T13:00:00.000+01:00");
        assert_eq!(stockholm_local(summer), "2026-07-15T14:00:00.000+02:00");
    }

    #[test]
    fn transaction_id_is_stable_and_scoped_to_integration() {
        let a = transaction_id(ProviderKind::Square, "shop-a", "pay_1");
        assert_eq!(a, transaction_id(ProviderKind::Square, "shop-a", "pay_1"));
        assert_ne!(a, transaction_id(ProviderKind::Square, "shop-b", "pay_1"));
        assert_ne!(a, transaction_id(ProviderKind::Stripe, "shop-a", "pay_1"));
    }
}
