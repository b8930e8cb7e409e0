//! Swish.

pub mod api;
pub mod decode;
pub mod sandbox;
pub mod signature;
