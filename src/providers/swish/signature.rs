//! Swish signs nothing: there is no signature to check.
//!
//! Swish posts payment request callbacks to the `callbackUrl` the merchant
//! gave when creating the request, with no signature header and no shared
//! secret (the client certificate authenticates only the merchant's calls
//! to Swish, not Swish's calls back). What protects the webhook path is the
//! integration id in it, an unguessable token of 24 or more characters
//! (enforced at config load), and that no callback is trusted: every claim
//! is confirmed by `GET /api/v1/paymentrequests/{id}` over mutual TLS before
//! it is stored (see `api.rs`). A forged callback can at worst make kvitto
//! look up a payment request, never store one Swish does not confirm.
