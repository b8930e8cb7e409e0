//! Processing of one bus event: decode, deduplicate, verify, enrich, store,
//! publish. The caller commits the event only when this returns `Ok`.
//!
//! Every step is safe to repeat: the dedup row and the transaction change are
//! one database transaction, and a redelivered event whose transaction event
//! did not reach the output topic yet is published again (same event id, same
//! content), so a crash anywhere in here loses nothing and doubles nothing.

use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};

use super::Shared;
use super::envelope::{self, DeadLetter};
use super::verify::{self, Decision};
use crate::bus::{BusError, Delivery};
use crate::canonical::{self, Transaction, VerificationMode};
use crate::config::IntegrationConfig;
use crate::providers::{self, ApiError, Claim, EventAction, ProviderKind, RawDelivery};
use crate::store::{Applied, EventRef, StoreError};
use crate::telemetry::{
    DeadLetterReason, DeadLettered, EventProcessed, ProcessOutcome, Stage, StageFinished,
    TopicKind, VerificationMismatch, emit,
};

/// Why an event could not be processed now.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// Worth retrying the same event later (provider API down, database or
    /// bus unavailable). The event is not committed.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot help: the event goes to the dead-letter topic.
    #[error("{reason:?}: {detail}")]
    Permanent {
        reason: DeadLetterReason,
        detail: String,
    },
}

impl From<StoreError> for ProcessError {
    fn from(error: StoreError) -> Self {
        if error.is_permanent() {
            permanent(DeadLetterReason::StoreRejected, error.to_string())
        } else {
            ProcessError::Transient(error.to_string())
        }
    }
}

impl From<BusError> for ProcessError {
    fn from(error: BusError) -> Self {
        ProcessError::Transient(error.to_string())
    }
}

fn permanent(reason: DeadLetterReason, detail: impl Into<String>) -> ProcessError {
    ProcessError::Permanent {
        reason,
        detail: detail.into(),
    }
}

/// The identity of a webhook event, read from the headers ingress wrote.
struct Envelope<'a> {
    event_id: &'a str,
    integration: &'a IntegrationConfig,
    query: &'a str,
}

fn envelope<'a>(
    shared: &'a Shared,
    provider: ProviderKind,
    delivery: &'a Delivery,
) -> Result<Envelope<'a>, ProcessError> {
    let message = &delivery.message;
    let event_id = message.header(envelope::EVENT_ID_HEADER).ok_or_else(|| {
        permanent(
            DeadLetterReason::Undecodable,
            "missing kvitto-event-id header",
        )
    })?;
    let integration_id = message
        .header(envelope::INTEGRATION_HEADER)
        .ok_or_else(|| {
            permanent(
                DeadLetterReason::Undecodable,
                "missing kvitto-integration header",
            )
        })?;
    let integration = shared
        .config
        .integration(provider, integration_id)
        .ok_or_else(|| {
            permanent(
                DeadLetterReason::UnknownIntegration,
                format!("integration {integration_id} is not configured"),
            )
        })?;
    let query = message.header(envelope::QUERY_HEADER).unwrap_or("");
    Ok(Envelope {
        event_id,
        integration,
        query,
    })
}

/// Processes one event end to end and says how it ended.
pub async fn process(
    shared: &Shared,
    provider: ProviderKind,
    delivery: &Delivery,
) -> Result<ProcessOutcome, ProcessError> {
    let outcome = process_event(shared, provider, delivery).await?;
    let since_accepted = delivery
        .message
        .header(envelope::RECEIVED_AT_HEADER)
        .and_then(|value| crate::store::parse_time(value).ok())
        .and_then(|accepted| (Utc::now() - accepted).to_std().ok());
    emit(EventProcessed {
        provider,
        outcome,
        since_accepted,
    });
    Ok(outcome)
}

async fn process_event(
    shared: &Shared,
    provider: ProviderKind,
    delivery: &Delivery,
) -> Result<ProcessOutcome, ProcessError> {
    let started = Instant::now();
    let env = envelope(shared, provider, delivery)?;
    let raw = RawDelivery {
        body: &delivery.message.payload,
        headers: &delivery.message.headers,
        query: env.query,
    };
    let decoded = providers::decode(provider, &raw)
        .map_err(|e| permanent(DeadLetterReason::Undecodable, e.0))?;
    stage(provider, Stage::Decode, started);
    tracing::debug!(
        integration = %env.integration.id,
        provider_event_id = %decoded.event_id,
        "event decoded"
    );

    // Lets the test suite make processing of chosen events panic, to prove
    // that a panic restarts the actor and dead-letters only that event.
    fail::fail_point!("process-event", decoded.event_id.contains("poison"), |_| {
        Err(ProcessError::Transient("fail point".into()))
    });

    check_text("provider event id", &decoded.event_id)?;
    let event = EventRef {
        provider,
        integration_id: &env.integration.id,
        provider_event_id: &decoded.event_id,
        event_id: env.event_id,
    };
    let started = Instant::now();
    if let Some(seen) = shared.store.seen(&event).await? {
        if !seen.published
            && let Some(id) = &seen.transaction_id
            && let Some(transaction) = shared.store.transaction(id).await?
        {
            publish(shared, &transaction).await?;
            shared.store.mark_published(&event).await?;
            tracing::debug!("transaction published again for an earlier delivery");
        }
        stage(provider, Stage::Deduplicate, started);
        tracing::debug!("event is a duplicate");
        return Ok(ProcessOutcome::Duplicate);
    }
    stage(provider, Stage::Deduplicate, started);
    tracing::debug!("event deduplicated; first delivery");

    let claim = match decoded.action {
        EventAction::Ignore { reason } => {
            tracing::debug!(reason, "event ignored");
            let fresh = shared
                .store
                .record_without_effect(&event, "ignored")
                .await?;
            return Ok(if fresh {
                ProcessOutcome::Ignored
            } else {
                ProcessOutcome::Duplicate
            });
        }
        EventAction::Settlement(signal) => {
            crate::settlement::engine::apply_signal(&shared.store, &signal).await?;
            let fresh = shared
                .store
                .record_without_effect(&event, "settlement")
                .await?;
            return Ok(if fresh {
                ProcessOutcome::Settlement
            } else {
                ProcessOutcome::Duplicate
            });
        }
        EventAction::Purchase(claim) => claim,
        // Settlement takes these up; the purchase pipeline only records them.
    };

    let started = Instant::now();
    let decision = decide(shared, env.integration, &claim).await?;
    stage(provider, Stage::Verify, started);
    tracing::debug!(
        verdict = decision.verdict.as_str(),
        mismatch = decision.mismatch.unwrap_or("none"),
        "event verified"
    );
    if let Some(reason) = decision.mismatch {
        emit(VerificationMismatch { provider, reason });
    }

    let started = Instant::now();
    let candidate = enrich(env.integration, &claim, &decision);
    check_transaction(&candidate)?;
    let from_truth = decision.from_truth;
    let applied = shared
        .store
        .apply(&event, &candidate, |stored, candidate| {
            successor(stored, candidate, from_truth)
        })
        .await?;
    stage(provider, Stage::Store, started);

    let outcome = match applied {
        Applied::Duplicate => {
            tracing::debug!("event is a duplicate; another delivery stored it first");
            return Ok(ProcessOutcome::Duplicate);
        }
        Applied::Unchanged { stale, .. } => {
            tracing::debug!(stale, "transaction stored unchanged; nothing to publish");
            if stale {
                ProcessOutcome::Stale
            } else {
                verdict_outcome(&decision)
            }
        }
        Applied::Changed(transaction) => {
            tracing::debug!(
                transaction_id = %transaction.id,
                revision = transaction.revision,
                "transaction stored"
            );
            let started = Instant::now();
            publish(shared, &transaction).await?;
            shared.store.mark_published(&event).await?;
            stage(provider, Stage::Publish, started);
            tracing::debug!("transaction published");
            verdict_outcome(&decision)
        }
    };
    Ok(outcome)
}

fn verdict_outcome(decision: &Decision) -> ProcessOutcome {
    match decision.verdict {
        canonical::Verdict::Verified => ProcessOutcome::Verified,
        canonical::Verdict::Rejected => ProcessOutcome::Rejected,
    }
}

/// What replaces `stored` when `candidate` arrives; `None` keeps `stored`.
///
/// The API's answer is current when it is read, so a candidate built from it
/// carries the newest facts; one built from a webhook's claim (signature-only,
/// or a transaction the API does not know) wins only if it is newer than what
/// is stored, so an older state never overwrites a newer one. Once the
/// provider has confirmed a transaction, a later webhook that disagrees with
/// the provider does not turn it into `rejected`: the disagreement is
/// counted, and the stored facts stay the provider's.
fn successor(
    stored: &Transaction,
    candidate: &Transaction,
    from_truth: bool,
) -> Option<Transaction> {
    let newer = from_truth || candidate.source_version > stored.source_version;
    if !newer {
        return None;
    }
    let mut next = candidate.clone();
    if stored.verdict == canonical::Verdict::Verified
        && next.verdict == canonical::Verdict::Rejected
    {
        next.verdict = canonical::Verdict::Verified;
        next.rejection_reason = None;
    }
    Some(next)
}

/// Refuses text the database cannot hold (PostgreSQL rejects NUL) before it
/// gets there.
fn check_text(what: &str, value: &str) -> Result<(), ProcessError> {
    if value.contains('\0') {
        return Err(permanent(
            DeadLetterReason::Undecodable,
            format!("{what} contains a NUL character"),
        ));
    }
    Ok(())
}

/// The earliest and latest purchase times kvitto stores: outside them a
/// timestamp is a provider bug or an attack, and RFC 3339 cannot even write
/// years past 9999.
const EARLIEST_YEAR: i32 = 1970;
const LATEST_YEAR: i32 = 9999;

fn check_transaction(candidate: &Transaction) -> Result<(), ProcessError> {
    use chrono::Datelike;
    let year = candidate.occurred_at.year();
    if !(EARLIEST_YEAR..=LATEST_YEAR).contains(&year) {
        return Err(permanent(
            DeadLetterReason::Undecodable,
            format!("purchase time in year {year} is out of range"),
        ));
    }
    check_text("transaction id", &candidate.provider_transaction_id)?;
    check_text("currency", &candidate.currency)?;
    for item in &candidate.line_items {
        check_text("line item name", &item.name)?;
        check_text("line item quantity", &item.quantity)?;
        check_text("line item sku", item.sku.as_deref().unwrap_or(""))?;
    }
    Ok(())
}

/// Verifies a claim: against the provider's API, or on its signature alone
/// where the integration says so. Unsigned providers are always looked up.
async fn decide(
    shared: &Shared,
    integration: &IntegrationConfig,
    claim: &Claim,
) -> Result<Decision, ProcessError> {
    let unsigned = matches!(
        integration.provider,
        ProviderKind::Swish | ProviderKind::Klarna
    );
    if integration.verification == VerificationMode::SignatureOnly && !unsigned {
        let facts = verify::from_claim(claim).ok_or_else(|| {
            permanent(
                DeadLetterReason::Undecodable,
                "webhook lacks amount, currency, state or time",
            )
        })?;
        return Ok(Decision {
            facts,
            verdict: canonical::Verdict::Verified,
            rejection_reason: None,
            mismatch: None,
            from_truth: false,
        });
    }
    let tolerance = shared.config.processing.amount_tolerance_minor;
    let location = integration.provider_location_id.as_deref();
    match providers::lookup(&shared.api, integration, &claim.transaction_ref).await {
        // An unsigned callback is only a hint that something happened:
        // anyone with the path token could have sent it, so what it says
        // about amount or state is not held against the provider's answer.
        Ok(truth) if unsigned => Ok(verify::against_truth(
            &verify::hint(claim),
            &truth,
            tolerance,
            location,
        )),
        Ok(truth) => Ok(verify::against_truth(claim, &truth, tolerance, location)),
        Err(ApiError::NotFound) if unsigned => Err(permanent(
            DeadLetterReason::ProviderApi,
            "transaction unknown to the provider",
        )),
        Err(ApiError::NotFound) => {
            let facts = verify::from_claim(claim).ok_or_else(|| {
                permanent(
                    DeadLetterReason::ProviderApi,
                    "transaction unknown to the provider",
                )
            })?;
            emit(VerificationMismatch {
                provider: integration.provider,
                reason: "unknown_to_provider",
            });
            Ok(Decision {
                facts,
                verdict: canonical::Verdict::Rejected,
                rejection_reason: Some(
                    "unknown_to_provider: the provider API does not know this transaction".into(),
                ),
                mismatch: None,
                from_truth: false,
            })
        }
        Err(error @ ApiError::Transient { .. }) => Err(ProcessError::Transient(error.to_string())),
        Err(ApiError::Permanent(detail)) => Err(permanent(DeadLetterReason::ProviderApi, detail)),
    }
}

/// The canonical transaction a decision describes.
fn enrich(integration: &IntegrationConfig, claim: &Claim, decision: &Decision) -> Transaction {
    let facts = &decision.facts;
    // The store keeps milliseconds; deciding at the same precision means a
    // republished event is identical to the first, and equal facts compare
    // equal.
    let occurred_at = facts.occurred_at.trunc_subsecs(3);
    let unsigned = matches!(
        integration.provider,
        ProviderKind::Swish | ProviderKind::Klarna
    );
    let verification = if unsigned {
        VerificationMode::Api
    } else {
        integration.verification
    };
    Transaction {
        id: canonical::transaction_id(
            integration.provider,
            &integration.id,
            &claim.transaction_ref,
        ),
        provider: integration.provider,
        integration_id: integration.id.clone(),
        business_id: integration.business_id.clone(),
        location_id: integration.location_id.clone(),
        provider_transaction_id: claim.transaction_ref.clone(),
        verdict: decision.verdict,
        rejection_reason: decision.rejection_reason.clone(),
        verification,
        state: facts.state,
        amount_minor: facts.amount_minor,
        currency: facts.currency.clone(),
        occurred_at,
        occurred_at_local: canonical::stockholm_local(occurred_at),
        line_items: facts.line_items.clone(),
        source_event_ids: Vec::new(),
        source_version: facts.source_version,
        revision: 0,
        updated_at: Utc::now().trunc_subsecs(3),
    }
}

async fn publish(shared: &Shared, transaction: &Transaction) -> Result<(), ProcessError> {
    let topic = shared.config.bus.transactions_topic();
    shared
        .publish(
            TopicKind::Transactions,
            &topic,
            &envelope::transaction_message(transaction),
        )
        .await?;
    Ok(())
}

/// Sends an event to the dead-letter topic with its reason.
pub async fn dead_letter(
    shared: &Shared,
    provider: ProviderKind,
    delivery: &Delivery,
    reason: DeadLetterReason,
    detail: &str,
) -> Result<(), BusError> {
    let letter = DeadLetter::new(delivery, reason.as_str(), detail.to_string(), Utc::now());
    let topic = shared.config.bus.deadletter_topic();
    shared
        .publish(
            TopicKind::Deadletter,
            &topic,
            &letter.message(&delivery.message.key),
        )
        .await?;
    emit(DeadLettered {
        provider,
        reason,
        event_id: &letter.event_id,
        detail,
    });
    emit(EventProcessed {
        provider,
        outcome: ProcessOutcome::Deadlettered,
        since_accepted: None,
    });
    Ok(())
}

fn stage(provider: ProviderKind, stage: Stage, started: Instant) {
    emit(StageFinished {
        provider,
        stage,
        elapsed: started.elapsed(),
    });
}

/// The pause before retrying an event that failed transiently: doubling
/// from the configured pause, capped.
pub fn retry_pause(base: Duration, attempt: u32, max: Duration) -> Duration {
    base.saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(max)
}
