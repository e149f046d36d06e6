//! Development and first-install certificates (rcgen). (Filled in by the serving issue.)

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct CertsArgs {}

pub fn run(_args: CertsArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("certs is not implemented yet")
}
