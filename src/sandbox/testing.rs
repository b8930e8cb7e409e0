//! What the provider tests share (test builds only): the demo configuration
//! and integrations with chosen secrets, a sandbox serving one provider's
//! routes on a free loopback port, an API client that gives up quickly, and
//! the reading of a webhook back as request headers, a decoded event or a
//! claim.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::{App, HttpServer, web};

use crate::config::{Config, IntegrationConfig, ProcessingConfig};
use crate::providers::{
    self, ApiClient, ApiError, Claim, DecodeError, DecodedEvent, EventAction, ProviderKind,
    ProviderTruth, RawDelivery,
};
use crate::sandbox::{Fault, SandboxState, SandboxWebhook};

/// How often [`fast_client`] retries a failed lookup.
pub(crate) const FAST_RETRIES: usize = 2;

/// The checked-in demo configuration, `config/kvitto.toml`.
pub(crate) fn demo_config() -> Config {
    let text = std::fs::read_to_string("config/kvitto.toml").unwrap();
    Config::from_toml(&text).unwrap()
}

/// The first integration of `provider` in `config`.
pub(crate) fn integration_of(config: &Config, provider: ProviderKind) -> IntegrationConfig {
    config
        .integrations
        .iter()
        .find(|i| i.provider == provider)
        .unwrap()
        .clone()
}

/// The demo integration of `provider`, signing with `secrets`.
pub(crate) fn integration_with_secrets(
    provider: ProviderKind,
    secrets: &[&str],
) -> IntegrationConfig {
    let mut integration = integration_of(&demo_config(), provider);
    integration.signing_secrets = secrets.iter().map(|s| s.to_string()).collect();
    integration
}

/// Request headers holding `value` under `name`, or no headers at all.
pub(crate) fn headers_with(name: &'static str, value: Option<&[u8]>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(value) = value {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    headers
}

/// An API client with a short timeout that retries [`FAST_RETRIES`] times
/// with millisecond backoff, so failure paths are quick to test.
pub(crate) fn fast_client() -> ApiClient {
    ApiClient::try_new(&ProcessingConfig {
        api_timeout_ms: 2_000,
        api_max_retries: FAST_RETRIES,
        api_min_backoff_ms: 1,
        api_max_backoff_ms: 5,
        ..ProcessingConfig::default()
    })
    .unwrap()
}

/// Makes the sandbox answer every `provider` lookup with a 500, then checks
/// that `lookup` gives up as transient after one attempt and
/// [`FAST_RETRIES`] retries, all of which reached the sandbox.
pub(crate) async fn assert_server_errors_are_transient(
    state: &SandboxState,
    provider: ProviderKind,
    transaction_ref: &str,
    lookup: impl Future<Output = Result<ProviderTruth, ApiError>>,
) {
    state.set_fault(provider, Some(Fault::ServerError));
    let result = lookup.await;
    assert!(
        matches!(result, Err(ApiError::Transient { .. })),
        "{result:?}"
    );
    let attempts = u32::try_from(FAST_RETRIES + 1).unwrap();
    assert_eq!(state.lookups_of(provider, transaction_ref), attempts);
}

/// Serves one provider's sandbox `routes` on a free loopback port, with a
/// sandbox state built from the config `config_at` gives for the server's
/// address. Returns that state and the address.
pub(crate) fn serve(
    routes: fn(&mut web::ServiceConfig),
    config_at: impl FnOnce(SocketAddr) -> Config,
) -> (web::Data<SandboxState>, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let state = web::Data::new(SandboxState::new(config_at(address)));
    let app_state = state.clone();
    let server = HttpServer::new(move || App::new().app_data(app_state.clone()).configure(routes))
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
    actix_rt::spawn(server);
    (state, address)
}

/// The webhook's headers as ingress would see them.
pub(crate) fn header_map(webhook: &SandboxWebhook) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in &webhook.headers {
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    headers
}

/// Decodes `body`, delivered without headers or query, as `provider`.
pub(crate) fn decode_body(
    provider: ProviderKind,
    body: &[u8],
) -> Result<DecodedEvent, DecodeError> {
    let delivery = RawDelivery {
        body,
        headers: &[],
        query: "",
    };
    providers::decode(provider, &delivery)
}

/// The purchase `event` claims; panics on any other action.
pub(crate) fn purchase_claim(event: DecodedEvent) -> Claim {
    match event.action {
        EventAction::Purchase(claim) => claim,
        other => panic!("expected a purchase, got {other:?}"),
    }
}

/// Decodes the webhook's body (without headers) as `provider` and returns
/// the purchase it claims, after checking its event id.
pub(crate) fn claim_of(provider: ProviderKind, webhook: &SandboxWebhook) -> Claim {
    let event = decode_body(provider, &webhook.body).unwrap();
    assert_eq!(event.event_id, webhook.event_id);
    purchase_claim(event)
}
