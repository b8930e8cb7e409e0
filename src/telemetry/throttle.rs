//! A per-call-site log throttle: anything a flood can trigger (forged
//! webhooks, a failing provider) logs at most once per window, and the line
//! that gets through says how many were suppressed before it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Throttle {
    window_secs: u64,
    /// The window (unix seconds / window) that last logged, plus one; zero
    /// before the first line.
    last_window: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    pub const fn new(window_secs: u64) -> Self {
        Throttle {
            window_secs,
            last_window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed)` when this call may log, with how many calls were
    /// suppressed since the last line; `None` when it must stay quiet.
    pub fn allow(&self) -> Option<u64> {
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
    use super::*;

    #[test]
    fn one_line_per_window_then_the_count_of_what_was_suppressed() {
        let throttle = Throttle::new(3600);
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        // A new window: pretend the last line was long ago.
        throttle.last_window.store(1, Ordering::Relaxed);
        assert_eq!(throttle.allow(), Some(2));
    }
}
