//! The `Cookie` header parser: never panics, and what it returns for either session cookie's name (`natter_session`
//! over HTTP, `__Host-natter_session` over HTTPS) is a non-empty, bounded value that was in the header after that name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natter::auth::{cookie_value, SECURE_SESSION_COOKIE, SESSION_COOKIE};

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else { return };
    for name in [SESSION_COOKIE, SECURE_SESSION_COOKIE] {
        if let Some(value) = cookie_value(header, name) {
            assert!(!value.is_empty() && value.len() <= 128);
            assert!(header.contains(value));
            assert!(header.contains(&format!("{name}=")));
        }
    }
});
