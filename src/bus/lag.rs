//! Consumer lag: how many messages of a provider's webhook topic wait for
//! kvitto's consumer group, per partition (`kvitto_consumer_lag_messages`).
//!
//! Each pipeline consumer gets a [`LagReporter`]: a task of its own that
//! measures every [`LAG_REFRESH`] and sets the gauge, so the processing path
//! never waits on a measurement. The task ends with its consumer. A
//! partition the consumer no longer holds (revoked in a rebalance, or the
//! consumer gone) is set to zero, so a stale value never lingers on a
//! partition another instance now reports.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::BusError;
use crate::providers::ProviderKind;
use crate::telemetry::throttle::{Throttle, ThrottleSite};
use crate::telemetry::{ConsumerLag, emit};

/// How often lag is measured. Kafka's committed offsets move with
/// auto-commit every 5 s, so measuring more often would show nothing new.
pub const LAG_REFRESH: Duration = Duration::from_secs(5);

/// Failed measurements (broker down) log at most once a minute; the bus
/// read failures the worker logs already tell the story.
static LAG_LOG: Throttle = Throttle::new(ThrottleSite::ConsumerLag, 60);

/// Messages waiting on one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLag {
    pub partition: i32,
    pub messages: i64,
}

/// Messages not yet committed in a partition that holds offsets `low..high`:
/// counted from the group's committed offset, or from the first retained
/// message when the group has committed nothing (or only offsets retention
/// has since removed), which is where its consumer starts reading.
pub fn partition_lag(partition: i32, committed: Option<i64>, low: i64, high: i64) -> PartitionLag {
    let from = committed.unwrap_or(low).max(low);
    PartitionLag {
        partition,
        messages: (high - from).max(0),
    }
}

/// Reports one consumer's lag until dropped; dropping it zeroes the
/// partitions it reported.
pub struct LagReporter {
    reported: Arc<Mutex<Reported>>,
    /// Dropped with the reporter, which ends the task at its next await.
    _stop_tx: oneshot::Sender<()>,
}

impl LagReporter {
    /// Starts measuring with `measure` on the current runtime.
    pub fn spawn<M, F>(provider: ProviderKind, mut measure: M) -> LagReporter
    where
        M: FnMut() -> F + Send + 'static,
        F: Future<Output = Result<Vec<PartitionLag>, BusError>> + Send + 'static,
    {
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let reported = Arc::new(Mutex::new(Reported::new(provider)));
        let task_reported = reported.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(LAG_REFRESH);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let measured = tokio::select! {
                    _ = &mut stop_rx => break,
                    measured = async { ticks.tick().await; measure().await } => measured,
                };
                match measured {
                    Ok(lags) => lock(&task_reported).publish(&lags),
                    Err(error) => {
                        if let Some(suppressed) = LAG_LOG.allow() {
                            tracing::warn!(%provider, %error, suppressed, "consumer lag not measured");
                        }
                    }
                }
            }
        });
        LagReporter {
            reported,
            _stop_tx: stop_tx,
        }
    }
}

impl Drop for LagReporter {
    fn drop(&mut self) {
        lock(&self.reported).stop();
    }
}

fn lock(reported: &Mutex<Reported>) -> std::sync::MutexGuard<'_, Reported> {
    // The state is a set of partition numbers: still sound after a panic.
    reported
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The partitions a reporter has set the gauge for. Shared between the task
/// and the handle so a measurement that finishes after the consumer is gone
/// cannot bring back a value [`LagReporter::drop`] zeroed.
struct Reported {
    provider: ProviderKind,
    partitions: BTreeSet<i32>,
    stopped: bool,
}

impl Reported {
    fn new(provider: ProviderKind) -> Self {
        Reported {
            provider,
            partitions: BTreeSet::new(),
            stopped: false,
        }
    }

    fn publish(&mut self, lags: &[PartitionLag]) {
        for lag in self.update(lags) {
            emit(ConsumerLag {
                provider: self.provider,
                partition: lag.partition,
                messages: lag.messages,
            });
        }
    }

    fn stop(&mut self) {
        self.publish(&[]);
        self.stopped = true;
    }

    /// What to set after a measurement: every measured partition, and zero
    /// for those reported before and missing now. Nothing once stopped.
    fn update(&mut self, lags: &[PartitionLag]) -> Vec<PartitionLag> {
        if self.stopped {
            return Vec::new();
        }
        let current: BTreeSet<i32> = lags.iter().map(|lag| lag.partition).collect();
        let revoked = self
            .partitions
            .difference(&current)
            .map(|&partition| PartitionLag {
                partition,
                messages: 0,
            });
        let updates = revoked.chain(lags.iter().copied()).collect();
        self.partitions = current;
        updates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag(partition: i32, messages: i64) -> PartitionLag {
        PartitionLag {
            partition,
            messages,
        }
    }

    #[test]
    fn lag_counts_from_the_commit_or_else_from_the_first_retained_message() {
        assert_eq!(partition_lag(0, Some(7), 0, 10).messages, 3);
        assert_eq!(partition_lag(0, Some(10), 0, 10).messages, 0);
        assert_eq!(partition_lag(0, None, 4, 10).messages, 6);
        assert_eq!(partition_lag(0, None, 0, 0).messages, 0);
        // Retention removed messages the group never committed: what is
        // left is what its consumer will read.
        assert_eq!(partition_lag(0, Some(2), 5, 10).messages, 5);
        // A commit past the end (the log was truncated) is not negative.
        assert_eq!(partition_lag(0, Some(12), 0, 10).messages, 0);
    }

    #[test]
    fn a_partition_no_longer_measured_is_zeroed_once() {
        let mut reported = Reported::new(ProviderKind::Square);
        assert_eq!(
            reported.update(&[lag(0, 3), lag(1, 0)]),
            vec![lag(0, 3), lag(1, 0)]
        );
        assert_eq!(
            reported.update(&[lag(1, 2)]),
            vec![lag(0, 0), lag(1, 2)],
            "partition 0 was revoked"
        );
        assert_eq!(reported.update(&[lag(1, 1)]), vec![lag(1, 1)]);
    }

    #[test]
    fn nothing_is_set_after_the_consumer_is_gone() {
        let mut reported = Reported::new(ProviderKind::Square);
        reported.update(&[lag(0, 3), lag(2, 1)]);
        assert_eq!(reported.update(&[]), vec![lag(0, 0), lag(2, 0)]);
        reported.stopped = true;
        assert!(reported.update(&[lag(0, 5)]).is_empty());
    }
}
