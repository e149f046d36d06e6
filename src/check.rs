//! `kube-baseline check`: the webhook's engine on manifests, offline, for CI.
//! (Filled in by the check issue.)

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {}

pub fn run(_args: CheckArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("check is not implemented yet")
}
