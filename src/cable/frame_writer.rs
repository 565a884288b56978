//! Server frames (RFC 6455, section 5.2), written straight into the socket's write buffer.
//!
//! A server's frames are never masked, and natter never fragments one, so a frame is a 2-, 4- or 10-byte header
//! followed by its payload. Writing them here lets a channel event go out as its pieces (this socket's identifier
//! prefix, the event JSON shared by every socket it fans out to, a closing brace) with no per-socket copy of the
//! whole frame, and the write half needs no read buffer of its own (fastwebsockets hands out a write half only
//! together with a read half and its 8 KiB buffer). fastwebsockets still does the upgrade; `frame_reader` reads.

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// The kinds of frame natter sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Close,
    Pong,
}

impl Kind {
    fn opcode(self) -> u8 {
        match self {
            Kind::Text => 0x1,
            Kind::Close => 0x8,
            Kind::Pong => 0xA,
        }
    }
}

pub struct FrameWriter<W> {
    out: W,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(out: W) -> FrameWriter<W> {
        FrameWriter { out }
    }

    /// Writes one final frame whose payload is `parts`, one after another. A control frame's payload must be at most
    /// 125 bytes (the callers' are: a ping's payload, which the reader limits, or a close code and a short reason).
    pub async fn frame(&mut self, kind: Kind, parts: &[&[u8]]) -> std::io::Result<()> {
        let length = parts.iter().map(|part| part.len()).sum();
        debug_assert!(kind == Kind::Text || length <= 125);
        let (header, used) = header(kind, length);
        self.out.write_all(&header[..used]).await?;
        for part in parts {
            self.out.write_all(part).await?;
        }
        Ok(())
    }

    /// A close frame with its status code and reason.
    pub async fn close(&mut self, code: u16, reason: &str) -> std::io::Result<()> {
        self.frame(Kind::Close, &[&code.to_be_bytes(), reason.as_bytes()])
            .await
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush().await
    }
}

/// The header of an unmasked final frame: FIN and the opcode, then the payload length in the shortest form.
fn header(kind: Kind, length: usize) -> ([u8; 10], usize) {
    let mut header = [0u8; 10];
    header[0] = 0x80 | kind.opcode();
    if length <= 125 {
        header[1] = length as u8;
        (header, 2)
    } else if let Ok(length) = u16::try_from(length) {
        header[1] = 126;
        header[2..4].copy_from_slice(&length.to_be_bytes());
        (header, 4)
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(length as u64).to_be_bytes());
        (header, 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses one unmasked frame the way a client does: (FIN and opcode byte, payload, bytes used).
    fn parse(bytes: &[u8]) -> (u8, Vec<u8>, usize) {
        assert_eq!(bytes[1] & 0x80, 0, "a server frame is never masked");
        let (length, at) = match bytes[1] & 0x7f {
            126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 => (
                u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                10,
            ),
            short => (usize::from(short), 2),
        };
        (bytes[0], bytes[at..at + length].to_vec(), at + length)
    }

    fn written(kind: Kind, parts: &[&[u8]]) -> Vec<u8> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut writer = FrameWriter::new(Vec::new());
            writer.frame(kind, parts).await.unwrap();
            writer.flush().await.unwrap();
            writer.out
        })
    }

    #[test]
    fn every_length_takes_the_shortest_header_and_the_parts_are_joined() {
        for length in [0usize, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..length).map(|index| (index % 251) as u8).collect();
            let (first, rest) = payload.split_at(length / 3);
            let bytes = written(Kind::Text, &[first, rest, b""]);
            let header = match length {
                0..=125 => 2,
                126..=65_535 => 4,
                _ => 10,
            };
            let (flags, parsed, used) = parse(&bytes);
            assert_eq!(flags, 0x81, "FIN and text at {length}");
            assert_eq!(parsed, payload, "payload at {length}");
            assert_eq!(used, bytes.len(), "nothing after the frame at {length}");
            assert_eq!(bytes.len(), header + length, "header size at {length}");
        }
    }

    #[test]
    fn close_and_pong_frames() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = runtime.block_on(async {
            let mut writer = FrameWriter::new(Vec::new());
            writer.frame(Kind::Pong, &[b"ping!"]).await.unwrap();
            writer.close(1012, "server_restart").await.unwrap();
            writer.out
        });
        let (flags, payload, used) = parse(&bytes);
        assert_eq!((flags, payload.as_slice()), (0x8A, &b"ping!"[..]));
        let (flags, payload, _) = parse(&bytes[used..]);
        assert_eq!(flags, 0x88);
        assert_eq!(&payload[..2], &1012u16.to_be_bytes());
        assert_eq!(&payload[2..], b"server_restart");
    }
}
