//! Log set-up: one subscriber for the process, text or JSON.
//!
//! Log style: lowercase messages without a trailing period, fields first.
//! INFO is lifecycle, WARN is recovered with nothing lost, ERROR means data at
//! risk or an operator must act; nothing per webhook above DEBUG,
//! except refusals and disagreements, which are throttled (see [`super::throttle`]).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG` wins over the configured level
/// so an operator can raise verbosity without editing the config. Calling it
/// twice (tests) leaves the first subscriber in place.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
