//! Edge limits of the real binary: a client that sends its headers too
//! slowly is disconnected (slow-loris) without holding up others, too many
//! headers get 431, and connections past the cap get 503 with Retry-After
//! until slots free up.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{TestDatabase, serve_process};

fn connect(base: &str) -> TcpStream {
    let stream = TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Sends `request` and reads the answer until the server closes or 10 s.
fn exchange(base: &str, request: &[u8]) -> String {
    let mut stream = connect(base);
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_many_headers_and_too_many_connections_are_refused() {
    tollgate::providers::install_crypto_provider();
    let database = TestDatabase::sqlite();
    let settings =
        "[server]\nheader_read_timeout_seconds = 1\nmax_headers = 20\nmax_connections = 3\n";
    let process = serve_process(&database, "edge", settings, &[]).await;
    let base = process.base.clone();
    tokio::task::spawn_blocking(move || {
        // Slow-loris: half a request, then nothing; closed after about a
        // second, while other clients are served meanwhile.
        let mut slow = connect(&base);
        slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            .unwrap();
        let started = Instant::now();
        assert!(exchange(&base, HEALTH).starts_with("HTTP/1.1 200"));
        let mut rest = Vec::new();
        let _ = slow.read_to_end(&mut rest);
        let held = started.elapsed();
        assert!(
            held >= Duration::from_millis(800) && held < Duration::from_secs(5),
            "the slow client was held {held:?}"
        );
        assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));

        // Too many headers: 431, and a normal request still works.
        let mut crowded = b"GET /healthz HTTP/1.1\r\nhost: x\r\n".to_vec();
        for index in 0..30 {
            crowded.extend_from_slice(format!("x-header-{index}: v\r\n").as_bytes());
        }
        crowded.extend_from_slice(b"\r\n");
        let answer = exchange(&base, &crowded);
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

        // Three open connections fill the cap: the fourth gets 503.
        let held: Vec<TcpStream> = (0..3).map(|_| connect(&base)).collect();
        std::thread::sleep(Duration::from_millis(100));
        let answer = exchange(&base, HEALTH);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("retry-after: 1"), "{answer}");
        assert!(answer.contains("\"code\":\"busy\""), "{answer}");
        // Idle connections time out like slow ones, freeing their slots.
        std::thread::sleep(Duration::from_millis(1_600));
        let answer = exchange(&base, HEALTH);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        drop(held);
    })
    .await
    .unwrap();
}
