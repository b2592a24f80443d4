//! `mock-kong completions SHELL`: a completion script for bash, zsh or fish on stdout.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::{Cli, Failure};

const EXAMPLES: &str = "\
Examples:
  mock-kong completions bash > ~/.local/share/bash-completion/completions/mock-kong
  mock-kong completions zsh > ~/.zfunc/_mock-kong      # with fpath+=(~/.zfunc) in ~/.zshrc
  mock-kong completions fish > ~/.config/fish/completions/mock-kong.fish";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

/// The shells completions are written for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

impl From<CompletionShell> for Shell {
    fn from(s: CompletionShell) -> Shell {
        match s {
            CompletionShell::Bash => Shell::Bash,
            CompletionShell::Zsh => Shell::Zsh,
            CompletionShell::Fish => Shell::Fish,
        }
    }
}

/// Writes the completion script of `C` (named `bin`) for `shell` to stdout; a closed stdout is
/// a normal end (loadgen uses this for its own command line too).
pub fn write<C: CommandFactory>(shell: CompletionShell, bin: &str) -> Result<i32, Failure> {
    let mut script = Vec::new();
    clap_complete::generate(Shell::from(shell), &mut C::command(), bin, &mut script);
    crate::out!("{}", String::from_utf8_lossy(&script))?;
    Ok(0)
}

pub(crate) fn run(a: CompletionsArgs) -> Result<i32, Failure> {
    write::<Cli>(a.shell, "mock-kong")
}
