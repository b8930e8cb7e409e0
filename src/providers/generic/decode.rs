//! Payload decoding (stub).

use crate::providers::{DecodeError, DecodedEvent, EnvelopeInfo, RawDelivery, WebhookRequest};

pub fn envelope_info(_request: &WebhookRequest<'_>) -> Result<EnvelopeInfo, DecodeError> {
    Err(DecodeError::new("not implemented"))
}

pub fn decode(_delivery: &RawDelivery<'_>) -> Result<DecodedEvent, DecodeError> {
    Err(DecodeError::new("not implemented"))
}
