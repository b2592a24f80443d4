//! The MessagePack encoder, byte-exact with Kong's Lua side (docs/protocol.md §4.2).
//!
//! Kong packs with lua-MessagePack 0.5.x under LuaJIT with the library defaults
//! (`string_compat`, `unsigned`, `double`, `without_hole`). The rules that follow from that:
//!
//! | value | encoding |
//! |---|---|
//! | `Nil` / `Bool` | `C0` / `C2`, `C3` |
//! | `Int`, `UInt` | the smallest of positive fixint, `uint8`..`uint64` (≥ 0) or negative fixint, `int8`..`int64` (< 0) |
//! | `Float` | integral and `|n| < 2^53 - 1` → as an integer (`2.0` → `02`); else `float64` (`CB`), never `float32` |
//! | `Str` | fixstr (≤ 31 bytes), `str16` (`DA`, 32..=65535 bytes), `str32` (`DB`); **never `str8` (`D9`)** |
//! | `Bin` | the smallest of `bin8`/`bin16`/`bin32` |
//! | `Array` | fixarray/`array16`/`array32`; the empty array is `90` |
//! | `Map` | fixmap/`map16`/`map32`; entries with a `Nil` value (or key) are left out, as in a Lua table |
//! | `Ext` | `fixext1/2/4/8/16` for those exact sizes, else `ext8`/`ext16`/`ext32` |
//!
//! Whether a Lua table becomes an array or a map is decided by whoever builds the [`Value`]:
//! an empty `Value::Map` stays a map (`80`), which is what Kong's `fix_mmap` sends for an empty
//! multi-map (docs/protocol.md §4.4).

use crate::Value;

/// The bound of lua-MessagePack's `number` packer on LuaJIT: an integral double `n` is packed as
/// an integer only when `-MAX_INTEGRAL < n < MAX_INTEGRAL` (`maxinteger = 2^53 - 1`, strict).
const MAX_INTEGRAL: f64 = 9_007_199_254_740_991.0;

/// Appends `value` to `out` exactly as Kong encodes it (docs/protocol.md §4.2).
///
/// # Panics
///
/// If a `str`, `bin`, `ext`, array or map has more than `u32::MAX` bytes or elements: MessagePack
/// cannot represent it (Kong's packer raises "overflow in pack" there too). Values decoded from a
/// plugin server are bounded by the stream decoder's frame limit and never reach this size.
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Nil => out.push(0xC0),
        Value::Bool(false) => out.push(0xC2),
        Value::Bool(true) => out.push(0xC3),
        Value::Int(i) => encode_int(*i, out),
        Value::UInt(u) => encode_uint(*u, out),
        Value::Float(f) => encode_number(*f, out),
        Value::Str(s) => encode_str(s, out),
        Value::Bin(b) => encode_bin(b, out),
        Value::Array(items) => {
            encode_array_header(items.len(), out);
            for item in items {
                encode(item, out);
            }
        }
        Value::Map(entries) => {
            let written = entries.iter().filter(|(k, v)| is_lua_entry(k, v)).count();
            encode_map_header(written, out);
            for (k, v) in entries.iter().filter(|(k, v)| is_lua_entry(k, v)) {
                encode(k, out);
                encode(v, out);
            }
        }
        Value::Ext(tag, data) => encode_ext(*tag, data, out),
    }
}

/// [`encode`] into a new buffer.
pub fn encode_to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode(value, &mut out);
    out
}

/// A map entry survives the trip through a Lua table only if neither key nor value is `nil`.
#[inline]
fn is_lua_entry(key: &Value, value: &Value) -> bool {
    !key.is_nil() && !value.is_nil()
}

/// An integer in the smallest width (lua-MessagePack's `unsigned` integer mode).
pub fn encode_int(n: i64, out: &mut Vec<u8>) {
    if n >= 0 {
        encode_uint(n as u64, out);
    } else if n >= -32 {
        out.push(n as u8); // negative fixint 0xE0..=0xFF
    } else if n >= i64::from(i8::MIN) {
        out.extend_from_slice(&[0xD0, n as u8]);
    } else if n >= i64::from(i16::MIN) {
        out.push(0xD1);
        out.extend_from_slice(&(n as i16).to_be_bytes());
    } else if n >= i64::from(i32::MIN) {
        out.push(0xD2);
        out.extend_from_slice(&(n as i32).to_be_bytes());
    } else {
        out.push(0xD3);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// A non-negative integer in the smallest width.
pub fn encode_uint(n: u64, out: &mut Vec<u8>) {
    if n <= 0x7F {
        out.push(n as u8);
    } else if n <= 0xFF {
        out.extend_from_slice(&[0xCC, n as u8]);
    } else if n <= 0xFFFF {
        out.push(0xCD);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= 0xFFFF_FFFF {
        out.push(0xCE);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(0xCF);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// A Lua number: integral values inside the 53-bit range go out as integers, the rest as
/// `float64` with lua-MessagePack's bit layout (see [`lua_double_bits`]).
fn encode_number(x: f64, out: &mut Vec<u8>) {
    // `floor(n) == n` is false for NaN and true for ±inf; the range check excludes ±inf.
    if x.floor() == x && x < MAX_INTEGRAL && x > -MAX_INTEGRAL {
        // Exact: |x| < 2^53, and -0.0 becomes 0 just as in Lua.
        encode_int(x as i64, out);
    } else {
        out.push(0xCB);
        out.extend_from_slice(&lua_double_bits(x).to_be_bytes());
    }
}

/// The IEEE bits lua-MessagePack writes for a double. It builds them from `frexp` instead of
/// copying memory, which agrees with the machine representation for every normal number and
/// infinity, and differs in two corners that we reproduce: every NaN becomes `FF F8 00..00`, and
/// subnormals are mangled (those below 2^-1023 become a signed zero, those in [2^-1023, 2^-1022)
/// get a shifted mantissa).
fn lua_double_bits(x: f64) -> u64 {
    if x.is_nan() {
        return 0xFFF8_0000_0000_0000;
    }
    let bits = x.to_bits();
    let sign = bits & 0x8000_0000_0000_0000;
    let magnitude = bits & !0x8000_0000_0000_0000;
    let exponent = magnitude >> 52;
    if exponent != 0 {
        return bits; // normal numbers and ±inf
    }
    // Subnormal (or zero, which never gets here: 0.0 is integral). The fraction field `f` encodes
    // |x| = f * 2^-1074. frexp gives |x| = m * 2^e with m in [0.5, 1).
    let f = magnitude;
    if f < (1u64 << 51) {
        // e < -1022 (|x| < 2^-1023): Lua writes a signed zero.
        sign
    } else {
        // e == -1022: exponent field 0 and mantissa floor((2m - 1) * 2^52) = 2f - 2^52.
        sign | (2 * f - (1u64 << 52))
    }
}

/// The `str` family as `string_compat` writes it: fixstr, `str16` or `str32`, never `str8`.
pub fn encode_str(s: &[u8], out: &mut Vec<u8>) {
    let n = s.len();
    out.reserve(n + 5);
    if n <= 31 {
        out.push(0xA0 | n as u8);
    } else if n <= 0xFFFF {
        out.push(0xDA);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xDB);
        out.extend_from_slice(&len32(n, "str").to_be_bytes());
    }
    out.extend_from_slice(s);
}

/// The `bin` family in the smallest width.
pub fn encode_bin(b: &[u8], out: &mut Vec<u8>) {
    let n = b.len();
    out.reserve(n + 5);
    if n <= 0xFF {
        out.extend_from_slice(&[0xC4, n as u8]);
    } else if n <= 0xFFFF {
        out.push(0xC5);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xC6);
        out.extend_from_slice(&len32(n, "bin").to_be_bytes());
    }
    out.extend_from_slice(b);
}

/// The header of an array of `n` elements.
pub fn encode_array_header(n: usize, out: &mut Vec<u8>) {
    if n <= 15 {
        out.push(0x90 | n as u8);
    } else if n <= 0xFFFF {
        out.push(0xDC);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xDD);
        out.extend_from_slice(&len32(n, "array").to_be_bytes());
    }
}

/// The header of a map of `n` entries (the caller writes exactly `n` key/value pairs).
pub fn encode_map_header(n: usize, out: &mut Vec<u8>) {
    if n <= 15 {
        out.push(0x80 | n as u8);
    } else if n <= 0xFFFF {
        out.push(0xDE);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xDF);
        out.extend_from_slice(&len32(n, "map").to_be_bytes());
    }
}

fn encode_ext(tag: i8, data: &[u8], out: &mut Vec<u8>) {
    let n = data.len();
    out.reserve(n + 6);
    let fixed = match n {
        1 => Some(0xD4),
        2 => Some(0xD5),
        4 => Some(0xD6),
        8 => Some(0xD7),
        16 => Some(0xD8),
        _ => None,
    };
    if let Some(marker) = fixed {
        out.push(marker);
    } else if n <= 0xFF {
        out.extend_from_slice(&[0xC7, n as u8]);
    } else if n <= 0xFFFF {
        out.push(0xC8);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xC9);
        out.extend_from_slice(&len32(n, "ext").to_be_bytes());
    }
    out.push(tag as u8);
    out.extend_from_slice(data);
}

/// A 32-bit length; beyond that MessagePack has no encoding (see [`encode`]'s panic note).
fn len32(n: usize, what: &str) -> u32 {
    match u32::try_from(n) {
        Ok(n) => n,
        Err(_) => panic!(
            "cannot MessagePack-encode a {what} of {n} bytes/elements: the format's limit is {}",
            u32::MAX
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &Value) -> Vec<u8> {
        encode_to_vec(v)
    }

    /// Concatenates hex bytes and quoted text: `bytes(&[h("94 00"), t("abc")])`.
    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).expect("test hex"))
            .collect()
    }

    #[test]
    fn scalars() {
        let table: &[(Value, &str)] = &[
            (Value::Nil, "C0"),
            (Value::Bool(false), "C2"),
            (Value::Bool(true), "C3"),
            (Value::Float(2.0), "02"),
            (Value::Float(-0.0), "00"),
            (Value::Float(-33.0), "D0 DF"),
            (Value::Float(1.1), "CB 3F F1 99 99 99 99 99 9A"),
            (Value::Float(0.5), "CB 3F E0 00 00 00 00 00 00"),
            (Value::Float(f64::INFINITY), "CB 7F F0 00 00 00 00 00 00"),
            (
                Value::Float(f64::NEG_INFINITY),
                "CB FF F0 00 00 00 00 00 00",
            ),
            (Value::Float(f64::NAN), "CB FF F8 00 00 00 00 00 00"),
            (Value::Float(-f64::NAN), "CB FF F8 00 00 00 00 00 00"),
            // Lua's 53-bit bound is strict at 2^53 - 1.
            (
                Value::Float(9_007_199_254_740_990.0),
                "CF 00 1F FF FF FF FF FF FE",
            ),
            (
                Value::Float(9_007_199_254_740_991.0),
                "CB 43 3F FF FF FF FF FF FF",
            ),
            (
                Value::Float(-9_007_199_254_740_990.0),
                "D3 FF E0 00 00 00 00 00 02",
            ),
            (
                Value::Float(-9_007_199_254_740_991.0),
                "CB C3 3F FF FF FF FF FF FF",
            ),
            (Value::Float(1e300), "CB 7E 37 E4 3C 88 00 75 9C"),
            // Subnormals as lua-MessagePack's frexp arithmetic writes them.
            (
                Value::Float(f64::from_bits(1)),
                "CB 00 00 00 00 00 00 00 00",
            ),
            (
                Value::Float(-f64::from_bits(1)),
                "CB 80 00 00 00 00 00 00 00",
            ),
            (
                Value::Float(f64::from_bits(0x000C_0000_0000_0000)),
                "CB 00 08 00 00 00 00 00 00",
            ),
            (Value::Ext(5, vec![1]), "D4 05 01"),
            (Value::Ext(-1, vec![1, 2]), "D5 FF 01 02"),
            (Value::Ext(1, vec![0; 4]), "D6 01 00 00 00 00"),
            (Value::Ext(1, vec![0; 8]), "D7 01 00 00 00 00 00 00 00 00"),
            (Value::Ext(1, vec![]), "C7 00 01"),
            (Value::Ext(1, vec![9, 9, 9]), "C7 03 01 09 09 09"),
        ];
        for (v, want) in table {
            assert_eq!(enc(v), hex(want), "{v:?}");
        }
        assert_eq!(enc(&Value::Ext(2, vec![7; 16]))[..2], [0xD8, 0x02]);
        assert_eq!(enc(&Value::Ext(2, vec![7; 17]))[..3], [0xC7, 17, 0x02]);
        assert_eq!(
            enc(&Value::Ext(2, vec![7; 256]))[..4],
            [0xC8, 0x01, 0x00, 0x02]
        );
        assert_eq!(
            enc(&Value::Ext(2, vec![7; 65536]))[..6],
            [0xC9, 0, 1, 0, 0, 0x02]
        );
    }

    #[test]
    fn integers_at_every_width_boundary() {
        let table: &[(i64, &str)] = &[
            (0, "00"),
            (127, "7F"),
            (128, "CC 80"),
            (255, "CC FF"),
            (256, "CD 01 00"),
            (65535, "CD FF FF"),
            (65536, "CE 00 01 00 00"),
            (4_294_967_295, "CE FF FF FF FF"),
            (4_294_967_296, "CF 00 00 00 01 00 00 00 00"),
            (i64::MAX, "CF 7F FF FF FF FF FF FF FF"),
            (-1, "FF"),
            (-32, "E0"),
            (-33, "D0 DF"),
            (-128, "D0 80"),
            (-129, "D1 FF 7F"),
            (-32768, "D1 80 00"),
            (-32769, "D2 FF FF 7F FF"),
            (-2_147_483_648, "D2 80 00 00 00"),
            (-2_147_483_649, "D3 FF FF FF FF 7F FF FF FF"),
            (i64::MIN, "D3 80 00 00 00 00 00 00 00"),
        ];
        for (n, want) in table {
            assert_eq!(enc(&Value::Int(*n)), hex(want), "Int({n})");
            // The same integral value as a Lua float takes the same path while |n| < 2^53 - 1.
            if n.unsigned_abs() < (1 << 53) - 1 {
                assert_eq!(enc(&Value::Float(*n as f64)), hex(want), "Float({n})");
            }
        }
        assert_eq!(
            enc(&Value::UInt(u64::MAX)),
            hex("CF FF FF FF FF FF FF FF FF")
        );
        assert_eq!(
            enc(&Value::UInt(1 << 63)),
            hex("CF 80 00 00 00 00 00 00 00")
        );
        assert_eq!(enc(&Value::UInt(5)), hex("05"));
    }

    #[test]
    fn str_width_boundaries_never_use_str8() {
        for (len, header) in [
            (0usize, hex("A0")),
            (31, hex("BF")),
            (32, hex("DA 00 20")),
            (255, hex("DA 00 FF")),
            (256, hex("DA 01 00")),
            (65535, hex("DA FF FF")),
            (65536, hex("DB 00 01 00 00")),
        ] {
            let s = vec![b'x'; len];
            let got = enc(&Value::Str(s.clone()));
            assert_eq!(got[..header.len()], header[..], "str of {len} bytes");
            assert_eq!(&got[header.len()..], &s[..], "str of {len} bytes: payload");
            assert_ne!(got[0], 0xD9, "str8 must never be written");
        }
        // Non-UTF-8 bytes stay a str.
        assert_eq!(enc(&Value::Str(vec![0xFF])), hex("A1 FF"));
    }

    #[test]
    fn bin_width_boundaries() {
        for (len, header) in [
            (0usize, hex("C4 00")),
            (255, hex("C4 FF")),
            (256, hex("C5 01 00")),
            (65535, hex("C5 FF FF")),
            (65536, hex("C6 00 01 00 00")),
        ] {
            let b = vec![0xABu8; len];
            let got = enc(&Value::Bin(b.clone()));
            assert_eq!(got[..header.len()], header[..], "bin of {len} bytes");
            assert_eq!(&got[header.len()..], &b[..]);
        }
    }

    #[test]
    fn containers() {
        assert_eq!(enc(&Value::Array(vec![])), hex("90"));
        assert_eq!(enc(&Value::Map(vec![])), hex("80"));
        assert_eq!(
            enc(&Value::Array(vec![Value::Nil, 1.into()])),
            hex("92 C0 01")
        );
        let a15 = Value::Array(vec![Value::Int(1); 15]);
        assert_eq!(enc(&a15)[0], 0x9F);
        let a16 = Value::Array(vec![Value::Int(1); 16]);
        assert_eq!(enc(&a16)[..3], hex("DC 00 10")[..]);
        let a65536 = Value::Array(vec![Value::Int(1); 65536]);
        assert_eq!(enc(&a65536)[..5], hex("DD 00 01 00 00")[..]);

        let m = |n: usize| {
            Value::Map(
                (0..n)
                    .map(|i| (Value::Int(i as i64), Value::Bool(true)))
                    .collect(),
            )
        };
        assert_eq!(enc(&m(15))[0], 0x8F);
        assert_eq!(enc(&m(16))[..3], hex("DE 00 10")[..]);
        assert_eq!(enc(&m(65536))[..5], hex("DF 00 01 00 00")[..]);
    }

    #[test]
    fn map_entries_with_nil_disappear() {
        let v = Value::map([
            ("a", Value::Int(1)),
            ("gone", Value::Nil),
            ("b", Value::Int(2)),
        ]);
        assert_eq!(
            enc(&v),
            cat(&[&hex("82 A1"), b"a", &hex("01 A1"), b"b", &hex("02")])
        );
        // All-nil map: the count follows what was written.
        assert_eq!(enc(&Value::map([("x", Value::Nil)])), hex("80"));
        // 17 entries of which 2 are nil: fixmap of 15, not map16.
        let mut entries: Vec<(String, Value)> =
            (0..15).map(|i| (format!("k{i}"), Value::Int(i))).collect();
        entries.push(("n1".into(), Value::Nil));
        entries.push(("n2".into(), Value::Nil));
        assert_eq!(enc(&Value::map(entries))[0], 0x8F);
        // A nil key cannot exist in a Lua table either.
        assert_eq!(
            enc(&Value::Map(vec![(Value::Nil, Value::Int(1))])),
            hex("80")
        );
    }
}
