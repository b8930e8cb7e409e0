//! Zettle played by the sandbox: signed Pusher `PurchaseCreated` deliveries
//! built from generated purchases, the OAuth token endpoint, and the
//! Purchase API answered from them.
//!
//! The token endpoint checks `client_id` and `assertion` against the
//! configured integrations (400 `invalid_grant` otherwise) and issues a
//! token derived from the integration, so the purchase route can check the
//! bearer without keeping state; a purchase of another integration is
//! answered like an unknown one. Zettle has no update events, so
//! [`WebhookKind::Updated`] is the same delivery with a fresh message id,
//! and times are written to the millisecond as Zettle does.

use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::canonical::PaymentState;
use crate::config::IntegrationConfig;
use crate::providers::ProviderKind;
use crate::providers::zettle::api::JWT_BEARER_GRANT;
use crate::providers::zettle::decode::PURCHASE_CREATED;
use crate::providers::zettle::signature::{self, SIGNATURE_HEADER};
use crate::sandbox::{Lookup, Purchase, SandboxState, SandboxWebhook, WebhookKind, bearer_token};

/// What the token endpoint says a token lives, in seconds.
const TOKEN_LIFETIME_SECS: u64 = 7200;

/// A `purchaseUUID1`: a version-1-shaped UUID, as Zettle's are time-based.
pub fn transaction_ref(rng: &mut impl Rng) -> String {
    let bytes: [u8; 16] = rng.r#gen();
    uuid::Builder::from_bytes(bytes)
        .with_version(uuid::Version::Mac)
        .with_variant(uuid::Variant::RFC4122)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// A `PurchaseCreated` delivery for `purchase`, signed with the first key.
pub fn webhook(
    integration: &IntegrationConfig,
    purchase: &Purchase,
    _kind: WebhookKind,
    now: DateTime<Utc>,
) -> SandboxWebhook {
    let organization = organization_uuid(integration);
    let message_uuid = Uuid::new_v4().to_string();
    let envelope = json!({
        "organizationUuid": organization,
        "messageUuid": message_uuid,
        "eventName": PURCHASE_CREATED,
        "messageId": Uuid::new_v4().simple().to_string(),
        "payload": purchase_json(purchase, &organization).to_string(),
        "timestamp": now.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    });
    let body = serde_json::to_vec(&envelope).unwrap_or_default();
    let secret = integration
        .signing_secrets
        .first()
        .map(String::as_str)
        .unwrap_or("");
    let signature = signature::sign(secret, &body).unwrap_or_default();
    SandboxWebhook {
        path_and_query: format!("/webhooks/zettle/{}", integration.id),
        headers: vec![
            ("content-type".to_string(), "application/json".to_string()),
            (SIGNATURE_HEADER.to_string(), signature),
        ],
        body,
        event_id: message_uuid,
    }
}

/// Serves `POST /zettle/token` and `GET /zettle/purchases/v2/{uuid}`.
pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(
        web::scope("/zettle")
            .route("/token", web::post().to(token))
            .route("/purchases/v2/{purchase_uuid}", web::get().to(purchase)),
    );
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: String,
    client_id: String,
    assertion: String,
}

async fn token(state: web::Data<SandboxState>, body: web::Bytes) -> HttpResponse {
    let form = std::str::from_utf8(&body)
        .ok()
        .and_then(|text| web::Query::<TokenForm>::from_query(text).ok());
    let Some(form) = form.filter(|form| form.grant_type == JWT_BEARER_GRANT) else {
        return HttpResponse::BadRequest().json(json!({ "error": "invalid_request" }));
    };
    let integration = zettle_integrations(&state).find(|integration| {
        integration.api_username.as_deref() == Some(form.client_id.as_str())
            && integration.api_token.as_deref() == Some(form.assertion.as_str())
    });
    match integration {
        Some(integration) => HttpResponse::Ok().json(json!({
            "access_token": issued_token(integration),
            "expires_in": TOKEN_LIFETIME_SECS,
        })),
        None => HttpResponse::BadRequest().json(json!({ "error": "invalid_grant" })),
    }
}

async fn purchase(
    state: web::Data<SandboxState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let integration = bearer_token(&request).and_then(|bearer| {
        zettle_integrations(&state).find(|integration| issued_token(integration) == bearer)
    });
    let Some(integration) = integration else {
        return HttpResponse::Unauthorized().json(json!({ "error": "invalid_token" }));
    };
    let organization = organization_uuid(integration);
    let integration_id = integration.id.clone();

    match state.lookup(ProviderKind::Zettle, &path.into_inner()).await {
        Lookup::Found(purchase) if purchase.integration_id == integration_id => {
            HttpResponse::Ok().json(purchase_json(&purchase, &organization))
        }
        Lookup::Found(_) | Lookup::Missing => HttpResponse::NotFound().json(json!({
            "errorType": "PURCHASE_NOT_FOUND",
            "developerMessage": "Purchase not found",
        })),
        Lookup::Respond(response) => response,
    }
}

fn zettle_integrations(state: &SandboxState) -> impl Iterator<Item = &IntegrationConfig> {
    state
        .config
        .integrations
        .iter()
        .filter(|i| i.provider == ProviderKind::Zettle)
}

/// A token only the sandbox hands out for this integration's key.
fn issued_token(integration: &IntegrationConfig) -> String {
    let mut digest = Sha256::new();
    digest.update(integration.id.as_bytes());
    digest.update(b"\n");
    digest.update(integration.api_token.as_deref().unwrap_or("").as_bytes());
    format!("zettle-sandbox.{}", hex::encode(digest.finalize()))
}

/// A stable organization UUID per merchant.
fn organization_uuid(integration: &IntegrationConfig) -> String {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, integration.business_id.as_bytes()).to_string()
}

/// The purchase as Zettle's payload and Purchase API carry it (trimmed).
fn purchase_json(purchase: &Purchase, organization: &str) -> Value {
    let legacy_uuid = Uuid::try_parse(&purchase.transaction_ref)
        .map(|uuid| URL_SAFE_NO_PAD.encode(uuid.as_bytes()))
        .unwrap_or_default();
    let created = purchase
        .created_at
        .format("%Y-%m-%dT%H:%M:%S%.3f+0000")
        .to_string();
    let products: Vec<Value> = purchase
        .line_items
        .iter()
        .map(|item| {
            json!({
                "name": item.name,
                "quantity": item.quantity,
                "unitPrice": item.unit_price_minor.or(item.total_minor),
                "sku": item.sku,
            })
        })
        .collect();
    json!({
        "source": "POS",
        "purchaseUUID": legacy_uuid,
        "purchaseUUID1": purchase.transaction_ref,
        "organizationUuid": organization,
        "amount": purchase.amount_minor,
        "vatAmount": purchase.amount_minor / 5,
        "country": "SE",
        "currency": purchase.currency,
        "created": created,
        "timestamp": created,
        "refunded": purchase.state == PaymentState::Refunded,
        "products": products,
        "payments": [{
            "uuid": Uuid::new_v4().to_string(),
            "amount": purchase.amount_minor,
            "type": "IZETTLE_CARD",
        }],
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use rand::SeedableRng;

    use super::*;
    use crate::canonical::LineItem;
    use crate::config::Config;
    use crate::providers::zettle::{api, decode};
    use crate::providers::{ApiError, Claim, EventAction, RawDelivery, WebhookRequest};
    use crate::sandbox::testing;

    const PURCHASE_UUID: &str = "0d6f1a38-1f3c-11ef-8000-5e5a1c2b3d4e";

    fn config(base_url: &str) -> Config {
        let text = std::fs::read_to_string("config/kvitto.toml").unwrap();
        let mut config = Config::from_toml(&text).unwrap();
        config
            .integrations
            .retain(|i| i.provider == ProviderKind::Zettle);
        config.integrations[0].api_base_url = Some(base_url.to_string());
        config.integrations[0].oauth_base_url = Some(format!("{base_url}/"));
        config
    }

    fn purchase(integration_id: &str, transaction_ref: &str) -> Purchase {
        let item = |name: &str, quantity: i64, unit: i64, sku: Option<&str>| LineItem {
            name: name.to_string(),
            quantity: quantity.to_string(),
            unit_price_minor: Some(unit),
            total_minor: Some(unit * quantity),
            sku: sku.map(str::to_string),
        };
        let created_at = Utc.with_ymd_and_hms(2026, 7, 14, 10, 15, 30).unwrap()
            + chrono::Duration::milliseconds(250);
        Purchase {
            provider: ProviderKind::Zettle,
            integration_id: integration_id.to_string(),
            transaction_ref: transaction_ref.to_string(),
            amount_minor: 14950,
            currency: "SEK".to_string(),
            state: PaymentState::Completed,
            created_at,
            updated_at: created_at,
            location_ref: "majorna".to_string(),
            line_items: vec![
                item("Kardemummabulle \"stor\" åäö", 2, 3475, Some("BUL-2")),
                item("Te 🍵", 1, 8000, None),
            ],
        }
    }

    /// A sandbox serving Zettle's OAuth and Purchase API on a free port.
    fn serve() -> (web::Data<SandboxState>, Config) {
        let (state, _) = testing::serve(routes, |address| {
            config(&format!("http://{address}/zettle"))
        });
        let config = state.config.clone();
        state.insert(purchase(&config.integrations[0].id, PURCHASE_UUID));
        (state, config)
    }

    #[actix_rt::test]
    async fn zettle_lookup_through_sandbox_matches_purchase() {
        let (state, config) = serve();
        let client = testing::fast_client();
        let truth = api::lookup(&client, &config.integrations[0], PURCHASE_UUID)
            .await
            .unwrap();

        let expected = purchase(&config.integrations[0].id, PURCHASE_UUID);
        assert_eq!(truth.transaction_ref, PURCHASE_UUID);
        assert_eq!(truth.amount_minor, expected.amount_minor);
        assert_eq!(truth.currency, expected.currency);
        assert_eq!(truth.state, PaymentState::Completed);
        assert_eq!(truth.occurred_at, expected.created_at);
        assert_eq!(truth.source_version, expected.created_at.timestamp_millis());
        assert_eq!(truth.location_ref, None);
        assert_eq!(truth.line_items, expected.line_items);

        // The cached token serves the second lookup too.
        state.update(ProviderKind::Zettle, PURCHASE_UUID, |p| {
            p.state = PaymentState::Refunded
        });
        let again = api::lookup(&client, &config.integrations[0], PURCHASE_UUID)
            .await
            .unwrap();
        assert_eq!(again.state, PaymentState::Refunded);
    }

    #[actix_rt::test]
    async fn zettle_lookup_of_unknown_purchase_is_not_found() {
        let (_state, config) = serve();
        let unknown = "0d6f1a38-1f3c-11ef-8000-000000000000";
        let result = api::lookup(&testing::fast_client(), &config.integrations[0], unknown).await;
        assert_eq!(result, Err(ApiError::NotFound));
    }

    #[actix_rt::test]
    async fn zettle_lookup_with_wrong_api_key_or_client_id_is_permanent() {
        let (_state, config) = serve();
        let mut wrong_key = config.integrations[0].clone();
        wrong_key.api_token = Some("not-the-key".to_string());
        let result = api::lookup(&testing::fast_client(), &wrong_key, PURCHASE_UUID).await;
        assert!(matches!(result, Err(ApiError::Permanent(_))), "{result:?}");

        let mut wrong_client = config.integrations[0].clone();
        wrong_client.api_username = Some("someone-else".to_string());
        let result = api::lookup(&testing::fast_client(), &wrong_client, PURCHASE_UUID).await;
        assert!(matches!(result, Err(ApiError::Permanent(_))), "{result:?}");
    }

    #[actix_rt::test]
    async fn zettle_lookup_retries_server_errors_then_reports_transient() {
        let (state, config) = serve();
        let client = testing::fast_client();
        let lookup = api::lookup(&client, &config.integrations[0], PURCHASE_UUID);
        testing::assert_server_errors_are_transient(
            &state,
            ProviderKind::Zettle,
            PURCHASE_UUID,
            lookup,
        )
        .await;
    }

    #[actix_rt::test]
    async fn zettle_lookup_rejects_refs_that_are_not_uuids() {
        let (state, config) = serve();
        for bad in ["", "abc", "../token", "0d6f1a381f3c11ef80005e5a1c2b3d4e"] {
            let result = api::lookup(&testing::fast_client(), &config.integrations[0], bad).await;
            assert!(
                matches!(result, Err(ApiError::Permanent(_))),
                "{bad:?} gave {result:?}"
            );
        }
        assert_eq!(state.looked_up_count(), 0);
    }

    #[actix_rt::test]
    async fn zettle_sandbox_refuses_unknown_bearer_tokens() {
        let (_state, config) = serve();
        let url = format!(
            "{}/purchases/v2/{PURCHASE_UUID}",
            config.integrations[0].api_base()
        );
        let answer = reqwest::Client::new()
            .get(&url)
            .bearer_auth("forged")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), reqwest::StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn zettle_sandbox_webhook_verifies_and_decodes_to_the_purchase() {
        let config = config("http://127.0.0.1:1/zettle");
        let integration = &config.integrations[0];
        let purchase = purchase(&integration.id, PURCHASE_UUID);
        let now = Utc.with_ymd_and_hms(2026, 7, 14, 10, 15, 31).unwrap();
        let webhook = webhook(integration, &purchase, WebhookKind::Created, now);
        assert_eq!(webhook.path_and_query, "/webhooks/zettle/demo-zettle");

        let headers = testing::header_map(&webhook);
        let request = WebhookRequest {
            headers: &headers,
            body: &webhook.body,
            query: "",
        };
        assert_eq!(signature::verify(integration, &request), Ok(()));
        let info = decode::envelope_info(&request).unwrap();
        assert_eq!(info.event_id, webhook.event_id);
        assert_eq!(info.partition_key, PURCHASE_UUID);

        let event = decode::decode(&RawDelivery {
            body: &webhook.body,
            headers: &[],
            query: "",
        })
        .unwrap();
        assert_eq!(event.event_id, webhook.event_id);
        assert_eq!(event.event_type, "PurchaseCreated");
        let expected = Claim {
            transaction_ref: PURCHASE_UUID.to_string(),
            amount_minor: Some(purchase.amount_minor),
            currency: Some(purchase.currency.clone()),
            state: Some(PaymentState::Completed),
            occurred_at: Some(purchase.created_at),
            source_version: purchase.created_at.timestamp_millis(),
            location_ref: None,
            line_items: purchase.line_items.clone(),
        };
        assert_eq!(event.action, EventAction::Purchase(expected));

        let updated = super::webhook(integration, &purchase, WebhookKind::Updated, now);
        assert_ne!(updated.event_id, webhook.event_id);
    }

    #[test]
    fn zettle_sandbox_refs_are_version_one_uuids() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..50 {
            let reference = transaction_ref(&mut rng);
            let uuid = Uuid::try_parse(&reference).unwrap();
            assert_eq!(uuid.get_version_num(), 1);
            assert_eq!(reference.len(), 36);
        }
    }
}
