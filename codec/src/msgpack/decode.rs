//! The MessagePack decoder: one object from a byte buffer.
//!
//! Unlike the encoder, which writes only what Kong writes, the decoder accepts every valid
//! MessagePack encoding (`str8`, `float32`, `uint16` for small values, `ext`, ...), because
//! plugin servers use many different libraries (docs/protocol.md §4.2, §10). Widths are not preserved: `0` as
//! `00` and `0` as `cf 00 .. 00` both decode to `Value::Int(0)`.
//!
//! Input comes from a plugin server, so nothing here trusts a declared length: lengths are checked
//! against the bytes actually present before anything is allocated, nesting is limited to
//! [`MAX_DEPTH`], and every failure is a [`DecodeError`], never a panic.

use crate::Value;

/// The deepest container nesting [`decode`] and the stream decoder accept: `MAX_DEPTH` arrays
/// inside each other are fine, one more is [`DecodeError::TooDeep`]. Kong's own messages nest
/// about five levels; PDK results (`kong.log.serialize` is sent as a JSON string) rarely more.
pub const MAX_DEPTH: usize = 512;

/// Why a buffer did not decode.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer ends before the object does; `needed` is a lower bound of the missing bytes.
    #[error("incomplete MessagePack object: at least {needed} more byte(s) needed")]
    Incomplete { needed: usize },
    /// A byte that starts no MessagePack object (only `0xC1` is never used).
    #[error("invalid MessagePack: byte 0x{byte:02X} at offset {offset} starts no object")]
    InvalidMarker { byte: u8, offset: usize },
    /// Nesting deeper than the decoder allows.
    #[error("MessagePack nesting deeper than {limit} levels")]
    TooDeep { limit: usize },
    /// A declared length larger than the frame limit.
    #[error("MessagePack object of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: u64, limit: usize },
}

/// Decodes one object from the start of `buf`; returns it and the number of bytes it used.
///
/// Bytes after the object are left alone (the caller decides whether they are the next frame).
/// On [`DecodeError::Incomplete`], `needed` is a lower bound: the bytes missing at the point where
/// the buffer ran out plus one byte for every element still owed by the enclosing containers.
///
/// The decoder is iterative (an explicit stack of open containers), so hostile nesting costs
/// heap, bounded by [`MAX_DEPTH`], never thread stack.
pub fn decode(buf: &[u8]) -> Result<(Value, usize), DecodeError> {
    let mut reader = Reader { buf, pos: 0 };
    let mut open: Vec<Open> = Vec::new();
    loop {
        let item = match reader.item() {
            Ok(item) => item,
            Err(e) => return Err(owed(e, &open)),
        };
        let mut value = match item {
            Item::Value(v) => v,
            Item::Array(_) | Item::Map(_) if open.len() >= MAX_DEPTH => {
                return Err(DecodeError::TooDeep { limit: MAX_DEPTH });
            }
            Item::Array(0) => Value::Array(Vec::new()),
            Item::Map(0) => Value::Map(Vec::new()),
            Item::Array(n) => {
                // Every element takes at least one byte: never reserve more than could be present.
                let items = Vec::with_capacity(n.min(reader.remaining()));
                open.push(Open::Array { items, left: n });
                continue;
            }
            Item::Map(n) => {
                let entries = Vec::with_capacity(n.min(reader.remaining() / 2));
                open.push(Open::Map {
                    entries,
                    key: None,
                    left: n,
                });
                continue;
            }
        };
        // Hand the finished value to its container, closing every container it completes.
        loop {
            match open.last_mut() {
                None => return Ok((value, reader.pos)),
                Some(Open::Array { items, left }) => {
                    items.push(value);
                    *left -= 1;
                    if *left > 0 {
                        break;
                    }
                    value = Value::Array(std::mem::take(items));
                }
                Some(Open::Map { entries, key, left }) => {
                    let Some(k) = key.take() else {
                        *key = Some(value);
                        break;
                    };
                    entries.push((k, value));
                    *left -= 1;
                    if *left > 0 {
                        break;
                    }
                    value = Value::Map(std::mem::take(entries));
                }
            }
            open.pop();
        }
    }
}

/// A container being filled, innermost last.
enum Open {
    /// `left` counts the elements not yet complete (including the one being read).
    Array { items: Vec<Value>, left: usize },
    /// `key` holds a read key whose value is being read; `left` counts unfinished entries.
    Map {
        entries: Vec<(Value, Value)>,
        key: Option<Value>,
        left: usize,
    },
}

/// One object header as read: a complete scalar, or the start of a container of `n` elements
/// (array) or entries (map).
enum Item {
    Value(Value),
    Array(usize),
    Map(usize),
}

/// A cursor over the input.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// The next `n` bytes, or `Incomplete` with how many are missing.
    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let remaining = self.remaining();
        if n > remaining {
            return Err(DecodeError::Incomplete {
                needed: n - remaining,
            });
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    #[inline]
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    #[inline]
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    #[inline]
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    #[inline]
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    #[inline]
    fn bytes(&mut self, n: usize) -> Result<Vec<u8>, DecodeError> {
        Ok(self.take(n)?.to_vec())
    }

    #[inline]
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads one marker and what belongs to it (container elements excluded).
    fn item(&mut self) -> Result<Item, DecodeError> {
        let marker = self.u8()?;
        let v = match marker {
            0x00..=0x7F => Value::Int(i64::from(marker)),
            0x80..=0x8F => return Ok(Item::Map(usize::from(marker & 0x0F))),
            0x90..=0x9F => return Ok(Item::Array(usize::from(marker & 0x0F))),
            0xA0..=0xBF => Value::Str(self.bytes(usize::from(marker & 0x1F))?),
            0xC0 => Value::Nil,
            0xC1 => {
                return Err(DecodeError::InvalidMarker {
                    byte: marker,
                    offset: self.pos - 1,
                })
            }
            0xC2 => Value::Bool(false),
            0xC3 => Value::Bool(true),
            0xC4 => {
                let n = self.u8()?;
                Value::Bin(self.bytes(usize::from(n))?)
            }
            0xC5 => {
                let n = self.u16()?;
                Value::Bin(self.bytes(usize::from(n))?)
            }
            0xC6 => {
                let n = self.u32()?;
                Value::Bin(self.bytes(len(n))?)
            }
            0xC7 => {
                let n = self.u8()?;
                self.ext(usize::from(n))?
            }
            0xC8 => {
                let n = self.u16()?;
                self.ext(usize::from(n))?
            }
            0xC9 => {
                let n = self.u32()?;
                self.ext(len(n))?
            }
            0xCA => Value::Float(f64::from(f32::from_bits(self.u32()?))),
            0xCB => Value::Float(f64::from_bits(self.u64()?)),
            0xCC => Value::Int(i64::from(self.u8()?)),
            0xCD => Value::Int(i64::from(self.u16()?)),
            0xCE => Value::Int(i64::from(self.u32()?)),
            0xCF => {
                let n = self.u64()?;
                match i64::try_from(n) {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::UInt(n),
                }
            }
            0xD0 => Value::Int(i64::from(self.u8()? as i8)),
            0xD1 => Value::Int(i64::from(self.u16()? as i16)),
            0xD2 => Value::Int(i64::from(self.u32()? as i32)),
            0xD3 => Value::Int(self.u64()? as i64),
            0xD4 => self.ext(1)?,
            0xD5 => self.ext(2)?,
            0xD6 => self.ext(4)?,
            0xD7 => self.ext(8)?,
            0xD8 => self.ext(16)?,
            0xD9 => {
                let n = self.u8()?;
                Value::Str(self.bytes(usize::from(n))?)
            }
            0xDA => {
                let n = self.u16()?;
                Value::Str(self.bytes(usize::from(n))?)
            }
            0xDB => {
                let n = self.u32()?;
                Value::Str(self.bytes(len(n))?)
            }
            0xDC => return Ok(Item::Array(usize::from(self.u16()?))),
            0xDD => return Ok(Item::Array(len(self.u32()?))),
            0xDE => return Ok(Item::Map(usize::from(self.u16()?))),
            0xDF => return Ok(Item::Map(len(self.u32()?))),
            0xE0..=0xFF => Value::Int(i64::from(marker as i8)),
        };
        Ok(Item::Value(v))
    }

    /// An extension payload of `n` bytes after its type byte.
    fn ext(&mut self, n: usize) -> Result<Value, DecodeError> {
        let tag = self.u8()? as i8;
        Ok(Value::Ext(tag, self.bytes(n)?))
    }
}

/// Adds the elements still owed by the open containers to an `Incomplete` error's lower bound:
/// each of them needs at least one more byte.
#[cold]
fn owed(e: DecodeError, open: &[Open]) -> DecodeError {
    let DecodeError::Incomplete { mut needed } = e else {
        return e;
    };
    for frame in open {
        let later = match frame {
            Open::Array { left, .. } => left - 1,
            Open::Map {
                key: None, left, ..
            } => (left - 1).saturating_mul(2).saturating_add(1),
            Open::Map {
                key: Some(_), left, ..
            } => (left - 1).saturating_mul(2),
        };
        needed = needed.saturating_add(later);
    }
    DecodeError::Incomplete { needed }
}

/// A 32-bit length as `usize` (lossless on the 32- and 64-bit targets we build for; saturating
/// elsewhere, which then reports `Incomplete`).
#[inline]
fn len(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// What the byte at `pos` announces, without decoding the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Head {
    /// Bytes of the marker, length fields and (for scalars, `str`, `bin`, `ext`) payload.
    pub len: u64,
    /// Objects that follow as children: `n` for an array, `2n` for a map, 0 otherwise.
    pub children: u64,
    /// Whether this is an array or a map (even an empty one), for the depth limit.
    pub container: bool,
}

/// Reads the marker and length fields at `pos` (which must be `<= buf.len()`).
///
/// `Incomplete` only when the marker or its length field is cut off; whether the payload is
/// present is the caller's business. `InvalidMarker` reports `pos` as the offset.
pub(super) fn head(buf: &[u8], pos: usize) -> Result<Head, DecodeError> {
    let Some(&marker) = buf.get(pos) else {
        return Err(DecodeError::Incomplete { needed: 1 });
    };
    // The big-endian length field of `k` bytes right after the marker.
    let field = |k: usize| -> Result<u64, DecodeError> {
        let start = pos + 1;
        let have = buf.len() - start;
        if have < k {
            return Err(DecodeError::Incomplete { needed: k - have });
        }
        Ok(buf[start..start + k]
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    };
    let scalar = |len: u64| {
        Ok(Head {
            len,
            children: 0,
            container: false,
        })
    };
    let container = |len: u64, children: u64| {
        Ok(Head {
            len,
            children,
            container: true,
        })
    };
    match marker {
        0x00..=0x7F | 0xC0 | 0xC2 | 0xC3 | 0xE0..=0xFF => scalar(1),
        0x80..=0x8F => container(1, 2 * u64::from(marker & 0x0F)),
        0x90..=0x9F => container(1, u64::from(marker & 0x0F)),
        0xA0..=0xBF => scalar(1 + u64::from(marker & 0x1F)),
        0xC1 => Err(DecodeError::InvalidMarker {
            byte: marker,
            offset: pos,
        }),
        0xC4 | 0xD9 => scalar(2 + field(1)?),
        0xC5 | 0xDA => scalar(3 + field(2)?),
        0xC6 | 0xDB => scalar(5 + field(4)?),
        0xC7 => scalar(3 + field(1)?),
        0xC8 => scalar(4 + field(2)?),
        0xC9 => scalar(6 + field(4)?),
        0xCC | 0xD0 => scalar(2),
        0xCD | 0xD1 => scalar(3),
        0xCA | 0xCE | 0xD2 => scalar(5),
        0xCB | 0xCF | 0xD3 => scalar(9),
        0xD4 => scalar(3),
        0xD5 => scalar(4),
        0xD6 => scalar(6),
        0xD7 => scalar(10),
        0xD8 => scalar(18),
        0xDC => container(3, field(2)?),
        0xDD => container(5, field(4)?),
        0xDE => container(3, 2 * field(2)?),
        0xDF => container(5, 2 * field(4)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msgpack::encode_to_vec;

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).expect("test hex"))
            .collect()
    }

    fn dec(bytes: &[u8]) -> Value {
        let (v, used) = decode(bytes).unwrap_or_else(|e| panic!("{bytes:02X?}: {e}"));
        assert_eq!(used, bytes.len(), "{bytes:02X?} used");
        v
    }

    #[test]
    fn every_width_of_the_same_value() {
        let table: &[(&str, Value)] = &[
            ("00", Value::Int(0)),
            ("CC 00", Value::Int(0)),
            ("CD 00 00", Value::Int(0)),
            ("CE 00 00 00 00", Value::Int(0)),
            ("CF 00 00 00 00 00 00 00 00", Value::Int(0)),
            ("D0 00", Value::Int(0)),
            ("D1 00 00", Value::Int(0)),
            ("D2 00 00 00 00", Value::Int(0)),
            ("D3 00 00 00 00 00 00 00 00", Value::Int(0)),
            ("FF", Value::Int(-1)),
            ("D0 FF", Value::Int(-1)),
            ("D1 FF FF", Value::Int(-1)),
            ("D2 FF FF FF FF", Value::Int(-1)),
            ("D3 FF FF FF FF FF FF FF FF", Value::Int(-1)),
            ("CC FF", Value::Int(255)),
            ("CD FF FF", Value::Int(65535)),
            ("CE FF FF FF FF", Value::Int(4_294_967_295)),
            ("CF 7F FF FF FF FF FF FF FF", Value::Int(i64::MAX)),
            ("CF 80 00 00 00 00 00 00 00", Value::UInt(1 << 63)),
            ("CF FF FF FF FF FF FF FF FF", Value::UInt(u64::MAX)),
            ("D3 80 00 00 00 00 00 00 00", Value::Int(i64::MIN)),
            ("E0", Value::Int(-32)),
            ("A1 61", Value::str("a")),
            ("D9 01 61", Value::str("a")),
            ("DA 00 01 61", Value::str("a")),
            ("DB 00 00 00 01 61", Value::str("a")),
            ("A0", Value::str("")),
            ("D9 00", Value::str("")),
            ("C4 01 61", Value::Bin(b"a".to_vec())),
            ("C5 00 01 61", Value::Bin(b"a".to_vec())),
            ("C6 00 00 00 01 61", Value::Bin(b"a".to_vec())),
            ("CA 3F C0 00 00", Value::Float(1.5)),
            ("CB 3F F8 00 00 00 00 00 00", Value::Float(1.5)),
            ("CB 3F F1 99 99 99 99 99 9A", Value::Float(1.1)),
            ("90", Value::Array(vec![])),
            ("DC 00 00", Value::Array(vec![])),
            ("DD 00 00 00 00", Value::Array(vec![])),
            ("91 01", Value::Array(vec![Value::Int(1)])),
            ("DC 00 01 01", Value::Array(vec![Value::Int(1)])),
            ("DD 00 00 00 01 01", Value::Array(vec![Value::Int(1)])),
            ("80", Value::Map(vec![])),
            ("DE 00 00", Value::Map(vec![])),
            ("DF 00 00 00 00", Value::Map(vec![])),
            (
                "81 A1 61 C0",
                Value::Map(vec![(Value::str("a"), Value::Nil)]),
            ),
            (
                "DE 00 01 A1 61 C3",
                Value::Map(vec![(Value::str("a"), Value::Bool(true))]),
            ),
            (
                "DF 00 00 00 01 01 02",
                Value::Map(vec![(Value::Int(1), Value::Int(2))]),
            ),
            ("C0", Value::Nil),
            ("C2", Value::Bool(false)),
            ("C3", Value::Bool(true)),
            ("D4 01 AA", Value::Ext(1, vec![0xAA])),
            ("D5 FF AA BB", Value::Ext(-1, vec![0xAA, 0xBB])),
            ("D6 02 01 02 03 04", Value::Ext(2, vec![1, 2, 3, 4])),
            (
                "D7 02 01 02 03 04 05 06 07 08",
                Value::Ext(2, (1..=8).collect()),
            ),
            ("C7 01 01 AA", Value::Ext(1, vec![0xAA])),
            ("C8 00 01 01 AA", Value::Ext(1, vec![0xAA])),
            ("C9 00 00 00 01 01 AA", Value::Ext(1, vec![0xAA])),
            ("C7 00 05", Value::Ext(5, vec![])),
        ];
        for (bytes, want) in table {
            let got = dec(&hex(bytes));
            assert_eq!(&got, want, "{bytes}");
            // A float that decoded must keep its exact bits.
            if let (Value::Float(a), Value::Float(b)) = (&got, want) {
                assert_eq!(a.to_bits(), b.to_bits(), "{bytes}");
            }
        }
        let fixext16 = [vec![0xD8, 0x03], vec![7u8; 16]].concat();
        assert_eq!(dec(&fixext16), Value::Ext(3, vec![7; 16]));
        // float32 specials widen exactly.
        assert!(matches!(dec(&hex("CA 7F C0 00 00")), Value::Float(x) if x.is_nan()));
        assert_eq!(dec(&hex("CA FF 80 00 00")), Value::Float(f64::NEG_INFINITY));
    }

    #[test]
    fn round_trips_what_the_encoder_writes() {
        let samples = [
            Value::Int(-2_147_483_649),
            Value::UInt(u64::MAX),
            Value::Float(1e300),
            Value::Str(vec![b'z'; 70_000]),
            Value::Bin(vec![1; 300]),
            Value::Array(vec![Value::Nil; 20]),
            Value::map([("k", Value::Array(vec![Value::str("v")]))]),
            Value::Ext(-5, vec![1, 2, 3]),
        ];
        for v in samples {
            assert_eq!(dec(&encode_to_vec(&v)), v);
        }
    }

    #[test]
    fn stops_after_one_object() {
        assert_eq!(decode(&hex("01 02 03")), Ok((Value::Int(1), 1)));
        assert_eq!(
            decode(&hex("92 01 02 C0")),
            Ok((Value::Array(vec![1.into(), 2.into()]), 3))
        );
    }

    #[test]
    fn invalid_marker_reports_its_offset() {
        assert_eq!(
            decode(&hex("C1")),
            Err(DecodeError::InvalidMarker {
                byte: 0xC1,
                offset: 0
            })
        );
        assert_eq!(
            decode(&hex("93 01 02 C1")),
            Err(DecodeError::InvalidMarker {
                byte: 0xC1,
                offset: 3
            })
        );
        let msg = decode(&hex("92 C1 00")).unwrap_err().to_string();
        assert!(msg.contains("0xC1") && msg.contains("offset 1"), "{msg}");
    }

    #[test]
    fn too_deep() {
        let deep = vec![0x91u8; 100_000];
        assert_eq!(
            decode(&deep),
            Err(DecodeError::TooDeep { limit: MAX_DEPTH })
        );
        // Exactly MAX_DEPTH nested arrays are fine; one more is not.
        let mut ok = vec![0x91u8; MAX_DEPTH - 1];
        ok.push(0x90);
        assert!(decode(&ok).is_ok());
        let mut too = vec![0x91u8; MAX_DEPTH];
        too.push(0x80);
        assert_eq!(decode(&too), Err(DecodeError::TooDeep { limit: MAX_DEPTH }));
        let maps: Vec<u8> = std::iter::repeat([0x81, 0x00])
            .take(MAX_DEPTH + 1)
            .flatten()
            .collect();
        assert_eq!(
            decode(&maps),
            Err(DecodeError::TooDeep { limit: MAX_DEPTH })
        );
    }

    #[test]
    fn huge_declared_lengths_do_not_allocate() {
        // 4 GiB str/bin/ext, 4 G elements: reported as incomplete from the few bytes present.
        for (bytes, needed) in [
            ("DB FF FF FF FF 61", 0xFFFF_FFFE_usize),
            ("C6 FF FF FF FF", 0xFFFF_FFFF),
            ("C9 FF FF FF FF 01", 0xFFFF_FFFF),
            ("DD FF FF FF FF 01", 0xFFFF_FFFE),
            ("DF FF FF FF FF 01", 2 * 0xFFFF_FFFF - 1),
        ] {
            assert_eq!(
                decode(&hex(bytes)),
                Err(DecodeError::Incomplete { needed }),
                "{bytes}"
            );
        }
    }

    #[test]
    fn needed_is_a_lower_bound_counting_owed_elements() {
        // [1, "abc", 2] cut after "a": 2 bytes of the str and 1 element owed.
        assert_eq!(
            decode(&hex("93 01 A3 61")),
            Err(DecodeError::Incomplete { needed: 3 })
        );
        // {a: ?} cut after the key: the value is owed.
        assert_eq!(
            decode(&hex("81 A1 61")),
            Err(DecodeError::Incomplete { needed: 1 })
        );
        // Cut inside a length field.
        assert_eq!(
            decode(&hex("DA 00")),
            Err(DecodeError::Incomplete { needed: 1 })
        );
        assert_eq!(decode(&[]), Err(DecodeError::Incomplete { needed: 1 }));
    }

    /// Every prefix of a valid message is `Incomplete` with a `needed` that is a true lower bound,
    /// and never panics.
    #[test]
    fn every_truncation_is_incomplete() {
        let sample = Value::Array(vec![
            Value::Int(0),
            Value::Int(70_000),
            Value::str("plugin.StepMultiMap"),
            Value::Array(vec![Value::map([
                ("EventId", Value::Int(-200)),
                (
                    "Data",
                    Value::map([("host", Value::Array(vec![Value::str("x".repeat(40))]))]),
                ),
                ("F", Value::Float(1.1)),
                ("B", Value::Bin(vec![0, 1, 2])),
                ("E", Value::Ext(1, vec![1, 2, 3, 4])),
                ("U", Value::UInt(u64::MAX)),
            ])]),
        ]);
        let mut bytes = encode_to_vec(&sample);
        // Include non-canonical widths too.
        bytes.extend_from_slice(&hex("D9 02 61 62"));
        let full = {
            let mut v = hex("92");
            v.extend_from_slice(&bytes);
            v
        };
        assert!(decode(&full).is_ok());
        for cut in 0..full.len() {
            match decode(&full[..cut]) {
                Err(DecodeError::Incomplete { needed }) => {
                    assert!(
                        needed >= 1 && needed <= full.len() - cut,
                        "cut {cut}: needed {needed}"
                    )
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn head_agrees_with_decode_on_every_marker() {
        // For each marker byte followed by plenty of zero bytes, the head's extent must match
        // what decode consumes (containers: zero-filled children are one byte each).
        for marker in 0u8..=255 {
            let mut buf = vec![marker];
            buf.extend_from_slice(&[0u8; 64]);
            // Give length fields a small value so the payload is present.
            let h = head(&buf, 0);
            let d = decode(&buf);
            match (h, d) {
                (Ok(h), Ok((_, used))) => {
                    assert_eq!(h.len + h.children, used as u64, "marker {marker:02X}");
                    assert_eq!(h.container, matches!(marker, 0x80..=0x9F | 0xDC..=0xDF));
                }
                (Err(a), Err(b)) => assert_eq!(a, b, "marker {marker:02X}"),
                (h, d) => panic!("marker {marker:02X}: head {h:?} vs decode {d:?}"),
            }
        }
    }
}
