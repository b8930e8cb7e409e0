//! API lookup (stub).

use crate::config::IntegrationConfig;
use crate::providers::{ApiClient, ApiError, ProviderTruth};

pub async fn lookup(
    _client: &ApiClient,
    _integration: &IntegrationConfig,
    _transaction_ref: &str,
) -> Result<ProviderTruth, ApiError> {
    Err(ApiError::permanent("not implemented"))
}
