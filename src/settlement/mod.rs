//! Settlement: scored feedback matched to verified purchases, rewards paid
//! out exactly once, and a double-entry ledger of every öre.
//!
//! The path, in the order a reward travels it:
//!
//! - [`feedback`]: the feedback service's message (from `kvitto.feedback`
//!   or `POST /v1/feedback`), validated with the offending field named.
//! - [`matching`]: one feedback to exactly one verified, completed
//!   transaction, by provider transaction id or by business, location,
//!   amount and time; waits for late webhooks up to a deadline.
//! - [`reward`]: the amount, from the business's tiers and caps, in integer
//!   öre, rounded down.
//! - [`store`]: the feedback, settlement, budget and ledger rows. Every
//!   guarantee is a database constraint: one feedback per id, one settlement
//!   per feedback, one settlement per purchase, one journal per settlement
//!   and kind.
//! - [`rails`]: Stripe Connect and Swish payouts, each call idempotent
//!   through a key derived from the settlement id.
//! - [`engine`]: the supervised actors that consume feedback, match, pay,
//!   reconcile and publish `kvitto.settlements`.
//! - [`http`]: `/v1/feedback`, the review queue and Stripe onboarding.
//!
//! Guarantee: a settlement row with its unique keys is committed before any
//! provider is called, and every call for it carries the same idempotency
//! key, so a crash anywhere between the call and the stored result retries
//! into the provider's replay of the first answer, never a second payment.

pub mod config;
pub mod engine;
pub mod feedback;
pub mod http;
pub mod ledger;
pub mod matching;
pub mod rails;
pub mod reward;
pub mod store;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The payout rail a reward goes out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rail {
    Stripe,
    Swish,
}

impl Rail {
    pub fn as_str(self) -> &'static str {
        match self {
            Rail::Stripe => "stripe",
            Rail::Swish => "swish",
        }
    }

    pub fn parse(value: &str) -> Option<Rail> {
        match value {
            "stripe" => Some(Rail::Stripe),
            "swish" => Some(Rail::Swish),
            _ => None,
        }
    }
}

impl std::fmt::Display for Rail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a settlement stands. `pending → submitted → paid | failed`, and
/// `canceled` when the purchase is refunded before the payout was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettlementState {
    /// Written, budget reserved; the provider has not confirmed a payout.
    Pending,
    /// The provider accepted the payout; its outcome is awaited.
    Submitted,
    Paid,
    /// The provider refused or failed the payout; the budget is given back.
    Failed,
    /// The purchase was refunded before payout; the budget is given back.
    Canceled,
}

impl SettlementState {
    pub const ALL: [SettlementState; 5] = [
        SettlementState::Pending,
        SettlementState::Submitted,
        SettlementState::Paid,
        SettlementState::Failed,
        SettlementState::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SettlementState::Pending => "pending",
            SettlementState::Submitted => "submitted",
            SettlementState::Paid => "paid",
            SettlementState::Failed => "failed",
            SettlementState::Canceled => "canceled",
        }
    }

    pub fn parse(value: &str) -> Option<SettlementState> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            SettlementState::Paid | SettlementState::Failed | SettlementState::Canceled
        )
    }
}

/// The namespace for settlement ids (UUID v5 of the feedback id).
const SETTLEMENT_NAMESPACE: Uuid = Uuid::from_u128(0x6b76_6974_746f_4000_8000_7365_7474_6c65);

/// The settlement id of a feedback: stable, so every retry and every
/// instance derives the same idempotency keys.
pub fn settlement_id(feedback_id: &str) -> Uuid {
    Uuid::new_v5(&SETTLEMENT_NAMESPACE, feedback_id.as_bytes())
}

/// Where a customer's reward goes, as the feedback service names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rail", rename_all = "lowercase", deny_unknown_fields)]
pub enum Destination {
    /// A Stripe Connect account (`acct_...`) of the customer; the reward is
    /// transferred to it and paid out to the account's bank.
    Stripe { account: String },
    /// A Swish number (`46...`, digits only) with its holder's personal
    /// identity number (12 digits), both of which Swish payouts require.
    Swish { number: String, ssn: String },
}

impl Destination {
    pub fn rail(&self) -> Rail {
        match self {
            Destination::Stripe { .. } => Rail::Stripe,
            Destination::Swish { .. } => Rail::Swish,
        }
    }
}

/// What a provider's webhook says about kvitto's own payouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettlementSignal {
    /// A payout changed state (Stripe `payout.paid`, `payout.failed`,
    /// `payout.canceled`, ...). `account` is the connected account it was
    /// made on.
    Payout {
        rail: Rail,
        account: Option<String>,
        status: rails::PayoutStatus,
    },
    /// A transfer to a connected account was made (Stripe
    /// `transfer.created`); `transfer_group` carries kvitto's settlement id.
    Transfer {
        transfer_ref: String,
        transfer_group: Option<String>,
    },
    /// A connected account's capabilities changed (Stripe `account.updated`).
    Account {
        account: String,
        charges_enabled: bool,
        payouts_enabled: bool,
        details_submitted: bool,
    },
}
