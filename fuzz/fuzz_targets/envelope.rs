//! Envelope extraction at ingress, for every provider, on arbitrary
//! requests: what it accepts has a non-empty event id (the dedup key) and a
//! non-empty partition key (the bus key).

#![no_main]

use kvitto::providers;
use kvitto_fuzz::Input;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let Ok(info) = providers::envelope_info(input.provider, &input.request()) else {
        return;
    };
    assert!(!info.event_id.is_empty(), "empty event id: {info:?}");
    assert!(
        !info.partition_key.is_empty(),
        "empty partition key: {info:?}"
    );
});
