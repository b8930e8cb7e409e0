//! Square: payment notifications from Square POS and Square's online
//! payments, verified against the Payments API.
//!
//! Square signs the notification URL plus the raw body, sends no timestamp,
//! and updates payments in place, so its events are ordered by the payment's
//! `updated_at` and deduplicated by `event_id`.

pub mod api;
pub mod decode;
pub mod sandbox;
pub mod signature;
