//! One MessagePack object from arbitrary bytes (docs/protocol.md §4.2): never a panic; a decoded object is
//! prefix-free (one byte less is `Incomplete`), Kong's encoding of it decodes again, and that
//! encoding is a fixed point (except for subnormal floats, which Kong's encoder mangles on
//! purpose, docs/protocol.md §4.2); the RPC envelope check accepts or refuses any value without panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mock_kong::msgpack::{decode, encode_to_vec, DecodeError, RpcMessage};
use mock_kong::Value;

/// Whether `v` holds a subnormal float anywhere.
fn has_subnormal(v: &Value) -> bool {
    match v {
        Value::Float(f) => f.is_subnormal(),
        Value::Array(a) => a.iter().any(has_subnormal),
        Value::Map(m) => m.iter().any(|(k, v)| has_subnormal(k) || has_subnormal(v)),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let (value, used) = match decode(data) {
        Ok(ok) => ok,
        Err(DecodeError::TooLarge { .. }) => panic!("decode never reports TooLarge"),
        Err(_) => return,
    };
    assert!(
        used > 0 && used <= data.len(),
        "used {used} of {}",
        data.len()
    );
    assert!(
        matches!(
            decode(&data[..used - 1]),
            Err(DecodeError::Incomplete { .. })
        ),
        "a strict prefix of an object decoded"
    );
    let once = encode_to_vec(&value);
    let (again, n) = decode(&once).expect("Kong's encoding of a decoded value decodes");
    assert_eq!(n, once.len());
    if !has_subnormal(&value) {
        assert_eq!(encode_to_vec(&again), once, "encoding is not a fixed point");
    }
    let _ = RpcMessage::from_value(value);
});
