//! Reading the client's WebSocket frames (RFC 6455, section 5) with natter's limits, in a few hundred bytes per
//! socket.
//!
//! fastwebsockets gives every socket an 8 KiB read buffer for its whole life. Most of natter's sockets are idle
//! visitors whose frames are pongs and a short message now and then, so here a socket holds a small inline buffer
//! (inside its task) and only a frame larger than that gets a heap buffer of its exact size, freed at the next frame.
//! With 10,000 idle sockets that is the difference between about 130 and 70 MB.
//!
//! Reading the frames ourselves also lets natter enforce what fastwebsockets leaves out: a client frame must be
//! masked, the reserved bits must be zero, and a message's size is checked from the header before its payload is
//! read. A large payload's buffer grows as its bytes arrive (a header alone reserves nothing), and once a frame has
//! begun the rest of it must arrive within a deadline: otherwise a client could hold 64 KiB per socket by announcing
//! large frames and trickling them. Writing is `frame_writer`'s.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes kept inline. A `speak` of a few hundred characters fits, and so does the ActionCable handshake traffic.
const INLINE: usize = 512;

/// The longest frame header (2 bytes, an 8-byte length and the 4-byte mask) must fit inline.
const _: () = assert!(14 <= INLINE);

/// A large payload's buffer grows by at least this much at a time (about what one read from the socket brings), and
/// never ahead of what has arrived by more than that or what the vector's doubling adds.
const GROWTH: usize = 4096;

/// One frame from the client, its payload unmasked.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A text frame; `fin` is false when more of the message follows in continuation frames.
    Text {
        fin: bool,
        payload: &'a [u8],
    },
    Continuation {
        fin: bool,
        payload: &'a [u8],
    },
    Binary,
    Ping(&'a [u8]),
    Pong,
    Close(&'a [u8]),
}

/// Why reading stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The frame is larger than the limit (close code 1009).
    TooLarge,
    /// The frame breaks RFC 6455 (close code 1002); the text says how.
    Protocol(&'static str),
    /// A frame began but did not end within the deadline (close code 1008).
    TooSlow,
    /// The peer closed the connection or the read failed: nobody is left to tell.
    Closed,
}

pub struct FrameReader {
    inline: [u8; INLINE],
    /// The unread bytes are `inline[start..end]`.
    start: usize,
    end: usize,
    /// The payload of the last frame that did not fit inline; emptied (and freed) when the next frame is read.
    large: Vec<u8>,
    /// The largest payload a frame may have.
    limit: usize,
    /// How long a frame may take from its first byte to its last.
    deadline: Duration,
}

impl FrameReader {
    pub fn new(limit: usize, deadline: Duration) -> FrameReader {
        FrameReader {
            inline: [0; INLINE],
            start: 0,
            end: 0,
            large: Vec::new(),
            limit,
            deadline,
        }
    }

    /// Reads the next frame: waits as long as it takes for its first byte (an idle socket is fine), then at most the
    /// deadline for the rest. Cancelling it (a timeout) leaves the reader unusable, which is fine: the socket is then
    /// closed.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        stream: &mut R,
    ) -> Result<Frame<'_>, FrameError> {
        self.large = Vec::new();
        self.fill(stream, 1).await?;
        let deadline = self.deadline;
        tokio::time::timeout(deadline, self.rest_of_frame(stream))
            .await
            .unwrap_or(Err(FrameError::TooSlow))
    }

    async fn rest_of_frame<R: AsyncRead + Unpin>(
        &mut self,
        stream: &mut R,
    ) -> Result<Frame<'_>, FrameError> {
        self.fill(stream, 2).await?;
        let first = self.inline[self.start];
        let second = self.inline[self.start + 1];
        let fin = first & 0x80 != 0;
        if first & 0x70 != 0 {
            return Err(FrameError::Protocol("reserved bits set"));
        }
        let opcode = first & 0x0f;
        if second & 0x80 == 0 {
            return Err(FrameError::Protocol("client frames must be masked"));
        }
        let length_bytes = match second & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let header = 2 + length_bytes + 4;
        self.fill(stream, header).await?;
        let head = &self.inline[self.start..self.start + header];
        let length = match length_bytes {
            0 => u64::from(second & 0x7f),
            2 => u64::from(u16::from_be_bytes([head[2], head[3]])),
            _ => u64::from_be_bytes(head[2..10].try_into().expect("8 bytes")),
        };
        let mask: [u8; 4] = head[header - 4..].try_into().expect("4 bytes");
        let is_control = opcode & 0x08 != 0;
        if is_control && (!fin || length > 125) {
            return Err(FrameError::Protocol("bad control frame"));
        }
        if !matches!(opcode, 0x0..=0x2 | 0x8..=0xa) {
            return Err(FrameError::Protocol("unknown opcode"));
        }
        if length > self.limit as u64 {
            return Err(FrameError::TooLarge);
        }
        let length = length as usize;
        self.start += header;
        let payload: &mut [u8] = if length <= INLINE {
            self.fill(stream, length).await?;
            let range = self.start..self.start + length;
            self.start += length;
            &mut self.inline[range]
        } else {
            self.large
                .extend_from_slice(&self.inline[self.start..self.end]);
            self.start = self.end;
            while self.large.len() < length {
                let want = length - self.large.len();
                self.large.reserve(want.min(GROWTH));
                let read = (&mut *stream)
                    .take(want as u64)
                    .read_buf(&mut self.large)
                    .await
                    .map_err(|_| FrameError::Closed)?;
                if read == 0 {
                    return Err(FrameError::Closed);
                }
            }
            &mut self.large[..]
        };
        unmask(payload, mask);
        let payload = &*payload;
        Ok(match opcode {
            0x0 => Frame::Continuation { fin, payload },
            0x1 => Frame::Text { fin, payload },
            0x2 => Frame::Binary,
            0x8 => Frame::Close(payload),
            0x9 => Frame::Ping(payload),
            _ => Frame::Pong,
        })
    }

    /// Makes sure `wanted` (at most `INLINE`) unread bytes are inline, reading as many as the socket has.
    async fn fill<R: AsyncRead + Unpin>(
        &mut self,
        stream: &mut R,
        wanted: usize,
    ) -> Result<(), FrameError> {
        debug_assert!(wanted <= INLINE);
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        while self.end - self.start < wanted {
            if self.start + wanted > INLINE {
                self.inline.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            }
            let read = stream
                .read(&mut self.inline[self.end..])
                .await
                .map_err(|_| FrameError::Closed)?;
            if read == 0 {
                return Err(FrameError::Closed);
            }
            self.end += read;
        }
        Ok(())
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *byte ^= key;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    const DEADLINE: Duration = Duration::from_secs(60);

    /// A client frame as a browser sends it: masked, with the shortest length encoding.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![first];
        match payload.len() {
            0..=125 => bytes.push(0x80 | payload.len() as u8),
            126..=0xffff => {
                bytes.push(0x80 | 126);
                bytes.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            }
            _ => {
                bytes.push(0x80 | 127);
                bytes.extend_from_slice(&(payload.len() as u64).to_be_bytes());
            }
        }
        bytes.extend_from_slice(&MASK);
        bytes.extend(
            payload
                .iter()
                .enumerate()
                .map(|(index, byte)| byte ^ MASK[index % 4]),
        );
        bytes
    }

    fn read_all(bytes: &[u8], limit: usize) -> Vec<Result<String, FrameError>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut stream = bytes;
            let mut reader = FrameReader::new(limit, DEADLINE);
            let mut seen = Vec::new();
            loop {
                let next = reader.next(&mut stream).await;
                let done = next.is_err();
                seen.push(next.map(|frame| format!("{frame:?}")));
                if done {
                    return seen;
                }
            }
        })
    }

    fn text(fin: bool, payload: &[u8]) -> Result<String, FrameError> {
        Ok(format!("{:?}", Frame::Text { fin, payload }))
    }

    #[test]
    fn reads_back_to_back_frames_of_every_length_encoding() {
        let short = b"hello".to_vec();
        let medium = vec![b'm'; 300];
        let inline_edge = vec![b'e'; INLINE];
        let long = vec![b'l'; 70_000];
        let mut bytes = Vec::new();
        for payload in [&short, &medium, &inline_edge, &long, &short] {
            bytes.extend(frame(0x81, payload));
        }
        let seen = read_all(&bytes, 100_000);
        assert_eq!(
            seen,
            vec![
                text(true, &short),
                text(true, &medium),
                text(true, &inline_edge),
                text(true, &long),
                text(true, &short),
                Err(FrameError::Closed),
            ]
        );
    }

    #[test]
    fn a_frame_split_across_reads_is_put_together() {
        let bytes = frame(0x81, &[b'x'; 400]);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (mut client, mut server) = tokio::io::duplex(64);
            let writer = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                for piece in bytes.chunks(7) {
                    client.write_all(piece).await.unwrap();
                    tokio::task::yield_now().await;
                }
            });
            let mut reader = FrameReader::new(1000, DEADLINE);
            let frame = reader.next(&mut server).await.unwrap();
            assert_eq!(
                frame,
                Frame::Text {
                    fin: true,
                    payload: &[b'x'; 400]
                }
            );
            writer.await.unwrap();
        });
    }

    #[test]
    fn control_and_fragment_frames_are_told_apart() {
        let mut bytes = frame(0x01, b"one ");
        bytes.extend(frame(0x89, b"are you there"));
        bytes.extend(frame(0x80, b"two"));
        bytes.extend(frame(0x8a, b""));
        bytes.extend(frame(0x82, b"\x00\x01"));
        bytes.extend(frame(0x88, &1000u16.to_be_bytes()));
        let seen = read_all(&bytes, 1000);
        let expected: Vec<Result<String, FrameError>> = [
            Frame::Text {
                fin: false,
                payload: b"one ",
            },
            Frame::Ping(b"are you there"),
            Frame::Continuation {
                fin: true,
                payload: b"two",
            },
            Frame::Pong,
            Frame::Binary,
            Frame::Close(&1000u16.to_be_bytes()),
        ]
        .iter()
        .map(|frame| Ok(format!("{frame:?}")))
        .chain([Err(FrameError::Closed)])
        .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn broken_frames_are_refused_with_the_reason() {
        let mut unmasked = frame(0x81, b"hi");
        unmasked[1] &= 0x7f;
        let cases: [(Vec<u8>, FrameError); 5] = [
            (
                unmasked,
                FrameError::Protocol("client frames must be masked"),
            ),
            (
                frame(0xc1, b"hi"),
                FrameError::Protocol("reserved bits set"),
            ),
            (frame(0x83, b"hi"), FrameError::Protocol("unknown opcode")),
            (
                frame(0x09, b"hi"),
                FrameError::Protocol("bad control frame"),
            ),
            (
                frame(0x89, &[0; 126]),
                FrameError::Protocol("bad control frame"),
            ),
        ];
        for (bytes, error) in cases {
            assert_eq!(read_all(&bytes, 1000), vec![Err(error)]);
        }
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_header_alone() {
        // Only the header: the 2 GB it announces are never sent, and never waited for.
        let mut header = vec![0x81, 0x80 | 127];
        header.extend_from_slice(&(2u64 << 30).to_be_bytes());
        header.extend_from_slice(&MASK);
        assert_eq!(read_all(&header, 65_536), vec![Err(FrameError::TooLarge)]);
        assert_eq!(
            read_all(&frame(0x81, &[b'a'; 1001]), 1000),
            vec![Err(FrameError::TooLarge)]
        );
    }

    #[test]
    fn a_connection_cut_mid_frame_is_closed() {
        let bytes = frame(0x81, &[b'x'; 2000]);
        assert_eq!(
            read_all(&bytes[..1500], 4000),
            vec![Err(FrameError::Closed)]
        );
        assert_eq!(read_all(&bytes[..3], 4000), vec![Err(FrameError::Closed)]);
    }

    /// Regression (issue 15, item 9): a header announcing 64 KiB reserved 64 KiB before any of it arrived.
    #[test]
    fn a_large_frame_s_buffer_grows_with_what_arrives() {
        let whole = frame(0x81, &[b'x'; 60_000]);
        let sent = &whole[..8 + 100];
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (mut client, mut server) = tokio::io::duplex(1 << 20);
            tokio::io::AsyncWriteExt::write_all(&mut client, sent)
                .await
                .unwrap();
            let mut reader = FrameReader::new(65_536, DEADLINE);
            {
                // One poll reads all that has arrived, then waits for the rest.
                let next = std::pin::pin!(reader.next(&mut server));
                let mut context = std::task::Context::from_waker(std::task::Waker::noop());
                assert!(std::future::Future::poll(next, &mut context).is_pending());
            }
            assert!(
                reader.large.capacity() < 16 * 1024,
                "{} bytes held for 100 received",
                reader.large.capacity()
            );
        });
    }

    /// Regression (issue 15, item 9): after subscribing, a frame could take forever.
    #[test]
    fn a_frame_that_stops_halfway_runs_out_of_time_but_an_idle_socket_does_not() {
        let whole = frame(0x81, &[b'x'; 1000]);
        let deadline = Duration::from_millis(50);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (mut client, mut server) = tokio::io::duplex(1 << 16);
            let mut reader = FrameReader::new(65_536, deadline);
            // Nothing at all for four deadlines: still waiting, no error.
            let idle = tokio::time::timeout(deadline * 4, reader.next(&mut server)).await;
            assert!(
                idle.is_err(),
                "an idle socket is not timed out by the reader"
            );
            let mut reader = FrameReader::new(65_536, deadline);
            tokio::io::AsyncWriteExt::write_all(&mut client, &whole[..50])
                .await
                .unwrap();
            assert_eq!(reader.next(&mut server).await, Err(FrameError::TooSlow));
        });
    }

    #[test]
    fn unmasking_covers_every_length() {
        for length in 0..40 {
            let plain: Vec<u8> = (0..length as u8).collect();
            let mut masked: Vec<u8> = plain
                .iter()
                .enumerate()
                .map(|(index, byte)| byte ^ MASK[index % 4])
                .collect();
            unmask(&mut masked, MASK);
            assert_eq!(masked, plain);
        }
    }
}
