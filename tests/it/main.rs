//! kvitto's integration tests: one binary, real sockets, real SQLite,
//! PostgreSQL and a Kafka-protocol broker (see `scripts/test`).

#[macro_use]
mod support;

mod bus;
mod cli;
mod crash;
mod deadletter;
mod demo;
mod deploy;
mod group;
mod health;
mod hostile;
mod ingress;
mod metrics;
mod outage;
mod payout;
mod pipeline;
mod prometheus;
mod rules;
mod settlement;
