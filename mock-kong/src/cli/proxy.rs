//! `mock-kong proxy`: the plugin server(s) behind a real HTTP port, as Kong would run them
//! (see [`crate::proxy`]). Runs until Ctrl-C (or SIGTERM), then stops the proxy and every
//! plugin server it started.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{ArgAction, ArgMatches, Args, FromArgMatches};

use super::{session_failure, setup, Failure, ServerArgs};
use crate::pdk::KongVersion;
use crate::proxy::{
    open_chain, ChainError, ChainPlugin, LineSink, PluginChain, Proxy, ProxyOptions,
    UpstreamTarget, UpstreamTimeouts, UpstreamUrl, DEFAULT_LISTEN,
};

/// How long a stopping proxy waits for requests in flight (the edge gives the command
/// [`crate::edge::REPORT_GRACE`] in all, the plugin servers' stop included).
const STOP_GRACE: Duration = Duration::from_secs(5);

const EXAMPLES: &str = "\
Examples:
  mock-kong proxy --peer go --plugin hello --access-log   # then: curl -i http://127.0.0.1:8000/
  mock-kong proxy --peer python --plugin exit             # every request answered 403 by the plugin
  mock-kong proxy --plugin hello --plugin exit --config 'hello={\"message\":\"hi\"}' --listen 127.0.0.1:0
  mock-kong proxy --start-cmd ./my-plugin --query-cmd './my-plugin -dump' --plugin my-plugin \\
      --upstream http://127.0.0.1:3000 --workers 2
  mock-kong proxy --peer go --plugin bench --config '{\"calls\":10}' --pdk-calls-header   # for oha/wrk/k6";

/// The options of `mock-kong proxy` (besides the repeatable `--plugin`, see [`ProxyArgs`]).
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct ProxyOpts {
    #[command(flatten)]
    pub server: ServerArgs,
    /// A plugin's config record as JSON; with several --plugin, `NAME=JSON` (repeatable).
    #[arg(long = "config", value_name = "[NAME=]JSON")]
    pub configs: Vec<String>,
    /// Address to listen on (Kong's proxy port by default; port 0: any free port, printed in
    /// the banner).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN, help_heading = "Proxy")]
    pub listen: String,
    /// Where requests go after `access`: `echo` (a built-in upstream answering 200 with the
    /// request it saw, as JSON) or `http://HOST[:PORT][/PATH]`.
    #[arg(
        long,
        value_name = "URL|echo",
        default_value = "echo",
        help_heading = "Proxy"
    )]
    pub upstream: String,
    /// The Kong version to emulate (2.3 – 3.9).
    #[arg(
        long,
        value_name = "X.Y",
        default_value = "3.9",
        help_heading = "Proxy"
    )]
    pub kong_version: KongVersion,
    /// Worker threads, each with its own plugin-server connections (nginx worker_processes).
    #[arg(long, value_name = "N", default_value_t = 1, help_heading = "Proxy")]
    pub workers: usize,
    /// Write one line per request in Kong's access-log format to FILE, or to stdout without
    /// FILE.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-", help_heading = "Proxy")]
    pub access_log: Option<String>,
    /// Connect and read timeout of the upstream call, in seconds (Kong's service default 60).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 60.0,
        help_heading = "Proxy"
    )]
    pub upstream_timeout: f64,
    /// The largest request body accepted (413 beyond), and upstream answer (502 beyond).
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20, help_heading = "Proxy")]
    pub max_body: usize,
    /// Add `x-mock-kong-pdk-calls: N` to every answer: the PDK calls the request's events made
    /// before it was answered.
    #[arg(long, help_heading = "Proxy")]
    pub pdk_calls_header: bool,
}

/// `mock-kong proxy` arguments: [`ProxyOpts`] with `--plugin` repeatable (every other command
/// takes one plugin).
#[derive(Debug)]
pub struct ProxyArgs {
    pub opts: ProxyOpts,
    /// The plugins, in the order given (they run in Kong's order: by priority).
    pub plugins: Vec<String>,
}

impl FromArgMatches for ProxyArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        ProxyArgs::from_arg_matches_mut(&mut m.clone())
    }

    fn from_arg_matches_mut(m: &mut ArgMatches) -> Result<Self, clap::Error> {
        let plugins = m
            .get_many::<String>("plugin")
            .map(|v| v.cloned().collect())
            .unwrap_or_default();
        let opts = ProxyOpts::from_arg_matches_mut(m)?;
        Ok(ProxyArgs { opts, plugins })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = ProxyArgs::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for ProxyArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        repeatable_plugin(ProxyOpts::augment_args(cmd))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        repeatable_plugin(ProxyOpts::augment_args_for_update(cmd))
    }
}

fn repeatable_plugin(cmd: clap::Command) -> clap::Command {
    cmd.mut_arg("plugin", |a| {
        a.action(ArgAction::Append)
            .help("Plugin to run (repeatable: several plugins run in Kong's order, by priority)")
    })
}

/// `--config` values by plugin name (`None`: the one plugin).
fn configs(
    raw: &[String],
    plugins: &[String],
) -> anyhow::Result<BTreeMap<String, serde_json::Map<String, serde_json::Value>>> {
    let mut out = BTreeMap::new();
    for text in raw {
        let trimmed = text.trim_start();
        let (name, json) = if trimmed.starts_with('{') {
            match plugins {
                [one] => (one.clone(), trimmed),
                _ => bail!(
                    "--config {text:?}: with several --plugin, say which plugin it is for: --config NAME={trimmed}"
                ),
            }
        } else {
            let (name, json) = text
                .split_once('=')
                .ok_or_else(|| anyhow!("--config expects JSON or NAME=JSON, got {text:?}"))?;
            if !plugins.iter().any(|p| p == name) {
                bail!(
                    "--config {text:?} names plugin `{name}`, which is not among the --plugin values ({})",
                    plugins.join(", ")
                );
            }
            (name.to_owned(), json)
        };
        let value: serde_json::Value = serde_json::from_str(json)
            .with_context(|| format!("--config for `{name}` is not valid JSON: {json}"))?;
        let serde_json::Value::Object(map) = value else {
            bail!("--config for `{name}` must be a JSON object, got {json}");
        };
        if out.insert(name.clone(), map).is_some() {
            bail!("--config given twice for `{name}`");
        }
    }
    Ok(out)
}

fn listen_addr(text: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = text.parse() {
        return Ok(a);
    }
    text.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| anyhow!("--listen expects HOST:PORT such as 127.0.0.1:8000, got {text:?}"))
}

/// Where access-log lines go: stdout (a closed stdout stops the proxy, as for every command)
/// or a file, appended to.
fn access_sink(target: &str) -> anyhow::Result<LineSink> {
    if target == "-" {
        return Ok(Arc::new(|line: &str| {
            let _ = crate::edge::write_out(format_args!("{line}\n"));
        }));
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(target)
        .with_context(|| format!("opening the access log {target}"))?;
    let file = Mutex::new(file);
    Ok(Arc::new(move |line: &str| {
        if let Ok(mut f) = file.lock() {
            let _ = writeln!(f, "{line}");
        }
    }))
}

pub(crate) async fn run(a: ProxyArgs) -> Result<i32, Failure> {
    let o = &a.opts;
    let plugins = if a.plugins.is_empty() {
        vec![o.server.plugin().to_owned()]
    } else {
        a.plugins.clone()
    };
    let mut configs = configs(&o.configs, &plugins).map_err(setup)?;
    let listen = listen_addr(&o.listen).map_err(setup)?;
    let upstream = match o.upstream.as_str() {
        "echo" => UpstreamTarget::Echo,
        url => UpstreamTarget::Url(UpstreamUrl::parse(url).map_err(|e| setup(anyhow!(e)))?),
    };
    if !(o.upstream_timeout > 0.0 && o.upstream_timeout.is_finite()) {
        return Err(setup(anyhow!(
            "--upstream-timeout must be a positive number of seconds, got {}",
            o.upstream_timeout
        )));
    }
    if o.workers == 0 {
        return Err(setup(anyhow!("--workers must be at least 1")));
    }
    let spec = o.server.spec().map_err(setup)?;
    let placement = o.server.placement();
    let session_opts = o.server.session_options(false).map_err(setup)?;
    let plugins: Vec<_> = plugins
        .iter()
        .map(|p| (p.clone(), configs.remove(p).unwrap_or_default()))
        .collect();
    let (sessions, chain) = open_chain(&spec, &placement, &plugins, &session_opts, o.kong_version)
        .await
        .map_err(|e| match e {
            ChainError::Target(e) => setup(e),
            ChainError::Session(e) => session_failure(e),
            e @ ChainError::Plugin { .. } => Failure::server(e),
        })?;
    let served = serve(o, listen, upstream, chain).await;
    for s in sessions {
        // How the server ended is in its own log lines ([pluginserver] ... stopped).
        let _ = s.close().await;
    }
    served?;
    crate::outln!("mock-kong proxy stopped; every plugin server it started was stopped")?;
    Ok(0)
}

async fn serve(
    o: &ProxyOpts,
    listen: SocketAddr,
    upstream: UpstreamTarget,
    chain: PluginChain,
) -> Result<(), Failure> {
    let mut opts = ProxyOptions::new(listen);
    opts.upstream = upstream;
    opts.upstream_timeouts = UpstreamTimeouts {
        connect: Duration::from_secs_f64(o.upstream_timeout),
        read: Duration::from_secs_f64(o.upstream_timeout),
    };
    opts.kong_version = o.kong_version;
    opts.workers = o.workers;
    opts.max_body = o.max_body;
    opts.grace = STOP_GRACE;
    opts.pdk_calls_header = o.pdk_calls_header;
    opts.access_log = o
        .access_log
        .as_deref()
        .map(access_sink)
        .transpose()
        .map_err(setup)?;
    opts.error_log = Some(Arc::new(|line: &str| eprintln!("{line}")));
    let banner_plugins = chain.plugins().to_vec();
    let proxy = Proxy::start(opts, chain).map_err(setup)?;
    let banner = banner(&proxy, o, &banner_plugins);
    let printed = crate::outln!("{banner}");
    if printed.is_ok() {
        crate::edge::until_stopped().await;
    }
    proxy.stop().await;
    printed
}

fn banner(proxy: &Proxy, o: &ProxyOpts, plugins: &[ChainPlugin]) -> String {
    let mut s = format!(
        "mock-kong proxy (Kong {}) listening on http://{}, {} worker{}\n  upstream  {}",
        o.kong_version,
        proxy.addr(),
        o.workers,
        if o.workers == 1 { "" } else { "s" },
        proxy.upstream()
    );
    for p in plugins {
        let run: Vec<&str> = p.http_phases().iter().map(|p| p.as_str()).collect();
        let not_run: Vec<&str> = p
            .info
            .phases
            .iter()
            .map(String::as_str)
            .filter(|d| !run.contains(d))
            .collect();
        s.push_str(&format!(
            "\n  plugin    {} {}, priority {}, phases [{}]{}: {}{}{}",
            p.info.name,
            p.info.version,
            p.info.priority,
            run.join(", "),
            if not_run.is_empty() {
                String::new()
            } else {
                format!(" (not run over plain HTTP: {})", not_run.join(", "))
            },
            p.server,
            if p.server.contains(p.protocol.as_str()) {
                String::new()
            } else {
                format!(" ({})", p.protocol)
            },
            p.pid.map(|pid| format!(", pid {pid}")).unwrap_or_default()
        ));
    }
    if o.access_log.is_some() {
        s.push_str(&format!(
            "\n  access log {}",
            match o.access_log.as_deref() {
                Some("-") => "stdout",
                Some(f) => f,
                None => "",
            }
        ));
    }
    s.push_str("\nCtrl-C stops the proxy and the plugin server(s).");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn configs_name_their_plugin_when_there_are_several() {
        let one = configs(&names(&[r#"{"message":"hi"}"#]), &names(&["hello"])).unwrap();
        assert_eq!(one["hello"]["message"], "hi");
        let two = configs(
            &names(&[r#"hello={"message":"hi"}"#, r#"exit={"status":401}"#]),
            &names(&["hello", "exit"]),
        )
        .unwrap();
        assert_eq!(two["exit"]["status"], 401);
        let e = configs(&names(&["{}"]), &names(&["hello", "exit"])).unwrap_err();
        assert!(e.to_string().contains("NAME="), "{e}");
        let e = configs(&names(&["bench={}"]), &names(&["hello"])).unwrap_err();
        assert!(e.to_string().contains("not among"), "{e}");
        let e = configs(&names(&["[1]"]), &names(&["hello"])).unwrap_err();
        assert!(e.to_string().contains("NAME=JSON"), "{e}");
        let e = configs(&names(&["hello=[1]"]), &names(&["hello"])).unwrap_err();
        assert!(e.to_string().contains("must be a JSON object"), "{e}");
    }

    #[test]
    fn listen_addresses_parse() {
        assert_eq!(
            listen_addr("127.0.0.1:0").unwrap(),
            "127.0.0.1:0".parse::<SocketAddr>().unwrap()
        );
        assert!(listen_addr("localhost:8000").is_ok());
        assert!(listen_addr("8000")
            .unwrap_err()
            .to_string()
            .contains("HOST:PORT"));
    }
}
