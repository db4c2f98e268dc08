//! Test harness of phasegate: real processes, no mocks.
//!
//! The process kit comes from `phasegate-devkit` and is re-exported here:
//! [`NatsServer`] runs a real `nats-server` with JetStream on a free
//! loopback port in a fresh temporary directory of its own (which binary:
//! [`nats_server_binary`]; `make test` sets `PHASEGATE_NATS_SERVER` to the
//! pinned one), [`ChildProcess`] runs a process with its output in a log,
//! [`wait_until`] and [`wait_for`] poll a condition with a deadline: tests
//! never sleep to synchronise. On top of it, this crate holds what is
//! phasegate's: `phasegate` processes ([`spawn_phasegate`], [`AgentProc`],
//! [`CoordEnv`]), bus clients of a server ([`NatsServerExt`]), a
//! protocol-level fake agent, an HTTP client, secured installations and the
//! fault injector.
//!
//! # Diagnosis
//!
//! When a test panics while a server or process handle is alive, the end
//! of its log is printed with the test's output.

pub mod agent_proc;
pub mod coord;
pub mod fake_agent;
pub mod faults;
pub mod http;
pub mod otlp;
pub mod process;
pub mod rollout;
pub mod secured;

pub use agent_proc::AgentProc;
pub use coord::{CoordEnv, wait_live_agents, wait_live_agents_within};
pub use fake_agent::FakeAgent;
pub use phasegate_devkit::{
    ChildProcess, NatsServer, free_port, nats_server_binary, wait_for, wait_until, workspace_root,
};
pub use process::{phasegate_binary, spawn_phasegate, spawn_phasegate_env};

use std::future::Future;
use std::time::Duration;

use phasegate_bus::{Client, ConnectOptions};

/// How long a test waits for something that should happen at once: long
/// enough for a loaded 2-core CI machine, short enough to fail visibly.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Bus clients of a [`NatsServer`].
pub trait NatsServerExt {
    /// A bus client of this server with the default request timeout.
    ///
    /// # Errors
    ///
    /// When the URL is refused (never, for a URL of ours).
    fn client(&self, name: &str) -> impl Future<Output = anyhow::Result<Client>> + Send;

    /// A bus client of this server with `opts`, its `url` replaced by the
    /// server's.
    ///
    /// # Errors
    ///
    /// When the URL is refused (never, for a URL of ours).
    fn client_with(
        &self,
        opts: ConnectOptions,
    ) -> impl Future<Output = anyhow::Result<Client>> + Send;
}

impl NatsServerExt for NatsServer {
    fn client(&self, name: &str) -> impl Future<Output = anyhow::Result<Client>> + Send {
        self.client_with(ConnectOptions::new(self.url(), name))
    }

    fn client_with(
        &self,
        opts: ConnectOptions,
    ) -> impl Future<Output = anyhow::Result<Client>> + Send {
        let opts = ConnectOptions {
            url: self.url(),
            ..opts
        };
        async move { Ok(phasegate_bus::connect(opts).await?) }
    }
}
