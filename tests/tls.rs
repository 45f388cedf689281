//! HTTPS: with a certificate and key the server speaks TLS (and only TLS);
//! a client that connects and says nothing does not hold up others; a
//! certificate that cannot be used stops the start with a clear message.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tollgate::app::App;

use common::{TestDatabase, spawn_app, test_config};

/// A self-signed certificate for `localhost`, as PEM files in `folder`.
fn certificate(folder: &std::path::Path) -> (String, String, CertificateDer<'static>) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = folder.join("cert.pem");
    let key = folder.join("key.pem");
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    (
        cert.display().to_string(),
        key.display().to_string(),
        generated.cert.der().clone(),
    )
}

async fn https_get(address: &str, trusted: &CertificateDer<'static>, path: &str) -> String {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let config = tokio_rustls::rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut stream = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the handshake succeeds");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn the_server_speaks_https_with_a_certificate() {
    let database = TestDatabase::sqlite();
    let (cert, key, trusted) = certificate(database.folder.path());
    let app = spawn_app(test_config(
        &database.url,
        &database.spool_dir(),
        &[("server.tls_cert", &cert), ("server.tls_key", &key)],
    ))
    .await;
    let address = app.address.trim_start_matches("http://").to_owned();
    // A client that connects and never speaks does not hold up the next.
    let _silent = tokio::net::TcpStream::connect(&address).await.unwrap();
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        https_get(&address, &trusted, "/healthz"),
    )
    .await
    .expect("answered while another handshake hangs");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = https_get(&address, &trusted, "/api/v1/usage/stats").await;
    assert!(
        answer.starts_with("HTTP/1.1 401"),
        "the API is behind TLS too: {answer}"
    );
    // Plain HTTP on the same port gets no HTTP answer.
    let plain = app.client.get(app.url("/healthz")).send().await;
    assert!(plain.is_err(), "{plain:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_certificate_that_cannot_be_used_stops_the_start() {
    tollgate::providers::install_crypto_provider();
    let database = TestDatabase::sqlite();
    let (cert, key, _) = certificate(database.folder.path());
    let missing = database
        .folder
        .path()
        .join("missing.pem")
        .display()
        .to_string();
    let not_a_key = cert.clone();
    for (cert, key, expected) in [
        (
            missing.as_str(),
            key.as_str(),
            "cannot read the TLS certificate",
        ),
        (
            cert.as_str(),
            not_a_key.as_str(),
            "cannot read the TLS private key",
        ),
    ] {
        let config = test_config(
            &database.url,
            &database.spool_dir(),
            &[("server.tls_cert", cert), ("server.tls_key", key)],
        );
        let error = App::build(config).await.expect_err("refused");
        assert!(error.to_string().contains(expected), "{error}");
    }
    let only_one = tollgate::config::Config::load(&tollgate::config::Sources {
        overrides: vec![("server.tls_cert".to_owned(), cert.clone())],
        ..tollgate::config::Sources::default()
    });
    assert!(
        only_one
            .expect_err("refused")
            .to_string()
            .contains("give both, or neither")
    );
}
