//! The origin matcher decides who may open a socket: parsing never panics, a parsed origin parses again to itself
//! (so comparing strings is comparing origins), and it never keeps a path, query, user info or whitespace.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natter::config::Origin;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(origin) = Origin::parse(text) {
        let again = Origin::parse(origin.as_str()).expect("a parsed origin parses again");
        assert_eq!(again, origin);
        let rest = origin.as_str().split_once("://").expect("scheme").1;
        assert!(!rest.contains(['/', '?', '#', '@', ' ']));
        assert!(origin.as_str().starts_with("http://") || origin.as_str().starts_with("https://"));
    }
});
