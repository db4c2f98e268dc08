//! Production topologies on one machine: a JetStream cluster of
//! `nats-server`s (routes on loopback), leaf nodes that connect to it (one
//! per region), and a TCP link between two of them that a test can cut and
//! restore.
//!
//! Every server is a [`NatsServer`] started from a configuration file the
//! kit writes (cluster, leaf node and JetStream domain blocks); the client
//! port and store come from the command line as for any other.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Error, NatsServer, NatsServerOptions, free_port};

/// How to run a [`NatsCluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// How many servers. One runs without a `cluster` block (a single
    /// server, which JetStream does not treat as a cluster).
    pub size: usize,
    /// The cluster's name (`cluster { name }`).
    pub name: String,
    /// The JetStream domain of the servers (`jetstream { domain }`): what
    /// clients on leaf nodes name to reach its buckets.
    pub js_domain: Option<String>,
    /// Whether every server accepts leaf node connections (a hub).
    pub leafnodes: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            size: 3,
            name: "phasegate".to_owned(),
            js_domain: None,
            leafnodes: false,
        }
    }
}

/// Servers that form one NATS cluster with JetStream on each (its own
/// store), routes on loopback, killed on drop.
#[derive(Debug)]
pub struct NatsCluster {
    // First, so the servers die before their directory goes.
    nodes: Vec<NatsServer>,
    leaf_ports: Vec<u16>,
    monitor_ports: Vec<u16>,
    _dir: TempDir,
}

impl NatsCluster {
    /// Starts `size` servers as one cluster with the default options.
    ///
    /// # Errors
    ///
    /// As [`NatsCluster::start_with`].
    pub async fn start(size: usize) -> Result<Self, Error> {
        Self::start_with(ClusterOptions {
            size,
            ..ClusterOptions::default()
        })
        .await
    }

    /// Starts the servers `options` describe and waits until each accepts
    /// client connections. JetStream may still be electing its leaders:
    /// callers poll a JetStream request until it answers.
    ///
    /// # Errors
    ///
    /// When a port cannot be found, a configuration file cannot be
    /// written, or a server does not start (the error carries its log).
    pub async fn start_with(options: ClusterOptions) -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix("phasegate-cluster-")
            .tempdir()
            .map_err(Error::io("create a directory for a nats cluster"))?;
        let size = options.size.max(1);
        let route_ports = (0..size)
            .map(|_| free_port())
            .collect::<Result<Vec<_>, _>>()?;
        let leaf_ports = if options.leafnodes {
            (0..size)
                .map(|_| free_port())
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        let monitor_ports = (0..size)
            .map(|_| free_port())
            .collect::<Result<Vec<_>, _>>()?;
        // Server names are unique across every topology on the machine.
        let tag = route_ports.first().copied().unwrap_or_default();
        let mut nodes = Vec::with_capacity(size);
        for i in 0..size {
            let mut conf = format!(
                "server_name: \"{}-{tag}-{i}\"\nhttp: \"127.0.0.1:{}\"\n",
                options.name, monitor_ports[i]
            );
            if size > 1 {
                let routes: Vec<String> = route_ports
                    .iter()
                    .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
                    .collect();
                let _ = write!(
                    conf,
                    "cluster {{\n  name: \"{}\"\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}\n",
                    options.name,
                    route_ports[i],
                    routes.join(", ")
                );
            }
            if let Some(domain) = &options.js_domain {
                let _ = writeln!(conf, "jetstream {{ domain: \"{domain}\" }}");
            }
            if let Some(port) = leaf_ports.get(i) {
                // Not advertised: a leaf reconnects only to the URLs it was
                // given, so a link in front of the hub stays the only way.
                let _ = writeln!(
                    conf,
                    "leafnodes {{ listen: \"127.0.0.1:{port}\", no_advertise: true }}"
                );
            }
            let node_dir = dir.path().join(format!("n{i}"));
            nodes.push(start_from(&node_dir, &conf).await?);
        }
        Ok(Self {
            nodes,
            leaf_ports,
            monitor_ports,
            _dir: dir,
        })
    }

    /// Every server's client URL, comma-separated: what phasegate's
    /// `--nats-url` takes.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The servers, in start order.
    pub fn nodes(&self) -> &[NatsServer] {
        &self.nodes
    }

    /// Server `i`, to kill or restart it.
    ///
    /// # Panics
    ///
    /// When there is no server `i`: a bug in the test.
    pub fn node_mut(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }

    /// The index of the server whose name (as JetStream reports leaders)
    /// is `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        name.rsplit_once('-')
            .and_then(|(_, i)| i.parse::<usize>().ok())
            .filter(|i| *i < self.nodes.len())
    }

    /// The monitoring port of server `i` (`/connz`, `/jsz`, `/healthz`).
    pub fn monitor_port(&self, i: usize) -> Option<u16> {
        self.monitor_ports.get(i).copied()
    }

    /// The leaf node ports (`nats-leaf://127.0.0.1:<port>`), one per
    /// server, when started with `leafnodes`.
    pub fn leaf_ports(&self) -> &[u16] {
        &self.leaf_ports
    }
}

/// Starts a leaf node server whose one remote is `remote` (a
/// `nats-leaf://host:port` of a hub, or of a [`TcpLink`] in front of one),
/// with JetStream in domain `js_domain` (a region's own, never the hub's),
/// pinging its connections every second so that a lost link is noticed in
/// seconds.
///
/// # Errors
///
/// When the server does not start (the error carries its log).
pub async fn start_leaf(
    dir: &Path,
    name: &str,
    remote: &str,
    js_domain: &str,
) -> Result<NatsServer, Error> {
    let conf = format!(
        "server_name: \"leaf-{name}-{port}\"\n\
         ping_interval: \"1s\"\nping_max: 2\n\
         jetstream {{ domain: \"{js_domain}\" }}\n\
         leafnodes {{ remotes: [ {{ urls: [\"{remote}\"] }} ] }}\n",
        port = free_port()?,
    );
    start_from(dir, &conf).await
}

/// Writes `conf` into `dir` and starts a server from it, keeping its log,
/// ports file and store there.
async fn start_from(dir: &Path, conf: &str) -> Result<NatsServer, Error> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    let path = dir.join("nats-server.conf");
    std::fs::write(&path, conf).map_err(Error::io(format!("write {}", path.display())))?;
    NatsServer::start_with(NatsServerOptions {
        config: Some(path),
        dir: Some(dir.to_path_buf()),
    })
    .await
}

/// A TCP link on a loopback port that forwards to a target address, and
/// that a test cuts ([`TcpLink::cut`]: every connection closed, new ones
/// closed at accept) and restores: a network partition between two
/// servers without touching either. Stops with its handle.
#[derive(Debug)]
pub struct TcpLink {
    port: u16,
    up: Arc<watch::Sender<bool>>,
    task: JoinHandle<()>,
}

impl TcpLink {
    /// Listens on a free loopback port and forwards to `127.0.0.1:target`.
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub async fn start(target: u16) -> Result<Self, Error> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(Error::io("bind a loopback port for a link"))?;
        let port = listener
            .local_addr()
            .map_err(Error::io("read a link's port"))?
            .port();
        let (up, _) = watch::channel(true);
        let up = Arc::new(up);
        let task = tokio::spawn(accept(listener, target, up.clone()));
        Ok(Self { port, up, task })
    }

    /// The port to connect to instead of the target.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes every connection through the link and refuses new ones (they
    /// are accepted and closed at once) until [`TcpLink::restore`].
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for TcpLink {
    fn drop(&mut self) {
        self.task.abort();
        self.up.send_replace(false);
    }
}

async fn accept(listener: TcpListener, target: u16, up: Arc<watch::Sender<bool>>) {
    while let Ok((inbound, _)) = listener.accept().await {
        if !*up.borrow() {
            continue; // dropped: closed at once
        }
        let mut down = up.subscribe();
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                return;
            };
            let mut inbound = inbound;
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = down.wait_for(|up| !*up) => {}
            }
        });
    }
}
