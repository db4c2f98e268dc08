//! `phasegate eval`: what does a unit get from an agent right now? Asks
//! the agent over OpenFeature (OFREP, SPEC.md §5), exactly as a service's
//! OpenFeature SDK would, and prints the value, variant, reason and
//! metadata.
//!
//! Exit codes follow the other commands: 0 answered, 1 the agent could not
//! be reached or answered something that is not OFREP, 2 invalid request
//! (`PARSE_ERROR`, `INVALID_CONTEXT`, `GENERAL`), 3 no such flag
//! (`FLAG_NOT_FOUND`).

use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};

use crate::output::{Table, json, sanitize};
use crate::{Format, Global};

/// The agent asked when `--agent` is not given: its default listen address.
pub(crate) const DEFAULT_AGENT: &str = "http://127.0.0.1:7420";

/// Flags of `phasegate eval`.
#[derive(Debug, clap::Args)]
pub(crate) struct EvalArgs {
    /// The flag: `gate:NAME`, `config:NAME`, or a bare NAME that only one
    /// kind has.
    pub(crate) key: String,
    /// The agent's base URL (http only: agents listen next to services).
    #[arg(long, env = "OFREP_ENDPOINT", default_value = DEFAULT_AGENT)]
    pub(crate) agent: String,
    /// The evaluation context, a JSON object (`{"email": "…", "country":
    /// "FR", "plan": "beta"}`); attributes other than targetingKey, email,
    /// country and app_version are custom fields.
    #[arg(long, value_name = "JSON")]
    pub(crate) context: Option<String>,
    /// The unit (user id): the context's `targetingKey`, which it overrides.
    #[arg(long, value_name = "ID")]
    pub(crate) targeting_key: Option<String>,
    /// Print the agent's answer as JSON (the same as `-o json`).
    #[arg(long)]
    pub(crate) json: bool,
}

/// The context to send: `--context`, with `--targeting-key` laid over it.
fn context_of(args: &EvalArgs) -> anyhow::Result<Map<String, Value>> {
    let mut context = match &args.context {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text)
            .with_context(|| format!("--context: not JSON: {text}"))?
        {
            Value::Object(m) => m,
            other => bail!("--context: must be a JSON object, got {other}"),
        },
    };
    if let Some(id) = &args.targeting_key {
        context.insert("targetingKey".to_owned(), Value::String(id.clone()));
    }
    Ok(context)
}

/// The URL of the key's evaluation: every byte outside the characters a
/// flag key is made of is percent-encoded, so a key cannot reach another
/// path.
fn url_of(agent: &str, key: &str) -> anyhow::Result<String> {
    let base = agent.trim_end_matches('/');
    if !base.starts_with("http://") {
        bail!("--agent: an http:// URL, like {DEFAULT_AGENT}; got {base}");
    }
    let mut encoded = String::with_capacity(key.len());
    // `.` and `..` would be path segments of their own.
    let dots_only = key.bytes().all(|b| b == b'.');
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':') || (b == b'.' && !dots_only)
        {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(format!("{base}/ofrep/v1/evaluate/flags/{encoded}"))
}

/// A metadata field, or `-`.
fn meta(v: &Value, name: &str) -> String {
    match v.get("metadata").and_then(|m| m.get(name)) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn print_table(v: &Value) {
    let field = |name: &str| match v.get(name) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let mut t = Table::new(&[
        "FLAG", "VALUE", "VARIANT", "REASON", "VERSION", "RULE", "TRIGGER", "PHASE", "SEGMENT",
        "STALE",
    ]);
    t.row(vec![
        field("key"),
        field("value"),
        field("variant"),
        field("reason"),
        meta(v, "version"),
        meta(v, "rule"),
        meta(v, "triggerId"),
        meta(v, "phaseId"),
        meta(v, "flagSetId"),
        meta(v, "stale"),
    ]);
    t.print();
}

/// Runs `phasegate eval`; returns the exit code.
pub(crate) async fn run(g: &Global, args: EvalArgs) -> anyhow::Result<u8> {
    let context = context_of(&args)?;
    let url = url_of(&args.agent, &args.key)?;
    let body = serde_json::to_vec(&serde_json::json!({ "context": context }))?;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let req = hyper::Request::post(&url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .with_context(|| format!("--agent: not a usable URL: {}", args.agent))?;
    let timeout = Duration::from_millis(g.timeout_ms);
    let answer = async {
        let resp = client.request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, bytes))
    };
    let (status, bytes) = tokio::time::timeout(timeout, answer)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no answer from the agent at {} within {timeout:?}",
                args.agent
            )
        })?
        .with_context(|| format!("cannot reach the agent at {}", args.agent))?;
    let v: Value = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "the agent at {} answered {status} with no OFREP body: {}",
            args.agent,
            sanitize(&String::from_utf8_lossy(&bytes))
        )
    })?;
    if status.is_success() {
        if args.json || g.output == Format::Json {
            println!("{}", json(&v, true)?);
        } else {
            print_table(&v);
        }
        return Ok(0);
    }
    let code = v.get("errorCode").and_then(Value::as_str);
    let details = v.get("errorDetails").and_then(Value::as_str).unwrap_or("");
    let Some(code) = code else {
        bail!("the agent answered {status}: {}", sanitize(&v.to_string()));
    };
    eprintln!("{}", sanitize(&format!("error: {code}: {details}")));
    Ok(if code == "FLAG_NOT_FOUND" { 3 } else { 2 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(context: Option<&str>, targeting_key: Option<&str>) -> EvalArgs {
        EvalArgs {
            key: "gate:checkout".into(),
            agent: DEFAULT_AGENT.into(),
            context: context.map(str::to_owned),
            targeting_key: targeting_key.map(str::to_owned),
            json: false,
        }
    }

    #[test]
    fn the_targeting_key_lays_over_the_context() {
        let c = context_of(&args(
            Some(r#"{"targetingKey": "a", "country": "FR"}"#),
            Some("u-1"),
        ))
        .unwrap();
        assert_eq!(
            Value::Object(c),
            serde_json::json!({"targetingKey": "u-1", "country": "FR"})
        );
        assert!(context_of(&args(Some("[1]"), None)).is_err());
        assert!(context_of(&args(Some("{"), None)).is_err());
        assert!(context_of(&args(None, None)).unwrap().is_empty());
    }

    #[test]
    fn keys_cannot_leave_the_evaluation_path() {
        assert_eq!(
            url_of("http://127.0.0.1:7420/", "gate:new-checkout").unwrap(),
            "http://127.0.0.1:7420/ofrep/v1/evaluate/flags/gate:new-checkout"
        );
        assert_eq!(
            url_of(DEFAULT_AGENT, "../v1/x?y").unwrap(),
            "http://127.0.0.1:7420/ofrep/v1/evaluate/flags/..%2Fv1%2Fx%3Fy"
        );
        assert!(
            url_of(DEFAULT_AGENT, "..")
                .unwrap()
                .ends_with("/flags/%2E%2E")
        );
        assert!(url_of("https://agent", "g").is_err());
    }
}
