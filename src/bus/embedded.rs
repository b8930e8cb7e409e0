//! Embedded (stub).
use std::time::Duration;

use super::{BusError, BusMessage, Delivery};
use crate::config::BusConfig;

#[derive(Clone)]
pub struct EmbeddedBus;
pub struct EmbeddedConsumer;

impl EmbeddedBus {
    pub async fn open(_config: &BusConfig) -> Result<Self, BusError> { Err(BusError::Fatal("todo".into())) }
    pub async fn publish(&self, _topic: &str, _message: &BusMessage, _timeout: Duration) -> Result<(), BusError> { Err(BusError::Fatal("todo".into())) }
    pub async fn consumer(&self, _group: &str, _topic: &str) -> Result<EmbeddedConsumer, BusError> { Err(BusError::Fatal("todo".into())) }
    pub async fn check(&self) -> Result<(), BusError> { Ok(()) }
    pub async fn read_all(&self, _topic: &str, _max: usize) -> Result<Vec<Delivery>, BusError> { Ok(vec![]) }
}

impl EmbeddedConsumer {
    pub async fn next(&mut self) -> Result<Delivery, BusError> { Err(BusError::Fatal("todo".into())) }
    pub async fn commit(&mut self, _delivery: &Delivery) -> Result<(), BusError> { Ok(()) }
}
