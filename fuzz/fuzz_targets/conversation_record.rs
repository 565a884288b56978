//! Any bytes as a stored conversation record (a torn page, a failing disk, an older natter's JSON): the decoder
//! answers a conversation or an error, never panics, and a binary record that decodes is exactly what natter would
//! write for that conversation, so nothing in it is silently dropped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natter::store::fuzzing::{conversation_record, BINARY_RECORD};

fuzz_target!(|data: &[u8]| {
    if let Some(encoded) = conversation_record(data) {
        if data.first() == Some(&BINARY_RECORD) {
            assert_eq!(encoded, data, "a binary record encodes back to itself");
        } else {
            assert_eq!(conversation_record(&encoded).as_deref(), Some(encoded.as_slice()), "a JSON record becomes a stable binary one");
        }
    }
});
