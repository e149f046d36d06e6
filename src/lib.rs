//! kube-baseline: a Kubernetes admission webhook that enforces the platform's security and
//! observability baseline, with exceptions keyed to approved ADRs.
//!
//! The evaluation is pure ([`policy`], [`admission`]); I/O lives in [`server`] and the
//! exception sources.
#![forbid(unsafe_code)]

pub mod admission;
pub mod certs;
pub mod check;
pub mod config;
pub mod exceptions;
mod json_text;
pub mod metrics;
pub mod policy;
pub mod quantity;
mod scan;
pub mod server;
pub mod signature;
#[cfg(test)]
mod testing;
pub mod workload;
