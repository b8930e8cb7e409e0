//! Payload decoding in processing, for every provider, on arbitrary
//! deliveries (the headers ingress keeps, the query and the body).
//!
//! What a decode that succeeds promises: a non-empty event id, the same one
//! ingress keyed the delivery by when ingress accepts the same bytes; a
//! purchase names its transaction, and any currency it names is an upper
//! case ISO 4217 code.

#![no_main]

use kvitto::money;
use kvitto::providers::{self, EventAction};
use kvitto_fuzz::Input;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let kept_headers = input.kept_headers();
    let Ok(event) = providers::decode(input.provider, &input.delivery(&kept_headers)) else {
        return;
    };
    assert!(!event.event_id.is_empty(), "empty event id: {event:?}");
    if let Ok(info) = providers::envelope_info(input.provider, &input.request()) {
        assert_eq!(
            info.event_id, event.event_id,
            "ingress and processing disagree"
        );
    }

    if let EventAction::Purchase(claim) = &event.action {
        assert!(
            !claim.transaction_ref.is_empty(),
            "no transaction: {claim:?}"
        );
        if let Some(currency) = &claim.currency {
            let normalized = money::normalize_currency(currency);
            assert_eq!(normalized.as_deref(), Ok(currency.as_str()));
        }
    }
});
