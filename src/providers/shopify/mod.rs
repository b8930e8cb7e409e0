//! Shopify (POS orders): base64 HMAC-SHA256 webhooks keyed by topic and
//! delivery id headers, order bodies with decimal-string money and 64-bit
//! ids, verified against the Admin GraphQL API.

pub mod api;
pub mod decode;
pub mod sandbox;
pub mod signature;
