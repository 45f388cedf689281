//! A TCP proxy in front of PostgreSQL that a test can take down and bring
//! back, to simulate a database outage.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub address: SocketAddr,
    mode: Arc<AtomicU8>,
    generation: watch::Sender<u64>,
}

const UP: u8 = 0;
const REFUSING: u8 = 1;
const BLACKHOLE: u8 = 2;

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let address = listener.local_addr().expect("the proxy's address");
        let mode = Arc::new(AtomicU8::new(UP));
        let (generation, _) = watch::channel(0_u64);
        let accepting_mode = Arc::clone(&mode);
        let accepting_generation = generation.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut cut = accepting_generation.subscribe();
                match accepting_mode.load(Ordering::SeqCst) {
                    REFUSING => {
                        drop(client);
                        continue;
                    }
                    BLACKHOLE => {
                        // Accepted, then silence until the next change.
                        tokio::spawn(async move {
                            let _held = client;
                            let _ = cut.changed().await;
                        });
                        continue;
                    }
                    _ => {}
                }
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy {
            address,
            mode,
            generation,
        }
    }

    /// Refuses new connections and cuts the open ones.
    pub fn take_down(&self) {
        self.switch(REFUSING);
    }

    /// Cuts the open connections; new ones are accepted and never answered
    /// (a network partition rather than a stopped server).
    pub fn blackhole(&self) {
        self.switch(BLACKHOLE);
    }

    pub fn bring_up(&self) {
        self.switch(UP);
    }

    fn switch(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        self.generation.send_modify(|generation| *generation += 1);
    }
}

/// The host and port of a postgres:// URL.
pub fn postgres_address(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let with_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    };
    let with_port = with_port.replace("localhost", "127.0.0.1");
    with_port.parse().expect("a host:port PostgreSQL address")
}
