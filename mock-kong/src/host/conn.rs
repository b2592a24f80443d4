//! Timed socket operations: every connect, read and write has a deadline (spec §7: Kong's are
//! per operation, not per event; so are these).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{HostError, Timeouts};

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Size of one read (Kong's MsgPack client uses `receiveany(4096)`; a larger buffer only saves
/// syscalls for large frames).
const READ_CHUNK: usize = 64 * 1024;

/// One connection to a plugin server, with a process-unique id for transcripts.
#[derive(Debug)]
pub struct Conn {
    pub id: u64,
    stream: UnixStream,
    rbuf: Box<[u8]>,
}

/// Connects to `socket` within `timeouts.connect`.
pub async fn connect(socket: &Path, timeouts: &Timeouts) -> Result<Conn, HostError> {
    match tokio::time::timeout(timeouts.connect, UnixStream::connect(socket)).await {
        Err(_) => Err(HostError::ConnectTimeout {
            socket: socket.to_owned(),
            after: timeouts.connect,
        }),
        Ok(Err(e)) => Err(HostError::Connect {
            socket: socket.to_owned(),
            reason: e.to_string(),
        }),
        Ok(Ok(stream)) => Ok(Conn {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            stream,
            rbuf: vec![0u8; READ_CHUNK].into_boxed_slice(),
        }),
    }
}

impl Conn {
    /// Writes all of `bytes` within `timeout`. `what` names the message for errors.
    pub async fn write_all(
        &mut self,
        bytes: &[u8],
        timeout: Duration,
        what: &(dyn Fn() -> String + Sync),
    ) -> Result<(), HostError> {
        match tokio::time::timeout(timeout, self.stream.write_all(bytes)).await {
            Err(_) => Err(HostError::WriteTimeout {
                what: what(),
                after: timeout,
            }),
            Ok(Err(e)) => Err(HostError::Write {
                what: what(),
                reason: e.to_string(),
            }),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Reads what is available (at least one byte) within `timeout`. End of stream is
    /// [`HostError::Closed`].
    pub async fn read_some(
        &mut self,
        timeout: Duration,
        what: &(dyn Fn() -> String + Sync),
    ) -> Result<&[u8], HostError> {
        match tokio::time::timeout(timeout, self.stream.read(&mut self.rbuf)).await {
            Err(_) => Err(HostError::ReadTimeout {
                what: what(),
                after: timeout,
            }),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                Err(HostError::Closed { what: what() })
            }
            Ok(Err(e)) => Err(HostError::Read {
                what: what(),
                reason: e.to_string(),
            }),
            Ok(Ok(0)) => Err(HostError::Closed { what: what() }),
            Ok(Ok(n)) => Ok(&self.rbuf[..n]),
        }
    }

    /// Whether the peer has closed or sent unexpected bytes while the connection sat idle
    /// (nginx drops such pooled connections, spec §4.1).
    pub fn is_stale(&self) -> bool {
        let mut probe = [0u8; 1];
        !matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}
