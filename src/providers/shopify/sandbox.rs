//! Shopify played by the sandbox: signed order webhooks built from generated
//! purchases, and the Admin GraphQL order query answered from them.
//!
//! The GraphQL endpoint understands only the one query kvitto's client sends
//! (it checks the text mentions `order(` and reads the id from the
//! variables); it answers like Shopify does: 401 with Shopify's error text
//! for a wrong token, 200 with `order: null` for an unknown order, and
//! orders of other shops stay invisible. Shopify timestamps have whole
//! seconds, so sub-second parts of a purchase's times are dropped.

use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use serde_json::{Value, json};

use crate::canonical::PaymentState;
use crate::config::IntegrationConfig;
use crate::providers::ProviderKind;
use crate::providers::shopify::api::{
    ACCESS_TOKEN_HEADER, API_VERSION, LOCATION_GID_PREFIX, ORDER_GID_PREFIX,
};
use crate::providers::shopify::decode::{TOPIC_HEADER, WEBHOOK_ID_HEADER};
use crate::providers::shopify::signature::{self, SIGNATURE_HEADER};
use crate::sandbox::{Lookup, Purchase, SandboxState, SandboxWebhook, WebhookKind, decimal_amount};

/// Shopify's 401 body for an unknown access token.
const INVALID_TOKEN_BODY: &str =
    r#"{"errors":"[API] Invalid API key or access token (unrecognized login or wrong password)"}"#;

/// First order id above 2^53 that a float cannot hold.
const FIRST_ID_PAST_FLOAT: u64 = (1 << 53) + 1;

/// A Shopify order id: usually 13 digits like today's ids, and one time in
/// four just above 2^53 so a float anywhere on the path would show.
pub fn transaction_ref(rng: &mut impl Rng) -> String {
    let id = if rng.gen_bool(0.25) {
        FIRST_ID_PAST_FLOAT + 2 * rng.gen_range(0..1_000_000)
    } else {
        rng.gen_range(4_000_000_000_000_u64..7_000_000_000_000)
    };
    id.to_string()
}

/// An `orders/create` (or `orders/updated`) delivery for `purchase`.
pub fn webhook(
    integration: &IntegrationConfig,
    purchase: &Purchase,
    kind: WebhookKind,
    now: DateTime<Utc>,
) -> SandboxWebhook {
    let topic = match kind {
        WebhookKind::Created => "orders/create",
        WebhookKind::Updated => "orders/updated",
    };
    let body = serde_json::to_vec(&order_body(purchase)).unwrap_or_default();
    let secret = integration
        .signing_secrets
        .first()
        .map(String::as_str)
        .unwrap_or("");
    let event_id = uuid::Uuid::new_v4().to_string();
    let headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        (TOPIC_HEADER.to_string(), topic.to_string()),
        (SIGNATURE_HEADER.to_string(), signature::sign(secret, &body)),
        (
            "x-shopify-shop-domain".to_string(),
            format!("{}.myshopify.com", integration.business_id),
        ),
        ("x-shopify-api-version".to_string(), API_VERSION.to_string()),
        (WEBHOOK_ID_HEADER.to_string(), event_id.clone()),
        (
            "x-shopify-event-id".to_string(),
            uuid::Uuid::new_v4().to_string(),
        ),
        (
            "x-shopify-triggered-at".to_string(),
            now.to_rfc3339_opts(SecondsFormat::Micros, true),
        ),
    ];
    SandboxWebhook {
        path_and_query: format!("/webhooks/shopify/{}", integration.id),
        headers,
        body,
        event_id,
    }
}

/// Serves `POST /shopify/admin/api/2024-10/graphql.json`.
pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(web::scope("/shopify").route(
        &format!("/admin/api/{API_VERSION}/graphql.json"),
        web::post().to(graphql),
    ));
}

async fn graphql(
    state: web::Data<SandboxState>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let token = request
        .headers()
        .get(ACCESS_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok());
    let Some(integration) =
        token.and_then(|t| state.integration_with_token(ProviderKind::Shopify, t))
    else {
        return HttpResponse::Unauthorized()
            .content_type("application/json")
            .body(INVALID_TOKEN_BODY);
    };
    let integration_id = integration.id.clone();

    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let query = request["query"].as_str().unwrap_or("");
    if query.contains("shop {") {
        if let Some(fault) = state.probe(ProviderKind::Shopify).await {
            return fault;
        }
        let shop = json!({ "name": integration.business_id });
        return HttpResponse::Ok().json(json!({ "data": { "shop": shop } }));
    }
    let gid = request["variables"]["id"].as_str().unwrap_or("");
    let order_id = gid
        .strip_prefix(ORDER_GID_PREFIX)
        .filter(|id| id.parse::<u64>().is_ok());
    let Some(order_id) = order_id.filter(|_| query.contains("order(")) else {
        let message = format!("Invalid global id '{gid}'");
        return HttpResponse::Ok().json(json!({ "errors": [{ "message": message }] }));
    };

    match state.lookup(ProviderKind::Shopify, order_id).await {
        Lookup::Found(purchase) if purchase.integration_id == integration_id => {
            HttpResponse::Ok().json(json!({ "data": { "order": graphql_order(&purchase) } }))
        }
        Lookup::Found(_) | Lookup::Missing => {
            HttpResponse::Ok().json(json!({ "data": { "order": null } }))
        }
        Lookup::Respond(response) => response,
    }
}

/// The order as the webhook body carries it (a trimmed real order).
fn order_body(purchase: &Purchase) -> Value {
    let id: Value = purchase
        .transaction_ref
        .parse::<u64>()
        .map(Value::from)
        .unwrap_or(Value::Null);
    let location: Value = purchase
        .location_ref
        .parse::<u64>()
        .map(Value::from)
        .unwrap_or_else(|_| purchase.location_ref.clone().into());
    let total = decimal_amount(purchase.amount_minor, &purchase.currency);
    let lines: Vec<Value> = purchase
        .line_items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let (quantity, unit_minor) = shopify_quantity(item);
            json!({
                "id": index + 1,
                "title": item.name,
                "name": item.name,
                "quantity": quantity,
                "price": decimal_amount(unit_minor, &purchase.currency),
                "sku": item.sku,
                "taxable": true,
            })
        })
        .collect();
    json!({
        "id": id,
        "admin_graphql_api_id": format!("{ORDER_GID_PREFIX}{}", purchase.transaction_ref),
        "created_at": local_time(purchase.created_at),
        "updated_at": local_time(purchase.updated_at),
        "currency": purchase.currency,
        "presentment_currency": purchase.currency,
        "total_price": total,
        "subtotal_price": total,
        "total_tax": decimal_amount(purchase.amount_minor / 5, &purchase.currency),
        "total_price_set": {
            "shop_money": { "amount": total, "currency_code": purchase.currency },
            "presentment_money": { "amount": total, "currency_code": purchase.currency },
        },
        "financial_status": financial_status(purchase.state),
        "source_name": "pos",
        "location_id": location,
        "line_items": lines,
    })
}

/// The order as the GraphQL query asks for it.
fn graphql_order(purchase: &Purchase) -> Value {
    let nodes: Vec<Value> = purchase
        .line_items
        .iter()
        .map(|item| {
            let (quantity, unit_minor) = shopify_quantity(item);
            let unit_price = decimal_amount(unit_minor, &purchase.currency);
            json!({
                "title": item.name,
                "quantity": quantity,
                "sku": item.sku,
                "originalUnitPriceSet": { "shopMoney": { "amount": unit_price } },
            })
        })
        .collect();
    json!({
        "id": format!("{ORDER_GID_PREFIX}{}", purchase.transaction_ref),
        "createdAt": purchase.created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        "updatedAt": purchase.updated_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        "displayFinancialStatus": financial_status(purchase.state).to_ascii_uppercase(),
        "totalPriceSet": {
            "shopMoney": {
                "amount": decimal_amount(purchase.amount_minor, &purchase.currency),
                "currencyCode": purchase.currency,
            },
        },
        "physicalLocation": { "id": format!("{LOCATION_GID_PREFIX}{}", purchase.location_ref) },
        "lineItems": { "nodes": nodes },
    })
}

/// Shopify has no failed order, so a failed purchase shows as voided.
fn financial_status(state: PaymentState) -> &'static str {
    match state {
        PaymentState::Completed => "paid",
        PaymentState::Pending => "pending",
        PaymentState::Refunded => "refunded",
        PaymentState::Canceled | PaymentState::Failed => "voided",
    }
}

/// Shopify quantities are whole; a weighed item becomes one unit at its
/// line total.
fn shopify_quantity(item: &crate::canonical::LineItem) -> (u64, i64) {
    match (item.quantity.parse::<u64>(), item.unit_price_minor) {
        (Ok(quantity), Some(unit)) => (quantity, unit),
        _ => (1, item.total_minor.or(item.unit_price_minor).unwrap_or(0)),
    }
}

/// Shopify renders times in the shop's zone with its offset.
fn local_time(time: DateTime<Utc>) -> String {
    time.with_timezone(&chrono_tz::Europe::Stockholm)
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use rand::SeedableRng;

    use super::*;
    use crate::canonical::LineItem;
    use crate::config::Config;
    use crate::providers::shopify::{api, decode};
    use crate::providers::{ApiError, Claim, EventAction, RawDelivery, WebhookRequest};
    use crate::sandbox::testing;

    fn config(api_base_url: &str) -> Config {
        let text = std::fs::read_to_string("config/kvitto.toml").unwrap();
        let mut config = Config::from_toml(&text).unwrap();
        config
            .integrations
            .retain(|i| i.provider == ProviderKind::Shopify);
        config.integrations[0].api_base_url = Some(api_base_url.to_string());
        config
    }

    fn purchase(integration_id: &str, transaction_ref: &str) -> Purchase {
        let item = |name: &str, quantity: &str, unit: i64, sku: Option<&str>| LineItem {
            name: name.to_string(),
            quantity: quantity.to_string(),
            unit_price_minor: Some(unit),
            total_minor: Some(unit * quantity.parse::<i64>().unwrap()),
            sku: sku.map(str::to_string),
        };
        Purchase {
            provider: ProviderKind::Shopify,
            integration_id: integration_id.to_string(),
            transaction_ref: transaction_ref.to_string(),
            amount_minor: 14950,
            currency: "SEK".to_string(),
            state: PaymentState::Completed,
            created_at: Utc.with_ymd_and_hms(2026, 7, 14, 10, 15, 30).unwrap(),
            updated_at: Utc.with_ymd_and_hms(2026, 7, 14, 10, 16, 5).unwrap(),
            location_ref: "71234567890".to_string(),
            line_items: vec![
                item("Vas \"Blå\" åäö", "2", 3475, Some("VAS-1")),
                item("Kort 🎉", "1", 8000, None),
            ],
        }
    }

    /// A sandbox serving Shopify's API on a free port, holding one purchase.
    fn serve(transaction_ref: &str) -> (web::Data<SandboxState>, Config) {
        let (state, _) = testing::serve(routes, |address| {
            config(&format!("http://{address}/shopify"))
        });
        let config = state.config.clone();
        state.insert(purchase(&config.integrations[0].id, transaction_ref));
        (state, config)
    }

    #[actix_rt::test]
    async fn shopify_lookup_through_sandbox_matches_purchase() {
        let order_id = FIRST_ID_PAST_FLOAT.to_string();
        let (_state, config) = serve(&order_id);
        let truth = api::lookup(&testing::fast_client(), &config.integrations[0], &order_id)
            .await
            .unwrap();

        let expected = purchase(&config.integrations[0].id, &order_id);
        assert_eq!(truth.transaction_ref, "9007199254740993");
        assert_eq!(truth.amount_minor, expected.amount_minor);
        assert_eq!(truth.currency, expected.currency);
        assert_eq!(truth.state, expected.state);
        assert_eq!(truth.occurred_at, expected.created_at);
        assert_eq!(truth.source_version, expected.updated_at.timestamp_millis());
        assert_eq!(
            truth.location_ref.as_deref(),
            Some(expected.location_ref.as_str())
        );
        assert_eq!(truth.line_items, expected.line_items);
    }

    #[actix_rt::test]
    async fn shopify_lookup_of_unknown_order_is_not_found() {
        let (_state, config) = serve("5123456789012");
        let result = api::lookup(
            &testing::fast_client(),
            &config.integrations[0],
            "5123456789013",
        )
        .await;
        assert_eq!(result, Err(ApiError::NotFound));
    }

    #[actix_rt::test]
    async fn shopify_lookup_with_wrong_token_is_permanent() {
        let (_state, config) = serve("5123456789012");
        let mut integration = config.integrations[0].clone();
        integration.api_token = Some("shpat_wrong".to_string());
        let result = api::lookup(&testing::fast_client(), &integration, "5123456789012").await;
        assert!(matches!(result, Err(ApiError::Permanent(_))), "{result:?}");
    }

    #[actix_rt::test]
    async fn shopify_lookup_retries_server_errors_then_reports_transient() {
        let (state, config) = serve("5123456789012");
        let client = testing::fast_client();
        let lookup = api::lookup(&client, &config.integrations[0], "5123456789012");
        testing::assert_server_errors_are_transient(
            &state,
            ProviderKind::Shopify,
            "5123456789012",
            lookup,
        )
        .await;
    }

    #[actix_rt::test]
    async fn shopify_lookup_rejects_refs_that_are_not_order_ids() {
        let (_state, config) = serve("5123456789012");
        for bad in ["", "abc", "12/../3", "1.0"] {
            let result = api::lookup(&testing::fast_client(), &config.integrations[0], bad).await;
            assert!(
                matches!(result, Err(ApiError::Permanent(_))),
                "{bad:?} gave {result:?}"
            );
        }
    }

    #[test]
    fn shopify_sandbox_webhook_verifies_and_decodes_to_the_purchase() {
        let config = config("http://127.0.0.1:1/shopify");
        let integration = &config.integrations[0];
        let purchase = purchase(&integration.id, &FIRST_ID_PAST_FLOAT.to_string());
        let now = Utc.with_ymd_and_hms(2026, 7, 14, 10, 16, 6).unwrap();
        let webhook = webhook(integration, &purchase, WebhookKind::Created, now);
        assert_eq!(webhook.path_and_query, "/webhooks/shopify/demo-shopify");

        let headers = testing::header_map(&webhook);
        let request = WebhookRequest {
            headers: &headers,
            body: &webhook.body,
            query: "",
        };
        assert_eq!(signature::verify(integration, &request), Ok(()));
        let info = decode::envelope_info(&request).unwrap();
        assert_eq!(info.event_id, webhook.event_id);
        assert_eq!(info.partition_key, purchase.transaction_ref);

        let kept: Vec<(String, String)> = webhook
            .headers
            .iter()
            .filter(|(name, _)| crate::providers::KEPT_HEADERS.contains(&name.as_str()))
            .cloned()
            .collect();
        let delivery = RawDelivery {
            body: &webhook.body,
            headers: &kept,
            query: "",
        };
        let event = decode::decode(&delivery).unwrap();
        assert_eq!(event.event_id, webhook.event_id);
        assert_eq!(event.event_type, "orders/create");
        let expected = Claim {
            transaction_ref: purchase.transaction_ref.clone(),
            amount_minor: Some(purchase.amount_minor),
            currency: Some(purchase.currency.clone()),
            state: Some(purchase.state),
            occurred_at: Some(purchase.created_at),
            source_version: purchase.updated_at.timestamp_millis(),
            location_ref: Some(purchase.location_ref.clone()),
            line_items: purchase.line_items.clone(),
        };
        assert_eq!(event.action, EventAction::Purchase(expected));
    }

    #[test]
    fn shopify_sandbox_ids_are_integers_some_past_float_precision() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let ids: Vec<u64> = (0..200)
            .map(|_| transaction_ref(&mut rng).parse().unwrap())
            .collect();
        assert!(ids.iter().any(|&id| id > 1 << 53));
        assert!(
            ids.iter()
                .any(|&id| (1_000_000_000_000..10_000_000_000_000).contains(&id))
        );
    }
}
