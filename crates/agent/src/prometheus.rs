//! The agent's Prometheus: one instant query over the HTTP API
//! (`GET /api/v1/query`), read into a [`Sample`]. Reading the answer is a
//! pure function ([`read_answer`]), tested without a server; the HTTP
//! exchange around it is the only effect.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use phasegate_model::analysis::Sample;
use serde::Deserialize;

/// The largest answer read; a query meant to return one sample never
/// comes near it.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// A Prometheus server reached over plain HTTP (it runs next to the agent,
/// like the health URLs).
#[derive(Clone)]
pub(crate) struct Prometheus {
    base: String,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Prometheus {
    /// A client of the server at `url` (`http://host:port`, optionally
    /// with a path prefix).
    pub(crate) fn new(url: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Self {
            base: url.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Runs `query` as an instant query; whatever goes wrong (unreachable,
    /// timeout, error answer, not one sample) is a [`Sample::Missing`]
    /// saying why.
    pub(crate) async fn query(&self, query: &str, timeout: Duration) -> Sample {
        let url = format!("{}/api/v1/query?query={}", self.base, encode(query));
        let uri = match url.parse::<hyper::Uri>() {
            Ok(u) => u,
            Err(e) => return Sample::Missing(format!("bad prometheus url: {e}")),
        };
        let exchange = async {
            let resp = self
                .client
                .get(uri)
                .await
                .map_err(|e| format!("prometheus unreachable: {e}"))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| format!("cannot read the prometheus answer: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Sample::Missing(format!("query timed out after {} ms", timeout.as_millis())),
            Ok(Err(why)) => Sample::Missing(why),
            Ok(Ok((status, body))) => read_answer(status, &body),
        }
    }
}

/// Percent-encodes a query parameter (everything but unreserved bytes).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

/// Reads an answer of `GET /api/v1/query`: exactly one sample of a vector,
/// or a scalar, is a value; an error answer, an empty or larger vector, a
/// matrix or a string is missing, with why.
pub(crate) fn read_answer(http_status: u16, body: &[u8]) -> Sample {
    let answer: Answer = match serde_json::from_slice(body) {
        Ok(a) => a,
        Err(_) => {
            return Sample::Missing(format!(
                "prometheus answered HTTP {http_status} without a query result"
            ));
        }
    };
    if answer.status != "success" {
        return Sample::Missing(format!(
            "query error ({}): {}",
            answer.error_type.as_deref().unwrap_or("unknown"),
            answer.error.as_deref().unwrap_or("no message")
        ));
    }
    let Some(data) = answer.data else {
        return Sample::Missing("prometheus answered success without data".to_owned());
    };
    match data.result_type.as_str() {
        "vector" => match data.result.as_array().map(Vec::as_slice) {
            Some([one]) => point(&one["value"]),
            Some([]) => Sample::Missing("no sample: the query returned an empty vector".into()),
            Some(many) => Sample::Missing(format!(
                "the query returned {} samples; exactly one is needed (aggregate it)",
                many.len()
            )),
            None => Sample::Missing("malformed vector".to_owned()),
        },
        "scalar" => point(&data.result),
        other => Sample::Missing(format!(
            "the query returned a {other}; an instant vector of one sample or a scalar is needed"
        )),
    }
}

/// `[<unix seconds>, "<value>"]` → the value (Prometheus writes `NaN`,
/// `+Inf` and `-Inf` as such).
fn point(v: &serde_json::Value) -> Sample {
    let text = v.as_array().and_then(|p| p.get(1)).and_then(|s| s.as_str());
    let parsed = text.and_then(|t| match t {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        t => t.parse::<f64>().ok(),
    });
    match parsed {
        Some(x) => Sample::Value(x),
        None => Sample::Missing(format!("malformed sample {v}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: Sample) -> Option<f64> {
        match s {
            Sample::Value(v) => Some(v),
            Sample::Missing(_) => None,
        }
    }

    fn why(s: Sample) -> String {
        match s {
            Sample::Value(v) => format!("value {v}"),
            Sample::Missing(w) => w,
        }
    }

    #[test]
    fn reads_one_sample_of_a_vector_or_a_scalar() {
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"x"},"value":[1700000000.5,"0.25"]}]}}"#;
        assert_eq!(value(read_answer(200, vector)), Some(0.25));
        let scalar =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"3"]}}"#;
        assert_eq!(value(read_answer(200, scalar)), Some(3.0));
        let inf = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"+Inf"]}}"#;
        assert_eq!(value(read_answer(200, inf)), Some(f64::INFINITY));
    }

    #[test]
    fn anything_but_one_sample_is_missing_with_why() {
        let cases: [(&[u8], &str); 7] = [
            (
                br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
                "empty vector",
            ),
            (
                br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]},{"metric":{},"value":[1,"2"]}]}}"#,
                "returned 2 samples",
            ),
            (
                br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
                "returned a matrix",
            ),
            (
                br#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#,
                "query error (bad_data): parse error at char 5",
            ),
            (b"<html>bad gateway</html>", "HTTP 502 without a query result"),
            (
                br#"{"status":"success","data":{"resultType":"scalar","result":[1,"abc"]}}"#,
                "malformed sample",
            ),
            (br#"{"status":"success"}"#, "without data"),
        ];
        for (body, want) in cases {
            let status = if want.contains("502") { 502 } else { 200 };
            let got = why(read_answer(status, body));
            assert!(got.contains(want), "want {want:?} in {got:?}");
        }
    }

    #[test]
    fn encodes_queries_for_the_url() {
        assert_eq!(
            encode("sum(rate(x{a=\"b c\"}[1m]))"),
            "sum%28rate%28x%7Ba%3D%22b%20c%22%7D%5B1m%5D%29%29"
        );
    }
}
