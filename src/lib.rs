//! kvitto: the transaction backbone of a feedback-for-rewards platform.
//!
//! Point-of-sale and payment providers send webhooks; kvitto decides which
//! purchases really happened, once each. The pipeline, in the order an event
//! travels through it:
//!
//! - [`ingress`]: the actix-web listener. Checks each provider's signature on
//!   the raw bytes and answers 2xx only once the event is durable on the bus.
//! - [`bus`]: Kafka, or the embedded durable bus, behind one contract.
//! - [`pipeline`]: one supervised actor per provider consumes its topic and
//!   decodes, deduplicates, verifies, enriches, stores and publishes each
//!   event, committing it only after all of that is durable.
//! - [`providers`]: each provider's signature scheme, payload decoding, API
//!   client and sandbox, in modules of the same shape.
//! - [`store`]: PostgreSQL or SQLite through sqlx; uniqueness constraints
//!   make every effect idempotent.
//! - [`telemetry`]: typed events that count and log; the metric catalog.
//!
//! Around it: [`config`] (one typed struct), [`canonical`] (the one shape of a
//! transaction), [`money`], [`admin`] (metrics and health), [`health`]
//! (checks each integration's provider API), [`deadletter`]
//! (reading and replaying dead letters), [`sandbox`]
//! (plays the providers) and [`app`] (wires it all for `kvitto serve`).

pub mod admin;
pub mod app;
pub mod bus;
pub mod canonical;
pub mod config;
pub mod deadletter;
pub mod health;
pub mod ingress;
pub mod money;
pub mod pipeline;
pub mod providers;
pub mod sandbox;
pub mod settlement;
pub mod store;
pub mod telemetry;
