//! Stripe Connect payouts (placeholder until the rail lands).

use std::time::Duration;

use super::{OnboardingRequest, PayoutOrder, PayoutStatus, RailError};
use crate::settlement::config::StripeRailConfig;

#[derive(Clone)]
pub struct StripeRail;

impl StripeRail {
    pub fn try_new(_config: &StripeRailConfig, _timeout: Duration) -> Result<Self, RailError> {
        Ok(StripeRail)
    }
    pub async fn submit(&self, _order: &PayoutOrder) -> Result<PayoutStatus, RailError> {
        Err(RailError::Config("stripe rail not built".into()))
    }
    pub async fn status(&self, _order: &PayoutOrder) -> Result<PayoutStatus, RailError> {
        Err(RailError::Config("stripe rail not built".into()))
    }
    pub async fn create_account(&self, _request: &OnboardingRequest) -> Result<String, RailError> {
        Err(RailError::Config("stripe rail not built".into()))
    }
    pub async fn account_link(&self, _account_id: &str) -> Result<String, RailError> {
        Err(RailError::Config("stripe rail not built".into()))
    }
}
