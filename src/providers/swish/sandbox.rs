//! Swish played by the sandbox: payment request callbacks and the payment
//! request lookup.
//!
//! Swish calls back once a payment request is final, so the first callback
//! about a purchase says PAID; a later one repeats the request with the
//! purchase's current status. Bodies have the shape of Swish's own examples,
//! with the amount as a decimal string as merchants send it, while the
//! lookup answers it as a JSON number as Swish's API does: both forms are
//! thereby exercised. Values Swish would derive (the bank's payment
//! reference, the payer's number) are derived from the payment request id so
//! callback and answer agree without shared state.

use actix_web::HttpResponse;
use actix_web::web::{self, ServiceConfig};
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::canonical::PaymentState;
use crate::config::IntegrationConfig;
use crate::providers::ProviderKind;
use crate::providers::swish::api::PROBE_PAYMENT_REQUEST_ID;
use crate::sandbox::{Lookup, Purchase, SandboxState, SandboxWebhook, WebhookKind, decimal_amount};

/// The public base URL the demo registers as `callbackUrl`.
const CALLBACK_BASE_URL: &str = "https://kvitto.example.se/webhooks/swish";

/// A payment request as Swish writes it in callbacks and answers.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PaymentRequestBody<'a> {
    id: &'a str,
    payee_payment_reference: String,
    payment_reference: String,
    callback_url: String,
    payer_alias: String,
    payee_alias: &'a str,
    amount: &'a RawValue,
    currency: &'a str,
    message: &'static str,
    status: &'static str,
    date_created: String,
    date_paid: Option<String>,
    error_code: Option<&'static str>,
    error_message: Option<&'static str>,
}

/// 32 upper-case hex characters, Swish's payment request id format.
pub fn transaction_ref(rng: &mut impl Rng) -> String {
    let bytes: [u8; 16] = rng.r#gen();
    hex::encode_upper(bytes)
}

pub fn webhook(
    integration: &IntegrationConfig,
    purchase: &Purchase,
    kind: WebhookKind,
    _now: DateTime<Utc>,
) -> SandboxWebhook {
    let status = match kind {
        WebhookKind::Created => "PAID",
        WebhookKind::Updated => status_of(purchase.state),
    };
    let amount = raw_amount(purchase, AmountForm::DecimalString);
    let body = body_for(integration.id.as_str(), purchase, status, &amount);
    SandboxWebhook {
        path_and_query: format!("/webhooks/swish/{}", integration.id),
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::to_vec(&body).unwrap_or_default(),
        // Swish has no event id; kvitto keys a callback by id and status.
        event_id: format!("{}:{status}", purchase.transaction_ref),
    }
}

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(
        web::scope("/swish")
            .route(
                "/api/v1/paymentrequests/{id}",
                web::get().to(get_payment_request),
            )
            .configure(super::payouts_sandbox::routes),
    );
}

/// Real Swish authenticates this call by the client certificate of the TLS
/// connection. The sandbox speaks plain HTTP, so there is no credential to
/// check: anyone who reaches the sandbox listener may read its purchases.
async fn get_payment_request(
    state: web::Data<SandboxState>,
    id: web::Path<String>,
) -> HttpResponse {
    if id.as_str() == PROBE_PAYMENT_REQUEST_ID {
        return match state.probe(ProviderKind::Swish).await {
            Some(fault) => fault,
            None => HttpResponse::NotFound().finish(),
        };
    }
    match state.lookup(ProviderKind::Swish, &id).await {
        Lookup::Found(purchase) => {
            let status = status_of(purchase.state);
            let amount = raw_amount(&purchase, AmountForm::JsonNumber);
            let body = body_for(&purchase.integration_id, &purchase, status, &amount);
            HttpResponse::Ok().json(body)
        }
        Lookup::Missing => HttpResponse::NotFound().finish(),
        Lookup::Respond(response) => response,
    }
}

fn body_for<'a>(
    integration_id: &str,
    purchase: &'a Purchase,
    status: &'static str,
    amount: &'a RawValue,
) -> PaymentRequestBody<'a> {
    let id = purchase.transaction_ref.as_str();
    let digest = Sha256::digest(id.as_bytes());
    let payer_digits: String = digest
        .iter()
        .take(8)
        .map(|b| char::from(b'0' + b % 10))
        .collect();
    let date_paid = (status == "PAID").then(|| swish_time(purchase.updated_at));
    PaymentRequestBody {
        id,
        payee_payment_reference: id.chars().take(10).collect(),
        payment_reference: hex::encode_upper(digest.get(16..).unwrap_or_default()),
        callback_url: format!("{CALLBACK_BASE_URL}/{integration_id}"),
        payer_alias: format!("4670{payer_digits}"),
        payee_alias: &purchase.location_ref,
        amount,
        currency: &purchase.currency,
        message: "Köp i kassan, tack!",
        status,
        date_created: swish_time(purchase.created_at),
        date_paid,
        error_code: None,
        error_message: None,
    }
}

/// Refunds go through a separate Swish refund; the payment request itself
/// stays PAID. A failed purchase is one the payer declined in the app.
fn status_of(state: PaymentState) -> &'static str {
    match state {
        PaymentState::Pending => "CREATED",
        PaymentState::Completed | PaymentState::Refunded => "PAID",
        PaymentState::Failed => "DECLINED",
        PaymentState::Canceled => "CANCELLED",
    }
}

#[derive(Clone, Copy)]
enum AmountForm {
    DecimalString,
    JsonNumber,
}

/// The amount as JSON text, `"149.50"` or `149.50`, written from the integer
/// so no float is involved.
fn raw_amount(purchase: &Purchase, form: AmountForm) -> Box<RawValue> {
    let decimal = decimal_amount(purchase.amount_minor, &purchase.currency);
    let text = match form {
        AmountForm::DecimalString => format!("\"{decimal}\""),
        AmountForm::JsonNumber => decimal,
    };
    RawValue::from_string(text).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

fn swish_time(instant: DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderMap;
    use chrono::TimeZone;
    use rand::SeedableRng;

    use super::*;
    use crate::canonical::LineItem;

    use crate::providers::swish::api;
    use crate::providers::swish::decode;
    use crate::providers::{ApiError, EventAction, RawDelivery, WebhookRequest};
    use crate::sandbox::{Fault, testing};

    fn demo_integration() -> IntegrationConfig {
        testing::integration_of(&testing::demo_config(), ProviderKind::Swish)
    }

    fn purchase(integration: &IntegrationConfig, transaction_ref: &str) -> Purchase {
        let created_at = Utc.with_ymd_and_hms(2026, 3, 1, 10, 15, 30).unwrap();
        Purchase {
            provider: ProviderKind::Swish,
            integration_id: integration.id.clone(),
            transaction_ref: transaction_ref.into(),
            amount_minor: 14950,
            currency: "SEK".into(),
            state: PaymentState::Completed,
            created_at,
            updated_at: created_at + chrono::Duration::milliseconds(12_345),
            location_ref: "1231181189".into(),
            line_items: vec![LineItem {
                name: "Mjukglass".into(),
                quantity: "1".into(),
                unit_price_minor: Some(14950),
                total_minor: Some(14950),
                sku: None,
            }],
        }
    }

    #[test]
    fn swish_transaction_refs_are_32_upper_case_hex() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let first = transaction_ref(&mut rng);
        assert!(decode::is_payment_request_id(&first), "{first}");
        assert_ne!(first, transaction_ref(&mut rng));
    }

    #[test]
    fn swish_sandbox_callback_decodes_to_the_purchase_facts() {
        let integration = demo_integration();
        let purchase = purchase(&integration, "11A86BE70EA346E4B1C39C874173F088");
        let webhook = webhook(&integration, &purchase, WebhookKind::Created, Utc::now());
        assert_eq!(
            webhook.path_and_query,
            format!("/webhooks/swish/{}", integration.id)
        );

        let headers = HeaderMap::new();
        let request = WebhookRequest {
            headers: &headers,
            body: &webhook.body,
            query: "",
        };
        let envelope = decode::envelope_info(&request).unwrap();
        assert_eq!(envelope.event_id, webhook.event_id);
        assert_eq!(envelope.partition_key, purchase.transaction_ref);

        let delivery = RawDelivery {
            body: &webhook.body,
            headers: &[],
            query: "",
        };
        let EventAction::Purchase(claim) = decode::decode(&delivery).unwrap().action else {
            panic!("sandbox callback was not a purchase");
        };
        assert_eq!(claim.transaction_ref, purchase.transaction_ref);
        assert_eq!(claim.amount_minor, Some(purchase.amount_minor));
        assert_eq!(claim.currency.as_deref(), Some("SEK"));
        assert_eq!(claim.state, Some(PaymentState::Completed));
        assert_eq!(claim.occurred_at, Some(purchase.created_at));
        assert_eq!(claim.source_version, purchase.updated_at.timestamp_millis());
        assert_eq!(claim.location_ref.as_deref(), Some("1231181189"));
    }

    #[test]
    fn swish_sandbox_update_repeats_the_request_with_its_current_status() {
        let integration = demo_integration();
        let mut purchase = purchase(&integration, "11A86BE70EA346E4B1C39C874173F088");
        let created = webhook(&integration, &purchase, WebhookKind::Created, Utc::now());
        let same = webhook(&integration, &purchase, WebhookKind::Updated, Utc::now());
        assert_eq!(created.event_id, same.event_id);

        purchase.state = PaymentState::Canceled;
        let canceled = webhook(&integration, &purchase, WebhookKind::Updated, Utc::now());
        assert_eq!(
            canceled.event_id,
            "11A86BE70EA346E4B1C39C874173F088:CANCELLED"
        );
        let body: serde_json::Value = serde_json::from_slice(&canceled.body).unwrap();
        assert_eq!(body["datePaid"], serde_json::Value::Null);
        assert_eq!(body["amount"], "149.50");
    }

    /// A sandbox serving the Swish routes on a free port, with the demo
    /// Swish integration pointed at it.
    fn serve(purchase: Option<Purchase>) -> (web::Data<SandboxState>, IntegrationConfig) {
        let (state, _) = testing::serve(routes, |address| {
            let mut config = testing::demo_config();
            for integration in &mut config.integrations {
                if integration.provider == ProviderKind::Swish {
                    integration.api_base_url = Some(format!("http://{address}/swish"));
                }
            }
            config
        });
        if let Some(purchase) = purchase {
            state.insert(purchase);
        }
        let integration = testing::integration_of(&state.config, ProviderKind::Swish);
        (state, integration)
    }

    const REF: &str = "11A86BE70EA346E4B1C39C874173F088";

    #[actix_rt::test]
    async fn swish_lookup_through_the_sandbox_matches_the_purchase() {
        let integration = demo_integration();
        let purchase = purchase(&integration, REF);
        let (state, integration) = serve(Some(purchase.clone()));
        let truth = api::lookup(&testing::fast_client(), &integration, REF)
            .await
            .unwrap();
        assert_eq!(truth.transaction_ref, purchase.transaction_ref);
        assert_eq!(truth.amount_minor, purchase.amount_minor);
        assert_eq!(truth.currency, purchase.currency);
        assert_eq!(truth.state, purchase.state);
        assert_eq!(truth.occurred_at, purchase.created_at);
        assert_eq!(truth.source_version, purchase.updated_at.timestamp_millis());
        assert_eq!(
            truth.location_ref.as_deref(),
            Some(purchase.location_ref.as_str())
        );
        assert!(truth.line_items.is_empty(), "swish has no line items");
        assert_eq!(state.lookups_of(ProviderKind::Swish, REF), 1);
    }

    #[actix_rt::test]
    async fn swish_lookup_of_an_unknown_request_is_not_found() {
        let (_state, integration) = serve(None);
        let error = api::lookup(&testing::fast_client(), &integration, REF)
            .await
            .unwrap_err();
        assert_eq!(error, ApiError::NotFound);
    }

    #[actix_rt::test]
    async fn swish_lookup_refuses_a_malformed_id_without_calling_swish() {
        let (state, integration) = serve(None);
        for bad in ["../admin", "11a86be70ea346e4b1c39c874173f088", ""] {
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
    async fn swish_server_errors_are_transient_after_retries() {
        let integration = demo_integration();
        let (state, integration) = serve(Some(purchase(&integration, REF)));
        let client = testing::fast_client();
        let lookup = api::lookup(&client, &integration, REF);
        testing::assert_server_errors_are_transient(&state, ProviderKind::Swish, REF, lookup).await;
    }

    #[actix_rt::test]
    async fn swish_lookup_reports_the_amount_the_api_answers() {
        let integration = demo_integration();
        let (state, integration) = serve(Some(purchase(&integration, REF)));
        state.set_fault(
            ProviderKind::Swish,
            Some(Fault::WrongAmount { delta_minor: 1 }),
        );
        let truth = api::lookup(&testing::fast_client(), &integration, REF)
            .await
            .unwrap();
        assert_eq!(truth.amount_minor, 14951);
    }
}
