//! Integration health: is each integration's provider API reachable, and
//! does it accept the integration's credentials?
//!
//! Every provider's `api.rs` has a `probe` that makes one cheap, documented,
//! read-only call with the integration's credentials; [`probe`] dispatches to
//! it. The [`monitor`] runs the probes in the background for `kvitto serve`
//! (metrics and `/readyz`), and `kvitto doctor` runs them once.
//!
//! Guarantee: a probe never writes anything at the provider, never retries
//! (a check reports what one call saw) and never puts a secret in its
//! answer: failure details are status codes and transport errors, not
//! request URLs, headers or bodies. Integrations that verify with
//! signatures only never call the provider API and are not probed.

pub mod monitor;
pub mod probe;

use sha2::{Digest, Sha256};

pub use self::monitor::{HealthBoard, HealthMonitor, IntegrationHealth};
pub use self::probe::{DownReason, ProbeFailure};
use crate::canonical::VerificationMode;
use crate::config::IntegrationConfig;
use crate::providers::{self, ApiClient, ProviderKind};

/// Whether kvitto calls this integration's provider API, and so probes it.
/// Swish and Klarna sign nothing and are always verified on their API.
pub fn is_probed(integration: &IntegrationConfig) -> bool {
    integration.verification == VerificationMode::Api
        || matches!(
            integration.provider,
            ProviderKind::Swish | ProviderKind::Klarna
        )
}

/// Checks once that the integration's provider API answers and accepts its
/// credentials.
pub async fn probe(
    client: &ApiClient,
    integration: &IntegrationConfig,
) -> Result<(), ProbeFailure> {
    match integration.provider {
        ProviderKind::Square => providers::square::api::probe(client, integration).await,
        ProviderKind::Stripe => providers::stripe::api::probe(client, integration).await,
        ProviderKind::Shopify => providers::shopify::api::probe(client, integration).await,
        ProviderKind::Zettle => providers::zettle::api::probe(client, integration).await,
        ProviderKind::Swish => providers::swish::api::probe(client, integration).await,
        ProviderKind::Klarna => providers::klarna::api::probe(client, integration).await,
        ProviderKind::Generic => providers::generic::api::probe(client, integration).await,
    }
}

/// How many leading characters of an unsigned provider's id are shown.
const SHOWN_ID_PREFIX_CHARS: usize = 6;

/// The name under which an integration appears in metric labels, `/readyz`,
/// logs and `kvitto doctor`: its id, except for Swish and Klarna, whose id
/// is the unguessable path token that gates their unsigned callbacks. Those
/// show a short prefix and a digest of the id instead, stable and distinct
/// per integration but useless for forging a callback.
pub fn integration_label(integration: &IntegrationConfig) -> String {
    let id = &integration.id;
    if !matches!(
        integration.provider,
        ProviderKind::Swish | ProviderKind::Klarna
    ) {
        return id.clone();
    }
    let prefix: String = id.chars().take(SHOWN_ID_PREFIX_CHARS).collect();
    let digest = Sha256::digest(id.as_bytes());
    format!("{prefix}..{}", hex::encode(&digest[..4]))
}

#[cfg(test)]
mod tests;
