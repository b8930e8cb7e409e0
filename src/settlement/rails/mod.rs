//! The payout rails: Stripe Connect and Swish payouts.
//!
//! Guarantee: every call made for one settlement carries keys derived from
//! the settlement id alone (Stripe's `Idempotency-Key`, Swish's
//! `payoutInstructionUUID`), so calling [`Rails::submit`] again after a
//! crash, a timeout or a lost answer yields the provider's record of the
//! first call, never a second payout.

pub mod stripe;
pub mod swish;

use std::time::Duration;

use uuid::Uuid;

use super::config::SettlementConfig;
use super::{Destination, Rail};

/// One reward to pay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutOrder {
    pub settlement_id: Uuid,
    pub amount_minor: i64,
    /// ISO 4217, upper case.
    pub currency: String,
    pub destination: Destination,
    /// Shown to the customer by the provider where it can be (Swish's
    /// `message`, at most 50 characters; Stripe's statement descriptor).
    pub message: String,
    /// The provider's reference from an earlier submission, when kvitto
    /// stored one (Stripe payout id, Swish instruction UUID).
    pub provider_ref: Option<String>,
}

/// What the provider says of a payout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayoutStatus {
    /// Accepted; the outcome comes later (webhook, callback or lookup).
    InFlight {
        provider_ref: String,
    },
    Paid {
        provider_ref: String,
    },
    /// Accepted, then failed (Stripe `payout.failed`, Swish `ERROR`): no
    /// money reached the customer.
    Failed {
        provider_ref: Option<String>,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RailError {
    /// No answer, a 5xx, a 429, a timeout: whether the provider acted is
    /// unknown. Retry with the same keys.
    #[error("transient: {0}")]
    Transient(String),
    /// The provider refused the request and did nothing (invalid
    /// destination, insufficient funds, an unknown account): final.
    #[error("refused: {0}")]
    Refused(String),
    /// kvitto itself cannot make the call (rail not configured, unreadable
    /// key file): an operator must act.
    #[error("not configured: {0}")]
    Config(String),
}

/// A business to onboard as a Stripe Express account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnboardingRequest {
    pub business_id: String,
    pub company_name: String,
    /// The Swedish organisation number.
    pub registration_number: String,
    pub email: String,
}

/// Both rails, as configured.
#[derive(Clone)]
pub struct Rails {
    stripe: Option<stripe::StripeRail>,
    swish: Option<swish::SwishRail>,
}

impl Rails {
    pub fn try_new(config: &SettlementConfig) -> Result<Rails, RailError> {
        let timeout = Duration::from_millis(config.rail_timeout_ms);
        let stripe = config
            .stripe
            .as_ref()
            .map(|c| stripe::StripeRail::try_new(c, timeout))
            .transpose()?;
        let swish = config
            .swish
            .as_ref()
            .map(|c| swish::SwishRail::try_new(c, timeout))
            .transpose()?;
        Ok(Rails { stripe, swish })
    }

    pub fn has(&self, rail: Rail) -> bool {
        match rail {
            Rail::Stripe => self.stripe.is_some(),
            Rail::Swish => self.swish.is_some(),
        }
    }

    /// Makes the payout, or finds the one an earlier call made.
    pub async fn submit(&self, order: &PayoutOrder) -> Result<PayoutStatus, RailError> {
        match order.destination.rail() {
            Rail::Stripe => self.stripe()?.submit(order).await,
            Rail::Swish => self.swish()?.submit(order).await,
        }
    }

    /// Asks the provider where the payout stands (reconciliation).
    pub async fn status(&self, order: &PayoutOrder) -> Result<PayoutStatus, RailError> {
        match order.destination.rail() {
            Rail::Stripe => self.stripe()?.status(order).await,
            Rail::Swish => self.swish()?.status(order).await,
        }
    }

    /// Creates a Stripe Express account (country SE, a company) and returns
    /// its id.
    pub async fn create_connected_account(
        &self,
        request: &OnboardingRequest,
    ) -> Result<String, RailError> {
        self.stripe()?.create_account(request).await
    }

    /// A fresh onboarding link for a connected account.
    pub async fn onboarding_link(&self, account_id: &str) -> Result<String, RailError> {
        self.stripe()?.account_link(account_id).await
    }

    fn stripe(&self) -> Result<&stripe::StripeRail, RailError> {
        self.stripe
            .as_ref()
            .ok_or_else(|| RailError::Config("settlement.stripe is not configured".into()))
    }

    fn swish(&self) -> Result<&swish::SwishRail, RailError> {
        self.swish
            .as_ref()
            .ok_or_else(|| RailError::Config("settlement.swish is not configured".into()))
    }
}
