//! Telemetry: logs and metrics, emitted together.
//!
//! Handlers never call the `metrics` macros or name a metric themselves: they
//! emit one of the typed events in [`events`], whose `emit` counts and, where
//! it matters, logs. Every metric is declared once, with its help text and
//! its bounded labels, in [`catalog`]; `docs/metrics.md` mirrors that list.

pub mod catalog;
pub mod events;
pub mod logging;
mod process;
pub mod settlement;
pub mod throttle;

pub use self::events::*;

/// A telemetry event: something that happened, counted and logged in one go.
pub trait Event {
    fn emit(self);
}

/// Emits a telemetry event.
pub fn emit(event: impl Event) {
    event.emit();
}
