//! CPU time and memory from the kernel: a server process (and its descendants) from
//! `/proc/<pid>/stat` and `/proc/<pid>/status`, and loadgen itself from `getrusage`.
//!
//! CPU times come in clock ticks (`sysconf(_SC_CLK_TCK)`, 100 Hz on Linux), so a figure over a
//! window of a few seconds is good to about 1 %; loadgen's own time comes from `getrusage` in
//! microseconds.

use std::collections::HashMap;
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
fn tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some((ppid, _)) = read_stat(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
            out.extend(kids.iter().copied());
        }
        i += 1;
    }
    out
}

/// Samples the process tree rooted at `pid`; `None` if the root is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let (_, root_ticks) = read_stat(pid)?;
    let hz = clock_ticks();
    let mut ticks = root_ticks;
    let mut rss = read_status_kib(pid, "VmRSS:").unwrap_or(0);
    let pids = tree(pid);
    for &p in pids.iter().skip(1) {
        if let Some((_, t)) = read_stat(p) {
            ticks += t;
        }
        rss += read_status_kib(p, "VmRSS:").unwrap_or(0);
    }
    Some(ProcSample {
        pid,
        cpu: Duration::from_secs_f64(ticks as f64 / hz),
        rss_kib: rss,
        hwm_kib: read_status_kib(pid, "VmHWM:").unwrap_or(0),
        processes: pids.len(),
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
