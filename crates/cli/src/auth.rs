//! `phasegate auth init`: a secured installation (SPEC.md §8) in NATS's
//! own configuration-mode model, no JWT resolver needed.
//!
//! - Account `PHASEGATE` holds the coordinator and the agents, has
//!   JetStream, and exports the command subjects `<p>.v1.>` as a service.
//! - Account `OPERATORS` holds the operators and imports that service with
//!   `share: true`, so the coordinator sees `Nats-Request-Info` with the
//!   operator's nkey public key as `user`: the sender's identity comes from
//!   the server, never from the request body.
//! - Every identity is an nkey user whose seed sits in its own credentials
//!   file; the server enforces least privilege with per-user permissions.
//!
//! Running it again adds the names given and keeps every identity already
//! in the directory: seeds are read back, never regenerated.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use nkeys::KeyPair;
use phasegate_coordinator::auth::Role;
use phasegate_proto::{Bucket, Segment, Subjects};

/// The account of the coordinator and the agents.
const SERVICE_ACCOUNT: &str = "PHASEGATE";
/// The account of the operators.
const OPERATOR_ACCOUNT: &str = "OPERATORS";
const SERVER_CONF: &str = "nats-server.conf";
const COORDINATOR_TOML: &str = "coordinator.toml";
const COORDINATOR_CREDS: &str = "coordinator.creds";

/// `phasegate auth …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AuthCmd {
    /// Write (or extend) a secured installation in DIR: nats-server.conf,
    /// one credentials file per identity, and coordinator.toml with the
    /// role of every operator.
    Init(InitArgs),
}

/// Flags of `phasegate auth init`.
#[derive(Debug, clap::Args)]
pub(crate) struct InitArgs {
    /// Directory to write (created, mode 0700).
    dir: PathBuf,
    /// A segment whose agents get an identity; repeat for several.
    #[arg(long = "segment", value_name = "NAME")]
    segments: Vec<String>,
    /// An operator identity, `NAME[:ROLE]` with ROLE viewer (default),
    /// editor or admin; repeat for several.
    #[arg(long = "operator", value_name = "NAME[:ROLE]")]
    operators: Vec<String>,
}

/// One operator: name, role, keypair.
struct Operator {
    role: Role,
    key: KeyPair,
}

/// Everything an installation holds.
struct Install {
    subjects: Subjects,
    coordinator: KeyPair,
    agents: BTreeMap<String, KeyPair>,
    operators: BTreeMap<String, Operator>,
}

impl InitArgs {
    /// `auth init DIR --segment S… --operator NAME[:ROLE]…`, for callers
    /// other than the command line (the secured demo).
    pub(crate) fn new(dir: PathBuf, segments: &[&str], operators: &[&str]) -> Self {
        Self {
            dir,
            segments: segments.iter().map(|s| (*s).to_owned()).collect(),
            operators: operators.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// `phasegate auth init`.
pub(crate) fn run(cmd: AuthCmd, prefix: Option<&str>) -> anyhow::Result<()> {
    let AuthCmd::Init(args) = cmd;
    let written = init(&args, prefix)?;
    print_summary(&written.install, &written.dir, &written.created);
    Ok(())
}

/// What `init` wrote.
pub(crate) struct Written {
    install: Install,
    /// The installation directory, resolved.
    pub(crate) dir: PathBuf,
    /// The credentials files created by this run.
    pub(crate) created: Vec<String>,
}

/// Writes (or extends) the installation in `args.dir`. Prints nothing:
/// the command prints a summary, the demo its own lines.
pub(crate) fn init(args: &InitArgs, prefix: Option<&str>) -> anyhow::Result<Written> {
    let dir = private_dir(&args.dir)?;
    let existing_toml = read_toml(&dir.join(COORDINATOR_TOML))?;
    let prefix = match prefix {
        Some(p) => p.to_owned(),
        None => existing_toml
            .get("subject_prefix")
            .and_then(toml::Value::as_str)
            .unwrap_or(phasegate_proto::subjects::DEFAULT_PREFIX)
            .to_owned(),
    };
    let subjects = Subjects::new(prefix).map_err(|e| anyhow::anyhow!("--prefix: {e}"))?;
    let mut created = Vec::new();
    let install = Install {
        subjects,
        coordinator: identity(&dir, COORDINATOR_CREDS, &mut created)?,
        agents: agents(&dir, &args.segments, &mut created)?,
        operators: operators(&dir, &args.operators, &existing_toml, &mut created)?,
    };
    write_private(&dir.join(SERVER_CONF), &server_conf(&install, &dir)?)?;
    write_private(
        &dir.join(COORDINATOR_TOML),
        &coordinator_toml(&install, &dir, existing_toml)?,
    )?;
    Ok(Written {
        install,
        dir,
        created,
    })
}

/// `dir`, created if need be, private (0700), resolved.
fn private_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private (0700)", dir.display()))?;
    dir.canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))
}

/// The key of every segment's agents: those already in `dir` and the
/// `segments` given, each new one created.
fn agents(
    dir: &Path,
    segments: &[String],
    created: &mut Vec<String>,
) -> anyhow::Result<BTreeMap<String, KeyPair>> {
    let mut names: Vec<String> = existing_names(dir, "agent-")?;
    for s in segments {
        let seg = Segment::new(s.clone()).map_err(|e| anyhow::anyhow!("--segment {s:?}: {e}"))?;
        names.push(seg.to_string());
    }
    names.sort();
    names.dedup();
    let mut agents = BTreeMap::new();
    for s in names {
        let key = identity(dir, &format!("agent-{s}.creds"), created)?;
        agents.insert(s, key);
    }
    Ok(agents)
}

/// Every operator: those on file (with the role recorded in the
/// coordinator's configuration) and those given as `NAME[:ROLE]`, each
/// new one created. A role given wins; none given keeps the one on file,
/// else viewer.
fn operators(
    dir: &Path,
    specs: &[String],
    existing_toml: &toml::Table,
    created: &mut Vec<String>,
) -> anyhow::Result<BTreeMap<String, Operator>> {
    let mut roles = existing_roles(existing_toml);
    for name in existing_names(dir, "operator-")? {
        roles.entry(name).or_insert(None);
    }
    for spec in specs {
        let (name, role) = parse_operator(spec)?;
        let slot = roles.entry(name).or_insert(None);
        if role.is_some() {
            *slot = role;
        }
    }
    let mut operators = BTreeMap::new();
    for (name, role) in roles {
        let key = identity(dir, &format!("operator-{name}.creds"), created)?;
        let role = role.unwrap_or(Role::Viewer);
        operators.insert(name, Operator { role, key });
    }
    Ok(operators)
}

/// `NAME[:ROLE]`.
fn parse_operator(spec: &str) -> anyhow::Result<(String, Option<Role>)> {
    let (name, role) = match spec.split_once(':') {
        Some((name, role)) => {
            let role = role.parse::<Role>().ok().with_context(|| {
                format!("--operator {spec:?}: role {role:?} is not viewer, editor or admin")
            })?;
            (name, Some(role))
        }
        None => (spec, None),
    };
    check_operator_name(name).with_context(|| format!("--operator {spec:?}"))?;
    Ok((name.to_owned(), role))
}

/// Operator names become file names and TOML keys: `[A-Za-z0-9_-]`, at
/// most 64.
fn check_operator_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'));
    if !ok {
        bail!("operator names are 1 to 64 of A-Z a-z 0-9 _ -, got {name:?}");
    }
    Ok(())
}

/// Names of the existing `<prefix><name>.creds` files.
fn existing_names(dir: &Path, prefix: &str) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let file = entry?.file_name();
        let Some(file) = file.to_str() else { continue };
        if let Some(name) = file
            .strip_prefix(prefix)
            .and_then(|f| f.strip_suffix(".creds"))
        {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// The roles recorded in an existing coordinator.toml.
fn existing_roles(table: &toml::Table) -> BTreeMap<String, Option<Role>> {
    let operators = table
        .get("auth")
        .and_then(|a| a.get("operators"))
        .and_then(toml::Value::as_table);
    operators
        .into_iter()
        .flatten()
        .filter(|(name, _)| check_operator_name(name).is_ok())
        .map(|(name, op)| {
            let role = op.get("role").and_then(toml::Value::as_str);
            (name.clone(), role.and_then(|r| r.parse().ok()))
        })
        .collect()
}

fn read_toml(path: &Path) -> anyhow::Result<toml::Table> {
    match fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("{}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(toml::Table::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The keypair in `dir/file`, or a new one written there (mode 0600).
fn identity(dir: &Path, file: &str, created: &mut Vec<String>) -> anyhow::Result<KeyPair> {
    let path = dir.join(file);
    match fs::read_to_string(&path) {
        Ok(text) => {
            // Never echo the file: it holds a secret.
            let seed = seed_of(&text).with_context(|| {
                format!("{} holds no user nkey seed; move it away", path.display())
            })?;
            KeyPair::from_seed(seed)
                .map_err(|_| anyhow::anyhow!("{}: the nkey seed is not valid", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = KeyPair::new_user();
            let seed = key
                .seed()
                .map_err(|_| anyhow::anyhow!("cannot encode a new nkey seed"))?;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            f.write_all(creds_text(&seed).as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            created.push(file.to_owned());
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The seed line of a credentials file.
fn seed_of(text: &str) -> Option<&str> {
    let mut lines = text.lines().map(str::trim);
    lines.find(|l| l.starts_with("---") && l.contains("BEGIN USER NKEY SEED"))?;
    lines
        .find(|l| !l.is_empty())
        .filter(|l| l.starts_with("SU"))
}

/// A credentials file holding only a seed: what config-mode nkey users
/// need (a JWT block would make clients try decentralised auth).
fn creds_text(seed: &str) -> String {
    format!(
        "-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************** IMPORTANT ***************************\n\
         This nkey seed proves the identity of its holder to NATS.\n\
         Keep it secret: readable by the one service that uses it only.\n\
         *****************************************************************\n"
    )
}

/// Writes `path` through a temporary file and a rename, mode 0600.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// A quoted string of the NATS configuration language (and of TOML).
fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// A list of the NATS configuration language, one item a line when long.
fn conf_list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| quoted(s)).collect();
    if items.len() <= 3 {
        format!("[{}]", items.join(", "))
    } else {
        format!(
            "[\n            {}\n          ]",
            items.join("\n            ")
        )
    }
}

/// The JetStream API subjects that read bucket `b` (stream `KV_<b>`):
/// stream info, direct and stream-message gets, and the ordered consumers
/// of watches (create, info, delete, flow control). Found by running
/// async-nats 0.51 against nats-server 2.15.
fn kv_read(b: &str) -> Vec<String> {
    let s = format!("KV_{b}");
    vec![
        format!("$JS.API.STREAM.INFO.{s}"),
        format!("$JS.API.STREAM.MSG.GET.{s}"),
        format!("$JS.API.DIRECT.GET.{s}"),
        format!("$JS.API.DIRECT.GET.{s}.>"),
        format!("$JS.API.CONSUMER.CREATE.{s}"),
        format!("$JS.API.CONSUMER.CREATE.{s}.>"),
        format!("$JS.API.CONSUMER.INFO.{s}.>"),
        format!("$JS.API.CONSUMER.DELETE.{s}.>"),
        format!("$JS.FC.{s}.>"),
    ]
}

/// Everything the owner of bucket `b` does: create, update, purge and
/// delete its stream, every consumer, and writes (`$KV.<b>.>`).
fn kv_own(b: &str) -> Vec<String> {
    let s = format!("KV_{b}");
    vec![
        format!("$JS.API.STREAM.*.{s}"),
        format!("$JS.API.STREAM.MSG.*.{s}"),
        format!("$JS.API.DIRECT.GET.{s}"),
        format!("$JS.API.DIRECT.GET.{s}.>"),
        format!("$JS.API.CONSUMER.*.{s}"),
        format!("$JS.API.CONSUMER.*.{s}.>"),
        format!("$JS.API.CONSUMER.*.*.{s}.>"),
        format!("$JS.FC.{s}.>"),
        format!("$JS.ACK.{s}.>"),
        format!("$KV.{b}.>"),
    ]
}

/// nats-server.conf: the two accounts, every identity with its
/// permissions, and comments that say how to run and extend it.
fn server_conf(i: &Install, dir: &Path) -> anyhow::Result<String> {
    let mut c = String::new();
    conf_preamble(&mut c, i, dir)?;
    service_account(&mut c, i)?;
    operator_account(&mut c, i)?;
    Ok(c)
}

/// What the file is and how to start it; server-wide settings; TLS,
/// commented out.
fn conf_preamble(w: &mut String, i: &Install, dir: &Path) -> std::fmt::Result {
    let p = i.subjects.prefix();
    let commands = i.subjects.all_commands();
    writeln!(
        w,
        "# A secured phasegate installation (prefix {p:?}), written by\n\
         # `phasegate auth init`: re-run it to add segments or operators; the\n\
         # identities already here are kept. Edits to this file are lost then.\n\
         #\n\
         # Start: nats-server -c {} -a 127.0.0.1 -p 4222 -sd /var/lib/nats/jetstream\n\
         # After a change: nats-server --signal reload (or kill -HUP the server).\n\
         #\n\
         # Account {SERVICE_ACCOUNT}: the coordinator and the agents, with JetStream;\n\
         # exports the command subjects {commands} as a service.\n\
         # Account {OPERATOR_ACCOUNT}: operators; import that service with\n\
         # `share: true`, so the coordinator learns who sent each command from\n\
         # the Nats-Request-Info header the server adds (user = nkey).\n\
         # Anonymous connections are refused: every user is an nkey.\n",
        dir.join(SERVER_CONF).display()
    )?;
    writeln!(w, "jetstream: enabled\nmax_payload: 1MB\n")?;
    writeln!(
        w,
        "# TLS (optional): uncomment, and give clients --tls-ca (and\n\
         # --tls-cert/--tls-key when verify is on).\n\
         # tls {{\n\
         #   cert_file: \"/etc/nats/server-cert.pem\"\n\
         #   key_file: \"/etc/nats/server-key.pem\"\n\
         #   ca_file: \"/etc/nats/ca.pem\"\n\
         #   verify: true\n\
         # }}\n"
    )
}

/// Opens `accounts` with the service account: the coordinator, the
/// agents, and the export of the command subjects.
fn service_account(w: &mut String, i: &Install) -> anyhow::Result<()> {
    let sub = &i.subjects;
    let commands = sub.all_commands();
    let desired = sub.bucket(Bucket::Desired);
    let inbox = "_INBOX.>".to_owned();
    writeln!(
        w,
        "accounts {{\n  {SERVICE_ACCOUNT} {{\n    jetstream: enabled\n    users: ["
    )?;
    // The coordinator owns every bucket, serves the commands and the
    // service API, and hears every report.
    let mut publish = vec!["$JS.API.INFO".to_owned(), inbox.clone()];
    for b in Bucket::ALL {
        publish.extend(kv_own(&sub.bucket(b)));
    }
    let subscribe = vec![commands.clone(), "$SRV.>".to_owned(), inbox.clone()];
    writeln!(
        w,
        "      # the coordinator: writes every bucket and the leader lease"
    )?;
    user(
        w,
        &i.coordinator.public_key(),
        &publish,
        &[],
        &subscribe,
        true,
    )?;
    for (segment, key) in &i.agents {
        let seg = Segment::new(segment.clone()).map_err(|e| anyhow::anyhow!("{segment}: {e}"))?;
        let mut publish = vec!["$JS.API.INFO".to_owned()];
        publish.extend(kv_read(&desired));
        publish.push(sub.agent_report(&seg));
        writeln!(
            w,
            "      # agent of segment {segment}: reads {desired}, reports as {segment} only"
        )?;
        user(
            w,
            &key.public_key(),
            &publish,
            &[],
            std::slice::from_ref(&inbox),
            false,
        )?;
    }
    writeln!(w, "    ]")?;
    writeln!(
        w,
        "    exports: [\n      {{ service: {}, response_type: singleton }}\n    ]\n  }}",
        quoted(&commands)
    )?;
    Ok(())
}

/// The operators' account, importing the command service; closes
/// `accounts`.
fn operator_account(w: &mut String, i: &Install) -> std::fmt::Result {
    let sub = &i.subjects;
    let commands = sub.all_commands();
    let inbox = "_INBOX.>".to_owned();
    writeln!(w, "  {OPERATOR_ACCOUNT} {{\n    users: [")?;
    for (name, op) in &i.operators {
        writeln!(w, "      # operator {name} ({})", op.role.as_str())?;
        user(
            w,
            &op.key.public_key(),
            std::slice::from_ref(&commands),
            &[sub.all_internal()],
            std::slice::from_ref(&inbox),
            false,
        )?;
    }
    writeln!(w, "    ]")?;
    writeln!(
        w,
        "    imports: [\n      {{ service: {{ account: {SERVICE_ACCOUNT}, subject: {} }}, share: true }}\n    ]\n  }}\n}}",
        quoted(&commands)
    )
}

/// One nkey user with its permissions.
fn user(
    w: &mut String,
    nkey: &str,
    publish: &[String],
    deny: &[String],
    subscribe: &[String],
    responses: bool,
) -> std::fmt::Result {
    writeln!(
        w,
        "      {{\n        nkey: {}\n        permissions: {{",
        quoted(nkey)
    )?;
    if deny.is_empty() {
        writeln!(w, "          publish: {{ allow: {} }}", conf_list(publish))?;
    } else {
        writeln!(
            w,
            "          publish: {{ allow: {}, deny: {} }}",
            conf_list(publish),
            conf_list(deny)
        )?;
    }
    writeln!(
        w,
        "          subscribe: {{ allow: {} }}",
        conf_list(subscribe)
    )?;
    if responses {
        writeln!(w, "          allow_responses: true")?;
    }
    writeln!(w, "        }}\n      }}")
}

/// coordinator.toml: the existing file's own settings kept, the prefix,
/// the coordinator's credentials, and `[auth.operators.<name>]` tables.
fn coordinator_toml(i: &Install, dir: &Path, mut table: toml::Table) -> anyhow::Result<String> {
    table.insert(
        "subject_prefix".into(),
        toml::Value::String(i.subjects.prefix().to_owned()),
    );
    table.insert(
        "nats_creds".into(),
        toml::Value::String(dir.join(COORDINATOR_CREDS).display().to_string()),
    );
    let mut operators = toml::Table::new();
    for (name, op) in &i.operators {
        let mut entry = toml::Table::new();
        entry.insert("nkey".into(), toml::Value::String(op.key.public_key()));
        entry.insert("role".into(), toml::Value::String(op.role.as_str().into()));
        operators.insert(name.clone(), toml::Value::Table(entry));
    }
    let mut auth = toml::Table::new();
    auth.insert("operators".into(), toml::Value::Table(operators));
    table.insert("auth".into(), toml::Value::Table(auth));
    let body = toml::to_string(&table).context("cannot write coordinator.toml")?;
    Ok(format!(
        "# Coordinator settings of a secured installation, written by\n\
         # `phasegate auth init` (re-run it to add operators; other settings\n\
         # added here are kept).\n\
         #\n\
         # [auth.operators.<name>]: one table per operator.\n\
         #   nkey = the operator's NATS identity: its nkey public key, which\n\
         #          the server reports as `user` in the Nats-Request-Info\n\
         #          header of each command (SPEC.md §8)\n\
         #   role = \"viewer\" (get, list, watch), \"editor\" (+ put and delete\n\
         #          of gates and configs, pause, resume, abort) or \"admin\"\n\
         #          (+ pipelines, skip, rollout, agent.forget)\n\
         # A command whose identity is not listed here is forbidden.\n\n{body}"
    ))
}

fn print_summary(i: &Install, dir: &Path, created: &[String]) {
    let d = dir.display();
    println!(
        "secured installation in {d} (prefix {})",
        i.subjects.prefix()
    );
    println!("  coordinator         {}", i.coordinator.public_key());
    for (segment, key) in &i.agents {
        println!("  agent {segment:<13} {}", key.public_key());
    }
    for (name, op) in &i.operators {
        println!(
            "  operator {name:<10} {} ({})",
            op.key.public_key(),
            op.role.as_str()
        );
    }
    if created.is_empty() {
        println!("no new identity");
    } else {
        println!("new credentials: {}", created.join(", "));
    }
    println!("\nnext:");
    println!("  nats-server -c {d}/{SERVER_CONF} -a 127.0.0.1 -p 4222 -sd <store dir>");
    println!("  phasegate coordinator --config {d}/{COORDINATOR_TOML}");
    println!("  phasegate agent --segment <segment> --nats-creds {d}/agent-<segment>.creds");
    println!("  phasegate --nats-creds {d}/operator-<name>.creds gate list");
    println!("a running server takes changes with: nats-server --signal reload");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use super::*;

    fn args(dir: &Path, segments: &[&str], operators: &[&str]) -> InitArgs {
        InitArgs::new(dir.to_path_buf(), segments, operators)
    }

    #[test]
    fn operators_parse_with_an_optional_role() {
        assert_eq!(parse_operator("alice").unwrap(), ("alice".into(), None));
        assert_eq!(
            parse_operator("bob:admin").unwrap(),
            ("bob".into(), Some(Role::Admin))
        );
        assert!(parse_operator("bob:root").is_err());
        assert!(parse_operator("../x").is_err());
        assert!(parse_operator("").is_err());
    }

    #[test]
    fn a_rerun_adds_and_keeps_identities() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("auth");
        init(&args(&dir, &["dev"], &["alice:admin"]), None).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for f in [
            "coordinator.creds",
            "agent-dev.creds",
            "operator-alice.creds",
        ] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap();
        let (coord, dev, alice) = (
            read("coordinator.creds"),
            read("agent-dev.creds"),
            read("operator-alice.creds"),
        );
        assert!(crate::auth::seed_of(&coord).is_some());

        init(&args(&dir, &["prod.eu"], &["bob", "alice"]), None).unwrap();
        assert_eq!(read("coordinator.creds"), coord);
        assert_eq!(read("agent-dev.creds"), dev);
        assert_eq!(read("operator-alice.creds"), alice);

        let conf = read("nats-server.conf");
        assert!(
            conf.contains(r#""phasegate.v1.internal.report.dev""#),
            "{conf}"
        );
        assert!(conf.contains(r#""phasegate.v1.internal.report.prod.eu""#));
        assert!(conf.contains("share: true"));
        let toml: toml::Table = toml::from_str(&read("coordinator.toml")).unwrap();
        let ops = toml["auth"]["operators"].as_table().unwrap();
        assert_eq!(ops["alice"]["role"].as_str(), Some("admin"), "kept");
        assert_eq!(ops["bob"]["role"].as_str(), Some("viewer"), "default");
        let alice_key = KeyPair::from_seed(seed_of(&alice).unwrap()).unwrap();
        assert_eq!(
            ops["alice"]["nkey"].as_str(),
            Some(alice_key.public_key().as_str())
        );
        assert_eq!(toml["subject_prefix"].as_str(), Some("phasegate"));
    }
}
