//! `ProtoBuf:1` framing (docs/protocol.md §5.1): every message is `LE32(len) ++ payload`.
//!
//! Kong writes the length with lua_pack `"I"` (native `unsigned int`, little-endian on every
//! platform Kong ships for) and reads exactly 4 bytes, then exactly `len` bytes. A zero-length
//! frame is legal and meaningful: from the server it ends a handler's callback loop, from the
//! host it is the reply to a PDK call whose result encoded to nothing (docs/protocol.md §5.3).

/// A frame stream that cannot be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrameError {
    /// The declared length exceeds the decoder's limit. Detected as soon as the 4 length bytes
    /// are in, before any payload is buffered.
    #[error(
        "ProtoBuf frame of {len} bytes exceeds the limit of {limit} bytes; the peer is sending an \
         oversized message or the stream is out of sync (raise the frame limit if the message \
         is legitimate)"
    )]
    TooLarge { len: u64, limit: usize },
}

/// Appends `LE32(len) ++ payload` to `out` (docs/protocol.md §5.1).
///
/// Payloads longer than `u32::MAX` cannot be framed; callers never produce them (PDK results
/// are bounded far below that), and a debug assertion guards the invariant.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(
        u32::try_from(payload.len()).is_ok(),
        "frame payload exceeds u32::MAX"
    );
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Appends `frame(msg)` (the message's encoding behind its LE32 length) to `out` without an
/// intermediate buffer.
pub fn encode_message_frame(msg: &impl prost::Message, out: &mut Vec<u8>) {
    let len = msg.encoded_len();
    debug_assert!(u32::try_from(len).is_ok(), "frame payload exceeds u32::MAX");
    out.reserve(4 + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    // Encoding into a Vec cannot run out of space.
    let _ = msg.encode(out);
}

/// Reassembles frames from a byte stream fed in arbitrary pieces.
///
/// Bytes are appended to an internal buffer and consumed through a read offset; the consumed
/// prefix is dropped only when it is large relative to what remains, so a stream of many small
/// frames costs no memmove per frame.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    pos: usize,
    max_frame: usize,
}

/// Below this many consumed bytes the buffer is never compacted.
const COMPACT_MIN: usize = 4096;

impl FrameDecoder {
    /// A decoder that rejects frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            pos: 0,
            max_frame,
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.pos == self.buf.len() {
            // Everything was consumed: start over without copying.
            self.buf.clear();
            self.pos = 0;
        } else if self.pos >= COMPACT_MIN && self.pos >= self.buf.len() - self.pos {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame's payload (possibly empty), `Ok(None)` when more bytes are needed.
    ///
    /// Returns [`FrameError::TooLarge`] as soon as a length prefix above the limit is complete;
    /// the decoder then keeps returning that error (the stream cannot be resynchronised).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let avail = &self.buf[self.pos..];
        let Some(prefix) = avail.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(*prefix);
        let len_usize = match usize::try_from(len) {
            Ok(n) if n <= self.max_frame => n,
            _ => {
                return Err(FrameError::TooLarge {
                    len: u64::from(len),
                    limit: self.max_frame,
                })
            }
        };
        let Some(payload) = avail.get(4..4 + len_usize) else {
            return Ok(None);
        };
        let frame = payload.to_vec();
        self.pos += 4 + len_usize;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        Ok(Some(frame))
    }

    /// How many received bytes are not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode_frame(p, &mut out);
        }
        out
    }

    #[test]
    fn encode_is_le32_prefix() {
        let mut out = Vec::new();
        encode_frame(b"\x08\x03", &mut out);
        assert_eq!(out, [0x02, 0x00, 0x00, 0x00, 0x08, 0x03]); // docs/protocol.md §5.5 RpcReturn
        out.clear();
        encode_frame(&[0u8; 0x0102], &mut out);
        assert_eq!(&out[..4], &[0x02, 0x01, 0x00, 0x00]);
        out.clear();
        encode_frame(b"", &mut out);
        assert_eq!(out, [0, 0, 0, 0]); // docs/protocol.md §5.5 "Server done"
    }

    #[test]
    fn split_at_every_byte() {
        let payloads: [&[u8]; 4] = [
            b"kong.request.get_header",
            b"\x0A\x04host",
            b"",
            b"\x08\x03",
        ];
        let stream = framed(&payloads);
        for split in 0..=stream.len() {
            let mut d = FrameDecoder::new(1024);
            let mut got = Vec::new();
            for chunk in [&stream[..split], &stream[split..]] {
                d.feed(chunk);
                while let Some(f) = d.next_frame().expect("valid stream") {
                    got.push(f);
                }
            }
            assert_eq!(got, payloads.map(<[u8]>::to_vec), "split at {split}");
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn byte_by_byte_and_coalesced() {
        let payloads: [&[u8]; 3] = [b"abc", b"", b"defgh"];
        let stream = framed(&payloads);
        let mut d = FrameDecoder::new(16);
        let mut got = Vec::new();
        for b in &stream {
            d.feed(std::slice::from_ref(b));
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, payloads.map(<[u8]>::to_vec));

        let mut d = FrameDecoder::new(16);
        d.feed(&stream);
        assert_eq!(d.next_frame().unwrap().as_deref(), Some(&b"abc"[..]));
        assert_eq!(d.buffered(), stream.len() - 7);
        assert_eq!(d.next_frame().unwrap().as_deref(), Some(&b""[..]));
        assert_eq!(d.next_frame().unwrap().as_deref(), Some(&b"defgh"[..]));
        assert_eq!(d.next_frame().unwrap(), None);
    }

    #[test]
    fn empty_frames_are_returned() {
        let mut d = FrameDecoder::new(0);
        d.feed(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(d.next_frame().unwrap(), Some(vec![]));
        assert_eq!(d.next_frame().unwrap(), Some(vec![]));
        assert_eq!(d.next_frame().unwrap(), None);
        assert_eq!(d.buffered(), 2);
    }

    #[test]
    fn too_large_is_reported_before_the_payload() {
        let mut d = FrameDecoder::new(10);
        d.feed(&[11, 0, 0]);
        assert_eq!(d.next_frame().unwrap(), None);
        d.feed(&[0]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge { len: 11, limit: 10 })
        );
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge { len: 11, limit: 10 })
        );

        let mut d = FrameDecoder::new(1 << 20);
        d.feed(&[0xFF, 0xFF, 0xFF, 0xFF]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge {
                len: u64::from(u32::MAX),
                limit: 1 << 20
            })
        );
        assert_eq!(d.buffered(), 4);

        // Exactly at the limit is fine.
        let mut d = FrameDecoder::new(3);
        d.feed(&framed(&[b"abc"]));
        assert_eq!(d.next_frame().unwrap(), Some(b"abc".to_vec()));
    }

    #[test]
    fn long_streams_compact_the_buffer() {
        let frame = framed(&[&[7u8; 100]]);
        let mut d = FrameDecoder::new(100);
        // Keep one partial frame pending so the buffer never becomes empty.
        d.feed(&frame[..50]);
        for _ in 0..1000 {
            d.feed(&frame[50..]);
            d.feed(&frame[..50]);
            assert_eq!(d.next_frame().unwrap(), Some(vec![7u8; 100]));
            assert_eq!(d.buffered(), 50);
        }
        assert!(
            d.buf.len() < 2 * COMPACT_MIN + 2 * frame.len(),
            "buffer grew to {}",
            d.buf.len()
        );
    }
}
