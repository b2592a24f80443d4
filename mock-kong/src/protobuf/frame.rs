/// A frame stream that cannot be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrameError {
    #[error("ProtoBuf frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: u64, limit: usize },
}

/// Appends `LE32(len) ++ payload` to `out` (spec §5.1).
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Reassembles frames from a byte stream.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max_frame: usize,
}

impl FrameDecoder {
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder { buf: Vec::new(), max_frame }
    }
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
    /// The next complete frame's payload (possibly empty), `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let _ = self.max_frame;
        todo!()
    }
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}
