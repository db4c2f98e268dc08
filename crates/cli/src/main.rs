//! `phasegate`: one binary for the coordinator, the agents and the
//! operators (SPEC.md §7). Thin: parses flags, sets up logging, and hands
//! over to the library crates.

mod analysis;
mod apply;
mod auth;
mod dashboard;
mod demo;
mod eval;
mod ops;
mod output;
mod render;
mod servers;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use phasegate_client::{ClientError, PhasegateClient};

pub(crate) const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// Release pipelines for feature gates and dynamic configs.
#[derive(Debug, Parser)]
#[command(name = "phasegate", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Cmd,
}

/// Flags every command takes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Global {
    /// NATS server URL, or several comma-separated (a cluster's servers:
    /// the client fails over between them) [default nats://127.0.0.1:4222].
    #[arg(long, global = true, env = "PHASEGATE_NATS_URL")]
    pub(crate) nats_url: Option<String>,
    /// NATS credentials file: a user JWT and seed, or only an nkey seed
    /// (as `phasegate auth init` writes) [for `coordinator` and `agent`
    /// it overrides `nats_creds` of their config file].
    #[arg(long, global = true, env = "PHASEGATE_NATS_CREDS", value_name = "FILE")]
    pub(crate) nats_creds: Option<PathBuf>,
    /// PEM file of the CA that signs the NATS server's certificate; any
    /// --tls-* option makes TLS required.
    #[arg(long, global = true, env = "PHASEGATE_TLS_CA", value_name = "FILE")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// PEM file of the client certificate for NATS (with --tls-key).
    #[arg(long, global = true, env = "PHASEGATE_TLS_CERT", value_name = "FILE")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM file of the client private key for NATS (with --tls-cert).
    #[arg(long, global = true, env = "PHASEGATE_TLS_KEY", value_name = "FILE")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Subject prefix of the command API and buckets [default phasegate;
    /// for `coordinator` and `agent` it overrides their config file].
    #[arg(long, global = true)]
    pub(crate) prefix: Option<String>,
    /// How results are printed.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Table)]
    pub(crate) output: Format,
    /// Who you are, recorded in history [default $PHASEGATE_ACTOR, else $USER].
    #[arg(long, global = true)]
    pub(crate) actor: Option<String>,
    /// How long to wait for the coordinator, in ms.
    #[arg(long, global = true, default_value_t = 5000)]
    pub(crate) timeout_ms: u64,
    /// Log format on stderr: text or json (filter with RUST_LOG).
    #[arg(long, global = true, default_value = "text")]
    pub(crate) log_format: phasegate_telemetry::LogFormat,
    /// Log to stderr: operator commands log nothing unless asked; -v shows
    /// warnings, -vv info, -vvv debug (RUST_LOG, when set, wins).
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    /// OTLP/HTTP endpoint for traces (`http://collector:4318`) [default:
    /// $OTEL_EXPORTER_OTLP_ENDPOINT; none = no export].
    #[arg(long, global = true)]
    pub(crate) otlp_endpoint: Option<String>,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Tables for people.
    Table,
    /// JSON for programs.
    Json,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the coordinator: owns definitions and drives every rollout.
    Coordinator {
        /// Configuration file (TOML); see config/coordinator.toml.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where Prometheus scrapes GET /metrics (host:port, or `off`)
        /// [default 127.0.0.1:9464].
        #[arg(long)]
        metrics_listen: Option<String>,
        /// Identity in the leadership lease; one per coordinator
        /// [default: the host name].
        #[arg(long)]
        instance_id: Option<String>,
    },
    /// Run an agent: serves one segment's gates and configs.
    Agent(servers::AgentArgs),
    /// Release pipelines.
    #[command(subcommand)]
    Pipeline(ops::PipelineCmd),
    /// Feature gates.
    #[command(subcommand)]
    Gate(ops::EntityCmd),
    /// Dynamic configs.
    #[command(subcommand)]
    Config(ops::EntityCmd),
    /// Rollouts: list, inspect, act, watch.
    #[command(subcommand)]
    Trigger(ops::TriggerCmd),
    /// The agents the coordinator knows.
    Agents {
        /// Only this segment.
        #[arg(long)]
        segment: Option<String>,
        /// Forget this agent instead of listing: it no longer blocks or
        /// counts until it reports again (`agent.forget`).
        #[arg(long, value_name = "AGENT_ID", conflicts_with = "segment")]
        forget: Option<String>,
    },
    /// Apply pipelines, gates and configs from TOML files: validate all,
    /// show the changes, then apply.
    Apply {
        /// Files or directories (read recursively, *.toml).
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
        /// Only validate and show what would change.
        #[arg(long)]
        dry_run: bool,
    },
    /// Evaluate a gate or config for a context against an agent, over
    /// OpenFeature (OFREP): what a unit gets there right now.
    Eval(eval::EvalArgs),
    /// Secured installations: NATS accounts, users and credentials.
    #[command(subcommand)]
    Auth(auth::AuthCmd),
    /// A web console over the command API, with your credentials:
    /// rollouts live, actions, gates, configs, pipelines and agents.
    Dashboard(dashboard::DashboardArgs),
    /// The whole system on one machine: a rollout that bakes, waits for
    /// approval, pauses on a health failure and completes, and one that is
    /// rolled back.
    Demo {
        /// As a secured installation written by `auth init`: every process
        /// with its own credentials, operators as identities with roles.
        #[arg(long)]
        secured: bool,
    },
}

/// Exit codes: 0 success; 1 usage or transport failure; one per error code.
pub(crate) fn exit_code(e: &anyhow::Error) -> u8 {
    use phasegate_proto::ErrorCode as C;
    if let Some(ClientError::Connect { .. } | ClientError::Security(_)) =
        e.downcast_ref::<ClientError>()
    {
        return 1;
    }
    match e.downcast_ref::<ClientError>().map(ClientError::code) {
        Some(C::Invalid) => 2,
        Some(C::NotFound) => 3,
        Some(C::Conflict) => 4,
        Some(C::Forbidden) => 5,
        Some(C::Unavailable) => 6,
        Some(C::Internal) => 7,
        None => 1,
    }
}

impl Global {
    /// The actor commands are recorded as.
    pub(crate) fn actor(&self) -> anyhow::Result<phasegate_proto::Actor> {
        let name = self
            .actor
            .clone()
            .or_else(|| std::env::var("PHASEGATE_ACTOR").ok())
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "operator".to_owned());
        phasegate_proto::Actor::new(name).map_err(|e| anyhow::anyhow!("--actor: {e}"))
    }

    /// The credentials and TLS flags (or their variables).
    pub(crate) fn security(&self) -> phasegate_client::Security {
        phasegate_client::Security {
            creds: self.nats_creds.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
        }
    }

    /// A client of the command API.
    pub(crate) async fn client(&self) -> anyhow::Result<PhasegateClient> {
        let url = self
            .nats_url
            .clone()
            .unwrap_or_else(|| DEFAULT_NATS_URL.to_owned());
        let prefix = self
            .prefix
            .as_deref()
            .unwrap_or(phasegate_proto::subjects::DEFAULT_PREFIX);
        let timeout = Duration::from_millis(self.timeout_ms);
        Ok(PhasegateClient::connect_secured(&url, self.security(), prefix, timeout).await?)
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let g = cli.global;
    match cli.command {
        Cmd::Coordinator {
            config,
            metrics_listen,
            instance_id,
        } => servers::coordinator(&g, config, metrics_listen, instance_id).await?,
        Cmd::Agent(args) => servers::agent(args, &g).await?,
        Cmd::Pipeline(c) => ops::pipeline(&g, c).await?,
        Cmd::Gate(c) => ops::entity(&g, phasegate_proto::EntityKind::Gate, c).await?,
        Cmd::Config(c) => ops::entity(&g, phasegate_proto::EntityKind::Config, c).await?,
        Cmd::Trigger(c) => return ops::trigger(&g, c).await,
        Cmd::Agents {
            forget: Some(id), ..
        } => ops::agent_forget(&g, &id).await?,
        Cmd::Agents { segment, .. } => ops::agents(&g, segment).await?,
        Cmd::Apply { files, dry_run } => apply::run(&g, &files, dry_run).await?,
        Cmd::Auth(c) => auth::run(c, g.prefix.as_deref())?,
        Cmd::Dashboard(args) => dashboard::run(&g, args).await?,
        Cmd::Eval(args) => return eval::run(&g, args).await,
        Cmd::Demo { secured } => return demo::run(&g, secured).await,
    }
    Ok(0)
}

#[tokio::main]
async fn main() -> ExitCode {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let (service, filter) = logging(&cli);
    let telemetry = match phasegate_telemetry::init(&phasegate_telemetry::Options {
        service_name: service,
        log_format: cli.global.log_format,
        default_filter: filter.to_owned(),
        otlp_endpoint: cli.global.otlp_endpoint.clone(),
    }) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    // An operator command is the root of its trace: a rollout it starts
    // hangs under it.
    let result = if service == OPERATOR_SERVICE {
        let span = tracing::info_span!("phasegate.cli", otel.name = %command_name(&matches));
        tracing::Instrument::instrument(run(cli), span).await
    } else {
        run(cli).await
    };
    telemetry.shutdown();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{}", output::sanitize(&error_line(&e)));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The service name of operator commands in logs and traces.
const OPERATOR_SERVICE: &str = "phasegate-cli";

/// The service name and default log filter: servers log at info; operator
/// commands log nothing unless asked (`-v`): what goes wrong is their one
/// line of error.
fn logging(cli: &Cli) -> (&'static str, &'static str) {
    match cli.command {
        Cmd::Coordinator { .. } => ("phasegate-coordinator", "info"),
        Cmd::Agent(_) => ("phasegate-agent", "info"),
        Cmd::Dashboard(_) => ("phasegate-dashboard", "info"),
        _ => (
            OPERATOR_SERVICE,
            match cli.global.verbose {
                0 => "off",
                1 => "warn",
                2 => "info",
                _ => "debug",
            },
        ),
    }
}

/// The command's words as clap matched them (`gate put`), never the raw
/// arguments: a flag before them may hold a secret (`--nats-url
/// nats://user:pass@host`).
fn command_name(matches: &clap::ArgMatches) -> String {
    let mut words = Vec::new();
    let mut m = matches;
    while let Some((word, sub)) = m.subcommand()
        && words.len() < 2
    {
        words.push(word);
        m = sub;
    }
    words.join(" ")
}

/// The one line a failed command prints. The message may be the
/// server's, or quote what it was sent: the caller sanitizes it, so the
/// terminal shows it and never obeys it.
fn error_line(e: &anyhow::Error) -> String {
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Api(api)) => format!("error: {}: {}", api.code, api.message),
        // Its message already names the cause: one line, once.
        Some(c @ (ClientError::Connect { .. } | ClientError::Security(_))) => {
            format!("error: {c}")
        }
        _ => format!("error: {e:#}"),
    }
}
