//! The exception registry: `BaselineException` objects keyed to accepted ADRs.
//! (Filled in by the exceptions issue.)

/// The indexed exceptions of one snapshot.
#[derive(Debug, Default)]
pub struct Registry {}
pub mod cli;
