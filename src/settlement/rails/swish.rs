//! Swish payouts (placeholder until the rail lands).

use std::time::Duration;

use super::{PayoutOrder, PayoutStatus, RailError};
use crate::settlement::config::SwishRailConfig;

#[derive(Clone)]
pub struct SwishRail;

impl SwishRail {
    pub fn try_new(_config: &SwishRailConfig, _timeout: Duration) -> Result<Self, RailError> {
        Ok(SwishRail)
    }
    pub async fn submit(&self, _order: &PayoutOrder) -> Result<PayoutStatus, RailError> {
        Err(RailError::Config("swish rail not built".into()))
    }
    pub async fn status(&self, _order: &PayoutOrder) -> Result<PayoutStatus, RailError> {
        Err(RailError::Config("swish rail not built".into()))
    }
}
