//! CPU time and memory from the kernel: a server process (and its descendants) from
//! `/proc/<pid>/stat` and `/proc/<pid>/status`, and loadgen itself from `getrusage`.
//!
//! CPU times come in clock ticks (`sysconf(_SC_CLK_TCK)`, 100 Hz on Linux), so a figure over a
//! window of a few seconds is good to about 1 %; loadgen's own time comes from `getrusage` in
//! microseconds.

use std::time::Duration;

/// CPU time used so far by a process tree, with the peak and current resident set size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    /// The root pid sampled.
    pub pid: u32,
    /// User + system time of the root and every live descendant, including the children they
    /// have waited for (`cutime`/`cstime`).
    pub cpu: Duration,
    /// Resident set size of the tree, in KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size of the root process, in KiB (`VmHWM`).
    pub hwm_kib: u64,
    /// How many processes were in the tree.
    pub processes: usize,
    /// I/O counters of the tree (`None` when the root's `/proc/<pid>/io` cannot be read).
    pub io: Option<IoSample>,
}

/// The kernel's I/O accounting of a process (`/proc/<pid>/io`), summed over a tree.
///
/// `syscr`/`syscw` count the `read`/`readv`/`pread` and `write`/`writev`/`pwrite` family
/// (sockets included), `rchar`/`wchar` the bytes those calls moved. Socket calls of the
/// `recv`/`send` family are not counted by the kernel: a server that uses them (CPython's
/// socket module does) shows only its other I/O here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoSample {
    pub rchar: u64,
    pub wchar: u64,
    pub syscr: u64,
    pub syscw: u64,
}

impl IoSample {
    /// `self − earlier`, field by field (0 where a counter went backwards: a process left).
    pub fn since(&self, earlier: &IoSample) -> IoSample {
        IoSample {
            rchar: self.rchar.saturating_sub(earlier.rchar),
            wchar: self.wchar.saturating_sub(earlier.wchar),
            syscr: self.syscr.saturating_sub(earlier.syscr),
            syscw: self.syscw.saturating_sub(earlier.syscw),
        }
    }

    fn add(&mut self, o: &IoSample) {
        self.rchar += o.rchar;
        self.wchar += o.wchar;
        self.syscr += o.syscr;
        self.syscw += o.syscw;
    }
}

/// Parses the text of `/proc/<pid>/io`.
pub fn parse_io(text: &str) -> Option<IoSample> {
    let mut io = IoSample::default();
    let mut seen = 0;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let slot = match k.trim() {
            "rchar" => &mut io.rchar,
            "wchar" => &mut io.wchar,
            "syscr" => &mut io.syscr,
            "syscw" => &mut io.syscw,
            _ => continue,
        };
        *slot = v.trim().parse().ok()?;
        seen += 1;
    }
    (seen == 4).then_some(io)
}

/// `/proc/<pid>/io` of one process.
pub fn read_io(pid: u32) -> Option<IoSample> {
    parse_io(&std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?)
}

/// This process's I/O counters (all threads). Read it *before* walking `/proc` for a server
/// sample: that walk's own reads would otherwise count as the harness's.
pub fn self_io() -> Option<IoSample> {
    parse_io(&std::fs::read_to_string("/proc/self/io").ok()?)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// `(ppid, utime + stime + cutime + cstime in ticks)` of one process, or `None` if it is gone
/// or the line is not the expected shape.
fn read_stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    let ppid = fields.get(1)?.parse().ok()?;
    let mut ticks = 0u64;
    for i in 11..=14 {
        ticks += fields.get(i)?.parse::<i64>().ok()?.max(0) as u64;
    }
    Some((ppid, ticks))
}

/// A `Vm...:` value of `/proc/<pid>/status`, in KiB.
fn read_status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The pids of `root` and all its live descendants.
pub fn tree(root: u32) -> Vec<u32> {
    mock_kong::procfs::tree(root)
}

/// Samples the process tree rooted at `pid`; `None` if the root is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let (_, root_ticks) = read_stat(pid)?;
    let hz = clock_ticks();
    let mut ticks = root_ticks;
    let mut rss = read_status_kib(pid, "VmRSS:").unwrap_or(0);
    let mut io = read_io(pid);
    let pids = tree(pid);
    for &p in pids.iter().skip(1) {
        if let Some((_, t)) = read_stat(p) {
            ticks += t;
        }
        rss += read_status_kib(p, "VmRSS:").unwrap_or(0);
        if let (Some(total), Some(child)) = (io.as_mut(), read_io(p)) {
            total.add(&child);
        }
    }
    Some(ProcSample {
        pid,
        cpu: Duration::from_secs_f64(ticks as f64 / hz),
        rss_kib: rss,
        hwm_kib: read_status_kib(pid, "VmHWM:").unwrap_or(0),
        processes: pids.len(),
        io,
    })
}

/// This process's user + system CPU time so far (all threads).
pub fn self_cpu() -> Duration {
    rusage_cpu(libc::RUSAGE_SELF)
}

/// The calling thread's user + system CPU time so far.
pub fn thread_cpu() -> Duration {
    rusage_cpu(libc::RUSAGE_THREAD)
}

fn rusage_cpu(who: libc::c_int) -> Duration {
    // SAFETY: `usage` is a plain C struct that getrusage fills in; zeroed is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage struct owned by this frame.
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// This process's current and peak resident set size, in KiB.
pub fn self_rss_kib() -> (u64, u64) {
    let pid = std::process::id();
    (
        read_status_kib(pid, "VmRSS:").unwrap_or(0),
        read_status_kib(pid, "VmHWM:").unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_sample_sees_cpu_and_memory() {
        let before = self_cpu();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(self_cpu() > before, "burning CPU must show in getrusage");
        let s = sample(std::process::id()).expect("own /proc entry");
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib / 2, "{s:?}");
        assert!(s.processes >= 1);
        let (rss, hwm) = self_rss_kib();
        assert!(rss > 0 && hwm >= rss);
    }

    #[test]
    fn io_counters_parse_and_see_this_process_read() {
        let text = "rchar: 6976\nwchar: 12\nsyscr: 10\nsyscw: 1\nread_bytes: 0\nwrite_bytes: 0\ncancelled_write_bytes: 0\n";
        assert_eq!(
            parse_io(text),
            Some(IoSample {
                rchar: 6976,
                wchar: 12,
                syscr: 10,
                syscw: 1
            })
        );
        assert_eq!(parse_io("rchar: 1\n"), None, "all four counters are needed");
        assert_eq!(parse_io("rchar: x\nwchar: 1\nsyscr: 1\nsyscw: 1"), None);
        let before = self_io().expect("own /proc/self/io");
        let _ = std::fs::read_to_string("/proc/self/stat");
        let after = self_io().expect("own /proc/self/io");
        assert!(after.since(&before).syscr >= 1, "{before:?} {after:?}");
    }

    #[test]
    fn a_missing_process_samples_as_none() {
        // pid_max is at most 2^22 on Linux, so this pid cannot exist.
        assert!(sample(u32::MAX - 1).is_none());
    }

    #[test]
    fn children_are_part_of_the_tree() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        let s = sample(std::process::id()).expect("own /proc entry");
        let _ = child.kill();
        let _ = child.wait();
        assert!(s.processes >= 2, "{s:?}");
    }
}
