//! The `mock-kong` binary as users run it: output, `--json`, exit codes (0 ok, 1 the server
//! misbehaved, 2 usage/setup), kong.conf support, and no orphans on Ctrl-C or SIGKILL.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::child_guard::ChildGuard;
use crate::util::exe;

fn run(args: &[&str]) -> Output {
    Command::new(exe())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run mock-kong")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn dump_of_the_default_reference_server() {
    let out = run(&["dump"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("protocol: MsgPack:1"), "{s}");
    assert!(s.contains("plugin:   hello"), "{s}");
}

#[test]
fn dump_json_to_stdout_replaces_the_human_output() {
    let out = run(&[
        "dump",
        "--protocol",
        "protobuf",
        "--plugin",
        "bench",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON only");
    assert_eq!(v["protocol"], "ProtoBuf:1");
    assert_eq!(v["plugin"]["name"], "bench");
    assert_eq!(v["dump"]["shape"], "object");
}

#[test]
fn call_drives_hello_through_access_in_both_protocols() {
    for proto in ["msgpack", "protobuf"] {
        let out = run(&[
            "call",
            "--protocol",
            proto,
            "--header",
            "host:example.com",
            "--quiet-server",
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{proto}: stderr: {}",
            text(&out.stderr)
        );
        let s = text(&out.stdout);
        assert!(
            s.contains("kong.request.get_header(\"host\") -> \"example.com\""),
            "{proto}: {s}"
        );
        assert!(s.contains("x-hello: hello example.com"), "{proto}: {s}");
    }
}

#[test]
fn call_json_file_holds_the_transcript_and_verbose_shows_frames() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.json");
    let out = run(&[
        "call",
        "--plugin",
        "bench",
        "--config",
        r#"{"calls":3}"#,
        "-v",
        "--quiet-server",
        "--json",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let human = text(&out.stdout);
    assert!(human.contains("frames:") && human.contains(">>"), "{human}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["events"][0]["calls"].as_array().unwrap().len(), 3);
    assert_eq!(v["events"][0]["calls"][0]["reply_kind"], "plugin.Step");
    assert!(!v["frames"].as_array().unwrap().is_empty());
}

#[test]
fn usage_errors_exit_2() {
    let out = run(&["call", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["call", "--config", "[1,2]", "--quiet-server"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--config must be a JSON object"));
}

/// Spec §2: anything but one JSON document on stdout is refused with Kong's words.
#[test]
fn a_dump_that_is_not_json_exits_1_with_a_clear_message() {
    let out = run(&[
        "dump",
        "--query-cmd",
        "echo 'starting server...'; echo '[]'",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("failed decoding plugin info"), "{err}");
    assert!(err.contains("starting server"), "{err}");
}

/// Spec §1: a user points mock-kong at the kong.conf they already have.
#[test]
fn kong_conf_pluginserver_settings_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let exe = exe();
    let exe = exe.to_str().unwrap();
    let socket = dir.path().join("ref-server.socket");
    let conf = dir.path().join("kong.conf");
    std::fs::write(
        &conf,
        format!(
            "# a kong.conf\nprefix = {prefix}\npluginserver_names = Ref-Server\n\
             pluginserver_ref_server_start_cmd = {exe} reference-server --protocol protobuf --socket {sock}\n\
             pluginserver_ref_server_query_cmd = {exe} reference-server --protocol protobuf --dump\n",
            prefix = dir.path().display(),
            sock = socket.display(),
        ),
    )
    .unwrap();
    let out = run(&[
        "call",
        "--kong-conf",
        conf.to_str().unwrap(),
        "--quiet-server",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["server"]["protocol"], "ProtoBuf:1");
    // Kong's default socket: <prefix>/<name>.socket, dashes kept (docs/protocol.md §1).
    assert_eq!(v["server"]["socket"], socket.to_str().unwrap());
    assert_eq!(v["server"]["label"], "pluginserver ref-server");
    assert!(!socket.exists(), "socket file left behind");
}

fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        // A zombie (state Z) is dead; it only waits for its reaper.
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
    }
}

/// Starts `mock-kong call` with a server that never creates its socket (a shell that runs
/// `before`, writes its pid and execs `sleep 300`), and returns the mock-kong child and the
/// server's pid (read from a pid file the server writes).
fn start_hanging_call(dir: &Path, before: &str) -> (ChildGuard, i32) {
    let pidfile = dir.join("server.pid");
    let exe = exe();
    let start = format!(
        "sh -c '{before}echo $$ > {}; exec sleep 300'",
        pidfile.display()
    );
    let query = format!("{} reference-server --dump", exe.display());
    let child = ChildGuard::new(
        Command::new(&exe)
            .args([
                "call",
                "--quiet-server",
                "--start-cmd",
                &start,
                "--query-cmd",
                &query,
            ])
            .arg("--socket")
            .arg(dir.join("never.socket"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = std::fs::read_to_string(&pidfile) {
            if let Ok(pid) = s.trim().parse::<i32>() {
                return (child, pid);
            }
        }
        if Instant::now() > deadline {
            panic!("server never started");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_dead(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !pid_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !pid_alive(pid)
}

/// Ctrl-C while waiting for the socket: mock-kong exits 130 and takes the server with it.
#[test]
fn ctrl_c_stops_the_server_too() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, server) = start_hanging_call(dir.path(), "");
    assert!(pid_alive(server));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        wait_dead(server, Duration::from_secs(5)),
        "server {server} outlived mock-kong"
    );
}

/// A test that fails while its mock-kong runs leaves nothing running: the unwinding drops its
/// `ChildGuard` (tests/it/child_guard.rs), which stops mock-kong with SIGTERM, and mock-kong
/// stops the server's whole process group, a process the server forked included (a SIGKILL of
/// mock-kong would leave that one running: the parent-death signal reaches the server only).
/// The guard is dropped here without a panic: a panic in this process would print its
/// backtrace under RUST_BACKTRACE=1, and loading the debug info for it raises this test
/// process's peak RSS by some 60 MiB, which the children spawned later inherit in their
/// `ru_maxrss` (the RSS tests of faults.rs read it).
#[test]
fn a_failing_test_leaves_no_mock_kong_and_no_server_behind() {
    let dir = tempfile::tempdir().unwrap();
    let forked_file = dir.path().join("forked.pid");
    let before = format!("sleep 300 & echo $! > {}; ", forked_file.display());
    let (child, server) = start_hanging_call(dir.path(), &before);
    // Written before the server's own pid file.
    let forked: i32 = std::fs::read_to_string(&forked_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(server) && pid_alive(forked));
    drop(child);
    let forked_gone = wait_dead(forked, Duration::from_secs(5));
    if !forked_gone {
        unsafe { libc::kill(forked, libc::SIGKILL) };
    }
    assert!(
        wait_dead(server, Duration::from_secs(5)),
        "server {server} outlived the guard"
    );
    assert!(
        forked_gone,
        "the server's child {forked} outlived the guard"
    );
}

/// Even SIGKILL of mock-kong leaves no orphan: the parent-death signal kills the server.
#[test]
fn sigkill_of_mock_kong_leaves_no_orphan() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, server) = start_hanging_call(dir.path(), "");
    assert!(pid_alive(server));
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    assert!(
        wait_dead(server, Duration::from_secs(2)),
        "server {server} outlived mock-kong"
    );
}

// ------------------------------------------------------------------------------------------------
// No orphans, no leftovers (issue 8).

/// SIGTERM while waiting for the socket: mock-kong exits 128 + 15 and takes the server with it.
#[test]
fn sigterm_stops_the_server_too() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, server) = start_hanging_call(dir.path(), "");
    assert!(pid_alive(server));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert!(
        wait_dead(server, Duration::from_secs(5)),
        "server {server} outlived mock-kong"
    );
}

/// The server pid and socket a `call --json` report names.
fn server_of(out: &Output) -> (i32, std::path::PathBuf) {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON ({e}): {}", text(&out.stdout)));
    let pid = v["server"]["pid"].as_i64().expect("server.pid") as i32;
    let socket = v["server"]["socket"]
        .as_str()
        .expect("server.socket")
        .into();
    (pid, socket)
}

/// A normal run leaves no server process, no socket file and no private socket directory.
#[test]
fn a_normal_exit_leaves_no_process_and_no_socket() {
    for proto in ["msgpack", "protobuf"] {
        let out = run(&["call", "--protocol", proto, "--quiet-server", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{proto}: {}", text(&out.stderr));
        let (pid, socket) = server_of(&out);
        assert!(
            wait_dead(pid, Duration::from_secs(2)),
            "{proto}: server {pid} outlived mock-kong"
        );
        assert!(
            !socket.exists(),
            "{proto}: {} left behind",
            socket.display()
        );
        let dir = socket.parent().unwrap();
        assert!(
            !dir.exists(),
            "{proto}: private dir {} left behind",
            dir.display()
        );
    }
}

/// A run that fails (the dump says ProtoBuf, the server speaks MsgPack: every event fails)
/// exits 1 and still leaves no server process and no socket file.
#[test]
fn an_error_exit_leaves_no_process_and_no_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("liar.socket");
    let exe = exe();
    let exe = exe.to_str().unwrap();
    let start = format!(
        "{exe} reference-server --protocol msgpack --socket {}",
        socket.display()
    );
    let query = format!("{exe} reference-server --protocol protobuf --dump");
    let out = Command::new(exe)
        .args(["call", "--quiet-server", "--json", "--timeout", "2"])
        .args(["--start-cmd", &start, "--query-cmd", &query])
        .arg("--socket")
        .arg(&socket)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    let (pid, reported) = server_of(&out);
    assert_eq!(reported, socket);
    assert!(
        wait_dead(pid, Duration::from_secs(2)),
        "server {pid} outlived mock-kong"
    );
    assert!(!socket.exists(), "{} left behind", socket.display());
}

/// Without a named path, sockets go to a fresh mode-0700 directory under the temp directory,
/// removed with the target; a named socket path creates no directory of ours.
#[test]
fn socket_directories_are_private_and_temporary() {
    use mock_kong::target::{resolve, Placement, TargetSpec};
    use std::os::unix::fs::PermissionsExt;
    let spec = TargetSpec::Reference {
        protocol: mock_kong::Protocol::MsgPack,
        exe: Some(exe()),
        faults: Vec::new(),
    };
    let target = resolve(&spec, &Placement::default(), "hello").unwrap();
    let dir = target.socket.parent().unwrap().to_path_buf();
    assert!(dir.starts_with(std::env::temp_dir()), "{}", dir.display());
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{} has mode {mode:o}", dir.display());
    drop(target);
    assert!(!dir.exists(), "{} outlived its target", dir.display());

    let mine = tempfile::tempdir().unwrap();
    let named = mine.path().join("sub/named.socket");
    let placement = Placement {
        socket: Some(named.clone()),
        prefix: None,
    };
    let target = resolve(&spec, &placement, "hello").unwrap();
    assert_eq!(target.socket, named);
    assert_eq!(target.prefix, mine.path().join("sub"));
    assert!(
        !mine.path().join("sub").exists(),
        "no directory is created for a named path"
    );
}

/// A regular file at the socket path is never deleted: not by the host (external server), not
/// by a server that cannot bind there and is stopped.
#[test]
fn a_non_socket_file_at_the_socket_path_is_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("precious.socket");
    std::fs::write(&file, b"not a socket").unwrap();
    let exe = exe();
    let query = format!("{} reference-server --dump", exe.display());

    // External server: mock-kong only connects, and fails.
    let out = Command::new(&exe)
        .args(["call", "--quiet-server", "--query-cmd", &query, "--socket"])
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(
        said.contains("cannot connect to") && said.contains("precious.socket"),
        "{said}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"not a socket");

    // A started server that refuses to replace the file; mock-kong is stopped by SIGTERM while
    // it waits for the socket.
    let start = format!(
        "{} reference-server --socket {}",
        exe.display(),
        file.display()
    );
    let mut child = Command::new(&exe)
        .args([
            "call",
            "--quiet-server",
            "--start-cmd",
            &start,
            "--query-cmd",
            &query,
            "--socket",
        ])
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert_eq!(std::fs::read(&file).unwrap(), b"not a socket");
}

/// The limits are options: `--max-frame` bounds what is read from the server (named in the
/// error), `--call-deadline` must be a positive number of seconds.
#[test]
fn frame_limit_and_call_deadline_are_options() {
    for proto in ["msgpack", "protobuf"] {
        let out = run(&[
            "call",
            "--protocol",
            proto,
            "--quiet-server",
            "--max-frame",
            "16",
        ]);
        assert_eq!(out.status.code(), Some(1), "{proto}: {}", text(&out.stderr));
        let said = text(&out.stdout) + &text(&out.stderr);
        assert!(
            said.contains("exceeds the limit of 16 bytes"),
            "{proto}: {said}"
        );
    }
    let out = run(&["call", "--quiet-server", "--call-deadline", "30"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(&["call", "--quiet-server", "--call-deadline", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--call-deadline must be a positive number"));
}

// ------------------------------------------------------------------------------------------------
// The shared CLI edge (mock_kong::edge): a closed stdout, partial reports on SIGINT.

/// A pipe whose read end is already closed: every write to the returned end fails with EPIPE.
pub(crate) fn closed_pipe() -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just created and are owned here, once each.
    let (read, write) = unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    drop(read);
    write
}

/// `mock-kong conform --list | head -1` and friends: when whoever reads stdout has gone, the
/// command ends normally (exit 0, no panic, no error message). Regression: `println!` panicked
/// ("failed printing to stdout: Broken pipe") and the process exited 101.
#[test]
fn a_closed_stdout_is_a_normal_exit() {
    for args in [
        &["conform", "--list"][..],
        &["dump"],
        &["dump", "--json"],
        &["reference-server", "--dump"],
    ] {
        let out = Command::new(exe())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(closed_pipe()))
            .output()
            .expect("run mock-kong");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("error"),
            "{args:?}: {err}"
        );
    }
}

/// SIGINT during `conform --json FILE`: exit 130, and FILE holds the checks finished before the
/// signal, marked interrupted (the shared edge gives commands that report as they go a grace
/// period to write what they have).
#[test]
fn an_interrupted_conform_run_writes_its_partial_report() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("conform.json");
    let mut child = ChildGuard::new(
        Command::new(exe())
            .args(["conform", "--json"])
            .arg(&report)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Progress lines name each finished check: wait for the first one.
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("dump/"))
        .expect("a first check line");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "after {first:?}");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("the partial report")).unwrap();
    assert_eq!(v["interrupted"], true, "{v}");
    let checks = v["checks"].as_array().unwrap().len();
    assert!(checks >= 1, "{v}");
    assert!(checks < mock_kong::conform::catalogue().len(), "{v}");
}

/// `mock-kong call ... 2>&1 | head -1`: when whoever reads stderr has gone, the command still
/// ends with its own exit code (2 for a usage error, 1 for a server that never comes up), not
/// a panic. Regression (issue 13, item 8): the error message's `eprintln!` panicked and the
/// process exited 101.
#[test]
fn a_closed_stderr_keeps_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let exe = exe();
    let query = format!("{} reference-server --dump", exe.display());
    let crash = format!("sh -c 'echo starting; exit 3' # {}", dir.path().display());
    let cases: [(&[&str], i32); 2] = [
        (&["call", "--config", "[1]"], 2),
        (&["call", "--start-cmd", &crash, "--query-cmd", &query], 1),
    ];
    for (args, code) in cases {
        let out = Command::new(&exe)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::from(closed_pipe()))
            .output()
            .expect("run mock-kong");
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            text(&out.stdout)
        );
    }
}

/// SIGTERM during `run --junit FILE --json FILE`: exit 143, and both reports hold the
/// scenarios finished before the signal (the JSON says the run was interrupted and how many
/// were not run). Regression (issue 13, item 11): no report was written.
#[test]
fn an_interrupted_scenario_run_writes_its_reports() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.toml"),
        "plugin = \"bench\"\nconfig = { calls = 1 }\n",
    )
    .unwrap();
    // The PDK answer of the second scenario comes after ten minutes: the run is stopped there.
    std::fs::write(
        dir.path().join("b.toml"),
        "plugin = \"bench\"\nconfig = { calls = 1 }\n[[pdk]]\n\
         method = \"kong.response.set_header\"\ndelay_ms = 600000\n",
    )
    .unwrap();
    let child = Command::new(exe())
        .args(["run", "--quiet-server", "--timeout", "1000"])
        .args([
            "--junit",
            "report.xml",
            "--json",
            "report.json",
            "a.toml",
            "b.toml",
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Not a time limit: the signal comes after the run has begun (whatever it finished by then
    // is what the reports must hold).
    std::thread::sleep(Duration::from_secs(2));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", text(&out.stderr));
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(v["interrupted"], true, "{v}");
    let passed = v["passed"].as_u64().unwrap();
    assert_eq!(passed + v["not_run"].as_u64().unwrap(), 2, "{v}");
    assert_eq!(v["failed"], 0, "{v}");
    let xml = std::fs::read_to_string(dir.path().join("report.xml")).unwrap();
    assert!(xml.contains(&format!("tests=\"{passed}\"")), "{xml}");
    assert!(!xml.contains("name=\"b\""), "{xml}");
}
