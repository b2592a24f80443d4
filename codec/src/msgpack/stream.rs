//! Reassembling MessagePack objects from a byte stream (docs/protocol.md §4.1: no length prefix, objects
//! back to back, split anywhere by the transport).
//!
//! [`StreamDecoder`] finds where the next object ends with a resumable *scan* that walks the
//! headers without building values; only a complete frame is [`decode`]d, once. The scan keeps
//! its position and the open containers between calls, so an object that trickles in one byte at
//! a time costs O(size) in total, not O(size²), and a declared length that is still far away
//! is not re-examined until enough bytes have arrived.

use super::decode::{decode, head, DecodeError, MAX_DEPTH};
use crate::Value;

/// Reassembles MessagePack objects from a byte stream.
///
/// ```
/// use mock_kong_codec::msgpack::StreamDecoder;
/// use mock_kong_codec::Value;
///
/// let mut s = StreamDecoder::new(1 << 20);
/// s.feed(&[0x92, 0x01]);
/// assert_eq!(s.next_value().unwrap(), None);
/// s.feed(&[0x02, 0xC3]);
/// assert_eq!(s.next_value().unwrap(), Some(Value::Array(vec![1.into(), 2.into()])));
/// assert_eq!(s.next_value().unwrap(), Some(Value::Bool(true)));
/// assert_eq!(s.next_value().unwrap(), None);
/// ```
///
/// Errors are final: after [`next_value`](Self::next_value) returned an error the stream cannot
/// be resynchronised (MessagePack has no frame markers), and every later call returns the same
/// error. Close the connection.
#[derive(Debug)]
pub struct StreamDecoder {
    /// Received bytes; `buf[start..]` is not consumed yet.
    buf: Vec<u8>,
    /// Start of the frame being assembled.
    start: usize,
    /// Where the scan continues: the first byte of the next object header of the current frame.
    scan: usize,
    /// For each open container of the current frame, its children not yet complete (including
    /// the one in progress).
    open: Vec<u64>,
    /// Sum of `open`.
    pending: u64,
    /// Do not scan before `buf.len()` reaches this: the frame cannot be complete earlier.
    wait_until: usize,
    max_frame: usize,
    failed: Option<DecodeError>,
}

impl StreamDecoder {
    /// A decoder that refuses objects larger than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        StreamDecoder {
            buf: Vec::new(),
            start: 0,
            scan: 0,
            open: Vec::new(),
            pending: 0,
            wait_until: 1,
            max_frame,
            failed: None,
        }
    }

    /// The frame limit given to [`new`](Self::new).
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        // Drop consumed bytes once they are at least half the buffer: each byte is moved at most
        // once per halving, so compaction is amortised O(1) per byte.
        if self.start > 0 && self.start >= self.buf.len() - self.start {
            self.compact();
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete object, `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    ///
    /// [`DecodeError::InvalidMarker`] (offset relative to the frame start),
    /// [`DecodeError::TooDeep`], or [`DecodeError::TooLarge`] when the frame's declared sizes or
    /// the bytes buffered for it exceed `max_frame`. Never [`DecodeError::Incomplete`].
    pub fn next_value(&mut self) -> Result<Option<Value>, DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.buf.len() < self.wait_until {
            return Ok(None);
        }
        match self.scan_frame() {
            Ok(Some(end)) => {
                let frame = &self.buf[self.start..end];
                let value = match decode(frame) {
                    Ok((value, used)) if used == frame.len() => value,
                    // The scan and the decoder read the same grammar; a disagreement is a bug,
                    // reported rather than panicking on a server's bytes.
                    Ok((_, used)) => {
                        let e = DecodeError::InvalidMarker {
                            byte: frame.get(used).copied().unwrap_or(0),
                            offset: used,
                        };
                        return Err(self.fail(e));
                    }
                    Err(e) => return Err(self.fail(e)),
                };
                self.start = end;
                self.scan = end;
                self.wait_until = end + 1;
                if self.start == self.buf.len() {
                    self.compact();
                }
                Ok(Some(value))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Bytes received but not yet consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    fn fail(&mut self, e: DecodeError) -> DecodeError {
        self.failed = Some(e.clone());
        e
    }

    /// Moves the unconsumed bytes to the front of the buffer.
    fn compact(&mut self) {
        let shift = self.start;
        if shift == 0 {
            return;
        }
        if shift == self.buf.len() {
            self.buf.clear();
        } else {
            self.buf.drain(..shift);
        }
        self.start = 0;
        self.scan -= shift;
        self.wait_until -= shift;
    }

    /// Advances the scan of the current frame. `Some(end)` when the frame `buf[start..end]` is
    /// complete; `None` when more bytes are needed (with `wait_until` set).
    fn scan_frame(&mut self) -> Result<Option<usize>, DecodeError> {
        let len = self.buf.len();
        loop {
            let pos = self.scan;
            // Elements owed by the open containers beyond the chain we are inside of: each of
            // them takes at least one more byte after the current object.
            let owed_after = self.pending - self.open.len() as u64;
            let h = match head(&self.buf, pos) {
                Ok(h) => h,
                Err(DecodeError::Incomplete { needed }) => {
                    // Scan again as soon as this header (or payload) can be complete, so an
                    // invalid byte right after it is reported at once, not only when every
                    // owed element could have arrived.
                    let ready = len as u64 + needed as u64;
                    return self.need(ready, ready + owed_after);
                }
                Err(DecodeError::InvalidMarker { byte, .. }) => {
                    return Err(DecodeError::InvalidMarker {
                        byte,
                        offset: pos - self.start,
                    });
                }
                Err(e) => return Err(e),
            };
            if h.container && self.open.len() >= MAX_DEPTH {
                return Err(DecodeError::TooDeep { limit: MAX_DEPTH });
            }
            let end = pos as u64 + h.len;
            // The frame cannot end before this object's bytes, one byte per child and per
            // owed element.
            self.check_size(end.saturating_add(h.children).saturating_add(owed_after))?;
            if end > len as u64 {
                return self.need(end, end + h.children + owed_after);
            }
            self.scan = end as usize; // end <= len
            if h.children > 0 {
                self.open.push(h.children);
                self.pending += h.children;
                continue;
            }
            // The object is complete; close every container it completes.
            loop {
                match self.open.last_mut() {
                    None => return Ok(Some(self.scan)),
                    Some(left) => {
                        *left -= 1;
                        self.pending -= 1;
                        if *left > 0 {
                            break;
                        }
                        self.open.pop();
                    }
                }
            }
        }
    }

    /// Records that the scan cannot advance before the buffer reaches `ready` bytes, and that
    /// the frame cannot complete before `min_end` (`ready <= min_end`), which must be within the
    /// frame limit.
    fn need(&mut self, ready: u64, min_end: u64) -> Result<Option<usize>, DecodeError> {
        self.check_size(min_end)?;
        // check_size bounds min_end - start, and so ready - start, by max_frame, a usize.
        self.wait_until = usize::try_from(ready).unwrap_or(usize::MAX);
        Ok(None)
    }

    /// `TooLarge` when a frame ending at or after `min_end` exceeds the limit.
    fn check_size(&self, min_end: u64) -> Result<(), DecodeError> {
        let size = min_end - self.start as u64;
        if size > self.max_frame as u64 {
            return Err(DecodeError::TooLarge {
                size,
                limit: self.max_frame,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msgpack::encode_to_vec;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).expect("test hex"))
            .collect()
    }

    fn drain(s: &mut StreamDecoder) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(v) = s.next_value().expect("valid stream") {
            out.push(v);
        }
        out
    }

    fn samples() -> Vec<Value> {
        vec![
            Value::Array(vec![
                Value::Int(1),
                Value::Int(5),
                Value::Nil,
                Value::map([("Data", Value::str("ret")), ("EventId", Value::Int(0))]),
            ]),
            Value::Array(vec![
                Value::Int(2),
                Value::str("serverPid"),
                Value::Int(4242),
            ]),
            Value::Int(7),
            Value::Array(vec![]),
            Value::Map(vec![]),
            Value::Array(vec![
                Value::Int(1),
                Value::Int(300),
                Value::Nil,
                Value::map([
                    ("s", Value::str("y".repeat(300))),
                    ("b", Value::Bin(vec![9; 70])),
                    (
                        "n",
                        Value::Array(vec![
                            Value::Array(vec![Value::Map(vec![])]),
                            Value::Float(0.25),
                        ]),
                    ),
                ]),
            ]),
        ]
    }

    #[test]
    fn every_split_position_of_coalesced_frames() {
        let want = samples();
        let bytes: Vec<u8> = want.iter().flat_map(encode_to_vec).collect();
        for cut in 0..=bytes.len() {
            let mut s = StreamDecoder::new(1 << 20);
            s.feed(&bytes[..cut]);
            let mut got = drain(&mut s);
            s.feed(&bytes[cut..]);
            got.extend(drain(&mut s));
            assert_eq!(got, want, "split at {cut}");
            assert_eq!(s.buffered(), 0);
        }
    }

    #[test]
    fn byte_at_a_time_and_two_splits() {
        let want = samples();
        let bytes: Vec<u8> = want.iter().flat_map(encode_to_vec).collect();
        let mut s = StreamDecoder::new(1 << 20);
        let mut got = Vec::new();
        for b in &bytes {
            s.feed(std::slice::from_ref(b));
            got.extend(drain(&mut s));
        }
        assert_eq!(got, want);
        // Three chunks at a sample of split pairs.
        for a in (0..bytes.len()).step_by(7) {
            for b in (a..bytes.len()).step_by(13) {
                let mut s = StreamDecoder::new(1 << 20);
                let mut got = Vec::new();
                for chunk in [&bytes[..a], &bytes[a..b], &bytes[b..]] {
                    s.feed(chunk);
                    got.extend(drain(&mut s));
                }
                assert_eq!(got, want, "splits {a}, {b}");
            }
        }
    }

    #[test]
    fn objects_come_out_as_soon_as_complete() {
        let mut s = StreamDecoder::new(100);
        s.feed(&hex("93 01 A3 61 62"));
        assert_eq!(s.next_value(), Ok(None));
        s.feed(&hex("63"));
        assert_eq!(s.next_value(), Ok(None));
        s.feed(&hex("C0 05"));
        assert_eq!(
            s.next_value(),
            Ok(Some(Value::Array(vec![
                Value::Int(1),
                Value::str("abc"),
                Value::Nil
            ])))
        );
        assert_eq!(s.buffered(), 1);
        assert_eq!(s.next_value(), Ok(Some(Value::Int(5))));
        assert_eq!(s.next_value(), Ok(None));
    }

    /// A 1 MiB object fed one byte at a time: the scan resumes instead of restarting, so this
    /// stays linear (quadratic re-parsing would take minutes here).
    #[test]
    fn one_mib_byte_at_a_time() {
        let big_str = Value::Array(vec![
            Value::Int(1),
            Value::Int(9),
            Value::Nil,
            Value::Str(vec![b'q'; 1 << 20]),
        ]);
        // Many small elements: the case a "needed" hint alone does not make linear.
        let many = Value::Array(
            (0..200_000)
                .map(|i| Value::Int(i % 100))
                .chain([Value::str("end")])
                .collect(),
        );
        let nested = Value::Array(
            (0..20_000)
                .map(|i| {
                    Value::map([(
                        "k",
                        Value::Array(vec![Value::Int(i), Value::str("vvvvvvvvvvvv")]),
                    )])
                })
                .collect(),
        );
        for v in [big_str, many, nested] {
            let bytes = encode_to_vec(&v);
            let mut s = StreamDecoder::new(2 << 20);
            let started = std::time::Instant::now();
            let (last, body) = bytes.split_last().expect("non-empty");
            for b in body {
                s.feed(std::slice::from_ref(b));
                assert_eq!(s.next_value(), Ok(None));
            }
            s.feed(&[*last]);
            assert_eq!(s.next_value(), Ok(Some(v)));
            assert_eq!(s.buffered(), 0);
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "too slow: {:?}",
                started.elapsed()
            );
        }
    }

    #[test]
    fn too_large_by_declaration() {
        // A str declaring 4 GiB: refused from its header alone.
        let mut s = StreamDecoder::new(1024);
        s.feed(&hex("DB FF FF FF FF"));
        assert_eq!(
            s.next_value(),
            Err(DecodeError::TooLarge {
                size: 5 + 0xFFFF_FFFF,
                limit: 1024
            })
        );
        // Errors are sticky.
        s.feed(&hex("00"));
        assert!(matches!(s.next_value(), Err(DecodeError::TooLarge { .. })));

        // An array declaring more elements than could fit.
        let mut s = StreamDecoder::new(1000);
        s.feed(&hex("DC 04 00"));
        assert_eq!(
            s.next_value(),
            Err(DecodeError::TooLarge {
                size: 3 + 1024,
                limit: 1000
            })
        );

        // A str nested in an array whose remaining elements push it over.
        let mut s = StreamDecoder::new(40);
        s.feed(&hex("9F DA 00 20"));
        assert_eq!(
            s.next_value(),
            Err(DecodeError::TooLarge {
                size: 1 + 3 + 32 + 14,
                limit: 40
            })
        );

        // Exactly at the limit is fine.
        let v = Value::Str(vec![b'a'; 29]);
        let bytes = encode_to_vec(&Value::Array(vec![v.clone()])); // 91 BD + 29 = 31 bytes
        let mut s = StreamDecoder::new(31);
        s.feed(&bytes);
        assert_eq!(s.next_value(), Ok(Some(Value::Array(vec![v]))));
    }

    #[test]
    fn too_large_by_buffered_bytes() {
        // Endless nesting of small maps never declares much, but the buffered bytes grow.
        let mut s = StreamDecoder::new(64);
        let mut err = None;
        for _ in 0..100 {
            s.feed(&hex("81 A1 6B"));
            match s.next_value() {
                Ok(None) => {}
                Ok(Some(v)) => panic!("unexpected {v:?}"),
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        match err {
            Some(DecodeError::TooLarge { size, limit: 64 }) => assert!(size > 64),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_marker_and_too_deep() {
        let mut s = StreamDecoder::new(1 << 20);
        s.feed(&hex("01 92 01 C1"));
        assert_eq!(s.next_value(), Ok(Some(Value::Int(1))));
        assert_eq!(
            s.next_value(),
            Err(DecodeError::InvalidMarker {
                byte: 0xC1,
                offset: 2
            })
        );
        assert_eq!(
            s.next_value(),
            Err(DecodeError::InvalidMarker {
                byte: 0xC1,
                offset: 2
            })
        );

        let mut s = StreamDecoder::new(1 << 20);
        s.feed(&vec![0x91; 100_000]);
        assert_eq!(
            s.next_value(),
            Err(DecodeError::TooDeep { limit: MAX_DEPTH })
        );

        // Fed one byte at a time, the limit trips as soon as it is crossed.
        let mut s = StreamDecoder::new(1 << 20);
        for i in 0..=MAX_DEPTH {
            s.feed(&[0x91]);
            let r = s.next_value();
            if i < MAX_DEPTH {
                assert_eq!(r, Ok(None), "level {i}");
            } else {
                assert_eq!(r, Err(DecodeError::TooDeep { limit: MAX_DEPTH }));
            }
        }
    }

    #[test]
    fn compaction_keeps_partial_frames_intact() {
        // Many small frames with a partial one straddling every feed.
        let frame = encode_to_vec(&Value::Array(vec![
            Value::str("abcdefgh"),
            Value::Int(1000),
        ]));
        let stream: Vec<u8> = std::iter::repeat(frame.clone())
            .take(500)
            .flatten()
            .collect();
        let mut s = StreamDecoder::new(1 << 16);
        let mut n = 0;
        for chunk in stream.chunks(frame.len() * 3 + 5) {
            s.feed(chunk);
            for v in drain(&mut s) {
                assert_eq!(encode_to_vec(&v), frame);
                n += 1;
            }
            assert!(
                s.buf.len() <= 2 * (frame.len() * 3 + 5) + frame.len(),
                "buffer grows: {}",
                s.buf.len()
            );
        }
        assert_eq!(n, 500);
        assert_eq!(s.buffered(), 0);
    }
}
