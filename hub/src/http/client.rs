//! What `brume status` uses: a GET against a running hub's HTTP listener, plain (`http://`) or
//! TLS (`https://`, trusting Mozilla's roots or given certificates, see [`TlsClientConfig`]),
//! and the terminal rendering of its `/status` answer.

use std::fmt::Write as _;
use std::time::Duration;

use http_body_util::BodyExt as _;
use serde_json::Value as Json;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::transport::tls::{TlsClientConfig, TlsError};

/// Why `brume status` could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{0} is not an http:// or https:// URL of a hub")]
    Url(String),
    #[error("cannot reach the hub at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed: most often a certificate the client does not trust (a private
    /// CA needs `--ca`) or one issued for another name.
    #[error("no TLS connection with the hub at {url}: {source}")]
    Tls {
        url: String,
        #[source]
        source: TlsError,
    },
    #[error("the TLS handshake with the hub at {url} did not finish within {timeout:?}")]
    TlsTimeout { url: String, timeout: Duration },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("HTTP request: {0}")]
    Request(#[from] axum::http::Error),
    #[error("the hub answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the hub's answer is not JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Most bytes of an answer read.
const MAX_BODY: usize = 4 << 20;
/// How long the TLS handshake may take: a port that accepts and never answers is an error, not
/// a hang.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// GETs `path` from the hub at `base` (`http://host:port` or `https://host:port`) and parses
/// the JSON answer.
pub async fn get_json(base: &str, path: &str) -> Result<Json, StatusError> {
    get_json_with(base, path, None).await
}

/// [`get_json`] with an `Authorization` header value.
pub async fn get_json_with(
    base: &str,
    path: &str,
    authorization: Option<&str>,
) -> Result<Json, StatusError> {
    get_json_trusting(&TlsClientConfig::default(), base, path, authorization).await
}

/// [`get_json_with`], trusting the roots of `tls` for an `https://` hub.
pub async fn get_json_trusting(
    tls: &TlsClientConfig,
    base: &str,
    path: &str,
    authorization: Option<&str>,
) -> Result<Json, StatusError> {
    let (status, body) = request_trusting(tls, base, "GET", path, authorization, None).await?;
    // `/readyz` answers 503 with a JSON body worth showing; anything else that is not JSON is
    // an error.
    match serde_json::from_slice(&body) {
        Ok(json) => Ok(json),
        Err(_) if status != 200 => Err(StatusError::Status {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// GETs `path` from the hub at `base` (`http://host:port` or `https://host:port`): the status
/// code and the body.
pub async fn get(base: &str, path: &str) -> Result<(u16, bytes::Bytes), StatusError> {
    request(base, "GET", path, None, None).await
}

/// Sends one request to the hub at `base` (`http://host:port`, or `https://host:port` trusting
/// Mozilla's roots): `method` on `path` (with its query string), an `Authorization` header
/// value if given, a JSON body if given. Answers the status code and the body.
pub async fn request(
    base: &str,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<Vec<u8>>,
) -> Result<(u16, bytes::Bytes), StatusError> {
    request_trusting(
        &TlsClientConfig::default(),
        base,
        method,
        path,
        authorization,
        body,
    )
    .await
}

/// [`request`], trusting the roots of `tls` for an `https://` hub.
pub async fn request_trusting(
    tls: &TlsClientConfig,
    base: &str,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<Vec<u8>>,
) -> Result<(u16, bytes::Bytes), StatusError> {
    let bad_url = || StatusError::Url(base.to_owned());
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let uri: hyper::Uri = url.parse().map_err(|_| bad_url())?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(bad_url()),
    };
    let host = uri.host().ok_or_else(bad_url)?;
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    // An IPv6 literal is bracketed in the URL and the `Host` header, bare for the socket.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let stream = tokio::net::TcpStream::connect((bare, port))
        .await
        .map_err(|source| StatusError::Connect {
            url: base.to_owned(),
            source,
        })?;
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(target)
        .header(hyper::header::HOST, format!("{host}:{port}"));
    if let Some(a) = authorization {
        builder = builder.header(hyper::header::AUTHORIZATION, a);
    }
    if body.is_some() {
        builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let request = builder.body(http_body_util::Full::new(bytes::Bytes::from(
        body.unwrap_or_default(),
    )))?;
    if !https {
        return exchange(stream, request).await;
    }
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.connect(stream, bare))
        .await
        .map_err(|_| StatusError::TlsTimeout {
            url: base.to_owned(),
            timeout: HANDSHAKE_TIMEOUT,
        })?
        .map_err(|source| StatusError::Tls {
            url: base.to_owned(),
            source,
        })?;
    exchange(stream, request).await
}

/// Sends `request` over a fresh connection and reads the whole answer (up to [`MAX_BODY`]).
async fn exchange<S>(
    stream: S,
    request: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<(u16, bytes::Bytes), StatusError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| StatusError::Status {
            status,
            body: e.to_string(),
        })?
        .to_bytes();
    Ok((status, body))
}

/// Renders a `/status` answer for a terminal.
pub fn render_status(s: &Json) -> String {
    let mut out = String::new();
    let str_of = |v: &Json| match v {
        Json::String(s) => s.clone(),
        Json::Null => "-".into(),
        other => other.to_string(),
    };
    let ready = s["readiness"]["ready"].as_bool() == Some(true);
    let _ = writeln!(
        out,
        "hub {} (brume {}), up {}, {}",
        str_of(&s["id"]),
        str_of(&s["version"]),
        uptime(s["uptime_secs"].as_u64().unwrap_or(0)),
        if ready { "READY" } else { "NOT READY" }
    );
    if let Some(problems) = s["readiness"]["not_ready"].as_array() {
        for p in problems {
            let _ = writeln!(out, "  ! {}", str_of(p));
        }
    }
    if let Some(l) = s["listeners"].as_object() {
        let list: Vec<String> = l
            .iter()
            .map(|(k, v)| format!("{k} {}", str_of(v)))
            .collect();
        let _ = writeln!(out, "listeners: {}", list.join(", "));
    }
    let _ = writeln!(
        out,
        "WAMP sessions: {}{}",
        str_of(&s["sessions"]),
        match causes(&s["wamp_dropped_by_cause"]) {
            c if c.is_empty() => String::new(),
            c => format!(", messages dropped {c}"),
        }
    );
    let t = &s["things"];
    let _ = writeln!(
        out,
        "things: {} events in, {} state events, {} dropped {}",
        str_of(&t["events_in"]),
        str_of(&t["state_events"]),
        str_of(&t["dropped"]),
        causes(&t["dropped_by_cause"])
    );
    let _ = writeln!(
        out,
        "  store: {} commits, {} writes, {} retries, {} failed, {} pending",
        str_of(&t["store"]["batches"]),
        str_of(&t["store"]["writes"]),
        str_of(&t["store"]["retries"]),
        str_of(&t["store"]["failed_writes"]),
        str_of(&t["store"]["pending_writes"])
    );
    if let Some(g) = s["gateways"].as_object() {
        for (name, v) in g {
            let fields: Vec<String> = v
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, x)| format!("{k} {}", str_of(x)))
                        .collect()
                })
                .unwrap_or_default();
            let _ = writeln!(out, "gateway {name}: {}", fields.join(", "));
        }
    }
    let u = &s["uplink"];
    if u.is_object() {
        let _ = writeln!(
            out,
            "uplink {}: {}, round trip {} ms, {} queued ({} bytes), {} dropped {}",
            str_of(&u["url"]),
            if u["connected"].as_bool() == Some(true) {
                "connected"
            } else {
                "down"
            },
            str_of(&u["round_trip_ms"]),
            str_of(&u["queued"]),
            str_of(&u["queued_bytes"]),
            str_of(&u["dropped"]),
            causes(&u["dropped_by_cause"])
        );
    } else {
        let _ = writeln!(out, "uplink: off");
    }
    let m = &s["memory"];
    let _ = writeln!(
        out,
        "memory: {} of {} MiB budget{}, {} events shed, {} connections refused",
        mib(&m["rss_bytes"]),
        mib(&m["budget_bytes"]),
        if m["shedding"].as_bool() == Some(true) {
            " (SHEDDING)"
        } else {
            ""
        },
        str_of(&m["shed_events"]),
        str_of(&m["refused_connections"])
    );
    out
}

/// The non-zero causes of a drop ledger, as `(a 1, b 2)`.
fn causes(v: &Json) -> String {
    let list: Vec<String> = v
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, n)| n.as_u64().is_some_and(|n| n > 0))
                .map(|(k, n)| format!("{k} {n}"))
                .collect()
        })
        .unwrap_or_default();
    if list.is_empty() {
        String::new()
    } else {
        format!("({})", list.join(", "))
    }
}

fn mib(v: &Json) -> String {
    v.as_u64()
        .map_or_else(|| "-".into(), |b| format!("{:.1}", b as f64 / 1048576.0))
}

fn uptime(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_an_operator_looks_at_first() {
        let s = serde_json::json!({
            "id": "edge-1", "version": "0.1.0", "uptime_secs": 4000,
            "readiness": {"ready": false, "not_ready": ["uplink: not connected to ws://x"]},
            "listeners": {"wamp": "127.0.0.1:8080"},
            "sessions": 3, "wamp_dropped_by_cause": {"too_large": 2, "unencodable": 0},
            "things": {"events_in": 10, "state_events": 9, "dropped": 1,
                       "dropped_by_cause": {"unknown_device": 1, "command_queue": 0},
                       "store": {"batches": 5, "writes": 9, "retries": 0, "failed_writes": 0, "pending_writes": 0}},
            "gateways": {"mqtt": {"connections": 2}},
            "uplink": {"url": "ws://x", "connected": false, "round_trip_ms": null, "queued": 7,
                       "queued_bytes": 700, "dropped": 0, "dropped_by_cause": {}},
            "memory": {"rss_bytes": 20971520, "budget_bytes": 1073741824, "shedding": false,
                       "shed_events": 0, "refused_connections": 0}
        });
        let text = render_status(&s);
        assert!(
            text.starts_with("hub edge-1 (brume 0.1.0), up 66 min, NOT READY\n"),
            "{text}"
        );
        assert!(
            text.contains("  ! uplink: not connected to ws://x\n"),
            "{text}"
        );
        assert!(text.contains("dropped (unknown_device 1)"), "{text}");
        assert!(
            text.contains("WAMP sessions: 3, messages dropped (too_large 2)\n"),
            "{text}"
        );
        assert!(text.contains("gateway mqtt: connections 2"), "{text}");
        assert!(
            text.contains("uplink ws://x: down, round trip - ms, 7 queued"),
            "{text}"
        );
        assert!(
            text.contains("memory: 20.0 of 1024.0 MiB budget, 0 events shed"),
            "{text}"
        );
    }
}
