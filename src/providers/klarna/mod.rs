//! Klarna Checkout: pushes, confirmed and acknowledged on the order
//! management API.
//!
//! Pushes are unsigned and carry only the order id (in kvitto's push URL
//! query), so the integration's path token is the only gate at the door and
//! the order read with the merchant's credentials is the truth.

pub mod api;
pub mod decode;
pub mod sandbox;
pub mod signature;
