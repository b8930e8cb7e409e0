//! Looks a Shopify order up on the Admin GraphQL API, whose answer is the
//! truth a webhook is verified against.
//!
//! `POST {api_base}/admin/api/2024-10/graphql.json` with the
//! `X-Shopify-Access-Token` header and the order's global id passed as a
//! GraphQL variable (never spliced into the query text). GraphQL answers 200
//! even for errors, so the body decides: `order: null` is not-found,
//! top-level `errors` are permanent.
//!
//! The health probe asks the same endpoint for `{ shop { name } }`, which
//! every access token may read, whatever its scopes.

use serde::Deserialize;
use serde_json::json;

use crate::canonical::LineItem;
use crate::config::IntegrationConfig;
use crate::health::ProbeFailure;
use crate::health::probe::{DownReason, expect_status, send_once};
use crate::money;
use crate::providers::shopify::decode::{financial_state, line_item, parse_time};
use crate::providers::{ApiClient, ApiError, ProviderKind, ProviderTruth};

/// The Admin API version kvitto is written against.
pub const API_VERSION: &str = "2024-10";
/// The header carrying the Admin API access token.
pub const ACCESS_TOKEN_HEADER: &str = "x-shopify-access-token";
/// Global id prefixes of orders and locations.
pub const ORDER_GID_PREFIX: &str = "gid://shopify/Order/";
pub const LOCATION_GID_PREFIX: &str = "gid://shopify/Location/";

/// The order query. Orders with more than 100 lines are read only in part:
/// kvitto does not page `lineItems`, so their line list is truncated.
pub const ORDER_QUERY: &str = "query kvittoOrder($id: ID!) { order(id: $id) { id createdAt \
     updatedAt displayFinancialStatus totalPriceSet { shopMoney { amount currencyCode } } \
     physicalLocation { id } lineItems(first: 100) { nodes { title quantity sku \
     originalUnitPriceSet { shopMoney { amount } } } } } }";

/// The health probe's query: the cheapest read there is.
pub const SHOP_QUERY: &str = "query kvittoHealth { shop { name } }";

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    errors: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(default)]
    order: Option<Order>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Order {
    id: String,
    created_at: String,
    updated_at: String,
    #[serde(default)]
    display_financial_status: Option<String>,
    total_price_set: MoneyBag,
    #[serde(default)]
    physical_location: Option<Location>,
    line_items: Connection,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MoneyBag {
    shop_money: MoneyV2,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MoneyV2 {
    amount: String,
    #[serde(default)]
    currency_code: Option<String>,
}

#[derive(Deserialize)]
struct Location {
    id: String,
}

#[derive(Deserialize)]
struct Connection {
    nodes: Vec<Line>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    title: String,
    quantity: u64,
    #[serde(default)]
    sku: Option<String>,
    original_unit_price_set: MoneyBag,
}

/// Asks Shopify for the order `transaction_ref` (the numeric order id).
pub async fn lookup(
    client: &ApiClient,
    integration: &IntegrationConfig,
    transaction_ref: &str,
) -> Result<ProviderTruth, ApiError> {
    if transaction_ref.is_empty() || !transaction_ref.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::permanent("shopify order id must be digits"));
    }
    let token = integration
        .api_token
        .as_deref()
        .ok_or_else(|| ApiError::permanent("shopify integration has no api_token"))?;
    let http = client.http_for(integration)?;
    let url = format!(
        "{}/admin/api/{API_VERSION}/graphql.json",
        integration.api_base()
    );
    let body = json!({
        "query": ORDER_QUERY,
        "variables": { "id": format!("{ORDER_GID_PREFIX}{transaction_ref}") },
    });

    let answer: Answer = client
        .send_json(ProviderKind::Shopify, "graphql.order", || {
            http.post(&url)
                .header(ACCESS_TOKEN_HEADER, token)
                .json(&body)
        })
        .await?;
    if answer.errors.is_some_and(|errors| !errors.is_null()) {
        return Err(ApiError::permanent(
            "graphql.order: shopify answered with errors",
        ));
    }
    let order = answer
        .data
        .and_then(|data| data.order)
        .ok_or(ApiError::NotFound)?;
    truth(order, transaction_ref)
}

/// Checks that the Admin API answers the shop query with the access token.
pub async fn probe(
    client: &ApiClient,
    integration: &IntegrationConfig,
) -> Result<(), ProbeFailure> {
    let token = integration
        .api_token
        .as_deref()
        .filter(|token| !token.is_empty())
        .ok_or_else(|| ProbeFailure::misconfigured("shopify integration has no api_token"))?;
    let url = format!(
        "{}/admin/api/{API_VERSION}/graphql.json",
        integration.api_base()
    );
    let request = client
        .http_for(integration)?
        .post(&url)
        .header(ACCESS_TOKEN_HEADER, token)
        .json(&json!({ "query": SHOP_QUERY }));
    let response = send_once(ProviderKind::Shopify, "graphql.shop", request).await?;
    expect_status(&response, &[reqwest::StatusCode::OK])?;
    // GraphQL answers 200 to a query it refused: only a shop name is up.
    let answer: serde_json::Value = response
        .json()
        .await
        .map_err(|_| ProbeFailure::new(DownReason::UnexpectedStatus, "answer is not JSON"))?;
    if answer["data"]["shop"]["name"].is_string() {
        Ok(())
    } else {
        Err(ProbeFailure::new(
            DownReason::UnexpectedStatus,
            "answer holds no shop (GraphQL errors)",
        ))
    }
}

fn truth(order: Order, transaction_ref: &str) -> Result<ProviderTruth, ApiError> {
    if order.id.strip_prefix(ORDER_GID_PREFIX) != Some(transaction_ref) {
        return Err(ApiError::permanent(
            "graphql.order: answer is about another order",
        ));
    }
    let currency_code = order
        .total_price_set
        .shop_money
        .currency_code
        .as_deref()
        .unwrap_or("");
    let currency = money::normalize_currency(currency_code).map_err(malformed)?;
    let amount_minor = money::decimal_to_minor(&order.total_price_set.shop_money.amount, &currency)
        .map_err(malformed)?;
    let status = order.display_financial_status.as_deref().unwrap_or("");
    let state = financial_state(status).ok_or_else(|| {
        ApiError::permanent(format!(
            "graphql.order: unknown financial status {status:?}"
        ))
    })?;
    let occurred_at = parse_time(&order.created_at, "createdAt").map_err(malformed)?;
    let updated_at = parse_time(&order.updated_at, "updatedAt").map_err(malformed)?;
    let location_ref = order.physical_location.map(|location| {
        location
            .id
            .strip_prefix(LOCATION_GID_PREFIX)
            .unwrap_or(&location.id)
            .to_string()
    });
    let line_items: Vec<LineItem> = order
        .line_items
        .nodes
        .iter()
        .map(|line| {
            let price = &line.original_unit_price_set.shop_money.amount;
            line_item(
                &line.title,
                line.quantity,
                price,
                line.sku.as_deref(),
                &currency,
            )
        })
        .collect::<Result<_, _>>()
        .map_err(malformed)?;

    Ok(ProviderTruth {
        transaction_ref: transaction_ref.to_string(),
        amount_minor,
        currency,
        state,
        occurred_at,
        source_version: updated_at.timestamp_millis(),
        location_ref,
        line_items,
    })
}

fn malformed(error: impl std::fmt::Display) -> ApiError {
    ApiError::permanent(format!("graphql.order: {error}"))
}
