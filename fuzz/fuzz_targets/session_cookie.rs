//! The `Cookie` header parser: never panics, and what it returns is a non-empty, bounded value that was in the
//! header after `natter_session=`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natter::auth::session_cookie;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else { return };
    if let Some(value) = session_cookie(header) {
        assert!(!value.is_empty() && value.len() <= 128);
        assert!(header.contains(value));
        assert!(header.contains("natter_session="));
    }
});
