//! The per-provider actor that consumes one webhook topic.
//!
//! How it ends, and what happens to the event in hand:
//!
//! - processing **panics**: the panic is caught, the event is kept in the
//!   actor's state and the actor stops; its supervisor restarts it (counted
//!   in `kvitto_actor_restarts_total{reason="panic"}`) and the restarted
//!   actor retries that same event first. After `processing.max_attempts`
//!   panics the event is dead-lettered and committed, so the partition moves
//!   on;
//! - processing fails **transiently** (provider API down, bus or database
//!   unavailable): the event is kept and retried with a growing pause, for as
//!   long as it takes, never committed meanwhile; only this provider waits;
//! - processing fails **permanently**: the event is dead-lettered with its
//!   reason, then committed;
//! - the **consumer** fails: the actor drops it and restarts after a pause
//!   (`reason="consumer_error"`); uncommitted events are redelivered;
//! - **shutdown**: the event in hand is finished and committed, commits are
//!   flushed, and the actor reports done instead of taking another event.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Message,
    ResponseActFuture, Supervised, WrapFuture,
};
use futures::FutureExt;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::Shared;
use super::envelope::EVENT_ID_HEADER;
use super::process::{self, ProcessError};
use crate::bus::{Consumer, Delivery};
use crate::providers::ProviderKind;
use crate::telemetry::throttle::{Throttle, ThrottleSite};
use crate::telemetry::{ActorRestarted, DeadLetterReason, EventRetrying, emit};

/// Pause before a failed consumer is re-created.
const CONSUMER_RESTART_PAUSE: Duration = Duration::from_secs(1);
/// Longest pause between transient retries of one event.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(30);
/// A transiently failing event is logged on its first failure and then
/// every this many failures, so an outage does not flood the log.
const LOG_EVERY_NTH_FAILURE: u32 = 10;

static BUS_READ_FAILED_LOG: Throttle = Throttle::new(ThrottleSite::BusReadFailed, 60);
static CONSUMER_FAILED_LOG: Throttle = Throttle::new(ThrottleSite::BusReadFailed, 60);

/// An event that has not been committed yet, with its history.
struct InFlight {
    delivery: Delivery,
    panics: u32,
    transient_failures: u32,
}

pub struct ProviderWorker {
    provider: ProviderKind,
    shared: Arc<Shared>,
    done_tx: mpsc::Sender<ProviderKind>,
    consumer: Option<Consumer>,
    in_flight: Option<InFlight>,
    /// Why the actor last stopped, for the restart metric.
    last_failure: &'static str,
    /// Whether the event in hand has failed transiently at least once.
    retrying: bool,
}

impl ProviderWorker {
    pub fn new(
        provider: ProviderKind,
        shared: Arc<Shared>,
        done_tx: mpsc::Sender<ProviderKind>,
    ) -> Self {
        ProviderWorker {
            provider,
            shared,
            done_tx,
            consumer: None,
            in_flight: None,
            last_failure: "unknown",
            retrying: false,
        }
    }
}

impl Actor for ProviderWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.notify(Pump);
    }
}

impl Supervised for ProviderWorker {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        emit(ActorRestarted {
            provider: self.provider,
            reason: self.last_failure,
        });
    }
}

/// Take the next step: process the event in hand or the next one.
#[derive(Message)]
#[rtype(result = "()")]
struct Pump;

/// How one step ended.
enum Step {
    /// The event was processed (or dead-lettered) and committed.
    Done(Consumer),
    Transient(Consumer, InFlight),
    Panicked(Consumer, InFlight),
    /// The bus did not answer; the consumer is kept and asked again later.
    BusUnavailable(Consumer, String),
    ConsumerFailed(String),
    Stopped,
}

impl Handler<Pump> for ProviderWorker {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Pump, _ctx: &mut Self::Context) -> Self::Result {
        let step = run_step(
            self.shared.clone(),
            self.provider,
            self.consumer.take(),
            self.in_flight.take(),
        );
        Box::pin(step.into_actor(self).map(|step, actor, ctx| match step {
            Step::Done(consumer) => {
                if actor.retrying {
                    actor.retrying = false;
                    emit(EventRetrying {
                        provider: actor.provider,
                        retrying: false,
                    });
                }
                actor.consumer = Some(consumer);
                ctx.notify(Pump);
            }
            Step::Transient(consumer, in_flight) => {
                actor.retrying = true;
                emit(EventRetrying {
                    provider: actor.provider,
                    retrying: true,
                });
                let base = Duration::from_millis(actor.shared.config.processing.retry_pause_ms);
                let pause =
                    process::retry_pause(base, in_flight.transient_failures, MAX_RETRY_PAUSE);
                actor.consumer = Some(consumer);
                actor.in_flight = Some(in_flight);
                ctx.notify_later(Pump, pause);
            }
            Step::Panicked(consumer, in_flight) => {
                actor.consumer = Some(consumer);
                actor.in_flight = Some(in_flight);
                actor.last_failure = "panic";
                ctx.stop();
            }
            Step::BusUnavailable(consumer, reason) => {
                // Once a second per provider for as long as the bus is down.
                if let Some(suppressed) = BUS_READ_FAILED_LOG.allow() {
                    tracing::warn!(provider = %actor.provider, %reason, suppressed, "bus read failed; retrying");
                }
                actor.consumer = Some(consumer);
                ctx.notify_later(Pump, CONSUMER_RESTART_PAUSE);
            }
            Step::ConsumerFailed(reason) => {
                if let Some(suppressed) = CONSUMER_FAILED_LOG.allow() {
                    tracing::warn!(provider = %actor.provider, %reason, suppressed, "consumer failed; restarting");
                }
                actor.last_failure = "consumer_error";
                ctx.run_later(CONSUMER_RESTART_PAUSE, |_, ctx| ctx.stop());
            }
            Step::Stopped => {
                let done_tx = actor.done_tx.clone();
                let provider = actor.provider;
                ctx.spawn(
                    async move {
                        let _ = done_tx.send(provider).await;
                    }
                    .into_actor(actor),
                );
            }
        }))
    }
}

async fn run_step(
    shared: Arc<Shared>,
    provider: ProviderKind,
    consumer: Option<Consumer>,
    in_flight: Option<InFlight>,
) -> Step {
    let mut stopping = shared.stopping.clone();
    let mut consumer = match consumer {
        Some(consumer) => consumer,
        None => {
            let topic = shared.config.bus.webhook_topic(provider);
            match shared
                .bus
                .consumer(&shared.config.bus.consumer_group, &topic)
                .await
            {
                Ok(mut consumer) => {
                    consumer.report_lag(provider);
                    consumer
                }
                Err(error) => return Step::ConsumerFailed(error.to_string()),
            }
        }
    };
    if *stopping.borrow() {
        return stop(consumer).await;
    }
    let in_flight = match in_flight {
        Some(in_flight) => in_flight,
        None => tokio::select! {
            next = consumer.next() => match next {
                Ok(delivery) => InFlight { delivery, panics: 0, transient_failures: 0 },
                Err(error) => return Step::BusUnavailable(consumer, error.to_string()),
            },
            _ = stopping.wait_for(|stopping| *stopping) => return stop(consumer).await,
        },
    };
    let span = event_span(provider, &in_flight.delivery);
    handle_event(&shared, provider, consumer, in_flight)
        .instrument(span)
        .await
}

/// The span of every line about one event, as in ingress: the kvitto event
/// id ties the worker's lines to the webhook that brought the event.
fn event_span(provider: ProviderKind, delivery: &Delivery) -> tracing::Span {
    let event_id = delivery
        .message
        .header(EVENT_ID_HEADER)
        .unwrap_or("missing");
    tracing::info_span!("event", event_id, provider = %provider)
}

async fn handle_event(
    shared: &Shared,
    provider: ProviderKind,
    consumer: Consumer,
    mut in_flight: InFlight,
) -> Step {
    let delivery = &in_flight.delivery;
    if in_flight.panics >= shared.config.processing.max_attempts {
        let detail = format!("processing panicked {} times", in_flight.panics);
        return dead_letter_and_commit(
            shared,
            provider,
            consumer,
            in_flight,
            DeadLetterReason::AttemptsExhausted,
            &detail,
        )
        .await;
    }
    let result = AssertUnwindSafe(process::process(shared, provider, delivery))
        .catch_unwind()
        .await;
    match result {
        Err(_panic) => {
            tracing::error!(provider = %provider, offset = delivery.offset, "event processing panicked; restarting the actor");
            in_flight.panics += 1;
            Step::Panicked(consumer, in_flight)
        }
        Ok(Ok(_outcome)) => commit(consumer, in_flight).await,
        Ok(Err(ProcessError::Transient(reason))) => {
            if in_flight
                .transient_failures
                .is_multiple_of(LOG_EVERY_NTH_FAILURE)
            {
                tracing::warn!(
                    provider = %provider,
                    offset = delivery.offset,
                    failures = in_flight.transient_failures + 1,
                    %reason,
                    "event processing failed transiently; will retry (logged every {LOG_EVERY_NTH_FAILURE}th time)"
                );
            }
            in_flight.transient_failures += 1;
            Step::Transient(consumer, in_flight)
        }
        Ok(Err(ProcessError::Permanent { reason, detail })) => {
            dead_letter_and_commit(shared, provider, consumer, in_flight, reason, &detail).await
        }
    }
}

async fn dead_letter_and_commit(
    shared: &Shared,
    provider: ProviderKind,
    consumer: Consumer,
    mut in_flight: InFlight,
    reason: DeadLetterReason,
    detail: &str,
) -> Step {
    match process::dead_letter(shared, provider, &in_flight.delivery, reason, detail).await {
        Ok(()) => commit(consumer, in_flight).await,
        Err(error) => {
            // The dead letter is not durable, so the event must stay
            // uncommitted: retry the whole step later.
            tracing::warn!(provider = %provider, %error, "dead-letter write failed; will retry");
            in_flight.transient_failures += 1;
            Step::Transient(consumer, in_flight)
        }
    }
}

async fn commit(mut consumer: Consumer, in_flight: InFlight) -> Step {
    match consumer.commit(&in_flight.delivery).await {
        Ok(()) => {
            tracing::debug!(offset = in_flight.delivery.offset, "event committed");
            Step::Done(consumer)
        }
        // Not committed: the event will be seen again and deduplicated.
        Err(error) => Step::ConsumerFailed(format!("commit failed: {error}")),
    }
}

async fn stop(mut consumer: Consumer) -> Step {
    if let Err(error) = consumer.flush_commits().await {
        tracing::warn!(%error, "flushing commits at shutdown failed; uncommitted events will be redelivered");
    }
    Step::Stopped
}
