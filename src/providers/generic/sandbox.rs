//! Plays a generic POS for the sandbox: signed `transaction.*` webhooks built
//! from generated purchases, and the `GET /generic/transactions/{id}` lookup
//! API with bearer-token checks.
//!
//! Webhooks carry the amount as a decimal string and the API answers in
//! integer minor units, so both amount forms of the format are exercised.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use serde_json::{Value, json};

use super::api::PROBE_TRANSACTION_ID;
use super::decode::{TRANSACTION_CREATED, TRANSACTION_UPDATED};
use super::signature;
use crate::config::{IntegrationConfig, SignedPayload};
use crate::providers::ProviderKind;
use crate::sandbox::{Lookup, Purchase, SandboxState, SandboxWebhook, WebhookKind, decimal_amount};

/// Hex digits in a generated transaction id.
const TRANSACTION_REF_HEX_DIGITS: usize = 24;

/// `txn_` and 24 lowercase hex digits, as the adapter's POS systems tend to
/// mint ids.
pub fn transaction_ref(rng: &mut impl Rng) -> String {
    let digits: String = (0..TRANSACTION_REF_HEX_DIGITS)
        .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap_or('0'))
        .collect();
    format!("txn_{digits}")
}

pub fn webhook(
    integration: &IntegrationConfig,
    purchase: &Purchase,
    kind: WebhookKind,
    now: DateTime<Utc>,
) -> SandboxWebhook {
    let event_id = format!("evt_{}", uuid::Uuid::new_v4().simple());
    let event_type = match kind {
        WebhookKind::Created => TRANSACTION_CREATED,
        WebhookKind::Updated => TRANSACTION_UPDATED,
    };
    let mut event = transaction_json(purchase, AmountForm::Decimal);
    if let Value::Object(fields) = &mut event {
        fields.insert("event_id".into(), json!(event_id));
        fields.insert("type".into(), json!(event_type));
    }
    let body = event.to_string().into_bytes();

    let timestamp = now.timestamp();
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if signature::payload_kind(integration) == SignedPayload::TimestampDotBody
        && let Some(name) = &integration.timestamp_header
    {
        headers.push((name.clone(), timestamp.to_string()));
    }
    if let Some(name) = &integration.signature_header {
        headers.push((name.clone(), signature::sign(integration, timestamp, &body)));
    }
    SandboxWebhook {
        path_and_query: format!("/webhooks/generic/{}", integration.id),
        headers,
        body,
        event_id,
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::scope("/generic").route("/transactions/{id}", web::get().to(get_transaction)));
}

async fn get_transaction(
    request: HttpRequest,
    id: web::Path<String>,
    state: web::Data<SandboxState>,
) -> HttpResponse {
    let Some(integration) = state.integration_with_bearer(ProviderKind::Generic, &request) else {
        return HttpResponse::Unauthorized().json(json!({"error": "unauthorized"}));
    };
    let integration_id = integration.id.clone();
    if id.as_str() == PROBE_TRANSACTION_ID {
        return match state.probe(ProviderKind::Generic).await {
            Some(fault) => fault,
            None => HttpResponse::NotFound().json(json!({"error": "transaction_not_found"})),
        };
    }
    match state.lookup(ProviderKind::Generic, &id).await {
        // A token sees only its own merchant's transactions.
        Lookup::Found(purchase) if purchase.integration_id == integration_id => {
            HttpResponse::Ok().json(transaction_json(&purchase, AmountForm::Minor))
        }
        Lookup::Found(_) | Lookup::Missing => {
            HttpResponse::NotFound().json(json!({"error": "transaction_not_found"}))
        }
        Lookup::Respond(response) => response,
    }
}

#[derive(Clone, Copy)]
enum AmountForm {
    /// `"amount": "149.50"`
    Decimal,
    /// `"amount_minor": 14950`
    Minor,
}

/// The transaction as the format describes it, without `event_id` and `type`.
fn transaction_json(purchase: &Purchase, form: AmountForm) -> Value {
    let line_items: Vec<Value> = purchase
        .line_items
        .iter()
        .map(|item| {
            let unit_price = decimal_amount(item.unit_price_minor.unwrap_or(0), &purchase.currency);
            let mut line = json!({"name": item.name, "quantity": quantity_json(&item.quantity), "unit_price": unit_price});
            if let (Some(sku), Value::Object(fields)) = (&item.sku, &mut line) {
                fields.insert("sku".into(), json!(sku));
            }
            line
        })
        .collect();
    let mut transaction = json!({
        "transaction_id": purchase.transaction_ref,
        "currency": purchase.currency,
        "status": purchase.state.as_str(),
        "occurred_at": purchase.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "updated_at": purchase.updated_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "location_id": purchase.location_ref,
        "line_items": line_items,
    });
    if let Value::Object(fields) = &mut transaction {
        match form {
            AmountForm::Decimal => fields.insert(
                "amount".into(),
                json!(decimal_amount(purchase.amount_minor, &purchase.currency)),
            ),
            AmountForm::Minor => fields.insert("amount_minor".into(), json!(purchase.amount_minor)),
        };
    }
    transaction
}

/// Whole quantities as JSON integers (what most tills send), others as the
/// decimal string they are.
fn quantity_json(quantity: &str) -> Value {
    quantity
        .parse::<u64>()
        .map(Value::from)
        .unwrap_or_else(|_| json!(quantity))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    use crate::providers::generic::{api, decode, fixtures};
    use crate::providers::{ApiError, EventAction, RawDelivery, SignatureError, WebhookRequest};
    use crate::sandbox::{generate, server, testing};

    /// A running sandbox holding one purchase of the timestamped integration,
    /// and that integration pointed at the sandbox.
    async fn sandbox() -> (
        Arc<SandboxState>,
        actix_web::dev::ServerHandle,
        IntegrationConfig,
        Purchase,
    ) {
        let state = Arc::new(SandboxState::new(fixtures::config("http://unused")));
        let (handle, address) = server::start(state.clone(), "127.0.0.1:0").await.unwrap();
        let integration = fixtures::timestamped(&format!("http://{address}/generic"));
        let purchase = generate::purchase(&mut StdRng::seed_from_u64(3), &integration, Utc::now());
        state.insert(purchase.clone());
        (state, handle, integration, purchase)
    }

    #[test]
    fn transaction_refs_look_like_generic_pos_ids() {
        let id = transaction_ref(&mut StdRng::seed_from_u64(1));
        assert!(id.starts_with("txn_") && id.len() == 28, "{id}");
        assert!(
            id[4..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }

    #[actix_rt::test]
    async fn generic_lookup_round_trips_through_the_sandbox() {
        let (state, handle, integration, purchase) = sandbox().await;
        let truth = api::lookup(
            &testing::fast_client(),
            &integration,
            &purchase.transaction_ref,
        )
        .await
        .unwrap();

        assert_eq!(truth.transaction_ref, purchase.transaction_ref);
        assert_eq!(truth.amount_minor, purchase.amount_minor);
        assert_eq!(truth.currency, "SEK");
        assert_eq!(truth.state, purchase.state);
        assert_eq!(truth.occurred_at, purchase.created_at);
        assert_eq!(truth.source_version, purchase.updated_at.timestamp_millis());
        assert_eq!(truth.location_ref.as_ref(), Some(&purchase.location_ref));
        assert_eq!(truth.line_items, purchase.line_items);
        assert_eq!(
            state.lookups_of(ProviderKind::Generic, &purchase.transaction_ref),
            1
        );
        handle.stop(true).await;
    }

    #[actix_rt::test]
    async fn generic_lookup_with_wrong_token_is_permanent() {
        let (_state, handle, mut integration, purchase) = sandbox().await;
        integration.api_token = Some("not-the-token".into());
        let error = api::lookup(
            &testing::fast_client(),
            &integration,
            &purchase.transaction_ref,
        )
        .await;
        assert!(matches!(error, Err(ApiError::Permanent(_))), "{error:?}");
        handle.stop(true).await;
    }

    #[actix_rt::test]
    async fn generic_lookup_of_unknown_or_foreign_transaction_is_not_found() {
        let (_state, handle, integration, purchase) = sandbox().await;
        let client = testing::fast_client();
        let missing = api::lookup(&client, &integration, "txn_unknown").await;
        assert_eq!(missing, Err(ApiError::NotFound));

        // Another merchant's token does not see this merchant's purchase.
        let mut other = fixtures::body_signed(integration.api_base());
        other.api_base_url = integration.api_base_url.clone();
        let foreign = api::lookup(&client, &other, &purchase.transaction_ref).await;
        assert_eq!(foreign, Err(ApiError::NotFound));
        handle.stop(true).await;
    }

    #[actix_rt::test]
    async fn generic_lookup_during_server_errors_is_transient_after_retries() {
        let (state, handle, integration, purchase) = sandbox().await;
        let client = testing::fast_client();
        let lookup = api::lookup(&client, &integration, &purchase.transaction_ref);
        testing::assert_server_errors_are_transient(
            &state,
            ProviderKind::Generic,
            &purchase.transaction_ref,
            lookup,
        )
        .await;
        handle.stop(true).await;
    }

    #[test]
    fn generic_webhooks_verify_and_decode_to_the_purchase() {
        let now = Utc::now();
        for integration in [
            fixtures::timestamped("http://unused"),
            fixtures::body_signed("http://unused"),
        ] {
            let purchase = generate::purchase(&mut StdRng::seed_from_u64(9), &integration, now);
            for kind in [WebhookKind::Created, WebhookKind::Updated] {
                let webhook = webhook(&integration, &purchase, kind, now);
                assert_eq!(
                    webhook.path_and_query,
                    format!("/webhooks/generic/{}", integration.id)
                );
                let headers = testing::header_map(&webhook);
                let request = WebhookRequest {
                    headers: &headers,
                    body: &webhook.body,
                    query: "",
                };
                assert_eq!(signature::verify(&integration, &request, now), Ok(()));

                let delivery = RawDelivery {
                    body: &webhook.body,
                    headers: &[],
                    query: "",
                };
                let event = decode::decode(&delivery).unwrap();
                assert_eq!(event.event_id, webhook.event_id);
                let EventAction::Purchase(claim) = event.action else {
                    panic!("not a purchase")
                };
                assert_eq!(claim.transaction_ref, purchase.transaction_ref);
                assert_eq!(claim.amount_minor, Some(purchase.amount_minor));
                assert_eq!(claim.currency.as_deref(), Some("SEK"));
                assert_eq!(claim.state, Some(purchase.state));
                assert_eq!(claim.occurred_at, Some(purchase.created_at));
                assert_eq!(claim.source_version, purchase.updated_at.timestamp_millis());
                assert_eq!(claim.location_ref, Some(purchase.location_ref.clone()));
                assert_eq!(claim.line_items, purchase.line_items);
            }
        }
    }

    #[test]
    fn generic_webhooks_get_fresh_event_ids_and_go_stale() {
        let integration = fixtures::timestamped("http://unused");
        let now = Utc::now();
        let purchase = generate::purchase(&mut StdRng::seed_from_u64(9), &integration, now);
        let first = webhook(&integration, &purchase, WebhookKind::Created, now);
        let second = webhook(&integration, &purchase, WebhookKind::Created, now);
        assert_ne!(first.event_id, second.event_id);

        let headers = testing::header_map(&first);
        let request = WebhookRequest {
            headers: &headers,
            body: &first.body,
            query: "",
        };
        let later = now + chrono::TimeDelta::seconds(integration.timestamp_tolerance_secs + 1);
        assert_eq!(
            signature::verify(&integration, &request, later),
            Err(SignatureError::StaleTimestamp)
        );
    }
}
