//! Zettle (PayPal): Pusher deliveries whose signature covers the envelope's
//! `timestamp` and string `payload`, purchases in integer minor units,
//! verified against the Purchase API with an OAuth JWT-bearer token.

pub mod api;
pub mod decode;
pub mod sandbox;
pub mod signature;
