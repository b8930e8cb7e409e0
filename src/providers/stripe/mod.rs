//! Stripe: charge and payment intent events, verified against Stripe's API.
//!
//! Stripe signs a timestamp and the raw body, so its deliveries are checked
//! for freshness as well as authenticity; events are deduplicated by their
//! `evt_` id and ordered by their `created` time. Connect events about
//! kvitto's own transfers, payouts and connected accounts decode to
//! settlement signals; the rail that makes those payouts lives in
//! `crate::settlement::rails::stripe`, and `connect_sandbox` plays its API.

pub mod api;
pub mod connect_sandbox;
pub mod decode;
pub mod sandbox;
pub mod signature;
