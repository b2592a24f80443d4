//! Exact counts of a process's socket system calls, from the kernel's syscall tracepoints.
//!
//! `/proc/<pid>/io` counts only the `read`/`write` family (`syscr`/`syscw`); tokio, CPython and
//! many other runtimes move socket bytes with `recv`/`send`, which it does not see. The kernel's
//! per-syscall tracepoints (`syscalls:sys_enter_<name>`) see every call: a [`SyscallCounter`]
//! opens one counting `perf_event_open` event per tracepoint and per thread of a process tree
//! (with `inherit`, so threads started later are counted too) and reads the sums.
//!
//! Counting is in the kernel (no sampling, no ring buffer, no ptrace stop): the cost is one
//! counter increment per traced system call. It needs the tracepoint ids from tracefs
//! (`/sys/kernel/tracing`, or `/sys/kernel/debug/tracing`) and the right to count another
//! process's tracepoints (root, `CAP_PERFMON`, or `kernel.perf_event_paranoid` ≤ -1). Where either
//! is missing, [`SyscallCounter::attach`] says why and loadgen falls back to `/proc/<pid>/io`.
//!
//! What is counted, as "reads" and "writes":
//! * reads: `read`, `readv`, `pread64`, `recvfrom`, `recvmsg`, `recvmmsg`;
//! * writes: `write`, `writev`, `pwrite64`, `sendto`, `sendmsg`, `sendmmsg`.
//!
//! Every attempt counts, including one that returns `EAGAIN`: a runtime that tries a read before
//! waiting for readiness (Go's netpoller does) shows a read count that depends on timing, while
//! writes (one per frame for a well-behaved server) do not.

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The syscalls counted as reads.
pub const READ_CALLS: [&str; 6] = [
    "read", "readv", "pread64", "recvfrom", "recvmsg", "recvmmsg",
];
/// The syscalls counted as writes.
pub const WRITE_CALLS: [&str; 6] = [
    "write", "writev", "pwrite64", "sendto", "sendmsg", "sendmmsg",
];

/// Where tracefs may be mounted.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Why counting is not possible here.
#[derive(Debug, thiserror::Error)]
pub enum SyscountError {
    #[error("the kernel's syscall tracepoints are not visible (no tracefs at /sys/kernel/tracing or /sys/kernel/debug/tracing with events/syscalls); as root: `mount -t tracefs nodev /sys/kernel/tracing`")]
    NoTracefs,
    #[error("perf_event_open refused to count syscalls of pid {pid}: {reason}; run as root, or allow it with `sysctl kernel.perf_event_paranoid=-1`")]
    Open { pid: u32, reason: std::io::Error },
    #[error("process {0} has no threads to count (did it exit?)")]
    NoThreads(u32),
}

/// Read- and write-family system calls so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyscallCounts {
    pub reads: u64,
    pub writes: u64,
}

impl SyscallCounts {
    /// `self − earlier`.
    pub fn since(&self, earlier: &SyscallCounts) -> SyscallCounts {
        SyscallCounts {
            reads: self.reads.saturating_sub(earlier.reads),
            writes: self.writes.saturating_sub(earlier.writes),
        }
    }
}

/// The tracepoint ids of [`READ_CALLS`] and [`WRITE_CALLS`] (those this kernel has).
#[derive(Debug, Clone)]
struct Tracepoints {
    reads: Vec<u64>,
    writes: Vec<u64>,
}

fn tracefs_dir() -> Option<PathBuf> {
    TRACEFS
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("events/syscalls/sys_enter_write/id").is_file())
}

fn tracepoint_ids(dir: &Path, names: &[&str]) -> Vec<u64> {
    names
        .iter()
        .filter_map(|n| {
            std::fs::read_to_string(dir.join(format!("events/syscalls/sys_enter_{n}/id")))
                .ok()?
                .trim()
                .parse()
                .ok()
        })
        .collect()
}

fn tracepoints() -> Result<Tracepoints, SyscountError> {
    let dir = tracefs_dir().ok_or(SyscountError::NoTracefs)?;
    let t = Tracepoints {
        reads: tracepoint_ids(&dir, &READ_CALLS),
        writes: tracepoint_ids(&dir, &WRITE_CALLS),
    };
    if t.reads.is_empty() || t.writes.is_empty() {
        return Err(SyscountError::NoTracefs);
    }
    Ok(t)
}

/// `struct perf_event_attr` up to `PERF_ATTR_SIZE_VER5` (112 bytes), the fields counting needs.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    /// The bit field: bit 0 `disabled`, bit 1 `inherit`, ...
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved: u16,
}

const PERF_TYPE_TRACEPOINT: u32 = 2;
const FLAG_INHERIT: u64 = 1 << 1;

/// Opens a counting event for tracepoint `id` on thread `tid` (and the threads it starts).
fn open_counter(tid: u32, id: u64) -> std::io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        type_: PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: id,
        flags: FLAG_INHERIT,
        ..PerfEventAttr::default()
    };
    let flags: libc::c_ulong = 0x8; // PERF_FLAG_FD_CLOEXEC
                                    // SAFETY: `attr` is a valid, fully initialised perf_event_attr whose `size` says how much
                                    // of it the kernel may read; the other arguments are plain integers.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            tid as libc::pid_t,
            -1 as libc::c_int,
            -1 as libc::c_int,
            flags,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// The threads of `pid` (from `/proc/<pid>/task`).
fn threads(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Counting events on every thread of a set of processes.
pub struct SyscallCounter {
    reads: Vec<File>,
    writes: Vec<File>,
}

impl SyscallCounter {
    /// Starts counting the read- and write-family system calls of `pids` (every thread of each;
    /// threads they start later are included).
    pub fn attach(pids: &[u32]) -> Result<SyscallCounter, SyscountError> {
        let tp = tracepoints()?;
        let mut c = SyscallCounter {
            reads: Vec::new(),
            writes: Vec::new(),
        };
        for &pid in pids {
            let tids = threads(pid);
            if tids.is_empty() {
                return Err(SyscountError::NoThreads(pid));
            }
            for tid in tids {
                for (ids, out) in [(&tp.reads, &mut c.reads), (&tp.writes, &mut c.writes)] {
                    for &id in ids {
                        match open_counter(tid, id) {
                            Ok(fd) => out.push(File::from(fd)),
                            // A thread that ended between the listing and the open.
                            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                            Err(reason) => return Err(SyscountError::Open { pid, reason }),
                        }
                    }
                }
            }
        }
        Ok(c)
    }

    /// The counts since [`attach`](Self::attach).
    pub fn read(&self) -> SyscallCounts {
        let sum = |files: &[File]| -> u64 {
            files
                .iter()
                .map(|mut f| {
                    let mut b = [0u8; 8];
                    match f.read(&mut b) {
                        Ok(8) => u64::from_ne_bytes(b),
                        _ => 0,
                    }
                })
                .sum()
        };
        SyscallCounts {
            reads: sum(&self.reads),
            writes: sum(&self.writes),
        }
    }

    /// Counting events open (one per tracepoint and thread).
    pub fn events(&self) -> usize {
        self.reads.len() + self.writes.len()
    }
}

/// Whether exact counting works here, or why not (for a one-line note in reports).
pub fn availability() -> Result<(), SyscountError> {
    SyscallCounter::attach(&[std::process::id()]).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attr_struct_has_the_kernels_ver5_size() {
        assert_eq!(std::mem::size_of::<PerfEventAttr>(), 112);
    }

    /// Counts this process's own writes to a socket pair: exact where the kernel allows it; where
    /// it does not (no tracefs, no permission), the error must say so.
    #[test]
    fn counts_sends_exactly_or_says_why_not() {
        use std::io::Write;
        let c = match SyscallCounter::attach(&[std::process::id()]) {
            Ok(c) => c,
            Err(e) => {
                let text = e.to_string();
                assert!(
                    text.contains("tracefs") || text.contains("perf_event"),
                    "{text}"
                );
                eprintln!("syscall counting unavailable here: {text}");
                return;
            }
        };
        let (mut a, mut b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let before = c.read();
        for _ in 0..100 {
            a.write_all(b"x").expect("write");
        }
        let mut buf = [0u8; 100];
        b.read_exact(&mut buf).expect("read");
        let d = c.read().since(&before);
        // Other test threads of this process may write too; ours are 100 at least.
        assert!(d.writes >= 100, "{d:?}");
        assert!(d.reads >= 1, "{d:?}");
    }
}
