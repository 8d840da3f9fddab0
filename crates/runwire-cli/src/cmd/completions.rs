//! `runwire completions SHELL`: the shell completion script, generated from the
//! command-line definition by `clap_complete`.

use std::process::ExitCode;

use clap::Args;
use clap_complete::Shell;

/// Arguments of `runwire completions`.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    ///
    /// bash: `runwire completions bash > ~/.local/share/bash-completion/completions/runwire`;
    /// zsh: `runwire completions zsh > "${fpath[1]}/_runwire"`;
    /// fish: `runwire completions fish > ~/.config/fish/completions/runwire.fish`.
    shell: Shell,
}

/// Writes the script for `cmd` to standard output.
pub(crate) fn run(args: &CompletionsArgs, cmd: &mut clap::Command) -> anyhow::Result<ExitCode> {
    clap_complete::generate(args.shell, cmd, "runwire", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
