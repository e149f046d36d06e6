//! `kube-baseline exceptions list|lint`. (Filled in by the exceptions issue.)

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum ExceptionsCommand {
    /// List exceptions with their state.
    List,
}

pub fn run(_cmd: ExceptionsCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("exceptions is not implemented yet")
}
