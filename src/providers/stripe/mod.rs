//! Stripe: charge and payment intent events, verified against Stripe's API.
//!
//! Stripe signs a timestamp and the raw body, so its deliveries are checked
//! for freshness as well as authenticity; events are deduplicated by their
//! `evt_` id and ordered by their `created` time.

pub mod api;
pub mod connect_sandbox;
pub mod decode;
pub mod sandbox;
pub mod signature;
