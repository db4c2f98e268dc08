//! `phasegate`: one binary for the coordinator, the agents and the
//! operators (SPEC.md §7). Thin: parses flags, sets up logging, and hands
//! over to the library crates.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Release pipelines for feature gates and dynamic configs.
#[derive(Debug, Parser)]
#[command(name = "phasegate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the coordinator: owns definitions and drives every rollout.
    Coordinator {
        /// NATS server URL.
        #[arg(
            long,
            env = "PHASEGATE_NATS_URL",
            default_value = "nats://127.0.0.1:4222"
        )]
        nats_url: String,
        /// Configuration file (TOML); see config/coordinator.toml.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Cmd::Coordinator { nats_url, config } => {
            let cfg = match &config {
                Some(path) => phasegate_coordinator::CoordinatorConfig::load(path)?,
                None => phasegate_coordinator::CoordinatorConfig::default(),
            };
            // A URL in the file applies unless the flag or variable was given.
            let url = match (
                &cfg.nats_url,
                std::env::args().any(|a| a.starts_with("--nats-url"))
                    || std::env::var_os("PHASEGATE_NATS_URL").is_some(),
            ) {
                (Some(u), false) => u.clone(),
                _ => nats_url,
            };
            let coordinator = phasegate_coordinator::Coordinator::start(&url, cfg)
                .await
                .context("cannot start the coordinator")?;
            shutdown_signal().await;
            coordinator.stop().await;
        }
    }
    Ok(())
}
