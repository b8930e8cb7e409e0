//! The processing pipeline: one supervised actor per provider consumes that
//! provider's webhook topic and runs each event through [`process`].
//!
//! Guarantee: an event is committed on the bus only after its effects (the
//! database rows and the output event) are durable, so a crash at any point
//! redelivers it, and deduplication makes the redelivery harmless. An event
//! that cannot be processed is dead-lettered with its reason and committed,
//! so it never stalls its partition.

pub mod envelope;
pub mod process;
pub mod verify;
mod worker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Addr, Arbiter, Supervisor};
use tokio::sync::watch;

use self::worker::ProviderWorker;
use crate::bus::{Bus, BusError, BusMessage};
use crate::config::Config;
use crate::providers::{ApiClient, ProviderKind};
use crate::store::Store;
use crate::telemetry::{BusPublished, TopicKind, emit};

/// What every worker shares.
pub struct Shared {
    pub config: Config,
    pub store: Store,
    pub bus: Bus,
    pub api: ApiClient,
    /// Flips to `true` when kvitto is shutting down: workers finish the
    /// event in hand, commit, and stop taking new ones.
    pub stopping: watch::Receiver<bool>,
}

impl Shared {
    /// Publishes with the configured timeout and counts the outcome.
    pub async fn publish(
        &self,
        topic_kind: TopicKind,
        topic: &str,
        message: &BusMessage,
    ) -> Result<(), BusError> {
        let started = Instant::now();
        let timeout = Duration::from_millis(self.config.bus.publish_timeout_ms);
        let result = self.bus.publish(topic, message, timeout).await;
        emit(BusPublished {
            topic: topic_kind,
            ok: result.is_ok(),
            elapsed: started.elapsed(),
        });
        result
    }
}

/// The running workers, and how to stop them.
pub struct Pipeline {
    stop_tx: watch::Sender<bool>,
    done_rx: tokio::sync::mpsc::Receiver<ProviderKind>,
    workers: Vec<(Addr<ProviderWorker>, Arbiter)>,
}

impl Pipeline {
    /// Starts one worker per provider that has an integration, each on an
    /// arbiter (thread) of its own so one provider's load or outage cannot
    /// hold back another's.
    pub fn start(config: Config, store: Store, bus: Bus, api: ApiClient) -> Pipeline {
        let (stop_tx, stopping) = watch::channel(false);
        let providers = config.active_providers();
        let (done_tx, done_rx) = tokio::sync::mpsc::channel(providers.len().max(1));
        let shared = Arc::new(Shared {
            config,
            store,
            bus,
            api,
            stopping,
        });
        let workers = providers
            .into_iter()
            .map(|provider| {
                let arbiter = Arbiter::new();
                let shared = shared.clone();
                let done_tx = done_tx.clone();
                let addr = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
                    ProviderWorker::new(provider, shared, done_tx)
                });
                (addr, arbiter)
            })
            .collect();
        Pipeline {
            stop_tx,
            done_rx,
            workers,
        }
    }

    /// Asks every worker to finish the event in hand, commit and stop, and
    /// waits up to `deadline` for them. Events not finished by then are not
    /// committed and will be redelivered.
    pub async fn stop(mut self, deadline: Duration) {
        let _ = self.stop_tx.send(true);
        let expected = self.workers.len();
        let wait_all = async {
            for _ in 0..expected {
                if self.done_rx.recv().await.is_none() {
                    break;
                }
            }
        };
        if tokio::time::timeout(deadline, wait_all).await.is_err() {
            tracing::warn!(
                deadline_secs = deadline.as_secs(),
                "pipeline did not drain in time; unfinished events will be redelivered"
            );
        }
        for (_, arbiter) in self.workers.drain(..) {
            arbiter.stop();
        }
    }
}
