//! Klarna played by the sandbox: empty-body pushes and the order management
//! API (order read and acknowledgement) behind basic auth.
//!
//! Acknowledgements are kept in a process-wide set rather than in
//! `SandboxState`, which knows nothing provider-specific: actix builds one
//! app per worker, so state created inside `routes` would not be shared
//! between workers. [`acknowledgements_of`] lets tests and the simulator see
//! that kvitto acknowledged an order.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use actix_web::HttpResponse;
use actix_web::http::header::{self, HeaderMap};
use actix_web::web::{self, ServiceConfig};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::canonical::PaymentState;
use crate::config::IntegrationConfig;
use crate::providers::ProviderKind;
use crate::providers::klarna::api::PROBE_ORDER_ID;
use crate::sandbox::{Lookup, Purchase, SandboxState, SandboxWebhook, WebhookKind};

/// How many times each order id was acknowledged.
static ACKNOWLEDGED: LazyLock<Mutex<HashMap<String, u32>>> = LazyLock::new(Default::default);

/// A Klarna order id: a UUID in lower-case hyphenated form.
pub fn transaction_ref(rng: &mut impl Rng) -> String {
    uuid::Builder::from_random_bytes(rng.r#gen())
        .into_uuid()
        .to_string()
}

/// Klarna's push: an empty `POST` to the push URL with the order id filled
/// in. Klarna has no update push; it repeats the same one until the order is
/// acknowledged, so both kinds build the same delivery.
pub fn webhook(
    integration: &IntegrationConfig,
    purchase: &Purchase,
    _kind: WebhookKind,
    _now: DateTime<Utc>,
) -> SandboxWebhook {
    SandboxWebhook {
        path_and_query: format!(
            "/webhooks/klarna/{}?order_id={}",
            integration.id, purchase.transaction_ref
        ),
        headers: Vec::new(),
        body: Vec::new(),
        event_id: format!("push:{}", purchase.transaction_ref),
    }
}

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(
        web::scope("/klarna")
            .route(
                "/ordermanagement/v1/orders/{order_id}",
                web::get().to(get_order),
            )
            .route(
                "/ordermanagement/v1/orders/{order_id}/acknowledge",
                web::post().to(acknowledge_order),
            ),
    );
}

/// How many times kvitto acknowledged `order_id` through the sandbox.
pub fn acknowledgements_of(order_id: &str) -> u32 {
    ACKNOWLEDGED
        .lock()
        .map(|acks| acks.get(order_id).copied().unwrap_or(0))
        .unwrap_or(0)
}

async fn get_order(
    state: web::Data<SandboxState>,
    order_id: web::Path<String>,
    request: actix_web::HttpRequest,
) -> HttpResponse {
    let Some(integration) = authenticated(&state, request.headers()) else {
        return unauthorized();
    };
    if order_id.as_str() == PROBE_ORDER_ID {
        return match state.probe(ProviderKind::Klarna).await {
            Some(fault) => fault,
            None => no_such_order(&order_id),
        };
    }
    match state.lookup(ProviderKind::Klarna, &order_id).await {
        Lookup::Found(purchase) if purchase.integration_id == integration.id => {
            HttpResponse::Ok().json(order_json(&purchase))
        }
        // Another merchant's order is as unknown as a missing one.
        Lookup::Found(_) | Lookup::Missing => no_such_order(&order_id),
        Lookup::Respond(response) => response,
    }
}

async fn acknowledge_order(
    state: web::Data<SandboxState>,
    order_id: web::Path<String>,
    request: actix_web::HttpRequest,
) -> HttpResponse {
    let Some(integration) = authenticated(&state, request.headers()) else {
        return unauthorized();
    };
    match state.get(ProviderKind::Klarna, &order_id) {
        Some(purchase) if purchase.integration_id == integration.id => {
            if let Ok(mut acks) = ACKNOWLEDGED.lock() {
                *acks.entry(order_id.into_inner()).or_default() += 1;
            }
            HttpResponse::NoContent().finish()
        }
        _ => no_such_order(&order_id),
    }
}

/// The Klarna integration whose basic-auth credentials the request carries.
fn authenticated<'a>(
    state: &'a SandboxState,
    headers: &HeaderMap,
) -> Option<&'a IntegrationConfig> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = BASE64.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (username, password) = text.split_once(':')?;
    state.config.integrations.iter().find(|integration| {
        integration.provider == ProviderKind::Klarna
            && same(integration.api_username.as_deref(), username)
            && same(integration.api_password.as_deref(), password)
    })
}

fn same(configured: Option<&str>, given: &str) -> bool {
    configured.is_some_and(|configured| bool::from(configured.as_bytes().ct_eq(given.as_bytes())))
}

fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"Klarna\""))
        .finish()
}

/// Klarna's own not-found answer.
fn no_such_order(order_id: &str) -> HttpResponse {
    HttpResponse::NotFound().json(json!({
        "error_code": "NO_SUCH_ORDER",
        "error_messages": [format!("Order with id {order_id} was not found")],
        "correlation_id": uuid::Uuid::new_v4().to_string(),
    }))
}

/// The order as Klarna's order management API answers it.
fn order_json(purchase: &Purchase) -> serde_json::Value {
    let amount = purchase.amount_minor;
    let (status, captured, refunded) = match purchase.state {
        PaymentState::Completed => ("CAPTURED", amount, 0),
        PaymentState::Refunded => ("CAPTURED", amount, amount),
        // Klarna has no pending or failed order: an order exists once it is
        // authorised, and one that never completes is cancelled.
        PaymentState::Pending => ("AUTHORIZED", 0, 0),
        PaymentState::Failed | PaymentState::Canceled => ("CANCELLED", 0, 0),
    };
    let order_lines: Vec<_> = purchase
        .line_items
        .iter()
        .map(|line| {
            let total = line.total_minor.unwrap_or(0);
            // Klarna counts whole units; a weighed item becomes one unit of
            // its total price.
            let (quantity, unit_price) = match line.quantity.parse::<i64>() {
                Ok(quantity) => (quantity, line.unit_price_minor.unwrap_or(total)),
                Err(_) => (1, total),
            };
            json!({
                "reference": line.sku.clone().unwrap_or_default(),
                "type": "physical",
                "quantity": quantity,
                "quantity_unit": "pcs",
                "name": line.name,
                "unit_price": unit_price,
                "tax_rate": 2500,
                "total_amount": total,
                "total_discount_amount": 0,
                "total_tax_amount": total / 5,
            })
        })
        .collect();
    json!({
        "order_id": purchase.transaction_ref,
        "status": status,
        "fraud_status": "ACCEPTED",
        "order_amount": amount,
        "original_order_amount": amount,
        "captured_amount": captured,
        "refunded_amount": refunded,
        "remaining_authorized_amount": amount - captured,
        "purchase_currency": purchase.currency,
        "purchase_country": "SE",
        "locale": "sv-SE",
        "order_lines": order_lines,
        "merchant_reference1": purchase.location_ref,
        "created_at": purchase.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "expires_at": (purchase.created_at + chrono::Duration::days(28))
            .to_rfc3339_opts(SecondsFormat::Millis, true),
        "captures": [],
        "refunds": [],
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use rand::SeedableRng;

    use super::*;
    use crate::canonical::LineItem;
    use crate::config::Config;
    use crate::providers::klarna::{api, decode};
    use crate::providers::{ApiError, Claim, EventAction, RawDelivery, WebhookRequest};
    use crate::sandbox::testing;

    fn demo_config(api_base_url: &str) -> Config {
        let mut config = testing::demo_config();
        for integration in &mut config.integrations {
            if integration.provider == ProviderKind::Klarna {
                integration.api_base_url = Some(api_base_url.into());
            }
        }
        config
    }

    fn klarna_integration(config: &Config) -> IntegrationConfig {
        testing::integration_of(config, ProviderKind::Klarna)
    }

    fn line(name: &str, quantity: &str, unit: i64, sku: Option<&str>) -> LineItem {
        let total = unit * quantity.parse::<i64>().unwrap();
        LineItem {
            name: name.into(),
            quantity: quantity.into(),
            unit_price_minor: Some(unit),
            total_minor: Some(total),
            sku: sku.map(Into::into),
        }
    }

    fn purchase(integration: &IntegrationConfig) -> Purchase {
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let created_at = Utc.with_ymd_and_hms(2026, 3, 1, 10, 15, 30).unwrap();
        Purchase {
            provider: ProviderKind::Klarna,
            integration_id: integration.id.clone(),
            transaction_ref: transaction_ref(&mut rng),
            amount_minor: 50000,
            currency: "SEK".into(),
            state: PaymentState::Completed,
            created_at,
            updated_at: created_at,
            location_ref: "city".into(),
            line_items: vec![
                line("Bryggkaffe", "2", 2500, Some("KAFFE-1")),
                line("Räksmörgås", "1", 45000, None),
            ],
        }
    }

    /// A sandbox serving the Klarna routes on a free port.
    fn serve(purchase: Option<Purchase>) -> (web::Data<SandboxState>, IntegrationConfig) {
        let (state, _) = testing::serve(routes, |address| {
            demo_config(&format!("http://{address}/klarna"))
        });
        if let Some(purchase) = purchase {
            state.insert(purchase);
        }
        let integration = klarna_integration(&state.config);
        (state, integration)
    }

    fn demo_purchase() -> (IntegrationConfig, Purchase) {
        let integration = klarna_integration(&demo_config("http://127.0.0.1:1/klarna"));
        let purchase = purchase(&integration);
        (integration, purchase)
    }

    #[test]
    fn klarna_transaction_refs_are_uuids() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let order_id = transaction_ref(&mut rng);
        assert!(uuid::Uuid::parse_str(&order_id).is_ok(), "{order_id}");
        assert!(decode::is_order_id(&order_id));
        assert_ne!(order_id, transaction_ref(&mut rng));
    }

    #[test]
    fn klarna_sandbox_push_decodes_to_the_order_id() {
        let (integration, purchase) = demo_purchase();
        let push = webhook(&integration, &purchase, WebhookKind::Created, Utc::now());
        assert!(push.body.is_empty());
        let (path, query) = push.path_and_query.split_once('?').unwrap();
        assert_eq!(path, format!("/webhooks/klarna/{}", integration.id));

        let headers = HeaderMap::new();
        let request = WebhookRequest {
            headers: &headers,
            body: &push.body,
            query,
        };
        let envelope = decode::envelope_info(&request).unwrap();
        assert_eq!(envelope.event_id, push.event_id);
        assert_eq!(envelope.partition_key, purchase.transaction_ref);

        let event = decode::decode(&RawDelivery {
            body: &push.body,
            headers: &[],
            query,
        })
        .unwrap();
        let expected = Claim {
            transaction_ref: purchase.transaction_ref.clone(),
            ..Claim::default()
        };
        assert_eq!(event.action, EventAction::Purchase(expected));
        let repeat = webhook(&integration, &purchase, WebhookKind::Updated, Utc::now());
        assert_eq!(repeat.event_id, push.event_id);
    }

    #[actix_rt::test]
    async fn klarna_lookup_through_the_sandbox_matches_the_purchase_and_acknowledges() {
        let (_, purchase) = demo_purchase();
        let (state, integration) = serve(Some(purchase.clone()));
        let truth = api::lookup(
            &testing::fast_client(),
            &integration,
            &purchase.transaction_ref,
        )
        .await
        .unwrap();
        assert_eq!(truth.transaction_ref, purchase.transaction_ref);
        assert_eq!(truth.amount_minor, purchase.amount_minor);
        assert_eq!(truth.currency, purchase.currency);
        assert_eq!(truth.state, purchase.state);
        assert_eq!(truth.occurred_at, purchase.created_at);
        assert_eq!(truth.source_version, purchase.created_at.timestamp_millis());
        assert_eq!(truth.line_items, purchase.line_items);
        assert_eq!(
            state.lookups_of(ProviderKind::Klarna, &purchase.transaction_ref),
            1
        );
        assert_eq!(acknowledgements_of(&purchase.transaction_ref), 1);
    }

    #[actix_rt::test]
    async fn klarna_refunded_and_canceled_purchases_come_back_as_such() {
        let (_, mut purchase) = demo_purchase();
        purchase.transaction_ref = "0b7d2c1e-4f5a-4c3b-9e8d-7a6b5c4d3e2f".into();
        purchase.state = PaymentState::Refunded;
        let (state, integration) = serve(Some(purchase.clone()));
        let client = testing::fast_client();
        let truth = api::lookup(&client, &integration, &purchase.transaction_ref)
            .await
            .unwrap();
        assert_eq!(truth.state, PaymentState::Refunded);
        state.update(ProviderKind::Klarna, &purchase.transaction_ref, |p| {
            p.state = PaymentState::Canceled;
        });
        let truth = api::lookup(&client, &integration, &purchase.transaction_ref)
            .await
            .unwrap();
        assert_eq!(truth.state, PaymentState::Canceled);
    }

    #[actix_rt::test]
    async fn klarna_wrong_credentials_are_permanent_and_acknowledge_nothing() {
        let (_, mut purchase) = demo_purchase();
        purchase.transaction_ref = "7c0e8f51-2b9d-4a63-8c1e-5f4d3b2a1908".into();
        let (_state, mut integration) = serve(Some(purchase.clone()));
        integration.api_password = Some("not-the-password".into());
        let error = api::lookup(
            &testing::fast_client(),
            &integration,
            &purchase.transaction_ref,
        )
        .await
        .unwrap_err();
        assert!(matches!(error, ApiError::Permanent(_)), "{error:?}");
        assert_eq!(acknowledgements_of(&purchase.transaction_ref), 0);
        integration.api_password = None;
        let error = api::lookup(
            &testing::fast_client(),
            &integration,
            &purchase.transaction_ref,
        )
        .await
        .unwrap_err();
        assert!(matches!(error, ApiError::Permanent(_)), "{error:?}");
    }

    #[actix_rt::test]
    async fn klarna_unknown_order_is_not_found() {
        let (_state, integration) = serve(None);
        let order_id = "3e1f7a9c-0d2b-4e6f-8a1c-9b7d5e3f1a20";
        let error = api::lookup(&testing::fast_client(), &integration, order_id)
            .await
            .unwrap_err();
        assert_eq!(error, ApiError::NotFound);
        assert_eq!(acknowledgements_of(order_id), 0);
    }

    #[actix_rt::test]
    async fn klarna_lookup_refuses_a_malformed_order_id_without_calling_klarna() {
        let (state, integration) = serve(None);
        for bad in ["../admin", "a b", ""] {
            let error = api::lookup(&testing::fast_client(), &integration, bad)
                .await
                .unwrap_err();
            assert!(
                matches!(error, ApiError::Permanent(_)),
                "{bad:?}: {error:?}"
            );
        }
        assert_eq!(state.looked_up_count(), 0);
    }

    #[actix_rt::test]
    async fn klarna_server_errors_are_transient_after_retries() {
        let (_, mut purchase) = demo_purchase();
        purchase.transaction_ref = "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d".into();
        let (state, integration) = serve(Some(purchase.clone()));
        let client = testing::fast_client();
        let lookup = api::lookup(&client, &integration, &purchase.transaction_ref);
        testing::assert_server_errors_are_transient(
            &state,
            ProviderKind::Klarna,
            &purchase.transaction_ref,
            lookup,
        )
        .await;
        assert_eq!(acknowledgements_of(&purchase.transaction_ref), 0);
    }

    #[actix_rt::test]
    async fn klarna_failed_acknowledgement_is_transient() {
        // An API that reads the order but refuses every acknowledgement.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let (_, purchase) = demo_purchase();
        let order = order_json(&purchase);
        let server = actix_web::HttpServer::new(move || {
            let order = order.clone();
            actix_web::App::new()
                .route(
                    "/klarna/ordermanagement/v1/orders/{id}",
                    web::get().to(move || {
                        let order = order.clone();
                        async move { HttpResponse::Ok().json(order) }
                    }),
                )
                .route(
                    "/klarna/ordermanagement/v1/orders/{id}/acknowledge",
                    web::post().to(|| async { HttpResponse::ServiceUnavailable().finish() }),
                )
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        actix_rt::spawn(server);
        let integration = klarna_integration(&demo_config(&format!("http://{address}/klarna")));
        let error = api::lookup(
            &testing::fast_client(),
            &integration,
            &purchase.transaction_ref,
        )
        .await
        .unwrap_err();
        assert!(error.is_transient(), "{error:?}");
        assert!(error.to_string().contains("acknowledging"), "{error}");
    }
}
