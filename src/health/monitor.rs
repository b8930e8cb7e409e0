//! The background integration health monitor of `kvitto serve`.
//!
//! Each probed integration gets a task of its own that checks it every
//! `processing.integration_check_interval_secs`, each probe bounded by the
//! provider API timeout, so a slow or hanging provider delays no other
//! integration's checks. First checks start after a random delay within a
//! tenth of the interval, so many integrations (and instances) do not all
//! call at once. Results go to `kvitto_integration_up`,
//! `kvitto_integration_check_timestamp_seconds` and the [`HealthBoard`]
//! that `/readyz` shows.
//!
//! Guarantee: the monitor only reads; a down integration changes nothing in
//! the pipeline, which keeps accepting, queueing and retrying its events.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use super::{ProbeFailure, integration_label, is_probed};
use crate::config::{Config, IntegrationConfig};
use crate::health::probe::DownReason;
use crate::providers::{ApiClient, ApiError, ProviderKind};
use crate::telemetry::{IntegrationChecked, emit};

/// The first check comes within this fraction of the interval.
const FIRST_CHECK_SPREAD_DIVISOR: u32 = 10;

/// What the last check of one integration found.
#[derive(Debug, Clone, PartialEq)]
pub struct IntegrationHealth {
    pub provider: ProviderKind,
    /// See [`integration_label`].
    pub integration: String,
    /// `None` until the first check has finished.
    pub up: Option<bool>,
    pub checked_at: Option<DateTime<Utc>>,
    pub failure: Option<ProbeFailure>,
}

/// The latest check of every probed integration, shared with `/readyz`.
#[derive(Debug, Clone, Default)]
pub struct HealthBoard {
    entries: Arc<RwLock<BTreeMap<String, IntegrationHealth>>>,
}

impl HealthBoard {
    /// A board listing every probed integration of `config`, none checked.
    pub fn for_config(config: &Config) -> HealthBoard {
        let entries = config
            .integrations
            .iter()
            .filter(|integration| is_probed(integration))
            .map(|integration| {
                let health = IntegrationHealth {
                    provider: integration.provider,
                    integration: integration_label(integration),
                    up: None,
                    checked_at: None,
                    failure: None,
                };
                (key(&health), health)
            })
            .collect();
        HealthBoard {
            entries: Arc::new(RwLock::new(entries)),
        }
    }

    /// Records a finished check and returns what the one before found.
    fn record(
        &self,
        provider: ProviderKind,
        integration: &str,
        result: &Result<(), ProbeFailure>,
        checked_at: DateTime<Utc>,
    ) -> Option<bool> {
        let health = IntegrationHealth {
            provider,
            integration: integration.to_string(),
            up: Some(result.is_ok()),
            checked_at: Some(checked_at),
            failure: result.as_ref().err().cloned(),
        };
        let mut entries = self.entries.write().expect("health board lock");
        entries
            .insert(key(&health), health)
            .and_then(|previous| previous.up)
    }

    /// Every probed integration's last check, ordered by provider and name.
    pub fn snapshot(&self) -> Vec<IntegrationHealth> {
        let entries = self.entries.read().expect("health board lock");
        entries.values().cloned().collect()
    }

    /// `{"square/demo-square": {"up": true, "checked_at": "...", "reason":
    /// null, "error": null}, ...}` for `/readyz`.
    pub fn to_json(&self) -> Value {
        let entries = self.entries.read().expect("health board lock");
        let map = entries
            .iter()
            .map(|(key, health)| {
                let failure = health.failure.as_ref();
                let value = json!({
                    "up": health.up,
                    "checked_at": health
                        .checked_at
                        .map(|at| at.to_rfc3339_opts(SecondsFormat::Secs, true)),
                    "reason": failure.map(|f| f.reason.as_str()),
                    "error": failure.map(ToString::to_string),
                });
                (key.clone(), value)
            })
            .collect();
        Value::Object(map)
    }
}

fn key(health: &IntegrationHealth) -> String {
    format!("{}/{}", health.provider, health.integration)
}

/// The running monitor: one task per probed integration.
pub struct HealthMonitor {
    board: HealthBoard,
    tasks: JoinSet<()>,
}

impl HealthMonitor {
    /// Starts checking every probed integration of `config`. Must be called
    /// within a Tokio runtime.
    pub fn start(config: &Config) -> Result<HealthMonitor, ApiError> {
        let client = Arc::new(ApiClient::try_new(&config.processing)?);
        let board = HealthBoard::for_config(config);
        let interval = Duration::from_secs(config.processing.integration_check_interval_secs);
        let timeout = Duration::from_millis(config.processing.api_timeout_ms);
        let mut tasks = JoinSet::new();
        for integration in config.integrations.iter().filter(|i| is_probed(i)) {
            let watch = Watch {
                client: client.clone(),
                integration: integration.clone(),
                label: integration_label(integration),
                board: board.clone(),
                interval,
                timeout,
            };
            tasks.spawn(watch.run());
        }
        Ok(HealthMonitor { board, tasks })
    }

    pub fn board(&self) -> HealthBoard {
        self.board.clone()
    }

    /// Stops every check; a probe in flight is abandoned, which loses
    /// nothing since probes only read.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

/// One integration's checks.
struct Watch {
    client: Arc<ApiClient>,
    integration: IntegrationConfig,
    label: String,
    board: HealthBoard,
    interval: Duration,
    timeout: Duration,
}

impl Watch {
    async fn run(self) {
        tokio::time::sleep(first_check_delay(self.interval)).await;
        let mut ticker = tokio::time::interval(self.interval);
        // A check that overran the interval is followed by a full interval,
        // not by a burst of catch-up checks.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.check().await;
        }
    }

    async fn check(&self) {
        let probe = super::probe(&self.client, &self.integration);
        let result = match tokio::time::timeout(self.timeout, probe).await {
            Ok(result) => result,
            Err(_) => Err(ProbeFailure::new(
                DownReason::Timeout,
                "no answer within the api timeout",
            )),
        };
        let checked_at = Utc::now();
        let provider = self.integration.provider;
        let was_up = self
            .board
            .record(provider, &self.label, &result, checked_at);
        emit(IntegrationChecked {
            provider,
            integration: &self.label,
            was_up,
            failure: result.as_ref().err(),
            checked_at,
        });
    }
}

/// A random delay within the first tenth of the interval.
fn first_check_delay(interval: Duration) -> Duration {
    let spread = interval / FIRST_CHECK_SPREAD_DIVISOR;
    let spread_ms = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::thread_rng().gen_range(0..=spread_ms))
}
