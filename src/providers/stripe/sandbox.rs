//! Stripe played by the sandbox: signed events about generated purchases,
//! and the charges and payment intents API that answers for them.
//!
//! Events and API answers are built from the same charge object in the
//! shape Stripe documents. A `Created` webhook is the charge as first
//! reported (`charge.succeeded`, or `charge.pending` / `charge.failed` for
//! purchases that never succeeded), dated at the purchase's `created_at`; an
//! `Updated` one is `charge.updated` with the purchase's current state,
//! dated at its `updated_at`, so it orders after the `Created` one whenever
//! the two fall in different seconds (Stripe's clock has whole seconds).

use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use chrono::{DateTime, Utc};
use rand::Rng;
use rand::distributions::Alphanumeric;
use serde_json::{Value, json};

use super::api::STRIPE_VERSION;
use super::signature::{SIGNATURE_HEADER, sign};
use crate::canonical::PaymentState;
use crate::config::IntegrationConfig;
use crate::providers::ProviderKind;
use crate::sandbox::{Lookup, Purchase, SandboxState, SandboxWebhook, WebhookKind};

/// Stripe ids are a type prefix and 24 letters and digits.
const ID_BODY_LEN: usize = 24;

/// A charge id in Stripe's format, e.g. `ch_3OqLbW2eZvKYlo2C1ZQ7d0pA`.
pub fn transaction_ref(rng: &mut impl Rng) -> String {
    stripe_id("ch_", rng)
}

pub(crate) fn stripe_id(prefix: &str, rng: &mut impl Rng) -> String {
    let body: String = (0..ID_BODY_LEN)
        .map(|_| char::from(rng.sample(Alphanumeric)))
        .collect();
    format!("{prefix}{body}")
}

/// A signed charge event about `purchase`, signed at `now`.
pub fn webhook(
    integration: &IntegrationConfig,
    purchase: &Purchase,
    kind: WebhookKind,
    now: DateTime<Utc>,
) -> SandboxWebhook {
    let (event_type, state, created) = match (kind, purchase.state) {
        (WebhookKind::Created, PaymentState::Pending) => {
            ("charge.pending", PaymentState::Pending, purchase.created_at)
        }
        (WebhookKind::Created, PaymentState::Failed) => {
            ("charge.failed", PaymentState::Failed, purchase.created_at)
        }
        (WebhookKind::Created, _) => (
            "charge.succeeded",
            PaymentState::Completed,
            purchase.created_at,
        ),
        (WebhookKind::Updated, state) => ("charge.updated", state, purchase.updated_at),
    };
    let event_id = stripe_id("evt_", &mut rand::thread_rng());
    let event = json!({
        "id": event_id,
        "object": "event",
        "api_version": STRIPE_VERSION,
        "created": created.timestamp(),
        "data": { "object": charge_json(purchase, state) },
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": event_type,
    });
    let body = event.to_string().into_bytes();

    let secret = integration.signing_secrets.iter().find(|s| !s.is_empty());
    let signature = sign(secret.map_or("", String::as_str), now.timestamp(), &body);
    let headers = vec![
        (
            "content-type".to_string(),
            "application/json; charset=utf-8".to_string(),
        ),
        (
            "user-agent".to_string(),
            "Stripe/1.0 (+https://stripe.com/docs/webhooks)".to_string(),
        ),
        (SIGNATURE_HEADER.to_string(), signature),
    ];
    SandboxWebhook {
        path_and_query: format!("/webhooks/stripe/{}", integration.id),
        headers,
        body,
        event_id,
    }
}

/// Serves `GET /stripe/v1/charges/{id}`, `GET /stripe/v1/payment_intents/{id}`,
/// `GET /stripe/v1/balance` and the Connect routes of [`super::connect_sandbox`].
pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(
        web::scope("/stripe")
            .route("/v1/charges/{id}", web::get().to(get_charge))
            .route(
                "/v1/payment_intents/{id}",
                web::get().to(get_payment_intent),
            )
            .route("/v1/balance", web::get().to(get_balance))
            .configure(super::connect_sandbox::routes),
    );
}

/// `GET /v1/balance` (the health probe): an empty SEK balance.
async fn get_balance(state: web::Data<SandboxState>, request: HttpRequest) -> HttpResponse {
    if state
        .integration_with_bearer(ProviderKind::Stripe, &request)
        .is_none()
    {
        return error(
            HttpResponse::Unauthorized(),
            None,
            "Invalid API Key provided: sk_****",
        );
    }
    if let Some(fault) = state.probe(ProviderKind::Stripe).await {
        return fault;
    }
    let funds = json!([{ "amount": 0, "currency": "sek", "source_types": { "card": 0 } }]);
    HttpResponse::Ok().json(json!({
        "object": "balance",
        "available": funds,
        "pending": funds,
        "livemode": false,
    }))
}

async fn get_charge(
    state: web::Data<SandboxState>,
    request: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    get_object(&state, &request, &id, "charge", |p| charge_json(p, p.state)).await
}

async fn get_payment_intent(
    state: web::Data<SandboxState>,
    request: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    get_object(&state, &request, &id, "payment_intent", payment_intent_json).await
}

async fn get_object(
    state: &SandboxState,
    request: &HttpRequest,
    id: &str,
    kind: &str,
    render: impl Fn(&Purchase) -> Value,
) -> HttpResponse {
    let Some(integration) = state.integration_with_bearer(ProviderKind::Stripe, request) else {
        return error(
            HttpResponse::Unauthorized(),
            None,
            "Invalid API Key provided: sk_****",
        );
    };
    let integration_id = integration.id.clone();

    match state.lookup(ProviderKind::Stripe, id).await {
        // Like Stripe, another account's object does not exist for you.
        Lookup::Found(purchase) if purchase.integration_id == integration_id => {
            HttpResponse::Ok().json(render(&purchase))
        }
        Lookup::Found(_) | Lookup::Missing => error(
            HttpResponse::NotFound(),
            Some("resource_missing"),
            &format!("No such {kind}: '{id}'"),
        ),
        Lookup::Respond(response) => response,
    }
}

fn error(mut builder: HttpResponseBuilder, code: Option<&str>, message: &str) -> HttpResponse {
    let mut error = json!({ "type": "invalid_request_error", "message": message });
    if let Some(code) = code {
        error["code"] = json!(code);
        error["param"] = json!("id");
    }
    builder.json(json!({ "error": error }))
}

/// The Stripe `Charge` for a purchase in `state`. A refund without capture
/// is how Stripe shows a released authorisation, kvitto's `Canceled`.
fn charge_json(purchase: &Purchase, state: PaymentState) -> Value {
    let (status, captured, refunded) = match state {
        PaymentState::Completed => ("succeeded", true, false),
        PaymentState::Pending => ("pending", false, false),
        PaymentState::Failed => ("failed", false, false),
        PaymentState::Refunded => ("succeeded", true, true),
        PaymentState::Canceled => ("succeeded", false, true),
    };
    let amount = purchase.amount_minor;
    json!({
        "id": purchase.transaction_ref,
        "object": "charge",
        "amount": amount,
        "amount_captured": if captured { amount } else { 0 },
        "amount_refunded": if refunded { amount } else { 0 },
        "captured": captured,
        "created": purchase.created_at.timestamp(),
        "currency": purchase.currency.to_ascii_lowercase(),
        "failure_code": if state == PaymentState::Failed { json!("card_declined") } else { Value::Null },
        "livemode": false,
        "metadata": {},
        "paid": status == "succeeded",
        "refunded": refunded,
        "status": status,
    })
}

/// The Stripe `PaymentIntent` for a purchase stored under a `pi_` id.
fn payment_intent_json(purchase: &Purchase) -> Value {
    let status = match purchase.state {
        PaymentState::Completed | PaymentState::Refunded => "succeeded",
        PaymentState::Pending => "processing",
        PaymentState::Failed => "requires_payment_method",
        PaymentState::Canceled => "canceled",
    };
    let received = if status == "succeeded" {
        purchase.amount_minor
    } else {
        0
    };
    json!({
        "id": purchase.transaction_ref,
        "object": "payment_intent",
        "amount": purchase.amount_minor,
        "amount_received": received,
        "created": purchase.created_at.timestamp(),
        "currency": purchase.currency.to_ascii_lowercase(),
        "latest_charge": null,
        "livemode": false,
        "status": status,
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::canonical::LineItem;

    use crate::providers::stripe::{api, decode, signature};
    use crate::providers::{ApiError, Claim, WebhookRequest};
    use crate::sandbox::testing;

    fn integration() -> IntegrationConfig {
        testing::integration_of(&testing::demo_config(), ProviderKind::Stripe)
    }

    fn purchase(integration: &IntegrationConfig, state: PaymentState) -> Purchase {
        let created_at = Utc.with_ymd_and_hms(2026, 3, 2, 9, 14, 58).unwrap();
        Purchase {
            provider: ProviderKind::Stripe,
            integration_id: integration.id.clone(),
            transaction_ref: transaction_ref(&mut rand::thread_rng()),
            amount_minor: 24_900,
            currency: "SEK".into(),
            state,
            created_at,
            updated_at: created_at + chrono::Duration::seconds(5),
            location_ref: "tml_vasastan".into(),
            line_items: vec![LineItem {
                name: "Cykelservice".into(),
                quantity: "1".into(),
                unit_price_minor: Some(24_900),
                total_minor: Some(24_900),
                sku: Some("SERVICE-BAS".into()),
            }],
        }
    }

    /// Serves the Stripe routes on an ephemeral port; returns the state and
    /// the integration pointed at the server.
    fn serve(purchases: &[Purchase]) -> (web::Data<SandboxState>, IntegrationConfig) {
        let (state, address) = testing::serve(routes, |_| testing::demo_config());
        for purchase in purchases {
            state.insert(purchase.clone());
        }
        let mut integration = integration();
        integration.api_base_url = Some(format!("http://{address}/stripe"));
        (state, integration)
    }

    fn claim_of(webhook: &SandboxWebhook) -> Claim {
        testing::claim_of(ProviderKind::Stripe, webhook)
    }

    #[actix_rt::test]
    async fn stripe_lookup_through_sandbox_matches_purchase() {
        let integration = integration();
        for state in [
            PaymentState::Completed,
            PaymentState::Refunded,
            PaymentState::Canceled,
        ] {
            let purchase = purchase(&integration, state);
            let (sandbox, integration) = serve(std::slice::from_ref(&purchase));
            let before = Utc::now().timestamp_millis();
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
            assert_eq!(truth.state, state);
            assert_eq!(truth.occurred_at, purchase.created_at);
            assert!(truth.source_version >= before);
            assert_eq!(
                sandbox.lookups_of(ProviderKind::Stripe, &purchase.transaction_ref),
                1
            );
        }
    }

    #[actix_rt::test]
    async fn stripe_payment_intent_lookup_uses_its_own_endpoint() {
        let integration = integration();
        let mut purchase = purchase(&integration, PaymentState::Completed);
        purchase.transaction_ref = stripe_id("pi_", &mut rand::thread_rng());
        let (_sandbox, integration) = serve(std::slice::from_ref(&purchase));
        let truth = api::lookup(
            &testing::fast_client(),
            &integration,
            &purchase.transaction_ref,
        )
        .await
        .unwrap();
        assert_eq!(truth.transaction_ref, purchase.transaction_ref);
        assert_eq!(truth.state, PaymentState::Completed);
    }

    #[actix_rt::test]
    async fn stripe_wrong_key_is_permanent() {
        let integration = integration();
        let purchase = purchase(&integration, PaymentState::Completed);
        let (_sandbox, mut integration) = serve(std::slice::from_ref(&purchase));
        integration.api_token = Some("sk_test_wrong".into());
        let result = api::lookup(
            &testing::fast_client(),
            &integration,
            &purchase.transaction_ref,
        )
        .await;
        assert!(matches!(result, Err(ApiError::Permanent(_))), "{result:?}");
    }

    #[actix_rt::test]
    async fn stripe_unknown_charge_is_not_found_and_foreign_ids_are_permanent() {
        let (_sandbox, integration) = serve(&[]);
        let client = testing::fast_client();
        let result = api::lookup(&client, &integration, "ch_3OqLbW2eZvKYlo2C1ZQ7d0pA").await;
        assert_eq!(result, Err(ApiError::NotFound));
        let result = api::lookup(&client, &integration, "po_1").await;
        assert!(matches!(result, Err(ApiError::Permanent(_))), "{result:?}");
    }

    #[actix_rt::test]
    async fn stripe_server_errors_are_transient_after_retries() {
        let integration = integration();
        let purchase = purchase(&integration, PaymentState::Completed);
        let (sandbox, integration) = serve(std::slice::from_ref(&purchase));
        let client = testing::fast_client();
        let lookup = api::lookup(&client, &integration, &purchase.transaction_ref);
        testing::assert_server_errors_are_transient(
            &sandbox,
            ProviderKind::Stripe,
            &purchase.transaction_ref,
            lookup,
        )
        .await;
    }

    #[test]
    fn stripe_sandbox_webhook_verifies_and_decodes_to_the_purchase() {
        let integration = integration();
        let purchase = purchase(&integration, PaymentState::Refunded);
        let now = Utc::now();
        let webhook = webhook(&integration, &purchase, WebhookKind::Updated, now);
        assert_eq!(webhook.path_and_query, "/webhooks/stripe/demo-stripe");
        assert!(webhook.event_id.starts_with("evt_") && webhook.event_id.len() == 4 + ID_BODY_LEN);

        let headers = testing::header_map(&webhook);
        let request = WebhookRequest {
            headers: &headers,
            body: &webhook.body,
            query: "",
        };
        assert_eq!(signature::verify(&integration, &request, now), Ok(()));
        let info = decode::envelope_info(&request).unwrap();
        assert_eq!(info.event_id, webhook.event_id);
        assert_eq!(info.partition_key, purchase.transaction_ref);

        assert_eq!(
            claim_of(&webhook),
            Claim {
                transaction_ref: purchase.transaction_ref.clone(),
                amount_minor: Some(purchase.amount_minor),
                currency: Some(purchase.currency.clone()),
                state: Some(PaymentState::Refunded),
                occurred_at: Some(purchase.created_at),
                source_version: purchase.updated_at.timestamp() * 1000,
                location_ref: None,
                line_items: vec![],
            }
        );
    }

    #[test]
    fn stripe_created_webhook_is_charge_succeeded_and_orders_before_updated() {
        let integration = integration();
        let purchase = purchase(&integration, PaymentState::Refunded);
        let created = webhook(&integration, &purchase, WebhookKind::Created, Utc::now());
        let event: Value = serde_json::from_slice(&created.body).unwrap();
        assert_eq!(event["type"], "charge.succeeded");
        let created = claim_of(&created);
        let updated = claim_of(&webhook(
            &integration,
            &purchase,
            WebhookKind::Updated,
            Utc::now(),
        ));
        assert_eq!(created.state, Some(PaymentState::Completed));
        assert!(created.source_version < updated.source_version);
    }

    #[test]
    fn stripe_every_state_round_trips_through_a_charge() {
        let integration = integration();
        for state in [
            PaymentState::Pending,
            PaymentState::Completed,
            PaymentState::Failed,
            PaymentState::Canceled,
            PaymentState::Refunded,
        ] {
            let purchase = purchase(&integration, state);
            let claim = claim_of(&webhook(
                &integration,
                &purchase,
                WebhookKind::Updated,
                Utc::now(),
            ));
            assert_eq!(claim.state, Some(state));
        }
    }

    #[test]
    fn stripe_transaction_refs_look_like_charge_ids() {
        let mut rng = rand::thread_rng();
        let first = transaction_ref(&mut rng);
        let body = first.strip_prefix("ch_").unwrap();
        assert_eq!(body.len(), ID_BODY_LEN);
        assert!(body.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(first, transaction_ref(&mut rng));
    }
}
