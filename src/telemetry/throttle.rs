//! A per-call-site log throttle: anything a flood can trigger (forged
//! webhooks, a failing provider) logs at most once per window, and the line
//! that gets through says how many were suppressed before it. Every
//! suppressed line is also counted in `kvitto_log_lines_suppressed_total`
//! under the site's fixed name, so a flood stays visible on dashboards while
//! the log stays quiet.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{LogLinesSuppressed, emit};

/// The call sites that throttle their log lines: the `site` label of
/// `kvitto_log_lines_suppressed_total`, a fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleSite {
    /// A webhook refused for its signature, timestamp or body.
    WebhookRefused,
    /// A webhook that disagrees with the provider's API.
    VerificationMismatch,
    /// A failed measurement of consumer lag.
    ConsumerLag,
    /// A write the bus could not confirm (webhook answered 503, or an
    /// embedded group commit that failed).
    BusWriteFailed,
    /// A Kafka producer replaced after a fatal or fencing error.
    ProducerReplaced,
    /// A failed read from the bus by a worker's consumer.
    BusReadFailed,
    /// A payout rail call that failed (settlement).
    RailFailed,
}

impl ThrottleSite {
    pub const ALL: [ThrottleSite; 7] = [
        ThrottleSite::WebhookRefused,
        ThrottleSite::VerificationMismatch,
        ThrottleSite::ConsumerLag,
        ThrottleSite::BusWriteFailed,
        ThrottleSite::ProducerReplaced,
        ThrottleSite::BusReadFailed,
        ThrottleSite::RailFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ThrottleSite::WebhookRefused => "webhook_refused",
            ThrottleSite::VerificationMismatch => "verification_mismatch",
            ThrottleSite::ConsumerLag => "consumer_lag",
            ThrottleSite::BusWriteFailed => "bus_write_failed",
            ThrottleSite::ProducerReplaced => "producer_replaced",
            ThrottleSite::BusReadFailed => "bus_read_failed",
            ThrottleSite::RailFailed => "rail_failed",
        }
    }
}

pub struct Throttle {
    site: ThrottleSite,
    window_secs: u64,
    /// The window (unix seconds / window) that last logged, plus one; zero
    /// before the first line.
    last_window: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    pub const fn new(site: ThrottleSite, window_secs: u64) -> Self {
        Throttle {
            site,
            window_secs,
            last_window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed)` when this call may log, with how many calls were
    /// suppressed since the last line; `None` when it must stay quiet (and
    /// the suppressed line is counted).
    pub fn allow(&self) -> Option<u64> {
        let allowed = self.decide();
        if allowed.is_none() {
            emit(LogLinesSuppressed { site: self.site });
        }
        allowed
    }

    fn decide(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let window = now / self.window_secs.max(1) + 1;
        let last = self.last_window.load(Ordering::Relaxed);
        if last != window
            && self
                .last_window
                .compare_exchange(last, window, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn one_line_per_window_then_the_count_of_what_was_suppressed() {
        let throttle = Throttle::new(ThrottleSite::WebhookRefused, 3600);
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        // A new window: pretend the last line was long ago.
        throttle.last_window.store(1, Ordering::Relaxed);
        assert_eq!(throttle.allow(), Some(2));
    }

    #[test]
    fn site_names_are_distinct_label_values() {
        let names: HashSet<&str> = ThrottleSite::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names.len(), ThrottleSite::ALL.len());
        assert!(
            names
                .iter()
                .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        );
    }
}
