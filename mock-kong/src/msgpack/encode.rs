use crate::Value;

/// Appends `value` to `out` exactly as Kong encodes it (spec §4.2).
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    let _ = (value, out);
    todo!("msgpack encode")
}

/// [`encode`] into a new buffer.
pub fn encode_to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode(value, &mut out);
    out
}
