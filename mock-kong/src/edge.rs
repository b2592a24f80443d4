//! The command-line edge both binaries share (`mock-kong` and `loadgen`): how a command's result
//! becomes an exit code, what SIGINT/SIGTERM and a closed stdout do, and how the output is
//! written.
//!
//! * **Exit codes** (stable, in the README): [`EXIT_OK`], [`EXIT_SERVER`] (the plugin server
//!   misbehaved, or a regression), [`EXIT_USAGE`] (usage or setup error), `128 + signal` when
//!   interrupted. A command fails with a [`Failure`]: the error and its code, printed once here
//!   as `error: ...` with its causes.
//! * **Signals**: [`ShutdownSignal`] is the one SIGINT/SIGTERM handler of the project (the CLIs
//!   and the reference server). [`run`] races the command against it; a command that writes
//!   reports as it goes is given a grace period to notice ([`stopping`], [`until_stopped`]) and
//!   write what it has, then the process exits `128 + signal`. A second signal ends the wait.
//!   Dropping the command stops every server it started (their whole process groups).
//! * **Broken pipe**: `mock-kong conform --list | head -1` is a normal end, not an error: a
//!   write to a closed stdout through [`outln!`](crate::outln) stops the command like a signal
//!   would, and the process exits 0 without a message. A plain `println!` that hits a closed
//!   stdout panics in Rust's standard library; [`run`] catches exactly that panic and exits 0 as
//!   well (servers are still stopped: the panic unwinds through their destructors).

use std::future::Future;
use std::io::{self, Write as _};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use anyhow::anyhow;
use tokio::sync::Notify;

/// Everything as expected.
pub const EXIT_OK: i32 = 0;
/// The plugin server misbehaved (or, for the gates, a regression).
pub const EXIT_SERVER: i32 = 1;
/// Usage or setup error.
pub const EXIT_USAGE: i32 = 2;

/// How long a command that writes partial reports may take to wrap up after SIGINT/SIGTERM.
pub const REPORT_GRACE: Duration = Duration::from_secs(10);

/// A command's failure: the error and the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub error: anyhow::Error,
    /// Ends the process without a message (a closed stdout).
    quiet: bool,
}

impl Failure {
    pub fn new(code: i32, error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code,
            error: error.into(),
            quiet: false,
        }
    }

    /// A usage or setup error ([`EXIT_USAGE`]).
    pub fn usage(error: impl Into<anyhow::Error>) -> Failure {
        Failure::new(EXIT_USAGE, error)
    }

    /// The plugin server misbehaved ([`EXIT_SERVER`]).
    pub fn server(error: impl Into<anyhow::Error>) -> Failure {
        Failure::new(EXIT_SERVER, error)
    }

    /// Interrupted by `signal`: `128 + signal`.
    pub fn interrupted(signal: i32) -> Failure {
        Failure::new(
            128 + signal,
            anyhow!(
                "interrupted by {}; every plugin server this command started was stopped",
                signal_name(signal)
            ),
        )
    }

    /// Writing the output failed: a closed stdout is a quiet, normal end; anything else a setup
    /// error.
    pub fn output(e: io::Error) -> Failure {
        if e.kind() == io::ErrorKind::BrokenPipe {
            stop(BROKEN_PIPE);
            Failure {
                code: EXIT_OK,
                error: e.into(),
                quiet: true,
            }
        } else {
            Failure::usage(anyhow!("writing the output failed: {e}"))
        }
    }

    /// Whether this is the quiet end of a closed stdout.
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// Prints the error (unless quiet) and returns the exit code.
    pub fn report(self) -> i32 {
        if !self.quiet {
            write_err(format_args!("error: {:#}\n", self.error));
        }
        self.code
    }
}

pub(crate) fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}

// ------------------------------------------------------------------------------------------------
// Stopping: a signal or a closed stdout
// ------------------------------------------------------------------------------------------------

/// Why the command should stop: 0 not at all, a signal number, or [`BROKEN_PIPE`].
static STOP: AtomicI32 = AtomicI32::new(0);
static STOP_NOTIFY: Notify = Notify::const_new();
/// Set by the panic hook when a `println!` hit a closed stdout.
static PRINT_BROKEN: AtomicBool = AtomicBool::new(false);

const BROKEN_PIPE: i32 = -1;

fn stop(why: i32) {
    if STOP
        .compare_exchange(0, why, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        STOP_NOTIFY.notify_waiters();
    }
}

/// Whether the command should stop and write what it has (after SIGINT/SIGTERM, or once its
/// output is gone). Long loops (checks, scenarios) look at it between items.
pub fn stopping() -> bool {
    STOP.load(Ordering::SeqCst) != 0
}

/// The signal that interrupted the process, if any.
pub fn interrupted() -> Option<i32> {
    Some(STOP.load(Ordering::SeqCst)).filter(|s| *s > 0)
}

/// Resolves once the command should stop ([`stopping`]); race an item's work against it.
pub async fn until_stopped() {
    loop {
        let notified = STOP_NOTIFY.notified();
        if stopping() {
            return;
        }
        notified.await;
    }
}

// ------------------------------------------------------------------------------------------------
// Signals
// ------------------------------------------------------------------------------------------------

/// The SIGINT/SIGTERM handler of the project.
///
/// Install it early (registration replaces the default "die" disposition of both signals for the
/// rest of the process) and wait on [`ShutdownSignal::recv`]. Servers live in their own process
/// groups, so a terminal Ctrl-C reaches mock-kong only; without this handler mock-kong dies at
/// once and its servers are SIGKILLed by the parent-death signal (no graceful stop, no socket
/// clean-up).
pub struct ShutdownSignal {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    /// Registers the handlers. Must run inside a tokio runtime with I/O enabled.
    pub fn install() -> io::Result<ShutdownSignal> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignal {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves at the next SIGINT or SIGTERM and returns its number.
    pub async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.interrupt.recv() => libc::SIGINT,
            _ = self.terminate.recv() => libc::SIGTERM,
        }
    }
}

/// The next signal, or never when no handler could be installed.
async fn next_signal(s: &mut Option<ShutdownSignal>) -> i32 {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

// ------------------------------------------------------------------------------------------------
// Output
// ------------------------------------------------------------------------------------------------

/// Writes to stdout; a closed stdout is [`Failure::output`] (a quiet exit 0).
pub fn write_out(args: std::fmt::Arguments<'_>) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.flush())
        .map_err(Failure::output)
}

/// Writes to stderr. A closed stderr (`mock-kong ... 2>&1 | head -1`) is not an error: nobody
/// reads the message, and the exit code still says how the command ended.
pub fn write_err(args: std::fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.flush());
}

/// `eprintln!` that never panics: a closed stderr is ignored ([`write_err`]).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::edge::write_err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `println!` that returns `Result<(), Failure>` instead of panicking on a closed stdout.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::edge::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::edge::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that returns `Result<(), Failure>` instead of panicking on a closed stdout.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::edge::write_out(format_args!($($arg)*))
    };
}

/// Whether a panic is the standard library's "failed printing to stdout: Broken pipe".
fn is_print_to_closed_stdout(payload: &(dyn std::any::Any + Send)) -> bool {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    text.starts_with("failed printing to std") && text.contains("Broken pipe")
}

// ------------------------------------------------------------------------------------------------
// Running a command
// ------------------------------------------------------------------------------------------------

/// Parses the command line; `Err` carries the exit code after clap printed help (0) or a usage
/// error (2).
pub fn parse<C: clap::Parser>() -> Result<C, i32> {
    C::try_parse().map_err(|e| {
        let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        let _ = e.print();
        code
    })
}

/// Runs a command on `rt` and returns the process exit code.
///
/// * `signals`: race the command against SIGINT/SIGTERM (the reference server handles its
///   signals itself). On the first signal the command is told to stop ([`stopping`]) and given
///   `grace` to write what it has (zero for commands that write nothing partial); then it is
///   dropped, and the exit code is `128 + signal`.
/// * A closed stdout ends the command the same way, with exit code 0.
pub fn run<F>(rt: tokio::runtime::Runtime, signals: bool, grace: Duration, work: F) -> i32
where
    F: Future<Output = Result<i32, Failure>>,
{
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if is_print_to_closed_stdout(info.payload()) {
            PRINT_BROKEN.store(true, Ordering::SeqCst);
        } else {
            previous(info);
        }
    }));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            let mut handler = if signals {
                ShutdownSignal::install().ok()
            } else {
                None
            };
            tokio::pin!(work);
            tokio::select! {
                r = &mut work => return r,
                s = next_signal(&mut handler) => stop(s),
                () = until_stopped() => {}
            }
            if !grace.is_zero() {
                tokio::select! {
                    _ = &mut work => {}
                    _ = next_signal(&mut handler) => {}
                    () = tokio::time::sleep(grace) => {}
                }
            }
            match interrupted() {
                Some(s) => Err(Failure::interrupted(s)),
                None => Ok(EXIT_OK),
            }
        })
    }));
    drop(rt);
    // Once stdout is gone nobody reads the verdict: the end of the pipe is a normal end.
    if STOP.load(Ordering::SeqCst) == BROKEN_PIPE {
        return EXIT_OK;
    }
    match outcome {
        Ok(Ok(code)) => code,
        Ok(Err(f)) => f.report(),
        Err(_) if PRINT_BROKEN.load(Ordering::SeqCst) => EXIT_OK,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_signal_resolves_on_sigterm() {
        let mut handlers = ShutdownSignal::install().unwrap();
        // SAFETY: the handler is installed, so the signal is consumed by tokio.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
        let sig = tokio::time::timeout(Duration::from_secs(5), handlers.recv())
            .await
            .unwrap();
        assert_eq!(sig, libc::SIGTERM);
    }

    #[test]
    fn closed_stdout_panics_are_recognised() {
        let msg: Box<dyn std::any::Any + Send> = Box::new(String::from(
            "failed printing to stdout: Broken pipe (os error 32)",
        ));
        assert!(is_print_to_closed_stdout(msg.as_ref()));
        let other: Box<dyn std::any::Any + Send> = Box::new("index out of bounds");
        assert!(!is_print_to_closed_stdout(other.as_ref()));
    }

    #[test]
    fn failures_carry_their_codes() {
        assert_eq!(Failure::usage(anyhow!("x")).code, EXIT_USAGE);
        assert_eq!(Failure::server(anyhow!("x")).code, EXIT_SERVER);
        assert_eq!(Failure::interrupted(libc::SIGTERM).code, 143);
        let io = io::Error::new(io::ErrorKind::PermissionDenied, "no");
        assert_eq!(Failure::output(io).code, EXIT_USAGE);
    }
}
