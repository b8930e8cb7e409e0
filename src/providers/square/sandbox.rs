//! Square played by the sandbox: signed notifications about generated
//! purchases, and the Payments API that answers for them.
//!
//! The notification and the API answer are built from the same payment
//! object, in the shape Square documents, so a kvitto that verifies sandbox
//! traffic reads real Square traffic the same way. A `Created` notification
//! shows the payment as first authorised (`APPROVED`, `updated_at` equal to
//! `created_at`); an `Updated` one shows the purchase's current state, so it
//! always orders after the `Created` one.

use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use rand::distributions::Alphanumeric;
use serde_json::{Value, json};
use uuid::Uuid;

use super::signature::{SIGNATURE_HEADER, sign};
use crate::canonical::PaymentState;
use crate::config::IntegrationConfig;
use crate::providers::ProviderKind;
use crate::sandbox::{Lookup, Purchase, SandboxState, SandboxWebhook, WebhookKind};

/// Square payment ids are 29 letters and digits.
const PAYMENT_ID_LEN: usize = 29;

/// A payment id in Square's format, e.g. `KkAkhdMsgzn59SM8A89WgKwekxLZY`.
pub fn transaction_ref(rng: &mut impl Rng) -> String {
    (0..PAYMENT_ID_LEN)
        .map(|_| char::from(rng.sample(Alphanumeric)))
        .collect()
}

/// A signed `payment.created` or `payment.updated` notification.
pub fn webhook(
    integration: &IntegrationConfig,
    purchase: &Purchase,
    kind: WebhookKind,
    now: DateTime<Utc>,
) -> SandboxWebhook {
    let (event_type, state, updated_at) = match kind {
        WebhookKind::Created => (
            "payment.created",
            PaymentState::Pending,
            purchase.created_at,
        ),
        WebhookKind::Updated => ("payment.updated", purchase.state, purchase.updated_at),
    };
    let event_id = Uuid::new_v4().to_string();
    let notification = json!({
        "merchant_id": merchant_id(integration),
        "type": event_type,
        "event_id": event_id,
        "created_at": timestamp(updated_at),
        "data": {
            "type": "payment",
            "id": purchase.transaction_ref,
            "object": { "payment": payment_json(purchase, state, updated_at) },
        },
    });
    let body = notification.to_string().into_bytes();

    let secret = integration.signing_secrets.iter().find(|s| !s.is_empty());
    let url = integration.notification_url.as_deref().unwrap_or_default();
    let signature = sign(secret.map_or("", String::as_str), url, &body);
    let headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("user-agent".to_string(), "Square Connect v2".to_string()),
        (
            "square-version".to_string(),
            super::api::SQUARE_VERSION.to_string(),
        ),
        ("square-environment".to_string(), "Sandbox".to_string()),
        (
            "square-initial-delivery-timestamp".to_string(),
            timestamp(now),
        ),
        (SIGNATURE_HEADER.to_string(), signature),
    ];
    SandboxWebhook {
        path_and_query: format!("/webhooks/square/{}", integration.id),
        headers,
        body,
        event_id,
    }
}

/// Serves `GET /square/v2/payments/{payment_id}` and `GET
/// /square/v2/locations` (the health probe).
pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(
        web::scope("/square")
            .route("/v2/payments/{payment_id}", web::get().to(get_payment))
            .route("/v2/locations", web::get().to(list_locations)),
    );
}

/// `ListLocations`: the merchant's one location, as Square shapes it.
async fn list_locations(state: web::Data<SandboxState>, request: HttpRequest) -> HttpResponse {
    let Some(integration) = state.integration_with_bearer(ProviderKind::Square, &request) else {
        return error(
            HttpResponse::Unauthorized(),
            "AUTHENTICATION_ERROR",
            "UNAUTHORIZED",
            "This request could not be authorized.",
        );
    };
    let location = json!({
        "id": integration.provider_location_id.clone().unwrap_or_else(|| "L88917AVBK2S5".into()),
        "name": integration.location_id,
        "merchant_id": merchant_id(integration),
        "status": "ACTIVE",
        "country": "SE",
        "currency": "SEK",
    });
    if let Some(fault) = state.probe(ProviderKind::Square).await {
        return fault;
    }
    HttpResponse::Ok().json(json!({ "locations": [location] }))
}

async fn get_payment(
    state: web::Data<SandboxState>,
    request: HttpRequest,
    payment_id: web::Path<String>,
) -> HttpResponse {
    let Some(integration) = state.integration_with_bearer(ProviderKind::Square, &request) else {
        return error(
            HttpResponse::Unauthorized(),
            "AUTHENTICATION_ERROR",
            "UNAUTHORIZED",
            "This request could not be authorized.",
        );
    };
    let integration_id = integration.id.clone();

    match state.lookup(ProviderKind::Square, &payment_id).await {
        // Like Square, a payment of another merchant does not exist for you.
        Lookup::Found(purchase) if purchase.integration_id == integration_id => {
            let payment = payment_json(&purchase, purchase.state, purchase.updated_at);
            HttpResponse::Ok().json(json!({ "payment": payment }))
        }
        Lookup::Found(_) | Lookup::Missing => error(
            HttpResponse::NotFound(),
            "INVALID_REQUEST_ERROR",
            "NOT_FOUND",
            &format!("Could not find payment with id: {payment_id}"),
        ),
        Lookup::Respond(response) => response,
    }
}

fn error(
    mut builder: actix_web::HttpResponseBuilder,
    category: &str,
    code: &str,
    detail: &str,
) -> HttpResponse {
    builder.json(json!({ "errors": [{ "category": category, "code": code, "detail": detail }] }))
}

/// The Square `Payment` for a purchase in `state` as of `updated_at`.
fn payment_json(purchase: &Purchase, state: PaymentState, updated_at: DateTime<Utc>) -> Value {
    let money = json!({ "amount": purchase.amount_minor, "currency": purchase.currency });
    let mut payment = json!({
        "id": purchase.transaction_ref,
        "created_at": timestamp(purchase.created_at),
        "updated_at": timestamp(updated_at),
        "amount_money": money,
        "total_money": money,
        "approved_money": money,
        "status": status(state),
        "source_type": "CARD",
        "location_id": purchase.location_ref,
        "receipt_number": purchase.transaction_ref.chars().take(4).collect::<String>(),
    });
    // Square keeps a refunded payment COMPLETED and records the refund here.
    if state == PaymentState::Refunded {
        payment["refunded_money"] = money;
    }
    payment
}

fn status(state: PaymentState) -> &'static str {
    match state {
        PaymentState::Pending => "APPROVED",
        PaymentState::Completed | PaymentState::Refunded => "COMPLETED",
        PaymentState::Failed => "FAILED",
        PaymentState::Canceled => "CANCELED",
    }
}

/// A stable merchant id per integration, in Square's 13-character style.
fn merchant_id(integration: &IntegrationConfig) -> String {
    let uuid = Uuid::new_v5(&Uuid::NAMESPACE_OID, integration.id.as_bytes());
    let hex: String = uuid
        .simple()
        .to_string()
        .to_ascii_uppercase()
        .chars()
        .take(11)
        .collect();
    format!("ML{hex}")
}

/// Square's timestamps: RFC 3339 in UTC with milliseconds.
fn timestamp(instant: DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::canonical::LineItem;

    use crate::providers::square::{api, decode, signature};
    use crate::providers::{ApiError, Claim, ProviderTruth, WebhookRequest};
    use crate::sandbox::testing;

    fn integration() -> IntegrationConfig {
        testing::integration_of(&testing::demo_config(), ProviderKind::Square)
    }

    fn purchase(integration: &IntegrationConfig, state: PaymentState) -> Purchase {
        let created_at = Utc.with_ymd_and_hms(2026, 3, 2, 9, 14, 58).unwrap();
        Purchase {
            provider: ProviderKind::Square,
            integration_id: integration.id.clone(),
            transaction_ref: transaction_ref(&mut rand::thread_rng()),
            amount_minor: 13_900,
            currency: "SEK".into(),
            state,
            created_at,
            updated_at: created_at + chrono::Duration::milliseconds(4_511),
            location_ref: "L88917AVBK2S5".into(),
            line_items: vec![LineItem {
                name: "Kanelbulle".into(),
                quantity: "2".into(),
                unit_price_minor: Some(6_950),
                total_minor: Some(13_900),
                sku: None,
            }],
        }
    }

    /// Serves the Square routes on an ephemeral port; returns the state and
    /// the integration pointed at the server.
    fn serve(purchases: &[Purchase]) -> (web::Data<SandboxState>, IntegrationConfig) {
        let (state, address) = testing::serve(routes, |_| testing::demo_config());
        for purchase in purchases {
            state.insert(purchase.clone());
        }
        let mut integration = integration();
        integration.api_base_url = Some(format!("http://{address}/square"));
        (state, integration)
    }

    fn claim_of(webhook: &SandboxWebhook) -> Claim {
        testing::claim_of(ProviderKind::Square, webhook)
    }

    #[actix_rt::test]
    async fn square_lookup_through_sandbox_matches_purchase() {
        let integration = integration();
        let purchase = purchase(&integration, PaymentState::Completed);
        let (state, integration) = serve(std::slice::from_ref(&purchase));

        let truth = api::lookup(
            &testing::fast_client(),
            &integration,
            &purchase.transaction_ref,
        )
        .await
        .unwrap();
        assert_eq!(
            truth,
            ProviderTruth {
                transaction_ref: purchase.transaction_ref.clone(),
                amount_minor: 13_900,
                currency: "SEK".into(),
                state: PaymentState::Completed,
                occurred_at: purchase.created_at,
                source_version: purchase.updated_at.timestamp_millis(),
                location_ref: Some("L88917AVBK2S5".into()),
                line_items: vec![],
            }
        );
        assert_eq!(
            state.lookups_of(ProviderKind::Square, &purchase.transaction_ref),
            1
        );
    }

    #[actix_rt::test]
    async fn square_refunded_purchase_looks_up_as_refunded() {
        let integration = integration();
        let purchase = purchase(&integration, PaymentState::Refunded);
        let (_state, integration) = serve(std::slice::from_ref(&purchase));
        let truth = api::lookup(
            &testing::fast_client(),
            &integration,
            &purchase.transaction_ref,
        )
        .await
        .unwrap();
        assert_eq!(truth.state, PaymentState::Refunded);
    }

    #[actix_rt::test]
    async fn square_wrong_token_is_permanent() {
        let integration = integration();
        let purchase = purchase(&integration, PaymentState::Completed);
        let (_state, mut integration) = serve(std::slice::from_ref(&purchase));
        integration.api_token = Some("not-the-token".into());
        let result = api::lookup(
            &testing::fast_client(),
            &integration,
            &purchase.transaction_ref,
        )
        .await;
        assert!(matches!(result, Err(ApiError::Permanent(_))), "{result:?}");
    }

    #[actix_rt::test]
    async fn square_unknown_payment_is_not_found() {
        let (_state, integration) = serve(&[]);
        let result = api::lookup(
            &testing::fast_client(),
            &integration,
            "KkAkhdMsgzn59SM8A89WgKwekxLZY",
        )
        .await;
        assert_eq!(result, Err(ApiError::NotFound));
    }

    #[actix_rt::test]
    async fn square_server_errors_are_transient_after_retries() {
        let integration = integration();
        let purchase = purchase(&integration, PaymentState::Completed);
        let (state, integration) = serve(std::slice::from_ref(&purchase));
        let client = testing::fast_client();
        let lookup = api::lookup(&client, &integration, &purchase.transaction_ref);
        testing::assert_server_errors_are_transient(
            &state,
            ProviderKind::Square,
            &purchase.transaction_ref,
            lookup,
        )
        .await;
    }

    #[test]
    fn square_sandbox_webhook_verifies_and_decodes_to_the_purchase() {
        let integration = integration();
        let purchase = purchase(&integration, PaymentState::Completed);
        let webhook = webhook(&integration, &purchase, WebhookKind::Updated, Utc::now());
        assert_eq!(webhook.path_and_query, "/webhooks/square/demo-square");

        let headers = testing::header_map(&webhook);
        let request = WebhookRequest {
            headers: &headers,
            body: &webhook.body,
            query: "",
        };
        assert_eq!(signature::verify(&integration, &request), Ok(()));
        let info = decode::envelope_info(&request).unwrap();
        assert_eq!(info.event_id, webhook.event_id);
        assert_eq!(info.partition_key, purchase.transaction_ref);

        assert_eq!(
            claim_of(&webhook),
            Claim {
                transaction_ref: purchase.transaction_ref.clone(),
                amount_minor: Some(purchase.amount_minor),
                currency: Some(purchase.currency.clone()),
                state: Some(purchase.state),
                occurred_at: Some(purchase.created_at),
                source_version: purchase.updated_at.timestamp_millis(),
                location_ref: Some(purchase.location_ref.clone()),
                line_items: vec![],
            }
        );
    }

    #[test]
    fn square_created_webhook_is_approved_and_orders_before_updated() {
        let integration = integration();
        let purchase = purchase(&integration, PaymentState::Completed);
        let created = claim_of(&webhook(
            &integration,
            &purchase,
            WebhookKind::Created,
            Utc::now(),
        ));
        let updated = claim_of(&webhook(
            &integration,
            &purchase,
            WebhookKind::Updated,
            Utc::now(),
        ));
        assert_eq!(created.state, Some(PaymentState::Pending));
        assert_eq!(
            created.source_version,
            purchase.created_at.timestamp_millis()
        );
        assert!(created.source_version < updated.source_version);
    }

    #[test]
    fn square_transaction_refs_look_like_square_payment_ids() {
        let mut rng = rand::thread_rng();
        let first = transaction_ref(&mut rng);
        assert_eq!(first.len(), PAYMENT_ID_LEN);
        assert!(first.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(first, transaction_ref(&mut rng));
    }
}
