//! Signature scheme (stub).

use crate::config::IntegrationConfig;
use crate::providers::{SignatureError, WebhookRequest};

pub fn verify(_integration: &IntegrationConfig, _request: &WebhookRequest<'_>) -> Result<(), SignatureError> {
    Err(SignatureError::Mismatch)
}
