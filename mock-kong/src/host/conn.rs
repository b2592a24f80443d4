//! Timed socket operations: every connect, read and write has a deadline (docs/protocol.md §7: Kong's are
//! per operation, not per event; so are these).
//!
//! Per-operation timeouts alone do not bound a wait: a server that trickles one byte just before
//! each read timeout ("slow loris") keeps every read alive forever. Reads therefore also take a
//! [`Deadline`] for the whole exchange (one RPC call, one ProtoBuf message), which mock-kong adds
//! on top of Kong's behaviour (see [`HostOptions::call_deadline`](super::HostOptions)).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::Instant;

use super::{HostError, Timeouts};

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

static BYTES_OUT: AtomicU64 = AtomicU64::new(0);
static BYTES_IN: AtomicU64 = AtomicU64::new(0);
static MESSAGES_OUT: AtomicU64 = AtomicU64::new(0);
static READS_IN: AtomicU64 = AtomicU64::new(0);

/// What every host connection of this process has sent and received so far: counts that do not
/// depend on the machine (loadgen divides their growth over a window by the requests of the
/// window: bytes per request, messages per request). Relaxed atomics, one add per operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoTotals {
    /// Bytes written to plugin servers.
    pub bytes_out: u64,
    /// Bytes read from plugin servers.
    pub bytes_in: u64,
    /// Messages written ([`Conn::write_all`] calls: one per frame or RPC message).
    pub messages_out: u64,
    /// Reads that returned bytes (how the server's bytes arrived: timing decides how many
    /// frames one read carries, so this one is not a machine-independent count).
    pub reads_in: u64,
}

impl IoTotals {
    /// `self − earlier`, field by field.
    pub fn since(&self, earlier: &IoTotals) -> IoTotals {
        IoTotals {
            bytes_out: self.bytes_out.saturating_sub(earlier.bytes_out),
            bytes_in: self.bytes_in.saturating_sub(earlier.bytes_in),
            messages_out: self.messages_out.saturating_sub(earlier.messages_out),
            reads_in: self.reads_in.saturating_sub(earlier.reads_in),
        }
    }
}

/// The totals of every host connection of this process so far.
pub fn io_totals() -> IoTotals {
    IoTotals {
        bytes_out: BYTES_OUT.load(Ordering::Relaxed),
        bytes_in: BYTES_IN.load(Ordering::Relaxed),
        messages_out: MESSAGES_OUT.load(Ordering::Relaxed),
        reads_in: READS_IN.load(Ordering::Relaxed),
    }
}

/// Size of one read (Kong's MsgPack client uses `receiveany(4096)`; a larger buffer only saves
/// syscalls for large frames).
const READ_CHUNK: usize = 64 * 1024;

/// The overall deadline of one exchange with the server (a response, a message): a point in time
/// and the budget it was computed from (for error messages).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    budget: Duration,
}

impl Deadline {
    /// A deadline `budget` from now.
    pub fn after(budget: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + budget,
            budget,
        }
    }

    /// The budget this deadline was created with.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        Instant::now() >= self.at
    }
}

/// What [`Conn::probe`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Silent,
    Closed,
    Bytes(Vec<u8>),
}

/// One connection to a plugin server, with a process-unique id for transcripts.
#[derive(Debug)]
pub struct Conn {
    pub id: u64,
    stream: UnixStream,
    rbuf: Box<[u8]>,
    /// A write buffer reused by every message sent on this connection.
    pub wbuf: Vec<u8>,
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
            wbuf: Vec::with_capacity(256),
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
            Ok(Ok(())) => {
                BYTES_OUT.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                MESSAGES_OUT.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
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
            Ok(Ok(n)) => {
                BYTES_IN.fetch_add(n as u64, Ordering::Relaxed);
                READS_IN.fetch_add(1, Ordering::Relaxed);
                Ok(&self.rbuf[..n])
            }
        }
    }

    /// Like [`read_some`](Self::read_some), but also gives up when `deadline` passes first,
    /// with [`HostError::Deadline`]: a read timeout bounds each wait for bytes, the deadline the
    /// whole exchange, however the bytes trickle in.
    pub async fn read_some_by(
        &mut self,
        timeout: Duration,
        deadline: &Deadline,
        what: &(dyn Fn() -> String + Sync),
    ) -> Result<&[u8], HostError> {
        let left = deadline.at.saturating_duration_since(Instant::now());
        if left < timeout {
            // The deadline is the nearer limit: a timeout here is the deadline's.
            return match tokio::time::timeout(left, self.read_some(timeout, what)).await {
                Err(_) => Err(HostError::Deadline {
                    what: what(),
                    after: deadline.budget,
                }),
                Ok(r) => r,
            };
        }
        self.read_some(timeout, what).await
    }

    /// Waits up to `within` for what the peer does next, without a timeout error: it stays
    /// silent, closes (or resets) the connection, or sends bytes (returned).
    pub async fn probe(&mut self, within: Duration) -> Probe {
        match tokio::time::timeout(within, self.stream.read(&mut self.rbuf)).await {
            Err(_) => Probe::Silent,
            Ok(Ok(0)) | Ok(Err(_)) => Probe::Closed,
            Ok(Ok(n)) => Probe::Bytes(self.rbuf[..n].to_vec()),
        }
    }

    /// Whether the peer has closed or sent unexpected bytes while the connection sat idle
    /// (nginx drops such pooled connections, docs/protocol.md §4.1).
    pub fn is_stale(&self) -> bool {
        let mut probe = [0u8; 1];
        !matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}
