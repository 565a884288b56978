//! Any bytes a client can send as a text frame: the decoder answers a command or an error, never panics, and an
//! accepted `speak` always carries content within the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natter::protocol::{parse_command, Command, VisitorAction, MAX_CONTENT_CHARS};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_command(text) {
        Ok(Command::Visitor { action: VisitorAction::Speak { content, .. }, .. }) => {
            let count = content.chars().count();
            assert!(count >= 1 && count <= MAX_CONTENT_CHARS);
            assert_eq!(content.trim(), content);
        }
        Ok(_) => {}
        Err(error) => assert!(!error.error.message.is_empty()),
    }
});
