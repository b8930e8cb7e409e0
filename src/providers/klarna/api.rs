//! Klarna order lookup and acknowledgement: the truth behind a push.
//!
//! A push carries only an order id, so everything kvitto stores comes from
//! `GET {api_base}/ordermanagement/v1/orders/{order_id}` on Klarna's order
//! management API (HTTP basic auth with the merchant's API credentials).
//! Amounts there are integer minor units. Once the order has been read and
//! checked, it is acknowledged (`POST .../orders/{order_id}/acknowledge`,
//! 204), which stops Klarna's repeated pushes. Acknowledging is idempotent,
//! so a lookup that is retried acknowledges again harmlessly; a transiently
//! failed acknowledgement retries the event until Klarna has
//! heard it, rather than stored while Klarna keeps pushing.
//!
//! The health probe reads the order [`PROBE_ORDER_ID`], which no order has,
//! with the integration's credentials: 404 means Klarna accepted them, 401
//! or 403 that it did not. Nothing is acknowledged.

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde::Deserialize;

use crate::canonical::{LineItem, PaymentState};
use crate::config::IntegrationConfig;
use crate::health::ProbeFailure;
use crate::health::probe::{expect_status, send_once};
use crate::money;
use crate::providers::klarna::decode::is_order_id;
use crate::providers::{ApiClient, ApiError, ProviderKind, ProviderTruth};

const ENDPOINT_GET: &str = "orders.get";
const ENDPOINT_ACKNOWLEDGE: &str = "orders.acknowledge";
const ENDPOINT_PROBE: &str = "orders.probe";

/// A well-formed order id (a UUID) that Klarna never issues.
pub const PROBE_ORDER_ID: &str = "00000000-0000-0000-0000-000000000000";

/// The part of a Klarna order kvitto reads.
#[derive(Debug, Deserialize)]
struct Order {
    order_id: String,
    status: String,
    order_amount: i64,
    #[serde(default)]
    captured_amount: i64,
    #[serde(default)]
    refunded_amount: i64,
    purchase_currency: String,
    created_at: String,
    #[serde(default)]
    order_lines: Vec<OrderLine>,
}

#[derive(Debug, Deserialize)]
struct OrderLine {
    /// The merchant's article number (SKU).
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    name: String,
    quantity: i64,
    unit_price: i64,
    total_amount: i64,
}

pub async fn lookup(
    client: &ApiClient,
    integration: &IntegrationConfig,
    transaction_ref: &str,
) -> Result<ProviderTruth, ApiError> {
    // The id goes into the URL path: nothing but an id may get there.
    if !is_order_id(transaction_ref) {
        return Err(ApiError::permanent("klarna order id malformed"));
    }
    let (username, password) = credentials(integration)?;
    let http = client.http_for(integration)?;
    let order_url = format!(
        "{}/ordermanagement/v1/orders/{transaction_ref}",
        integration.api_base()
    );

    let order: Order = client
        .send_json(ProviderKind::Klarna, ENDPOINT_GET, || {
            http.get(&order_url).basic_auth(username, Some(password))
        })
        .await?;
    if order.order_id != transaction_ref {
        return Err(ApiError::permanent("klarna answered about another order"));
    }
    let truth = truth_of(order)
        .map_err(|reason| ApiError::permanent(format!("{ENDPOINT_GET}: {reason}")))?;

    let acknowledge_url = format!("{order_url}/acknowledge");
    client
        .send(ProviderKind::Klarna, ENDPOINT_ACKNOWLEDGE, || {
            http.post(&acknowledge_url)
                .basic_auth(username, Some(password))
                .body("")
        })
        .await
        .map_err(|error| match error {
            // Klarna keeps pushing until acknowledged, so a transient failure
            // is retried with the event.
            ApiError::Transient {
                reason,
                retry_after,
            } => ApiError::Transient {
                reason: format!("acknowledging klarna order: {reason}"),
                retry_after,
            },
            // Refused for good (403, 404, credentials): retrying would stall
            // every Klarna event behind this one.
            ApiError::NotFound => ApiError::permanent("acknowledging klarna order: not found"),
            ApiError::Permanent(reason) => {
                ApiError::permanent(format!("acknowledging klarna order: {reason}"))
            }
        })?;
    Ok(truth)
}

/// Checks that the order management API answers with the integration's
/// basic-auth credentials.
pub async fn probe(
    client: &ApiClient,
    integration: &IntegrationConfig,
) -> Result<(), ProbeFailure> {
    let (username, password) = credentials(integration)?;
    let url = format!(
        "{}/ordermanagement/v1/orders/{PROBE_ORDER_ID}",
        integration.api_base()
    );
    let request = client
        .http_for(integration)?
        .get(&url)
        .basic_auth(username, Some(password));
    let response = send_once(ProviderKind::Klarna, ENDPOINT_PROBE, request).await?;
    expect_status(&response, &[StatusCode::NOT_FOUND, StatusCode::OK])
}

fn credentials(integration: &IntegrationConfig) -> Result<(&str, &str), ApiError> {
    match (
        integration.api_username.as_deref(),
        integration.api_password.as_deref(),
    ) {
        (Some(username), Some(password)) if !username.is_empty() => Ok((username, password)),
        _ => Err(ApiError::permanent(
            "klarna integration lacks api_username or api_password",
        )),
    }
}

fn truth_of(order: Order) -> Result<ProviderTruth, String> {
    let currency =
        money::normalize_currency(&order.purchase_currency).map_err(|e| e.to_string())?;
    let occurred_at = DateTime::parse_from_rfc3339(&order.created_at)
        .map_err(|_| "created_at is not an RFC 3339 instant")?
        .with_timezone(&Utc);
    let state = state_of(&order).ok_or("unknown order status")?;
    let line_items = order
        .order_lines
        .into_iter()
        .map(|line| LineItem {
            name: line.name,
            quantity: line.quantity.to_string(),
            unit_price_minor: Some(line.unit_price),
            total_minor: Some(line.total_amount),
            sku: line.reference.filter(|sku| !sku.is_empty()),
        })
        .collect();
    Ok(ProviderTruth {
        transaction_ref: order.order_id,
        amount_minor: order.order_amount,
        currency,
        state,
        occurred_at,
        // Klarna orders carry no update time; an order is pushed once, so
        // its creation orders it well enough.
        source_version: occurred_at.timestamp_millis(),
        location_ref: None,
        line_items,
    })
}

/// Klarna guarantees payment once it has authorised an order, so an
/// authorised order is a completed purchase. A fully refunded order keeps
/// its status and shows the refund in `refunded_amount`.
fn state_of(order: &Order) -> Option<PaymentState> {
    let state = match order.status.as_str() {
        "AUTHORIZED" | "PART_CAPTURED" | "CAPTURED" | "CLOSED" => PaymentState::Completed,
        "CANCELLED" | "EXPIRED" => PaymentState::Canceled,
        _ => return None,
    };
    let fully_refunded =
        order.refunded_amount > 0 && order.refunded_amount >= order.captured_amount;
    if state == PaymentState::Completed && fully_refunded {
        return Some(PaymentState::Refunded);
    }
    Some(state)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    /// An order shaped like the example in Klarna's order management API
    /// reference, trimmed to a few fields kvitto does not read plus those it
    /// does.
    const CAPTURED: &str = r#"{
        "order_id": "f3392f8b-6116-4073-ab96-e330819e2c07",
        "status": "CAPTURED",
        "fraud_status": "ACCEPTED",
        "order_amount": 50000,
        "original_order_amount": 50000,
        "captured_amount": 50000,
        "refunded_amount": 0,
        "purchase_currency": "SEK",
        "locale": "sv-SE",
        "created_at": "2026-03-01T10:15:30.123Z",
        "order_lines": [
            {"reference": "KAFFE-1", "type": "physical", "quantity": 2, "quantity_unit": "pcs",
             "name": "Bryggkaffe", "unit_price": 2500, "tax_rate": 1200,
             "total_amount": 5000, "total_tax_amount": 536},
            {"reference": "", "type": "physical", "quantity": 1,
             "name": "Räksmörgås 🦐", "unit_price": 45000, "total_amount": 45000}
        ]
    }"#;

    fn truth(body: &str) -> Result<ProviderTruth, String> {
        truth_of(serde_json::from_str(body).map_err(|e| e.to_string())?)
    }

    #[test]
    fn klarna_captured_order_becomes_a_completed_truth() {
        let truth = truth(CAPTURED).unwrap();
        let created = Utc.with_ymd_and_hms(2026, 3, 1, 10, 15, 30).unwrap()
            + chrono::Duration::milliseconds(123);
        assert_eq!(
            truth.transaction_ref,
            "f3392f8b-6116-4073-ab96-e330819e2c07"
        );
        assert_eq!(truth.amount_minor, 50000);
        assert_eq!(truth.currency, "SEK");
        assert_eq!(truth.state, PaymentState::Completed);
        assert_eq!(truth.occurred_at, created);
        assert_eq!(truth.source_version, created.timestamp_millis());
        assert_eq!(truth.location_ref, None);
        let skus: Vec<_> = truth.line_items.iter().map(|l| l.sku.as_deref()).collect();
        assert_eq!(skus, [Some("KAFFE-1"), None]);
        assert_eq!(truth.line_items[0].quantity, "2");
        assert_eq!(truth.line_items[0].unit_price_minor, Some(2500));
        assert_eq!(truth.line_items[1].name, "Räksmörgås 🦐");
        assert_eq!(truth.line_items[1].total_minor, Some(45000));
    }

    #[test]
    fn klarna_statuses_map_to_payment_states() {
        let cases = [
            ("AUTHORIZED", PaymentState::Completed),
            ("PART_CAPTURED", PaymentState::Completed),
            ("CLOSED", PaymentState::Completed),
            ("CANCELLED", PaymentState::Canceled),
            ("EXPIRED", PaymentState::Canceled),
        ];
        for (status, state) in cases {
            let body = CAPTURED.replace(r#""CAPTURED""#, &format!("{status:?}"));
            assert_eq!(truth(&body).unwrap().state, state, "{status}");
        }
        assert!(truth(&CAPTURED.replace(r#""CAPTURED""#, r#""PENDING""#)).is_err());
    }

    #[test]
    fn klarna_fully_refunded_order_is_refunded() {
        let body = CAPTURED.replace(r#""refunded_amount": 0"#, r#""refunded_amount": 50000"#);
        assert_eq!(truth(&body).unwrap().state, PaymentState::Refunded);
        let partly = CAPTURED.replace(r#""refunded_amount": 0"#, r#""refunded_amount": 100"#);
        assert_eq!(truth(&partly).unwrap().state, PaymentState::Completed);
    }

    #[test]
    fn klarna_malformed_orders_are_refused() {
        let broken = [
            CAPTURED.replace("50000,\n        \"original", "500.5,\n        \"original"),
            CAPTURED.replace(r#""SEK""#, r#""KRONOR""#),
            CAPTURED.replace("2026-03-01T10:15:30.123Z", "2026-03-01 10:15"),
            CAPTURED.replace(r#""quantity": 2"#, r#""quantity": "2""#),
        ];
        for body in &broken {
            assert!(truth(body).is_err(), "{body}");
        }
    }
}
