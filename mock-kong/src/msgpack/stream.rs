use super::DecodeError;
use crate::Value;

/// Reassembles MessagePack objects from a byte stream.
#[derive(Debug)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    max_frame: usize,
}

impl StreamDecoder {
    /// A decoder that refuses objects larger than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        StreamDecoder { buf: Vec::new(), max_frame }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete object, `Ok(None)` when more bytes are needed.
    pub fn next_value(&mut self) -> Result<Option<Value>, DecodeError> {
        let _ = self.max_frame;
        todo!("stream decode")
    }

    /// Bytes received but not yet consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}
