use crate::Value;

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
pub fn decode(buf: &[u8]) -> Result<(Value, usize), DecodeError> {
    let _ = buf;
    todo!("msgpack decode")
}
