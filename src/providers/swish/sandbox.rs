//! Sandbox (stub).

use actix_web::web::ServiceConfig;
use chrono::{DateTime, Utc};
use rand::Rng;

use crate::config::IntegrationConfig;
use crate::sandbox::{Purchase, SandboxWebhook, WebhookKind};

pub fn transaction_ref(_rng: &mut impl Rng) -> String {
    String::new()
}

pub fn webhook(
    _integration: &IntegrationConfig,
    _purchase: &Purchase,
    _kind: WebhookKind,
    _now: DateTime<Utc>,
) -> SandboxWebhook {
    SandboxWebhook { path_and_query: String::new(), headers: vec![], body: vec![], event_id: String::new() }
}

pub fn routes(_cfg: &mut ServiceConfig) {}
