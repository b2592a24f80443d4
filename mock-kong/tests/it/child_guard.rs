//! A `mock-kong` or `loadgen` child process that a failing test cannot leave running
//! ([`ChildGuard`]). Shared by the test binaries of mock-kong and loadgen.

use std::ops::{Deref, DerefMut};
use std::process::Child;
use std::time::{Duration, Instant};

/// How long a guarded child has to stop after SIGTERM before it is SIGKILLed. On SIGTERM
/// mock-kong and loadgen stop their plugin servers themselves (SIGTERM, then SIGKILL, to each
/// server's process group) within the edge's report grace (`mock_kong::edge::REPORT_GRACE`,
/// 10 s) and the servers' own stop grace. A SIGKILL of mock-kong leaves that to the
/// parent-death signal, which reaches a server but not the processes the server forked: so
/// SIGTERM first, SIGKILL only when this bound is spent.
const STOP_WITHIN: Duration = Duration::from_secs(20);

/// A spawned child that is stopped when the guard is dropped, unless the test has already
/// waited for it: a failed assertion unwinding through the test does not leave the child (and
/// the plugin servers it started) running after the test.
///
/// It dereferences to the [`Child`]: tests take its pipes, signal it and wait for it as
/// usual. `Child` keeps the status of a wait, so a child the test has reaped is left alone
/// (its pid may belong to another process by then). The children are not started in a process
/// group of their own: the guard signals the pid, and the child stops what it started.
pub struct ChildGuard(Child);

impl ChildGuard {
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard(child)
    }

    /// Whether the child is still running (an exited child is reaped here).
    fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Deref for ChildGuard {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if !self.running() {
            return;
        }
        // SAFETY: a plain syscall; the child is not reaped, so the pid is still ours.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_WITHIN;
        while Instant::now() < deadline {
            if !self.running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
