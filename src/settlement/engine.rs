//! The settlement actors, on an arbiter of their own.
//!
//! - **intake** consumes `kvitto.feedback` (group `<consumer_group>-settlement`):
//!   each message is parsed, stored (its id is the primary key, so a second
//!   delivery is a no-op), matched at once if its purchase is already known,
//!   and only then committed. A message that is not valid feedback is
//!   dead-lettered with its reason and committed. A database error keeps
//!   the message and retries it after a pause.
//! - **settler** ticks every `settlement.tick_ms`: it matches waiting
//!   feedback (ending it at its deadline), cancels or claws back rewards for
//!   refunded purchases, pays due settlements, asks the providers about
//!   payouts still in flight, and publishes the outbox to
//!   `kvitto.settlements`.
//!
//! How they end: a panic stops the actor and its supervisor restarts it
//! (`kvitto_settlement_actor_restarts_total`); intake re-reads from its last
//! commit, and the settler finds its work again in the database, where a
//! settlement interrupted mid-payout is still `pending` or `submitted` with
//! the same idempotency keys. At shutdown each finishes the step in hand.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, Arbiter, AsyncContext, Context, Handler, Message,
    ResponseActFuture, Supervised, Supervisor, WrapFuture,
};
use chrono::{Duration, Utc};
use futures::{FutureExt, StreamExt};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::feedback::{Feedback, MAX_FEEDBACK_BYTES};
use super::matching::{self, Match, Tolerance};
use super::rails::{PayoutOrder, PayoutStatus, RailError, Rails};
use super::store::{
    self as rows, Change, FeedbackRecord, FeedbackState, SettleOutcome, Settlement,
};
use super::{SettlementState, ledger};
use crate::bus::{Bus, BusError, BusMessage, Consumer, Delivery};
use crate::config::Config;
use crate::pipeline::envelope::{CLOUDEVENTS_CONTENT_TYPE, DeadLetter};
use crate::store::{Store, StoreError, format_time};
use crate::telemetry::emit;
use crate::telemetry::settlement::{
    FeedbackMatched, FeedbackReceived, RailCalled, SettlementActorRestarted, SettlementHealth,
    SettlementMoved,
};

pub const SETTLEMENT_EVENT_TYPE: &str = "se.kvitto.settlement.v1";
/// Waiting feedback looked at per tick.
const MATCH_BATCH: i64 = 500;
/// Due settlements taken per tick, and paid this many at a time.
const PAYOUT_BATCH: i64 = 200;
const PAYOUT_CONCURRENCY: usize = 8;
const OUTBOX_BATCH: i64 = 500;
/// How often the ledger is checked and the oldest unfinished settlement
/// measured.
const HEALTH_EVERY: StdDuration = StdDuration::from_secs(15);
/// Pause before a failed intake step (database or bus down) is retried.
const INTAKE_RETRY_PAUSE: StdDuration = StdDuration::from_secs(1);
/// What the customer sees beside the payout.
const PAYOUT_MESSAGE: &str = "Tack for din feedback";

/// What the settlement actors share.
pub struct SettlementContext {
    pub config: Config,
    pub store: Store,
    pub bus: Bus,
    pub rails: Rails,
    /// Names this instance's leases.
    pub instance: String,
    pub stopping: watch::Receiver<bool>,
}

impl SettlementContext {
    fn settings(&self) -> &super::config::SettlementConfig {
        &self.config.settlement
    }

    fn tolerance(&self) -> Tolerance {
        Tolerance {
            window: Duration::seconds(self.settings().match_window_secs),
            amount_minor: self.settings().amount_tolerance_minor,
        }
    }
}

/// The running settlement actors.
pub struct Engine {
    stop_tx: watch::Sender<bool>,
    done_rx: mpsc::Receiver<&'static str>,
    arbiter: Arbiter,
    // A supervisor restarts its actor only while someone holds an address
    // of it: these are held for the engine's life.
    _intake: Addr<Intake>,
    _settler: Addr<Settler>,
}

impl Engine {
    pub fn start(config: Config, store: Store, bus: Bus, rails: Rails) -> Engine {
        let (stop_tx, stopping) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::channel(2);
        let context = Arc::new(SettlementContext {
            config,
            store,
            bus,
            rails,
            instance: uuid::Uuid::new_v4().to_string(),
            stopping,
        });
        let arbiter = Arbiter::new();
        let (intake_ctx, intake_done) = (context.clone(), done_tx.clone());
        let intake = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| Intake {
            context: intake_ctx,
            done_tx: intake_done,
            consumer: None,
            last_failure: "unknown",
        });
        let settler = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| Settler {
            context,
            done_tx,
            last_health: None,
        });
        Engine {
            stop_tx,
            done_rx,
            arbiter,
            _intake: intake,
            _settler: settler,
        }
    }

    /// Lets both actors finish the step in hand, up to `deadline`.
    pub async fn stop(mut self, deadline: StdDuration) {
        let _ = self.stop_tx.send(true);
        let wait = async {
            for _ in 0..2 {
                if self.done_rx.recv().await.is_none() {
                    break;
                }
            }
        };
        if tokio::time::timeout(deadline, wait).await.is_err() {
            tracing::warn!(
                "settlement did not stop in time; its unfinished steps are redone at start"
            );
        }
        self.arbiter.stop();
    }
}

// ---- intake ----

struct Intake {
    context: Arc<SettlementContext>,
    done_tx: mpsc::Sender<&'static str>,
    consumer: Option<Consumer>,
    last_failure: &'static str,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Pump;

impl Actor for Intake {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.notify(Pump);
    }
}

impl Supervised for Intake {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        emit(SettlementActorRestarted {
            actor: "intake",
            reason: self.last_failure,
        });
    }
}

enum IntakeStep {
    Done(Consumer),
    Retry(Option<Consumer>, String),
    Panicked,
    Stopped,
}

impl Handler<Pump> for Intake {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Pump, _ctx: &mut Self::Context) -> Self::Result {
        let step = intake_step(self.context.clone(), self.consumer.take());
        let step = AssertUnwindSafe(step)
            .catch_unwind()
            .map(|result| result.unwrap_or(IntakeStep::Panicked));
        Box::pin(step.into_actor(self).map(|step, actor, ctx| match step {
            IntakeStep::Done(consumer) => {
                actor.consumer = Some(consumer);
                ctx.notify(Pump);
            }
            IntakeStep::Retry(consumer, reason) => {
                tracing::warn!(%reason, "feedback intake step failed; retrying");
                actor.consumer = consumer;
                ctx.notify_later(Pump, INTAKE_RETRY_PAUSE);
            }
            IntakeStep::Panicked => {
                actor.last_failure = "panic";
                ctx.stop();
            }
            IntakeStep::Stopped => {
                let done_tx = actor.done_tx.clone();
                ctx.spawn(
                    async move { done_tx.send("intake").await.unwrap_or(()) }.into_actor(actor),
                );
            }
        }))
    }
}

async fn intake_step(context: Arc<SettlementContext>, consumer: Option<Consumer>) -> IntakeStep {
    let mut stopping = context.stopping.clone();
    if *stopping.borrow() {
        if let Some(mut consumer) = consumer {
            let _ = consumer.flush_commits().await;
        }
        return IntakeStep::Stopped;
    }
    let mut consumer = match consumer {
        Some(consumer) => consumer,
        None => {
            let group = format!("{}-settlement", context.config.bus.consumer_group);
            let topic = context.config.bus.feedback_topic();
            match context.bus.consumer(&group, &topic).await {
                Ok(consumer) => consumer,
                Err(error) => return IntakeStep::Retry(None, error.to_string()),
            }
        }
    };
    let delivery = tokio::select! {
        next = consumer.next() => match next {
            Ok(delivery) => delivery,
            Err(error) => return IntakeStep::Retry(Some(consumer), error.to_string()),
        },
        // The next step sees the stop and flushes the commits.
        _ = stopping.changed() => return IntakeStep::Done(consumer),
    };
    // The message is committed only once its effects are durable; until
    // then a failure retries the same delivery (a fresh consumer re-reads it
    // from the last commit).
    // Lets a test make one intake step panic, to see the actor restarted.
    fail::fail_point!("settlement-intake-step");
    loop {
        match intake_one(&context, &delivery).await {
            Ok(()) => break,
            // The database refuses this message's data and always will:
            // it goes to the dead letters so the feedback behind it moves.
            Err(IntakeError::Store(error)) if error.is_permanent() => {
                match dead_letter(&context, &delivery, "store_rejected", error.to_string()).await {
                    Ok(()) => break,
                    Err(error) => tracing::warn!(%error, "dead letter not written yet; retrying"),
                }
                tokio::time::sleep(INTAKE_RETRY_PAUSE).await;
            }
            Err(error) => {
                tracing::warn!(%error, offset = delivery.offset, "feedback not stored yet; retrying");
                if *stopping.borrow() {
                    return IntakeStep::Retry(None, "stopping with feedback uncommitted".into());
                }
                tokio::time::sleep(INTAKE_RETRY_PAUSE).await;
            }
        }
    }
    match consumer.commit(&delivery).await {
        Ok(()) => IntakeStep::Done(consumer),
        Err(error) => IntakeStep::Retry(None, error.to_string()),
    }
}

#[derive(Debug, thiserror::Error)]
enum IntakeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Writes a feedback message that cannot be taken to the dead letters. A
/// message over [`MAX_FEEDBACK_BYTES`] keeps only its first bytes there, so
/// its dead letter stays within what the bus carries.
async fn dead_letter(
    context: &SettlementContext,
    delivery: &Delivery,
    reason: &str,
    detail: String,
) -> Result<(), BusError> {
    let mut letter = DeadLetter::new(delivery, reason, detail, Utc::now());
    letter.provider = "feedback".into();
    if delivery.message.payload.len() > MAX_FEEDBACK_BYTES {
        use base64::Engine as _;
        letter.body_base64 = base64::engine::general_purpose::STANDARD
            .encode(&delivery.message.payload[..MAX_FEEDBACK_BYTES]);
    }
    let message = letter.message(&delivery.message.key);
    let timeout = StdDuration::from_millis(context.config.bus.publish_timeout_ms);
    context
        .bus
        .publish(&context.config.bus.deadletter_topic(), &message, timeout)
        .await?;
    emit(FeedbackReceived { outcome: "invalid" });
    tracing::warn!(reason, "feedback dead-lettered");
    Ok(())
}

/// Stores one feedback message and tries to match it.
async fn intake_one(context: &SettlementContext, delivery: &Delivery) -> Result<(), IntakeError> {
    let payload = &delivery.message.payload;
    if payload.len() > MAX_FEEDBACK_BYTES {
        let detail = format!(
            "body: {} bytes, over the limit of {MAX_FEEDBACK_BYTES}; the dead letter keeps the first {MAX_FEEDBACK_BYTES}",
            payload.len()
        );
        dead_letter(context, delivery, "invalid_feedback", detail).await?;
        return Ok(());
    }
    let feedback = match Feedback::parse(payload) {
        Ok(feedback) => feedback,
        Err(invalid) => {
            tracing::warn!(field = %invalid.field, reason = %invalid.reason, "feedback refused");
            dead_letter(context, delivery, "invalid_feedback", invalid.to_string()).await?;
            return Ok(());
        }
    };
    let now = Utc::now();
    let deadline = now + Duration::seconds(context.settings().match_deadline_secs);
    let fresh = rows::insert_feedback(context.store.pool(), &feedback, now, deadline).await?;
    if !fresh
        && let Some(stored) = rows::feedback(context.store.pool(), &feedback.feedback_id).await?
        && stored.feedback.business_id != feedback.business_id
    {
        let detail = "feedback_id: already taken by feedback of another business".to_string();
        dead_letter(context, delivery, "feedback_id_taken", detail).await?;
        return Ok(());
    }
    emit(FeedbackReceived {
        outcome: if fresh { "accepted" } else { "duplicate" },
    });
    if !context.settings().enabled {
        return Ok(());
    }
    if let Some(record) = rows::feedback(context.store.pool(), &feedback.feedback_id).await?
        && record.state == FeedbackState::Waiting
    {
        try_match(context, &record).await?;
    }
    Ok(())
}

/// Matches one waiting feedback if its purchase is known, ends it at its
/// deadline, holds it when ambiguous. Returns the state it is in now.
pub async fn try_match(
    context: &SettlementContext,
    record: &FeedbackRecord,
) -> Result<FeedbackState, StoreError> {
    let pool = context.store.pool();
    let id = &record.feedback.feedback_id;
    match matching::find(pool, record, context.tolerance()).await? {
        Match::One(purchase) => {
            let rules = context.settings().rules(&record.feedback.business_id);
            let outcome = rows::settle(pool, record, &purchase, rules, None).await?;
            Ok(report_settled(&outcome))
        }
        Match::Several(candidates) => {
            let reason = format!("candidates: {}", candidates.join(","));
            let moved = rows::set_feedback_state(
                pool,
                id,
                FeedbackState::Waiting,
                FeedbackState::Ambiguous,
                Some(&reason),
                None,
            )
            .await?;
            if moved {
                emit(FeedbackMatched {
                    outcome: "ambiguous",
                });
            }
            Ok(FeedbackState::Ambiguous)
        }
        Match::None if Utc::now() >= record.match_deadline => {
            let moved = rows::set_feedback_state(
                pool,
                id,
                FeedbackState::Waiting,
                FeedbackState::NoMatchingPurchase,
                Some("no_matching_purchase"),
                None,
            )
            .await?;
            if moved {
                emit(FeedbackMatched {
                    outcome: "no_matching_purchase",
                });
            }
            Ok(FeedbackState::NoMatchingPurchase)
        }
        Match::None => Ok(FeedbackState::Waiting),
    }
}

/// Counts what [`rows::settle`] did and says where the feedback stands.
pub fn report_settled(outcome: &SettleOutcome) -> FeedbackState {
    match outcome {
        SettleOutcome::Settled(settlement) => {
            emit(FeedbackMatched { outcome: "matched" });
            moved(settlement);
            FeedbackState::Matched
        }
        SettleOutcome::NotRewarded(_) | SettleOutcome::PurchaseTaken => {
            emit(FeedbackMatched {
                outcome: "not_rewarded",
            });
            FeedbackState::NotRewarded
        }
        SettleOutcome::AlreadyDecided => FeedbackState::Matched,
    }
}

fn moved(settlement: &Settlement) {
    let since_purchase = (Utc::now() - settlement.purchased_at).to_std().ok();
    emit(SettlementMoved {
        rail: settlement.rail().as_str(),
        state: settlement.state.as_str(),
        settlement_id: &settlement.id.to_string(),
        amount_minor: settlement.amount_minor,
        currency: &settlement.currency,
        since_purchase,
    });
}

// ---- settler ----

struct Settler {
    context: Arc<SettlementContext>,
    done_tx: mpsc::Sender<&'static str>,
    last_health: Option<Instant>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Tick;

impl Actor for Settler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.notify(Tick);
    }
}

impl Supervised for Settler {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        emit(SettlementActorRestarted {
            actor: "settler",
            reason: "panic",
        });
    }
}

impl Handler<Tick> for Settler {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Tick, _ctx: &mut Self::Context) -> Self::Result {
        let context = self.context.clone();
        let health_due = self
            .last_health
            .is_none_or(|at| at.elapsed() >= HEALTH_EVERY);
        let work = async move {
            if let Err(error) = tick(&context).await {
                tracing::warn!(%error, "settlement tick failed; trying again next tick");
            }
            if health_due {
                check_health(&context).await;
            }
        };
        let work = AssertUnwindSafe(work).catch_unwind();
        Box::pin(work.into_actor(self).map(move |result, actor, ctx| {
            if health_due {
                actor.last_health = Some(Instant::now());
            }
            if result.is_err() {
                ctx.stop();
                return;
            }
            if *actor.context.stopping.borrow() {
                let done_tx = actor.done_tx.clone();
                ctx.spawn(
                    async move { done_tx.send("settler").await.unwrap_or(()) }.into_actor(actor),
                );
                return;
            }
            let pause = StdDuration::from_millis(actor.context.settings().tick_ms);
            ctx.notify_later(Tick, pause);
        }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TickError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// One round of the settler's work; public so tests can drive it.
///
/// Each stage runs whatever the one before it met: a failure in matching
/// (a row that cannot be read, say) must not hold back payouts, refunds or
/// the outbox. The first failure is returned, after all have run.
pub async fn tick(context: &SettlementContext) -> Result<(), TickError> {
    let mut first_failure: Option<TickError> = None;
    let mut note = |result: Result<(), TickError>| {
        if let Err(error) = result
            && first_failure.is_none()
        {
            first_failure = Some(error);
        }
    };
    if context.settings().enabled {
        note(match_waiting(context).await.map_err(TickError::from));
        note(handle_refunds(context).await.map_err(TickError::from));
        note(pay_due(context).await.map_err(TickError::from));
    }
    note(publish_outbox(context).await);
    match first_failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

async fn match_waiting(context: &SettlementContext) -> Result<(), StoreError> {
    let waiting =
        rows::feedback_in_state(context.store.pool(), FeedbackState::Waiting, MATCH_BATCH).await?;
    for record in &waiting {
        try_match(context, record).await?;
    }
    Ok(())
}

/// A refund before any payout call cancels the reward; after the payout it
/// is recorded as a claw-back. A settlement whose payout was tried but not
/// confirmed is left to finish first: the provider may have paid.
async fn handle_refunds(context: &SettlementContext) -> Result<(), StoreError> {
    let pool = context.store.pool();
    for settlement in rows::refunded_settlements(pool, PAYOUT_BATCH).await? {
        let change = match settlement.state {
            SettlementState::Pending if settlement.attempts == 0 => Change::Canceled {
                reason: "purchase_refunded".into(),
            },
            SettlementState::Paid => Change::ClawBack,
            _ => continue,
        };
        let lease = Duration::seconds(context.settings().lease_secs);
        if !rows::lease(pool, &settlement, &context.instance, lease).await? {
            continue;
        }
        if let Some(next) = rows::change(pool, &settlement, change).await?
            && next.state != settlement.state
        {
            moved(&next);
        }
    }
    Ok(())
}

async fn pay_due(context: &SettlementContext) -> Result<(), StoreError> {
    let due = rows::due_settlements(context.store.pool(), Utc::now(), PAYOUT_BATCH).await?;
    let results: Vec<Result<(), StoreError>> = futures::stream::iter(due)
        .map(|settlement| pay_one(context, settlement))
        .buffer_unordered(PAYOUT_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Submits a pending payout, or asks after a submitted one, and stores what
/// the provider said.
async fn pay_one(
    context: &SettlementContext,
    mut settlement: Settlement,
) -> Result<(), StoreError> {
    let pool = context.store.pool();
    let settings = context.settings();
    if !context.rails.has(settlement.rail()) {
        return Ok(());
    }
    let lease = Duration::seconds(settings.lease_secs);
    if !rows::lease(pool, &settlement, &context.instance, lease).await? {
        return Ok(());
    }
    // Counted before the call, so a crash during it leaves a trace: a
    // settlement with attempts > 0 may have been paid, and is never
    // canceled without asking the provider first.
    let submitting = settlement.state == SettlementState::Pending;
    if submitting {
        rows::count_attempt(pool, &settlement).await?;
        settlement.attempts += 1;
    }
    let order = payout_order(&settlement);
    let started = Instant::now();
    let answer = if submitting {
        context.rails.submit(&order).await
    } else {
        context.rails.status(&order).await
    };
    report_call(&settlement, submitting, &answer, started.elapsed());
    // Lets the crash test stop the process between the provider's answer
    // and its being stored.
    fail::fail_point!("settlement-after-rail-call");

    let change = change_for(context, &settlement, answer);
    if let Some(next) = rows::change(pool, &settlement, change).await?
        && next.state != settlement.state
    {
        moved(&next);
    }
    Ok(())
}

fn payout_order(settlement: &Settlement) -> PayoutOrder {
    PayoutOrder {
        settlement_id: settlement.id,
        amount_minor: settlement.amount_minor,
        currency: settlement.currency.clone(),
        destination: settlement.destination.clone(),
        message: PAYOUT_MESSAGE.into(),
        provider_ref: settlement.provider_ref.clone(),
    }
}

fn change_for(
    context: &SettlementContext,
    settlement: &Settlement,
    answer: Result<PayoutStatus, RailError>,
) -> Change {
    let settings = context.settings();
    let now = Utc::now();
    match answer {
        Ok(PayoutStatus::Paid { provider_ref }) => Change::Paid {
            provider_ref: Some(provider_ref),
        },
        Ok(PayoutStatus::Failed {
            provider_ref,
            reason,
        }) => Change::Failed {
            provider_ref,
            reason,
        },
        Ok(PayoutStatus::InFlight { provider_ref }) => {
            let reconcile_after = Duration::seconds(settings.reconcile_after_secs);
            if settlement.state == SettlementState::Pending {
                // The webhook or callback can come before this answer is
                // stored, and then finds nothing to move on: one early
                // look covers that race, later ones are the slow
                // reconciliation.
                let first_look =
                    Duration::seconds(settings.first_status_check_secs).min(reconcile_after);
                Change::Submitted {
                    provider_ref,
                    check_at: now + first_look,
                }
            } else {
                Change::Recheck {
                    check_at: now + reconcile_after,
                }
            }
        }
        Err(RailError::Refused(reason)) if settlement.state == SettlementState::Pending => {
            Change::Failed {
                provider_ref: None,
                reason,
            }
        }
        Err(_) => {
            let pause = retry_pause(settings, settlement.attempts);
            Change::Retry {
                next_attempt_at: now + pause,
            }
        }
    }
}

/// Doubling from `retry_min_pause_ms`, capped at `retry_max_pause_secs`.
fn retry_pause(settings: &super::config::SettlementConfig, attempts: i64) -> Duration {
    let doublings = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    let pause_ms = settings
        .retry_min_pause_ms
        .saturating_mul(2u64.saturating_pow(doublings.saturating_sub(1)))
        .min(settings.retry_max_pause_secs.saturating_mul(1_000));
    Duration::milliseconds(i64::try_from(pause_ms).unwrap_or(i64::MAX))
}

fn report_call(
    settlement: &Settlement,
    submitting: bool,
    answer: &Result<PayoutStatus, RailError>,
    elapsed: StdDuration,
) {
    let (outcome, detail) = match answer {
        Ok(_) => ("ok", None),
        Err(RailError::Transient(detail)) => ("transient", Some(detail.as_str())),
        Err(RailError::Refused(detail)) => ("refused", Some(detail.as_str())),
        Err(RailError::Config(detail)) => ("config", Some(detail.as_str())),
    };
    emit(RailCalled {
        rail: settlement.rail().as_str(),
        operation: if submitting { "submit" } else { "status" },
        outcome,
        elapsed,
        settlement_id: &settlement.id.to_string(),
        detail,
    });
}

async fn publish_outbox(context: &SettlementContext) -> Result<(), TickError> {
    let pool = context.store.pool();
    let topic = context.config.bus.settlements_topic();
    let timeout = StdDuration::from_millis(context.config.bus.publish_timeout_ms);
    for (id, settlement_id, payload) in rows::unpublished_events(pool, OUTBOX_BATCH).await? {
        let message = BusMessage {
            key: settlement_id,
            payload: payload.into_bytes(),
            headers: vec![
                ("content-type".into(), CLOUDEVENTS_CONTENT_TYPE.into()),
                ("ce_type".into(), SETTLEMENT_EVENT_TYPE.into()),
            ],
        };
        context.bus.publish(&topic, &message, timeout).await?;
        rows::mark_event_published(pool, &id).await?;
    }
    Ok(())
}

async fn check_health(context: &SettlementContext) {
    let pool = context.store.pool();
    let oldest = match rows::oldest_unfinished(pool).await {
        Ok(oldest) => oldest,
        Err(error) => {
            tracing::warn!(%error, "ledger check could not run");
            return;
        }
    };
    let age = |since: Option<chrono::DateTime<Utc>>| {
        since
            .and_then(|since| (Utc::now() - since).to_std().ok())
            .unwrap_or_default()
    };
    match ledger::check(pool).await {
        Ok(report) => emit(SettlementHealth {
            oldest_pending: age(oldest.pending_since),
            oldest_submitted: age(oldest.submitted_since),
            ledger_problems: &report.problems,
        }),
        Err(error) => tracing::warn!(%error, "ledger check could not run"),
    }
}

/// The `se.kvitto.settlement.v1` CloudEvent of one settlement version.
/// The payout destination is left out: it identifies the customer.
pub fn settlement_event(settlement: &Settlement, previous: Option<SettlementState>) -> String {
    let id = settlement.id.to_string();
    json!({
        "specversion": "1.0",
        "id": format!("{id}:{}", settlement.version),
        "source": "/kvitto/settlement",
        "type": SETTLEMENT_EVENT_TYPE,
        "subject": id,
        "time": format_time(settlement.updated_at),
        "datacontenttype": "application/json",
        "data": {
            "settlement_id": id,
            "version": settlement.version,
            "feedback_id": settlement.feedback_id,
            "purchase_ref": settlement.purchase_ref,
            "business_id": settlement.business_id,
            "customer_ref": settlement.customer_ref,
            "rail": settlement.rail().as_str(),
            "state": settlement.state.as_str(),
            "previous_state": previous.map(SettlementState::as_str),
            "purchase_amount_minor": settlement.purchase_amount_minor,
            "amount_minor": settlement.amount_minor,
            "fee_minor": settlement.fee_minor,
            "currency": settlement.currency,
            "quality_score": settlement.quality_score,
            "provider_ref": settlement.provider_ref,
            "failure_reason": settlement.failure_reason,
            "clawed_back": settlement.clawed_back,
            "purchased_at": format_time(settlement.purchased_at),
            "created_at": format_time(settlement.created_at),
            "finished_at": settlement.finished_at.map(format_time),
        }
    })
    .to_string()
}

/// Moves settlements on from a provider's webhook about kvitto's own
/// payouts (Stripe Connect events through the pipeline). Idempotent: a
/// signal about a payout already in that state changes nothing. A payout
/// kvitto has not stored the id of yet (its answer is still in flight) is
/// left to the settler, whose next call for it finds the same payout.
pub async fn apply_signal(
    store: &Store,
    signal: &super::SettlementSignal,
) -> Result<(), StoreError> {
    use super::SettlementSignal;
    let pool = store.pool();
    match signal {
        SettlementSignal::Payout {
            rail,
            account,
            status,
        } => {
            // A hint, like Swish's callback: the webhook is signed with an
            // integration's secret, which is the merchant's, so what it says
            // of a payout is asked of the provider before anything moves.
            let provider_ref = match status {
                PayoutStatus::Paid { provider_ref } | PayoutStatus::InFlight { provider_ref } => {
                    provider_ref
                }
                PayoutStatus::Failed {
                    provider_ref: Some(provider_ref),
                    ..
                } => provider_ref,
                PayoutStatus::Failed { .. } => return Ok(()),
            };
            let Some(settlement) = rows::settlement_by_provider_ref(pool, provider_ref).await?
            else {
                tracing::debug!(%provider_ref, "payout signal for a payout not stored yet");
                return Ok(());
            };
            let same_account = match (account, &settlement.destination) {
                (Some(account), super::Destination::Stripe { account: own }) => account == own,
                (None, _) => true,
                (Some(_), _) => false,
            };
            if settlement.rail() != *rail || !same_account {
                tracing::warn!(
                    %provider_ref,
                    settlement_id = %settlement.id,
                    "payout signal names another rail or account than its settlement; ignored"
                );
                return Ok(());
            }
            rows::recheck_now(pool, provider_ref, *rail).await?;
            Ok(())
        }
        SettlementSignal::Transfer {
            transfer_ref,
            transfer_group,
        } => {
            tracing::debug!(%transfer_ref, transfer_group = ?transfer_group, "transfer to a connected account made");
            Ok(())
        }
        SettlementSignal::Account {
            account,
            charges_enabled,
            payouts_enabled,
            details_submitted,
        } => {
            rows::upsert_stripe_account(
                pool,
                account,
                None,
                [*charges_enabled, *payouts_enabled, *details_submitted],
            )
            .await
        }
    }
}
