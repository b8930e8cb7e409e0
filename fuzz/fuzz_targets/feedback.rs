//! The settlement feedback parser on arbitrary bytes.
//!
//! What it accepts survives a round trip through its own JSON form; what it
//! refuses names a field, and the reason never repeats a value the message
//! gave (a refused message may hold a personal identity number, and the
//! reason is logged).

#![no_main]

use kvitto::settlement::feedback::Feedback;
use libfuzzer_sys::fuzz_target;

/// Shorter values could turn up in the fixed wording by chance.
const MIN_CHECKED_VALUE_CHARS: usize = 8;
/// The limits the reasons quote; a value that happens to be part of one is
/// not an echo.
const QUOTED_LIMITS: &str = "1000000000 16384";

fuzz_target!(|data: &[u8]| {
    match Feedback::parse(data) {
        Ok(feedback) => {
            let text = serde_json::to_vec(&feedback).expect("feedback serializes");
            assert_eq!(Feedback::parse(&text), Ok(feedback));
        }
        Err(error) => {
            assert!(!error.field.is_empty());
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
                return;
            };
            let mut strings = Vec::new();
            leaf_strings(&value, &mut strings);
            for given in strings {
                let checked = given.chars().count() >= MIN_CHECKED_VALUE_CHARS
                    && given.bytes().any(|b| b.is_ascii_digit())
                    && !QUOTED_LIMITS.contains(given);
                if checked {
                    assert!(
                        !error.reason.contains(given),
                        "reason {:?} repeats a given value",
                        error.reason
                    );
                }
            }
        }
    }
});

/// The string values of a JSON document (not its keys).
fn leaf_strings<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match value {
        serde_json::Value::String(text) => out.push(text),
        serde_json::Value::Array(items) => items.iter().for_each(|item| leaf_strings(item, out)),
        serde_json::Value::Object(map) => map.values().for_each(|item| leaf_strings(item, out)),
        _ => {}
    }
}
