//! `mock-kong dump`.

use clap::Args;

use super::{session_failure, setup, Failure, JsonArg, ServerArgs};

const EXAMPLES: &str = "\
Examples:
  mock-kong dump                                         # the reference server's dump
  mock-kong dump --query-cmd 'python3 greet.py --dump'   # your plugin's dump, validated as Kong 3.9 would
  mock-kong dump --kong-conf kong.conf --name greet --json";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct DumpArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub json: JsonArg,
}

pub(crate) async fn run(a: DumpArgs) -> Result<i32, Failure> {
    let opts = a.server.session_options(false).map_err(setup)?;
    let (spec, target) = a.server.target().await?;
    let out = crate::dump::query(&target.query_cmd, opts.dump_timeout)
        .await
        .map_err(|e| session_failure(e.into()))?;
    let dump = &out.dump;
    a.server.check_plugin(&spec, dump)?;
    let json = serde_json::json!({
        "server": { "label": target.label, "query_cmd": target.query_cmd },
        "protocol": dump.protocol,
        "dump": dump,
        "plugin": dump.plugin(),
        "stderr": out.stderr,
        "exit_code": out.exit_code,
    });
    a.json.emit(&json).map_err(setup)?;
    if !a.json.to_stdout() {
        let p = dump.plugin();
        crate::outln!("server:   {} ({})", target.label, target.query_cmd)?;
        crate::outln!(
            "protocol: {}{}",
            dump.protocol,
            if dump.protocol_explicit {
                ""
            } else {
                " (not named in the dump; Kong's default)"
            }
        )?;
        crate::outln!(
            "plugin:   {} {} (priority {})",
            p.name,
            p.version,
            p.priority
        )?;
        crate::outln!("phases:   {}", p.phases.join(", "))?;
        crate::outln!("schema:   {}", p.schema)?;
        for extra in dump.plugins.iter().skip(1) {
            crate::outln!(
                "ignored:  {} (Kong 3.9 registers only the first plugin of a dump)",
                extra.name
            )?;
        }
        for w in &dump.warnings {
            crate::outln!("warning:  {w}")?;
        }
    }
    Ok(0)
}
