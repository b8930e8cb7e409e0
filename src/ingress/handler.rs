//! The webhook handler: authenticate, identify, make durable, then answer.

use std::time::{Duration, Instant};

use actix_web::http::header::CONTENT_LENGTH;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use futures::StreamExt;
use tracing::Instrument;
use uuid::Uuid;

use super::{IngressError, IngressState};
use crate::bus::{BusError, BusMessage};
use crate::config::IntegrationConfig;
use crate::pipeline::envelope::{
    EVENT_ID_HEADER, INTEGRATION_HEADER, PROVIDER_EVENT_ID_HEADER, PROVIDER_HEADER, QUERY_HEADER,
    RECEIVED_AT_HEADER,
};
use crate::providers::{self, KEPT_HEADERS, ProviderKind, SignatureError, WebhookRequest};
use crate::store::format_time;
use crate::telemetry::throttle::{Throttle, ThrottleSite};
use crate::telemetry::{
    BusPublished, IngressOutcome, SignatureRefused, TopicKind, WebhookAnswered, WebhookInFlight,
    emit,
};

/// The most memory reserved for a body before its bytes arrive.
const INITIAL_BODY_CAPACITY_BYTES: usize = 64 * 1024;

/// Namespace of kvitto event ids (UUID v5 of provider, integration and the
/// provider's event id), so every delivery of one provider event carries
/// the same kvitto id.
const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x6b76_6974_746f_4000_8000_6576_656e_7473);

/// A bus that refuses writes refuses every webhook: one line a minute.
static BUS_WRITE_FAILED_LOG: Throttle = Throttle::new(ThrottleSite::BusWriteFailed, 60);

pub async fn receive(
    request: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<IngressState>,
) -> Result<HttpResponse, IngressError> {
    let started = Instant::now();
    let (provider_name, integration_id) = path.into_inner();
    let provider = provider_name.parse::<ProviderKind>().ok();
    let result = accept(&request, provider, &integration_id, payload, &state).await;
    let outcome = match &result {
        Ok(_) => IngressOutcome::Accepted,
        Err(error) => error.outcome(),
    };
    emit(WebhookAnswered {
        provider,
        outcome,
        elapsed: started.elapsed(),
    });
    result
}

async fn accept(
    request: &HttpRequest,
    provider: Option<ProviderKind>,
    integration_id: &str,
    payload: web::Payload,
    state: &IngressState,
) -> Result<HttpResponse, IngressError> {
    let integration = provider
        .and_then(|provider| state.config.integration(provider, integration_id))
        .ok_or(IngressError::UnknownIntegration)?;
    // Held until the answer: bounds the bodies in memory at once, and
    // counts the request in `kvitto_webhooks_in_flight` meanwhile.
    let _permit = state
        .inflight
        .try_acquire()
        .map_err(|_| IngressError::Overloaded)?;
    let _in_flight = WebhookInFlight::start();
    let timeout = Duration::from_millis(state.config.server.request_timeout_ms);
    let body = tokio::time::timeout(
        timeout,
        read_body(request, payload, state.config.server.max_body_bytes),
    )
    .await
    .map_err(|_| IngressError::Timeout)?
    .map_err(|error| match error {
        BodyError::TooLarge => IngressError::TooLarge {
            max_body_bytes: state.config.server.max_body_bytes,
        },
        BodyError::Unreadable => IngressError::Malformed("request body could not be read".into()),
    })?;
    let webhook = WebhookRequest {
        headers: request.headers(),
        body: &body,
        query: request.query_string(),
    };

    // Every provider sends JSON (or nothing): bytes that are not UTF-8 are
    // refused before any secret is used on them.
    if std::str::from_utf8(&body).is_err() {
        return Err(IngressError::Malformed("body is not UTF-8".into()));
    }
    providers::verify_signature(integration, &webhook, Utc::now())
        .map_err(|error| refuse_signature(integration, error))?;
    let info = providers::envelope_info(integration.provider, &webhook)
        .map_err(|error| IngressError::Malformed(error.0))?;

    let event_id = event_id(integration, &info.event_id);
    // Every line about this event from here on, and in the worker that
    // processes it, carries its kvitto event id.
    let span = tracing::info_span!("event", %event_id, provider = %integration.provider);
    make_durable(state, integration, &webhook, &info, &event_id)
        .instrument(span)
        .await
}

/// Writes the webhook to its provider's topic and answers once the bus
/// confirmed the write.
async fn make_durable(
    state: &IngressState,
    integration: &IntegrationConfig,
    webhook: &WebhookRequest<'_>,
    info: &providers::EnvelopeInfo,
    event_id: &str,
) -> Result<HttpResponse, IngressError> {
    let message = bus_message(integration, webhook, info, event_id);
    let topic = state.config.bus.webhook_topic(integration.provider);
    tracing::debug!(topic, "webhook authenticated");
    let timeout = Duration::from_millis(state.config.bus.publish_timeout_ms);
    let publish_started = Instant::now();
    let published = state.bus.publish(&topic, &message, timeout).await;
    emit(BusPublished {
        topic: TopicKind::Webhooks,
        ok: published.is_ok(),
        elapsed: publish_started.elapsed(),
    });
    match published {
        // Durable on the bus: now, and only now, the provider may forget it.
        Ok(()) => {
            tracing::debug!(topic, "webhook accepted");
            Ok(HttpResponse::Ok().json(serde_json::json!({
                "status": "accepted",
                "event_id": event_id,
            })))
        }
        // The write was not confirmed in time: it may or may not be stored,
        // so the provider must retry; the stable event id makes a second
        // copy harmless.
        Err(BusError::Unavailable(reason)) => {
            tracing::debug!(%reason, "bus unavailable; answering 503");
            Err(IngressError::Unavailable)
        }
        // A broken bus is an operator's problem, but the provider's answer
        // is the same: retry later. Every webhook hits it while it lasts,
        // so the line is throttled.
        Err(BusError::Fatal(reason)) => {
            if let Some(suppressed) = BUS_WRITE_FAILED_LOG.allow() {
                tracing::error!(%reason, suppressed, "bus write failed");
            }
            Err(IngressError::Unavailable)
        }
    }
}

/// Reads the body up to the limit, refusing early on a declared length over
/// it and stopping as soon as the stream passes it.
/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    Unreadable,
}

/// Reads a request body of at most `max_body_bytes`, refusing a larger
/// declared or actual length without reading further.
pub async fn read_body(
    request: &HttpRequest,
    mut payload: web::Payload,
    max_body_bytes: usize,
) -> Result<Vec<u8>, BodyError> {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > max_body_bytes) {
        return Err(BodyError::TooLarge);
    }
    // Grown as bytes arrive, not reserved from the declared length, which a
    // client can state and never send.
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(INITIAL_BODY_CAPACITY_BYTES));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| BodyError::Unreadable)?;
        if body.len() + chunk.len() > max_body_bytes {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The answer to a refused signature. Refusals of the signature itself or
/// its timestamp are counted per integration (a malformed header is a
/// malformed request, counted only by outcome).
fn refuse_signature(integration: &IntegrationConfig, error: SignatureError) -> IngressError {
    let error = signature_error(error);
    if matches!(
        error.outcome(),
        IngressOutcome::InvalidSignature | IngressOutcome::StaleTimestamp
    ) {
        emit(SignatureRefused {
            provider: integration.provider,
            integration: &crate::health::integration_label(integration),
        });
    }
    error
}

fn signature_error(error: SignatureError) -> IngressError {
    match error {
        SignatureError::Missing => IngressError::MissingSignature,
        SignatureError::Mismatch => IngressError::InvalidSignature,
        SignatureError::StaleTimestamp => IngressError::StaleTimestamp,
        SignatureError::MalformedHeader(reason) => {
            IngressError::Malformed(format!("signature header malformed: {reason}"))
        }
        SignatureError::MalformedBody(reason) => {
            IngressError::Malformed(format!("body malformed: {reason}"))
        }
    }
}

fn event_id(integration: &IntegrationConfig, provider_event_id: &str) -> String {
    let name = format!(
        "{}/{}/{}",
        integration.provider, integration.id, provider_event_id
    );
    Uuid::new_v5(&EVENT_NAMESPACE, name.as_bytes()).to_string()
}

fn bus_message(
    integration: &IntegrationConfig,
    webhook: &WebhookRequest<'_>,
    info: &providers::EnvelopeInfo,
    event_id: &str,
) -> BusMessage {
    let mut headers = vec![
        (EVENT_ID_HEADER.to_string(), event_id.to_string()),
        (
            PROVIDER_HEADER.to_string(),
            integration.provider.to_string(),
        ),
        (INTEGRATION_HEADER.to_string(), integration.id.clone()),
        (PROVIDER_EVENT_ID_HEADER.to_string(), info.event_id.clone()),
        (RECEIVED_AT_HEADER.to_string(), format_time(Utc::now())),
    ];
    if !webhook.query.is_empty() {
        headers.push((QUERY_HEADER.to_string(), webhook.query.to_string()));
    }
    for name in KEPT_HEADERS {
        if let Some(value) = webhook.headers.get(*name).and_then(|v| v.to_str().ok()) {
            headers.push((name.to_string(), value.to_string()));
        }
    }
    BusMessage {
        key: info.partition_key.clone(),
        payload: webhook.body.to_vec(),
        headers,
    }
}
