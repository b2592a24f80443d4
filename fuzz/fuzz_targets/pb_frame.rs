//! ProtoBuf framing (docs/protocol.md §5.1) from arbitrary bytes in arbitrary pieces: the frames match a
//! straightforward reading of `LE32(len) ++ payload`, and an oversized length is reported, never
//! buffered for.
//!
//! Input layout: byte 0 the frame limit, byte 1 seeds the split sizes, the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mock_kong::protobuf::{FrameDecoder, FrameError};

fuzz_target!(|data: &[u8]| {
    let [limit, seed, bytes @ ..] = data else {
        return;
    };
    let limit = usize::from(*limit) * 4;
    // The expected frames.
    let mut expected = Vec::new();
    let mut expected_err = None;
    let mut rest = bytes;
    while let Some(prefix) = rest.first_chunk::<4>() {
        let len = u32::from_le_bytes(*prefix) as usize;
        if len > limit {
            expected_err = Some(FrameError::TooLarge {
                len: len as u64,
                limit,
            });
            break;
        }
        let Some(payload) = rest.get(4..4 + len) else {
            break;
        };
        expected.push(payload.to_vec());
        rest = &rest[4 + len..];
    }

    let mut d = FrameDecoder::new(limit);
    let mut got = Vec::new();
    let mut got_err = None;
    let mut rest = bytes;
    let mut i = 0usize;
    'feed: loop {
        loop {
            match d.next_frame() {
                Ok(Some(f)) => got.push(f),
                Ok(None) => break,
                Err(e) => {
                    got_err = Some(e);
                    break 'feed;
                }
            }
        }
        if rest.is_empty() {
            break;
        }
        let step = 1 + (usize::from(*seed) + i * 5) % (1 + usize::from(*seed % 17));
        let (now, later) = rest.split_at(step.min(rest.len()));
        d.feed(now);
        rest = later;
        i += 1;
    }
    assert_eq!(got, expected);
    assert_eq!(got_err, expected_err);
});
