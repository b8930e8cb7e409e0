//! Kafka (stub).
use std::time::Duration;

use super::{BusError, BusMessage, Delivery};
use crate::config::BusConfig;

#[derive(Clone)]
pub struct KafkaBus;
pub struct KafkaConsumer;

impl KafkaBus {
    pub async fn connect(_config: &BusConfig, _topics: &[String]) -> Result<Self, BusError> { Err(BusError::Fatal("todo".into())) }
    pub async fn publish(&self, _topic: &str, _message: &BusMessage, _timeout: Duration) -> Result<(), BusError> { Err(BusError::Fatal("todo".into())) }
    pub async fn consumer(&self, _group: &str, _topic: &str) -> Result<KafkaConsumer, BusError> { Err(BusError::Fatal("todo".into())) }
    pub async fn check(&self) -> Result<(), BusError> { Ok(()) }
    pub async fn flush(&self, _timeout: Duration) -> Result<(), BusError> { Ok(()) }
    pub async fn read_all(&self, _topic: &str, _max: usize, _timeout: Duration) -> Result<Vec<Delivery>, BusError> { Ok(vec![]) }
}

impl KafkaConsumer {
    pub async fn next(&mut self) -> Result<Delivery, BusError> { Err(BusError::Fatal("todo".into())) }
    pub fn commit(&mut self, _delivery: &Delivery) -> Result<(), BusError> { Ok(()) }
    pub fn flush_commits(&mut self) -> Result<(), BusError> { Ok(()) }
}
