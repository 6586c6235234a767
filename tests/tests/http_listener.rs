//! The operator's HTTP listener as a browser and `brume status` see it, over real sockets: every
//! answer (the console's page and assets, the API, errors) carries the Content-Security-Policy
//! and the other security headers, and `brume status` reads `/status` over HTTPS, trusting a
//! private CA given with `--ca` and refusing, with a reason, a certificate it cannot trust.

// Test helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hub::http::client::{StatusError, get_json_trusting};
use hub::transport::tls::TlsClientConfig;
use serde_json::Value as Json;
use tests::certs::TestCerts;
use tests::hub::TestHub;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The status line and the headers (names lowercased) of a GET answered over a plain socket.
async fn head(hub: &TestHub, path: &str) -> (String, Vec<(String, String)>) {
    let mut s = tokio::net::TcpStream::connect(hub.hub.local_addr("http").unwrap())
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    let head = text.split("\r\n\r\n").next().unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_the_security_headers() {
    let hub = TestHub::start().await;
    for (path, status) in [
        ("/console/", "200"),
        ("/console/app.js", "200"),
        ("/console/app.css", "200"),
        ("/console", "303"),
        ("/healthz", "200"),
        ("/api/things", "200"),
        ("/api/openapi.json", "200"),
        ("/no/such/page", "404"),
    ] {
        let (line, headers) = head(&hub, path).await;
        assert!(
            line.starts_with(&format!("HTTP/1.1 {status}")),
            "{path}: {line}"
        );
        assert_eq!(
            header(&headers, "content-security-policy"),
            ["default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"],
            "{path}: {headers:?}"
        );
        assert_eq!(
            header(&headers, "x-content-type-options"),
            ["nosniff"],
            "{path}: {headers:?}"
        );
        assert_eq!(
            header(&headers, "referrer-policy"),
            ["no-referrer"],
            "{path}: {headers:?}"
        );
    }
    // The policy forbids inline script and style: the console has none.
    let (_, page) = hub::http::client::get(
        &format!("http://{}", hub.hub.local_addr("http").unwrap()),
        "/console/",
    )
    .await
    .unwrap();
    let page = String::from_utf8_lossy(&page);
    assert!(!page.contains("<style"), "{page}");
    assert!(!page.contains(" style="), "{page}");
    assert!(
        !page
            .split_whitespace()
            .any(|w| w.starts_with("on") && w.contains('=')),
        "an inline event handler: {page}"
    );
    for script in page.split("<script").skip(1) {
        assert!(script.trim_start().starts_with("src="), "{page}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brume_status_speaks_https() {
    let certs = TestCerts::generate();
    let hub = TestHub::start_with(|c| c.http.tls = Some(certs.section())).await;
    let url = format!("https://{}", hub.hub.local_addr("http").unwrap());

    // The client trusting the hub's CA reads `/status`.
    let status = get_json_trusting(&certs.client_config(), &url, "/status", None)
        .await
        .unwrap();
    assert_eq!(status["id"], "brume", "{status}");
    assert!(status["readiness"]["ready"].is_boolean(), "{status}");

    // Mozilla's roots do not cover a private CA: a TLS error naming the hub and the reason.
    let refused = get_json_trusting(&TlsClientConfig::default(), &url, "/status", None).await;
    let Err(e @ StatusError::Tls { .. }) = refused else {
        panic!("{refused:?}");
    };
    let text = e.to_string();
    assert!(
        text.contains(&url) && text.contains("certificate"),
        "{text}"
    );

    // `brume status --ca` prints it; the exit code says whether the hub is ready.
    let brume = tests::hub::brume_binary();
    let out = tokio::process::Command::new(&brume)
        .args(["status", "--json", "--url", &url, "--ca"])
        .arg(&certs.ca_file)
        .output()
        .await
        .unwrap();
    let printed: Json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(printed["id"], "brume", "{printed}");
    assert_eq!(
        out.status.success(),
        printed["readiness"]["ready"] == true,
        "{printed}"
    );

    // Without `--ca`, and with a `--ca` that is not PEM, a clear error and no panic.
    let not_pem = certs.dir.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    for extra in [vec![], vec!["--ca".into(), not_pem.display().to_string()]] {
        let out = tokio::process::Command::new(&brume)
            .args(["status", "--url", &url])
            .args(&extra)
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?}: {err}");
        assert!(!err.contains("panicked"), "{extra:?}: {err}");
        if extra.is_empty() {
            assert!(err.contains("no TLS connection with the hub"), "{err}");
            assert!(err.contains("certificate"), "{err}");
        } else {
            assert!(err.contains("cannot trust --ca"), "{err}");
            assert!(err.contains("no PEM certificate found"), "{err}");
        }
    }
}
