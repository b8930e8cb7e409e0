//! Process metrics under the standard Prometheus client names
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_open_fds`, ...), read from `/proc` by the `metrics-process`
//! crate, so the usual process dashboards and alerts work on kvitto as on
//! any other service.
//!
//! A background thread samples them every few seconds rather than on each
//! scrape: the admin listener then only renders, and a scrape never waits on
//! `/proc`. A sample is at most [`COLLECT_INTERVAL`] old when scraped.
//! `process_cpu_seconds_total` is a counter of whole seconds (the crate's
//! counter keeps no fraction), which `rate()` over minutes absorbs.

use std::time::Duration;

use metrics_process::Collector;

/// How often the process metrics are sampled.
pub const COLLECT_INTERVAL: Duration = Duration::from_secs(5);

/// Describes the process metrics and starts the sampling thread. Called
/// once, by [`super::catalog::install`], after the recorder is in place.
pub(super) fn start_collecting() {
    let collector = Collector::default();
    collector.describe();
    // The first sample is taken before returning, so the very first scrape
    // already shows the process.
    collector.collect();
    let spawned = std::thread::Builder::new()
        .name("kvitto-process-metrics".into())
        .spawn(move || {
            loop {
                std::thread::sleep(COLLECT_INTERVAL);
                collector.collect();
            }
        });
    if let Err(error) = spawned {
        // Only the process metrics go stale; everything else is unaffected.
        tracing::warn!(%error, "process metrics thread not started; process_* stay at their first sample");
    }
}
