//! The MessagePack stream decoder (docs/protocol.md §4.1) against one-shot decoding: the same bytes fed in
//! arbitrary pieces give the same objects and the same final error, and a small frame limit only
//! ever cuts the sequence short with `TooLarge`.
//!
//! Input layout: byte 0 seeds the split sizes, the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mock_kong::msgpack::{decode, DecodeError, StreamDecoder};
use mock_kong::Value;

/// Objects and the terminal state of decoding `bytes` front to back in one piece.
fn one_shot(mut bytes: &[u8]) -> (Vec<Value>, Option<DecodeError>) {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        match decode(bytes) {
            Ok((v, n)) => {
                out.push(v);
                bytes = &bytes[n..];
            }
            Err(DecodeError::Incomplete { .. }) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// Feeds `bytes` in pieces whose sizes cycle through `1 + seed % k`, collecting objects.
fn streamed(bytes: &[u8], seed: u8, max_frame: usize) -> (Vec<Value>, Option<DecodeError>) {
    let mut d = StreamDecoder::new(max_frame);
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut i = 0usize;
    loop {
        loop {
            match d.next_value() {
                Ok(Some(v)) => out.push(v),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
        if rest.is_empty() {
            return (out, None);
        }
        let step = 1 + (usize::from(seed) + i * 7) % (1 + usize::from(seed % 13));
        let (now, later) = rest.split_at(step.min(rest.len()));
        d.feed(now);
        rest = later;
        i += 1;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, bytes)) = data.split_first() else {
        return;
    };
    let expected = one_shot(bytes);
    // A limit no declared size can reach: exactly one-shot decoding.
    let got = streamed(bytes, seed, 1 << 50);
    // Compared through Debug: `Value`'s PartialEq says NaN != NaN.
    assert_eq!(format!("{got:?}"), format!("{expected:?}"));
    // A small limit: a prefix of the objects, then possibly TooLarge.
    let (small, err) = streamed(bytes, seed.wrapping_mul(31), 64);
    assert!(small.len() <= expected.0.len());
    assert_eq!(
        format!("{:?}", small),
        format!("{:?}", &expected.0[..small.len()])
    );
    if small.len() < expected.0.len() {
        assert!(matches!(err, Some(DecodeError::TooLarge { .. })), "{err:?}");
    }
});
