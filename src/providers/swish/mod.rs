//! Swish: payment request callbacks, confirmed on the Swish Commerce API.
//!
//! Callbacks are unsigned, so the integration's path token is the only gate
//! at the door and the payment request lookup (over the merchant's mutual
//! TLS client certificate) is the truth; a callback is only a hint to look.
//! Reward payouts go out through `crate::settlement::rails::swish`;
//! `payouts_sandbox` plays Swish's payouts API for it.

pub mod api;
pub mod decode;
pub mod payouts_sandbox;
pub mod sandbox;
pub mod signature;
