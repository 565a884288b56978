//! Any bytes a client can send on the socket after the upgrade: the frame reader answers frames or an error, never
//! panics, never hands out more than the limit, and always gets to the end of its input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::Duration;

use natter::cable::frame_reader::{Frame, FrameError, FrameReader};

const LIMIT: usize = 1000;

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    runtime.block_on(async {
        let mut stream = data;
        let mut reader = FrameReader::new(LIMIT, Duration::from_secs(60));
        // Each frame takes at least its 6-byte header (2 bytes and the mask), so this many reads end the input.
        for _ in 0..=data.len() / 6 {
            match reader.next(&mut stream).await {
                Ok(Frame::Text { payload, .. } | Frame::Continuation { payload, .. }) => {
                    assert!(payload.len() <= LIMIT)
                }
                Ok(Frame::Ping(payload) | Frame::Close(payload)) => assert!(payload.len() <= 125),
                Ok(Frame::Binary | Frame::Pong) => {}
                Err(FrameError::TooLarge | FrameError::Protocol(_) | FrameError::Closed) => return,
                // The input is all there at once, so no frame can run out of time.
                Err(FrameError::TooSlow) => panic!("a frame of bytes already there ran out of time"),
            }
        }
        panic!("the reader did not reach the end of its input");
    });
});
