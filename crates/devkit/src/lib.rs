//! The local-fleet kit: what the end-to-end tests, the fleet benchmark and
//! `phasegate demo` need to run phasegate on one machine.
//!
//! - [`NatsServer`]: a real `nats-server` with JetStream on a free loopback
//!   port, with a store of its own; [`nats_server_binary`] says which binary
//!   (see there for the search order).
//! - [`ChildProcess`]: a process whose output goes to a log file, killed on
//!   drop; when a test panics meanwhile, the end of its log is printed.
//! - [`NatsCluster`], [`start_leaf`] and [`TcpLink`]: the production
//!   topology in small: a JetStream cluster, a leaf node per region, and a
//!   link between them that a test cuts.
//! - [`free_port`] and [`wait_for`] / [`wait_until`]: never sleep to
//!   synchronise, poll with a deadline and say what was awaited.
//!
//! This crate knows nothing of phasegate's protocol or libraries. It is for
//! tests, benchmarks and the CLI's demo; the coordinator and agent
//! libraries must never depend on it.

mod error;
mod nats;
mod process;
mod topology;
mod wait;

pub use error::Error;
pub use nats::{
    MIN_NATS_SERVER, NATS_SERVER_ENV, NatsServer, NatsServerOptions, nats_server_binary,
};
pub use process::ChildProcess;
pub use topology::{ClusterOptions, NatsCluster, TcpLink, start_leaf};
pub use wait::{wait_for, wait_until};

use std::path::{Path, PathBuf};

/// A loopback port that was free a moment ago: bound, then released for a
/// process about to listen on it. Another process may take it meanwhile;
/// where that matters, let the process pick its own port and learn it, as
/// [`NatsServer`] does.
///
/// # Errors
///
/// When no loopback port can be bound.
pub fn free_port() -> Result<u16, Error> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(Error::io("bind a free loopback port"))
}

/// The root of the cargo workspace this crate was built in, as it was at
/// compile time.
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    // This package lives in `<root>/crates/devkit`.
    here.ancestors().nth(2).unwrap_or(here).to_path_buf()
}
