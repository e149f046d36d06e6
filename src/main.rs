//! The `kube-baseline` command: thin; every subcommand lives in the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc instead of glibc's malloc. A review allocates and frees about a hundred small
/// objects (the decoded pod spec, the answer, the log line) on whichever worker runs it:
/// with glibc that was 17% of the server's instructions per review on a built Deployment
/// (callgrind: 150k against 124k with jemalloc), for 2 MiB more resident memory. mimalloc
/// was as fast but held 10 MiB more idle and 20 MiB more with 10,000 exceptions
/// (docs/benchmarks-history.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "kube-baseline",
    version,
    about = "Admission webhook enforcing the platform baseline, with ADR-keyed exceptions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve /validate and /mutate over TLS, and /metrics and /health/* on the ops port.
    Serve(kube_baseline::server::ServeArgs),
    /// Generate a CA and a serving certificate (development, or a first install).
    Certs(kube_baseline::certs::CertsArgs),
    /// Evaluate manifests offline with the webhook's engine (for CI).
    Check(kube_baseline::check::CheckArgs),
    /// List and lint BaselineException objects.
    #[command(subcommand)]
    Exceptions(kube_baseline::exceptions::cli::ExceptionsCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => kube_baseline::server::run(args),
        Command::Certs(args) => kube_baseline::certs::run(args),
        Command::Check(args) => kube_baseline::check::run(args),
        Command::Exceptions(cmd) => kube_baseline::exceptions::cli::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kube-baseline: {e:#}");
            ExitCode::from(2)
        }
    }
}
