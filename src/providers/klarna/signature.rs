//! Klarna signs nothing: there is no signature to check.
//!
//! A Klarna Checkout push is an empty `POST` to the merchant's push URL with
//! the order id filled in; it carries no signature header and Klarna shares
//! no webhook secret. What protects the webhook path is the integration id
//! in it, an unguessable token of 24 or more characters (enforced at config
//! load), and that no push is trusted: a push carries nothing but an order
//! id, and everything kvitto stores comes from Klarna's order management API,
//! read with the merchant's credentials (see `api.rs`). A forged push can at
//! worst make kvitto look an order up.
