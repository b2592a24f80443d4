//! Property tests of the ProtoBuf codec: the frame decoder agrees with a plain reading of
//! `LE32(len) ++ payload` (docs/protocol.md §5.1) at any split and never buffers for an oversized frame;
//! every PDK method's conversions (docs/protocol.md §5.4) and the `RpcCall`/`RpcReturn` envelopes return
//! errors, never panic, on arbitrary bytes.

use proptest::prelude::*;
use prost::Message;

use super::messages::{RpcCall, RpcReturn};
use super::{
    decode_result, encode_args, encode_frame, methods, unwrap_args, wrap_result, FrameDecoder,
    FrameError,
};

/// The frames of `bytes` read the obvious way, and the error that stops the reading.
fn plain_frames(mut bytes: &[u8], limit: usize) -> (Vec<Vec<u8>>, Option<FrameError>) {
    let mut out = Vec::new();
    while let Some(prefix) = bytes.first_chunk::<4>() {
        let len = u32::from_le_bytes(*prefix);
        if len as usize > limit {
            return (
                out,
                Some(FrameError::TooLarge {
                    len: u64::from(len),
                    limit,
                }),
            );
        }
        let Some(payload) = bytes.get(4..4 + len as usize) else {
            break;
        };
        out.push(payload.to_vec());
        bytes = &bytes[4 + len as usize..];
    }
    (out, None)
}

/// Frames as a stream: mostly well-formed frames, sometimes raw junk.
fn frame_stream() -> impl Strategy<Value = Vec<u8>> {
    let frame = prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(|p| {
            let mut out = Vec::new();
            encode_frame(&p, &mut out);
            out
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..12),
    ];
    proptest::collection::vec(frame, 0..8).prop_map(|parts| parts.concat())
}

/// Bytes that look like protobuf: field tags, varints and short length-delimited runs.
fn protobuf_ish() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        any::<u8>(),
        // Tags of fields 1..16 in every wire type.
        (1u8..16, 0u8..6).prop_map(|(f, t)| (f << 3) | t),
        Just(0x80u8),
        Just(0xffu8),
        Just(0x01u8),
    ];
    proptest::collection::vec(byte, 0..64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn frame_decoder_agrees_with_a_plain_reading_at_any_split(
        bytes in frame_stream(),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
        limit in prop_oneof![Just(0usize), 0usize..64, Just(1 << 20)],
    ) {
        let expected = plain_frames(&bytes, limit);
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.push(bytes.len());
        cuts.sort_unstable();
        let mut d = FrameDecoder::new(limit);
        let mut frames = Vec::new();
        let mut err = None;
        let mut at = 0;
        'feed: for cut in cuts {
            d.feed(&bytes[at..cut]);
            at = cut;
            loop {
                match d.next_frame() {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => break,
                    Err(e) => {
                        err = Some(e);
                        break 'feed;
                    }
                }
            }
        }
        prop_assert_eq!((frames, err), expected);
        // Never more buffered than the input.
        prop_assert!(d.buffered() <= bytes.len());
    }

    #[test]
    fn every_pdk_conversion_refuses_junk_without_panicking(bytes in protobuf_ish()) {
        for spec in methods() {
            if let Ok(args) = unwrap_args(spec, &bytes) {
                let _ = encode_args(spec, &args);
            }
            if let Ok(result) = decode_result(spec, &bytes) {
                let _ = wrap_result(spec, &result);
            }
        }
        let _ = RpcCall::decode(bytes.as_slice());
        let _ = RpcReturn::decode(bytes.as_slice());
    }

    #[test]
    fn every_pdk_conversion_survives_arbitrary_values(v in crate::msgpack::proptests::arb_value()) {
        // The host wraps whatever the emulated PDK returns; the reference server encodes
        // whatever a plugin passes.
        for spec in methods() {
            let _ = wrap_result(spec, &v);
            let _ = encode_args(spec, std::slice::from_ref(&v));
            let _ = encode_args(spec, &[v.clone(), v.clone(), v.clone()]);
        }
    }
}
