//! Any bytes as the changes of one record of the store's log (`natter.wal`), replayed into a store: they apply or
//! are refused as malformed, never panic, and what they leave in the store reads back without a panic either.
//! (A real record also carries a CRC, which a fuzzer's bytes would rarely match; this goes past it.)
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    natter::store::fuzzing::log_record(data);
});
