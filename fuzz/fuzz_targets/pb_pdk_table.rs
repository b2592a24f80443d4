//! Every PDK method's conversions (docs/protocol.md §5.4) on arbitrary bytes: the host unwrapping a server's
//! arguments, the reference server decoding a host's result, and the envelopes `RpcCall` /
//! `RpcReturn`: errors, never panics. What decodes is converted back without panicking too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mock_kong::protobuf::messages::{RpcCall, RpcReturn};
use mock_kong::protobuf::{decode_result, encode_args, methods, unwrap_args, wrap_result};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let _ = RpcCall::decode(data);
    let _ = RpcReturn::decode(data);
    for spec in methods() {
        if let Ok(args) = unwrap_args(spec, data) {
            let _ = encode_args(spec, &args);
        }
        if let Ok(result) = decode_result(spec, data) {
            let _ = wrap_result(spec, &result);
        }
    }
});
