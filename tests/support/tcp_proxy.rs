//! A TCP proxy in front of a server (PostgreSQL, Redis) that can stop forwarding for a while, as a
//! server stopped with SIGSTOP behaves: connections stay open and new ones are accepted by the
//! kernel, but no byte moves in either direction until it resumes. The processes under test are given
//! the proxy's address instead of the server's; the server itself (shared by the suite's parallel
//! tests) is never touched.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The running proxy; stops accepting when dropped (open connections end with their peers).
pub struct TcpProxy {
    /// The proxy's listening address.
    pub addr: SocketAddr,
    paused_until: Arc<Mutex<Option<Instant>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Waits while the proxy is stopped.
async fn while_stopped(paused_until: &Mutex<Option<Instant>>) {
    loop {
        let until = *paused_until.lock().expect("lock");
        match until {
            Some(t) if Instant::now() < t => tokio::time::sleep_until(t).await,
            _ => return,
        }
    }
}

/// Copies `from` to `to`, holding every read while the proxy is stopped.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    paused_until: Arc<Mutex<Option<Instant>>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while_stopped(&paused_until).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl TcpProxy {
    /// A proxy to `upstream`, forwarding.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let paused_until: Arc<Mutex<Option<Instant>>> = Arc::default();
        let paused = paused_until.clone();
        let server = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let paused = paused.clone();
                tokio::spawn(async move {
                    // A stopped server answers no new connection either.
                    while_stopped(&paused).await;
                    let Ok(server) = TcpStream::connect(upstream).await else { return };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        pump(client_read, server_write, paused.clone()),
                        pump(server_read, client_write, paused)
                    );
                });
            }
        });
        TcpProxy { addr, paused_until, server }
    }

    /// Stops forwarding for `d` from now (no byte moves, no connection is made), then goes on.
    pub fn stop_for(&self, d: Duration) {
        *self.paused_until.lock().expect("lock") = Some(Instant::now() + d);
    }
}
