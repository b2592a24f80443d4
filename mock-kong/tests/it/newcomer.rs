//! Issue 13, "your own plugin, first time": `stamp` (tests/it/stamp_plugin.rs), a plugin the
//! project has never seen, in Python and in JavaScript on the real kits, taken through `dump`,
//! `call`, `run`, `check`, `proxy` (and `conform`) with nothing but its start and query commands, as
//! docs/your-plugin.md walks a newcomer through it (loadgen's tests take it through
//! `loadgen run`). Then the mistakes a newcomer makes: each gives its message and exit code,
//! and leaves no process and no file behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::child_guard::ChildGuard;
use crate::stamp_plugin::{self, Stamp, SCENARIO};
use crate::util::{exe, peer_installed, root};

const KITS: [&str; 2] = ["python", "js"];

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The kits installed here (the others are skipped, or fail the run in CI).
fn kits() -> Vec<Stamp> {
    KITS.iter()
        .filter(|k| peer_installed(k))
        .map(|k| stamp_plugin::write(&root(), k))
        .collect()
}

/// `mock-kong ARGS... --start-cmd S --query-cmd Q MORE...` for the plugin `p`.
fn mk(p: &Stamp, args: &[&str], more: &[&str]) -> Output {
    Command::new(exe())
        .args(args)
        .args(["--start-cmd", &p.start_cmd, "--query-cmd", &p.query_cmd])
        .args(more)
        .current_dir(p.dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run mock-kong")
}

/// The pids of live processes whose command line mentions `dir` (the plugin's own directory:
/// every server of the plugin names it).
fn processes_mentioning(dir: &Path) -> Vec<i32> {
    let needle = dir.to_string_lossy().into_owned();
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'));
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            !zombie && text(&cmdline).replace('\0', " ").contains(&needle)
        })
        .collect()
}

/// Nothing of the plugin's is left running once mock-kong has exited (its servers are gone
/// with it, their process groups killed; a grace of a few scheduler ticks for the reaping).
fn assert_no_process_left(p: &Stamp, what: &str) {
    let mut left = processes_mentioning(p.dir.path());
    for _ in 0..100 {
        if left.is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        left = processes_mentioning(p.dir.path());
    }
    panic!("{}: {what}: processes left running: {left:?}", p.kit);
}

/// The files in the plugin's directory: only what the test put there (the plugin, a scenario),
/// never a socket or a report mock-kong was not asked for.
fn files_of(p: &Stamp) -> Vec<String> {
    let mut names: Vec<String> = walk(p.dir.path())
        .iter()
        .map(|f| f.strip_prefix(p.dir.path()).unwrap().display().to_string())
        .collect();
    names.sort();
    names
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is JSON ({e}): {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

fn methods(event: &serde_json::Value) -> Vec<String> {
    event["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["method"].as_str().unwrap().to_owned())
        .collect()
}

/// The path that follows `marker` in an error message, without trailing punctuation.
fn path_after(message: &str, marker: &str) -> PathBuf {
    let rest = &message[message
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} in {message}"))
        + marker.len()..];
    let word = rest.split_whitespace().next().unwrap();
    PathBuf::from(word.trim_end_matches(['.', ',', ';', ')']))
}

/// dump, call (the PDK methods a newcomer's plugin uses, its config's default, a config of its
/// own) and run (a scenario of its own, JUnit report), first time, in both kits.
#[test]
fn a_plugin_of_your_own_through_dump_call_and_run() {
    for p in kits() {
        let kit = p.kit;
        let before = files_of(&p);

        let out = mk(&p, &["dump"], &[]);
        assert_eq!(out.status.code(), Some(0), "{kit}: {}", text(&out.stderr));
        let s = text(&out.stdout);
        assert!(
            s.contains("plugin:   stamp 1.0.0 (priority 900)"),
            "{kit}: {s}"
        );
        assert!(s.contains("phases:   access, response"), "{kit}: {s}");
        assert!(
            s.contains("protocol: MsgPack:1 (not named in the dump; Kong's default)"),
            "{kit}: {s}"
        );

        // call: the same emulated request `run` plays; the schema's default fills config.tag.
        let args = [
            "call",
            "--quiet-server",
            "--method",
            "POST",
            "--path",
            "/orders",
        ];
        let out = mk(&p, &args, &["--json"]);
        assert_eq!(out.status.code(), Some(0), "{kit}: {}", text(&out.stderr));
        let v = json(&out);
        assert_eq!(v["ok"], true, "{kit}: {v}");
        assert_eq!(v["plugin"], "stamp", "{kit}");
        assert_eq!(v["events"][0]["phase"], "access");
        assert_eq!(
            methods(&v["events"][0]),
            [
                "kong.request.get_method",
                "kong.request.get_path",
                "kong.service.request.set_header"
            ],
            "{kit}"
        );
        assert_eq!(
            v["events"][0]["calls"][2]["args"],
            serde_json::json!(["x-stamp", "stamped POST /orders"]),
            "{kit}"
        );
        assert_eq!(v["events"][1]["phase"], "response");
        assert_eq!(v["events"][1]["calls"][0]["answer"], 200, "{kit}");
        assert!(
            v["response"]["headers"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!(["x-stamp", "stamped 200"])),
            "{kit}: {v}"
        );
        // The server is gone with mock-kong, and so are its socket and private prefix.
        let socket = PathBuf::from(v["server"]["socket"].as_str().unwrap());
        assert!(
            socket.ends_with("stamp.socket"),
            "{kit}: {}",
            socket.display()
        );
        assert_no_process_left(&p, "call");
        assert!(!socket.parent().unwrap().exists(), "{kit}: prefix left");

        // A config of one's own.
        let out = mk(&p, &args, &["--config", r#"{"tag":"mine"}"#, "--json"]);
        assert_eq!(out.status.code(), Some(0), "{kit}: {}", text(&out.stderr));
        assert_eq!(
            json(&out)["events"][0]["calls"][2]["args"][1],
            "mine POST /orders",
            "{kit}"
        );

        // run: a scenario of one's own, with a JUnit report.
        let scenario = p.dir.path().join("stamp.toml");
        std::fs::write(&scenario, SCENARIO).unwrap();
        let junit = p.dir.path().join("report.xml");
        let out = mk(
            &p,
            &["run", "--quiet-server"],
            &["--junit", junit.to_str().unwrap(), "stamp.toml"],
        );
        let s = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{kit}: {s}{}",
            text(&out.stderr)
        );
        assert!(
            s.contains("PASS  stamp tags the upstream request and the response [stamp; pluginserver stamp; Kong 3.9]"),
            "{kit}: {s}"
        );
        assert!(s.contains("1 passed, 0 failed"), "{kit}: {s}");
        let xml = std::fs::read_to_string(&junit).unwrap();
        assert!(
            xml.contains("failures=\"0\"") && xml.contains("tests=\"1\""),
            "{kit}: {xml}"
        );
        std::fs::remove_file(&junit).unwrap();
        std::fs::remove_file(&scenario).unwrap();

        assert_no_process_left(&p, "run");
        assert_eq!(files_of(&p), before, "{kit}: files left");
    }
}

/// One HTTP/1.1 request over a fresh connection, the whole answer as text (head and body).
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).expect("connect to the proxy");
    write!(
        c,
        "GET {path} HTTP/1.1\r\nhost: shop.test\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    answer
}

/// `mock-kong proxy --listen 127.0.0.1:0 --start-cmd S --query-cmd Q MORE...` for `p`, once
/// its banner is out: the child (stopped if the test fails before it does), its stdout after
/// the banner, the banner and the address.
fn spawn_proxy(
    p: &Stamp,
    more: &[&str],
) -> (
    ChildGuard,
    std::io::BufReader<std::process::ChildStdout>,
    String,
    String,
) {
    use std::io::BufRead;
    let kit = p.kit;
    let mut child = ChildGuard::new(
        Command::new(exe())
            .args(["proxy", "--listen", "127.0.0.1:0", "--quiet-server"])
            .args(["--start-cmd", &p.start_cmd, "--query-cmd", &p.query_cmd])
            .args(more)
            .current_dir(p.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run mock-kong proxy"),
    );
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    while !banner.contains("Ctrl-C") {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("{kit}: the proxy ended before its banner: {banner}{err}");
        }
        banner.push_str(&line);
    }
    let addr = banner
        .split("listening on http://")
        .nth(1)
        .and_then(|r| r.split([',', ' ', '\n']).next())
        .unwrap_or_else(|| panic!("{kit}: no address in the banner: {banner}"))
        .to_owned();
    (child, out, banner, addr)
}

/// Ctrl-C: the proxy exits 130 and leaves no process and no file of the plugin's.
fn interrupt_proxy(p: &Stamp, mut child: ChildGuard, before: &[String]) {
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{}", p.kit);
    assert_no_process_left(p, "proxy");
    assert_eq!(files_of(p), before, "{}: files left", p.kit);
}

/// proxy, with nothing but the start and query commands (no --plugin: the dump decides, as in
/// `call`): a real HTTP request goes through both phases of the plugin, with its config built
/// from the schema (config.tag's default); the echo upstream sees what `access` set, the client
/// what `response` set; Ctrl-C stops the proxy and the server.
#[test]
fn a_plugin_of_your_own_behind_the_proxy() {
    for p in kits() {
        let kit = p.kit;
        let before = files_of(&p);
        let (child, _out, banner, addr) = spawn_proxy(&p, &[]);
        assert!(
            banner.contains("plugin    stamp 1.0.0, priority 900, phases [access, response]"),
            "{kit}: {banner}"
        );
        let answer = http_get(&addr, "/orders?id=7");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        assert!(head.starts_with("HTTP/1.1 200"), "{kit}: {answer}");
        assert!(
            head.lines()
                .any(|l| l.eq_ignore_ascii_case("x-stamp: stamped 200")),
            "{kit}: the response phase's header: {head}"
        );
        // The echo upstream answers with the request it saw: access's header is in it.
        assert!(
            body.contains("stamped GET /orders"),
            "{kit}: the upstream did not see x-stamp: {body}"
        );
        interrupt_proxy(&p, child, &before);
    }
}

/// Regression: a StartInstance the server refuses (the Python stamp given a raw config without
/// its `tag`) was logged and the request proxied without the plugin (200). Kong raises that
/// error in the handler: the client gets 500, as for any Lua error in access.
#[test]
fn a_failed_start_instance_answers_500_through_the_proxy() {
    for p in kits().into_iter().filter(|p| p.kit == "python") {
        let before = files_of(&p);
        let (child, _out, _banner, addr) = spawn_proxy(&p, &["--raw-config", "--config", "{}"]);
        let answer = http_get(&addr, "/");
        assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
        assert!(answer.contains("An unexpected error occurred"), "{answer}");
        interrupt_proxy(&p, child, &before);
    }
}

/// `mock-kong check` on a kong.conf holding both servers, as a user's kong.conf would (Kong
/// does not expand placeholders there: the prefix and sockets are written out).
#[test]
fn check_validates_both_kits_from_one_kong_conf() {
    let stamps = kits();
    if stamps.is_empty() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("kong");
    std::fs::create_dir(&prefix).unwrap();
    let mut conf = format!("prefix = {}\n", prefix.display());
    let names: Vec<String> = stamps.iter().map(|p| format!("stamp-{}", p.kit)).collect();
    conf += &format!("pluginserver_names = {}\n", names.join(", "));
    for (p, name) in stamps.iter().zip(&names) {
        let key = name.replace('-', "_");
        let start = p
            .start_cmd
            .replace("{prefix}", &prefix.to_string_lossy())
            .replace("stamp.socket", &format!("{name}.socket"));
        conf += &format!("pluginserver_{key}_start_cmd = {start}\n");
        conf += &format!("pluginserver_{key}_query_cmd = {}\n", p.query_cmd);
    }
    let conf_path = dir.path().join("kong.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let out = Command::new(exe())
        .args(["check", "--kong-conf"])
        .arg(&conf_path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{s}{}", text(&out.stderr));
    for name in &names {
        assert!(s.contains(&format!("pluginserver {name}: ok")), "{s}");
    }
    assert!(
        s.contains("event: one request through [access, response] with the schema's default config: 5 PDK call(s), status 200"),
        "{s}"
    );
    assert!(
        s.contains(&format!(
            "{n} pluginserver(s) checked: {n} ok, 0 failed",
            n = names.len()
        )),
        "{s}"
    );
    for p in &stamps {
        assert_no_process_left(p, "check");
    }
    assert_eq!(
        std::fs::read_dir(&prefix).unwrap().count(),
        0,
        "sockets left in the prefix"
    );
}

/// The checks `conform` fails on `p`, which must all be failures its kit is known for
/// (conformance/expected/<kit>.txt): the plugin adds none of its own.
fn conform_failures_beyond_the_kits(p: &Stamp) -> Vec<String> {
    let out = mk(p, &["conform", "--quiet-server", "--json"], &[]);
    let v = json(&out);
    let expected =
        std::fs::read_to_string(root().join(format!("conformance/expected/{}.txt", p.kit)))
            .unwrap();
    let known: Vec<&str> = expected
        .lines()
        .filter_map(|l| l.split('#').next())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let checks = v["checks"].as_array().expect("checks");
    assert!(checks.len() > 20, "{}: {v}", p.kit);
    assert_no_process_left(p, "conform");
    checks
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .filter(|id| !known.contains(&id.as_str()))
        .collect()
}

/// `mock-kong conform` on the JavaScript plugin as a newcomer writes it: only the kit's known
/// failures (kong-js-pluginserver exits on garbage and split frames).
#[test]
fn conform_on_a_js_plugin_of_your_own_finds_only_the_kits_failures() {
    if !peer_installed("js") {
        return;
    }
    let p = stamp_plugin::write(&root(), "js");
    assert_eq!(conform_failures_beyond_the_kits(&p), Vec::<String>::new());
}

/// The same in Python. Regression: the checks sent `{}` without the schema's defaults, so
/// `config["tag"]` raised in the plugin and 20 checks failed with "StartInstance failed: 'tag'".
#[test]
fn conform_on_a_python_plugin_of_your_own_finds_only_the_kits_failures() {
    if !peer_installed("python") {
        return;
    }
    let p = stamp_plugin::write(&root(), "python");
    assert_eq!(conform_failures_beyond_the_kits(&p), Vec::<String>::new());
}

// ------------------------------------------------------------------------------------------------
// The mistakes a newcomer makes: message, exit code, nothing left behind.

/// The Python kit's dedicated server listens at `<name>.sock` unless told `--socket-name`: the
/// error names the path awaited and the one the server listens at, and the private prefix
/// holding both is removed.
#[test]
fn a_socket_name_left_out_is_diagnosed() {
    if !peer_installed("python") {
        return;
    }
    let mut p = stamp_plugin::write(&root(), "python");
    p.start_cmd = p.start_cmd.replace(" --socket-name stamp.socket", "");
    let out = mk(&p, &["call", "--quiet-server"], &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("error: server `stamp` listens at "), "{err}");
    let listens = path_after(&err, "listens at ");
    let awaited = path_after(&err, "waits for its socket at ");
    assert!(listens.ends_with("stamp.sock"), "{err}");
    assert!(awaited.ends_with("stamp.socket"), "{err}");
    assert_eq!(listens.parent(), awaited.parent(), "{err}");
    assert!(err.contains("`{socket}` and `{prefix}`"), "{err}");
    assert_no_process_left(&p, "no socket");
    assert!(!awaited.parent().unwrap().exists(), "private prefix left");

    // A prefix of one's own is kept, and the misplaced socket is not left in it. Regression:
    // `stamp.sock` stayed behind.
    let prefix = p.dir.path().join("run");
    std::fs::create_dir(&prefix).unwrap();
    let out = mk(
        &p,
        &[
            "call",
            "--quiet-server",
            "--prefix",
            prefix.to_str().unwrap(),
        ],
        &[],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "listens at {}",
            prefix.join("stamp.sock").display()
        )),
        "{err}"
    );
    assert_no_process_left(&p, "no socket, own prefix");
    assert_eq!(
        std::fs::read_dir(&prefix).unwrap().count(),
        0,
        "left in the prefix"
    );
}

/// A start command that exits at once is given up on after 3 exits, with its last output and
/// exit status (Kong would respawn it forever).
#[test]
fn a_crashing_server_is_given_up_on() {
    if !peer_installed("python") {
        return;
    }
    let mut p = stamp_plugin::write(&root(), "python");
    p.start_cmd = p
        .start_cmd
        .replace("-p {prefix}", "-p /nonexistent-prefix-of-mock-kong");
    let out = mk(&p, &["call", "--quiet-server"], &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: server `stamp` exited 3 times within 10s without ever creating its socket (last: exit 1)"),
        "{err}"
    );
    assert!(
        err.contains("path /nonexistent-prefix-of-mock-kong doesn't exist"),
        "the server's last output: {err}"
    );
    assert_no_process_left(&p, "crash loop");
}

/// A config that does not fit the schema is refused before any server starts (exit 2, each
/// field named), as Kong refuses it.
#[test]
fn a_config_that_does_not_fit_the_schema_is_refused() {
    for p in kits() {
        let out = mk(
            &p,
            &["call", "--quiet-server"],
            &["--config", r#"{"nosuch":1,"tag":5}"#],
        );
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", p.kit);
        assert!(
            err.contains("config.nosuch: unknown field; config.tag: expected a string"),
            "{}: {err}",
            p.kit
        );
        assert!(err.contains("--raw-config"), "{}: {err}", p.kit);
        assert_no_process_left(&p, "bad config");
    }
}

/// `--plugin` naming a plugin the server does not serve is refused, not ignored.
#[test]
fn a_plugin_the_server_does_not_serve_is_refused() {
    for p in kits() {
        let out = mk(&p, &["call", "--quiet-server", "--plugin", "hello"], &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", p.kit);
        assert!(
            err.contains("--plugin hello: this server's dump lists [stamp]"),
            "{}: {err}",
            p.kit
        );
        assert_no_process_left(&p, "--plugin");
    }
}

/// A query command that fails shows its exit status and stderr, not only "stdout is empty".
#[test]
fn a_failing_query_command_shows_its_status_and_stderr() {
    if !peer_installed("python") {
        return;
    }
    let mut p = stamp_plugin::write(&root(), "python");
    p.query_cmd = p.query_cmd.replace("stamp.py", "stamp-typo.py");
    let out = mk(&p, &["dump"], &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("exited with status 2"), "{err}");
    assert!(
        err.contains("can't open file") && err.contains("stamp-typo.py"),
        "{err}"
    );
}

/// One bad scenario file is reported (exit 2) and the good one still runs and passes.
#[test]
fn a_bad_scenario_file_does_not_stop_the_others() {
    for p in kits() {
        std::fs::write(p.dir.path().join("stamp.toml"), SCENARIO).unwrap();
        std::fs::write(
            p.dir.path().join("bad.toml"),
            "plugin = \"stamp\"\nnosuchkey = 1\n",
        )
        .unwrap();
        let out = mk(&p, &["run", "--quiet-server"], &["bad.toml", "stamp.toml"]);
        let s = text(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{}: {s}", p.kit);
        assert!(s.contains("INVALID bad"), "{}: {s}", p.kit);
        assert!(s.contains("unknown field `nosuchkey`"), "{}: {s}", p.kit);
        assert!(s.contains("PASS  stamp tags"), "{}: {s}", p.kit);
        assert!(s.contains("1 passed, 1 failed"), "{}: {s}", p.kit);
        assert_no_process_left(&p, "bad scenario");
    }
}

// ------------------------------------------------------------------------------------------------
// The same items on the reference server (no kit needed).

fn reference_cmds(plugin: &str, faults: &str) -> (String, String) {
    let exe = exe();
    let exe = exe.display();
    (
        format!("'{exe}' reference-server --plugin {plugin}{faults} --socket {{socket}}"),
        format!("'{exe}' reference-server --plugin {plugin} --dump"),
    )
}

/// `conform` on a server that never listens where it is awaited: one clear error at once
/// (exit 1), not every check waiting out its timeout. Regression (issue 13, item 3): about 4
/// minutes.
#[test]
fn conform_stops_at_once_when_the_server_never_comes_up() {
    let dir = tempfile::tempdir().unwrap();
    let (_, query) = reference_cmds("hello", "");
    let out = Command::new(exe())
        .args(["conform", "--quiet-server", "--socket-timeout", "2"])
        .args(["--start-cmd", "sleep 300", "--query-cmd", &query])
        .arg("--prefix")
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no check can run: the server does not come up on its socket"),
        "{err}"
    );
    assert!(
        !text(&out.stdout).contains("FAIL"),
        "no check was run: {}",
        text(&out.stdout)
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// A failing event's report shows the PDK calls made before the failure, with what they were
/// answered. Regression (issue 13, item 9): "(no PDK calls)", then `-> null` for the call
/// whose answer was sent before the server hung.
#[test]
fn a_failing_event_keeps_its_transcript() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hangs.toml"),
        "plugin = \"faults\"\nconfig = { mode = \"raise-after\" }\n",
    )
    .unwrap();
    // raise-hangs: the server hangs where it should raise, after one get_header("host").
    let (start, query) = reference_cmds("faults", " --fault raise-hangs");
    let out = Command::new(exe())
        .args(["run", "--quiet-server", "--timeout", "1"])
        .args(["--start-cmd", &start, "--query-cmd", &query, "hangs.toml"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{s}{}", text(&out.stderr));
    assert!(s.contains("FAIL  hangs"), "{s}");
    assert!(
        s.contains("access   kong.request.get_header(\"host\") -> \"example.com\""),
        "{s}"
    );
    assert!(s.contains("access   FAILED: no answer after 1s"), "{s}");
    assert!(!s.contains("(no PDK calls)"), "{s}");
}

/// `run --kong-conf` sends each scenario to the pluginserver whose dump lists its plugin, as
/// Kong does. Regression (issue 13, item 6): every scenario went to the first server.
#[test]
fn run_routes_each_scenario_to_the_server_of_its_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let mut conf = format!(
        "prefix = {}\npluginserver_names = ref-hello, ref-bench\n",
        dir.path().display()
    );
    for plugin in ["hello", "bench"] {
        let (start, query) = reference_cmds(plugin, "");
        let socket = dir.path().join(format!("ref-{plugin}.socket"));
        let start = start.replace("{socket}", &socket.to_string_lossy());
        conf += &format!("pluginserver_ref_{plugin}_start_cmd = {start}\n");
        conf += &format!("pluginserver_ref_{plugin}_query_cmd = {query}\n");
    }
    std::fs::write(dir.path().join("kong.conf"), conf).unwrap();
    std::fs::write(
        dir.path().join("bench.toml"),
        "name = \"bench\"\nplugin = \"bench\"\nconfig = { calls = 2 }\n\
         [expect.headers]\nx-bench-calls = \"2\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("hello.toml"),
        "name = \"hello\"\nplugin = \"hello\"\n[expect.headers]\nx-hello = \"hello example.com\"\n",
    )
    .unwrap();
    let out = Command::new(exe())
        .args(["run", "--quiet-server", "--kong-conf", "kong.conf"])
        .args(["bench.toml", "hello.toml"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{s}{}", text(&out.stderr));
    assert!(
        s.contains("PASS  bench [bench; pluginserver ref-bench; Kong 3.9]"),
        "{s}"
    );
    assert!(
        s.contains("PASS  hello [hello; pluginserver ref-hello; Kong 3.9]"),
        "{s}"
    );
    assert!(s.contains("2 passed, 0 failed"), "{s}");
}

/// A kong.conf whose prefix does not exist (Kong's default /usr/local/kong on a machine without
/// Kong, or a typo): `kong start` would create it, mock-kong does not, and says so before the
/// servers fail; nothing is created.
#[test]
fn a_missing_kong_conf_prefix_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("no-such-prefix");
    let (start, query) = reference_cmds("hello", "");
    // Like the kits, the server needs the prefix to exist (the reference server would create it).
    let start = format!(
        "sh -c \"cd {} && exec {}\"",
        prefix.display(),
        start.replace("{socket}", "ref.socket")
    );
    let conf = format!(
        "prefix = {}\npluginserver_names = ref\npluginserver_ref_start_cmd = {start}\n\
         pluginserver_ref_query_cmd = {query}\n",
        prefix.display()
    );
    std::fs::write(dir.path().join("kong.conf"), conf).unwrap();
    let out = Command::new(exe())
        .args(["check", "--kong-conf", "kong.conf"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}{}", text(&out.stdout));
    assert!(
        err.contains(&format!(
            "warning: the prefix {} does not exist: Kong creates it at `kong start`",
            prefix.display()
        )),
        "{err}"
    );
    assert!(text(&out.stdout).contains("pluginserver ref: FAILED"));
    assert!(!prefix.exists());
}
