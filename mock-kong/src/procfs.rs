//! What `/proc` says about a server's processes: its process tree, and the Unix sockets it
//! listens on. Used to explain a socket that does not appear ("the server listens at X, mock-kong
//! waited for Y") and by loadgen to sample a server's whole tree.
//!
//! Everything here is best effort: a process may end while it is read, `/proc` may be mounted
//! without the needed fields, another user's file descriptors cannot be read. A function that
//! cannot tell returns less, never an error.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

/// `__SO_ACCEPTCON` in `/proc/net/unix`'s `Flags` column: the socket listens.
const SO_ACCEPTCON: u64 = 0x10000;

/// The parent pid of `pid` (field 4 of `/proc/<pid>/stat`).
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `root` and every process descended from it, `root` first (parents before children).
pub fn tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some(ppid) = parent_of(pid) {
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

/// The inodes of the sockets `pid` has open (`/proc/<pid>/fd/* -> socket:[N]`).
fn socket_inodes(pid: u32, into: &mut HashSet<u64>) {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return;
    };
    for entry in dir.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|s| s.parse().ok())
        {
            into.insert(inode);
        }
    }
}

/// One listening Unix socket of a process tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    /// The path it is bound to as the process sees it (`@name` for an abstract socket).
    pub path: String,
}

/// The Unix sockets the processes `pids` listen on, sorted by path. Paths are as the processes'
/// mount namespace names them (see [`same_mount_namespace`]).
pub fn listening_unix_sockets(pids: &[u32]) -> Vec<Listening> {
    let Some(&first) = pids.first() else {
        return Vec::new();
    };
    let mut inodes = HashSet::new();
    for &pid in pids {
        socket_inodes(pid, &mut inodes);
    }
    if inodes.is_empty() {
        return Vec::new();
    }
    // The table of the server's network namespace (it may differ from ours).
    let table = std::fs::read_to_string(format!("/proc/{first}/net/unix"))
        .or_else(|_| std::fs::read_to_string("/proc/net/unix"))
        .unwrap_or_default();
    let mut out: Vec<Listening> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            // Num RefCount Protocol Flags Type St Inode [Path]
            let cols: Vec<&str> = line.split_whitespace().collect();
            let flags = u64::from_str_radix(cols.get(3)?, 16).ok()?;
            let inode: u64 = cols.get(6)?.parse().ok()?;
            let path = cols.get(7..).map(|p| p.join(" ")).unwrap_or_default();
            (flags & SO_ACCEPTCON != 0 && inodes.contains(&inode) && !path.is_empty())
                .then_some(Listening { path })
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out.dedup();
    out
}

/// Whether `pid` sees the same file system mounts as mock-kong (`None`: cannot tell). In another
/// mount namespace (a container, `unshare --mount`) its socket paths cannot be compared with ours.
pub fn same_mount_namespace(pid: u32) -> Option<bool> {
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()?;
    let ours = std::fs::read_link("/proc/self/ns/mnt").ok()?;
    Some(theirs == ours)
}

/// The working directory of `pid`, for relative socket paths in messages.
pub fn cwd_of(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_of_this_process_is_found_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe.socket");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let me = std::process::id();
        let found = listening_unix_sockets(&[me]);
        assert!(
            found.iter().any(|l| l.path == path.to_string_lossy()),
            "{found:?}"
        );
        // A connected (not listening) socket pair is not listed.
        let (_a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(found.iter().all(|l| !l.path.is_empty()));
        assert_eq!(same_mount_namespace(me), Some(true));
        assert_eq!(tree(me)[0], me);
        assert!(parent_of(me).is_some());
    }
}
