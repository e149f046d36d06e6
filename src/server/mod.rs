//! The webhook server: TLS on the webhook port, metrics and health on the ops port.
//! (Filled in by the serving issue.)

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {}

pub fn run(_args: ServeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("serve is not implemented yet")
}
