//! A TCP proxy in front of a server (PostgreSQL, Redis, the S3/SQS emulator) that can stop forwarding
//! for a while, as a server stopped with SIGSTOP behaves: connections stay open and new ones are
//! accepted by the kernel, but no byte moves in either direction until it resumes. The processes under
//! test are given the proxy's address instead of the server's; the server itself (shared by the
//! suite's parallel tests) is never touched.
//!
//! It also models a network ([`Shape`]): each direction of a connection is a delay line (every byte
//! arrives `one_way` after it was sent, without slowing the bytes behind it) with a bandwidth cap per
//! connection — the benchmark's latency model of a database and an object store in another host.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The network a proxy models: a one-way delay (half a round trip) and a bandwidth cap per connection
/// and direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// Delay of every byte, each way.
    pub one_way: Duration,
    /// Most bytes per second each way of one connection (None: no cap).
    pub bytes_per_second: Option<u64>,
}

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

/// Copies `from` to `to` through a delay line of `shape`, holding every byte while the proxy is
/// stopped.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    paused_until: Arc<Mutex<Option<Instant>>>,
    shape: Shape,
) {
    // Bounded: a slow receiver slows the sender, as a TCP window does.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(64);
    let reading = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if tx.send((Instant::now() + shape.one_way, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    };
    let writing = async move {
        let mut free_at = Instant::now();
        while let Some((due, data)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            while_stopped(&paused_until).await;
            if let Some(rate) = shape.bytes_per_second.filter(|r| *r > 0) {
                // The link sends one piece after the other at `rate`. It sleeps only once it is ahead by
                // two timer ticks: tokio's timer rounds a sleep up to the next millisecond, so a sleep
                // per small piece would cap the rate far below `rate`.
                let now = Instant::now();
                free_at = free_at.max(now) + Duration::from_secs_f64(data.len() as f64 / rate as f64);
                if free_at > now + Duration::from_millis(2) {
                    tokio::time::sleep_until(free_at).await;
                }
            }
            if to.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reading, writing);
}

impl TcpProxy {
    /// A proxy to `upstream`, forwarding at once.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        Self::start_shaped(upstream, Shape::default()).await
    }

    /// A proxy to `upstream` through the network `shape`.
    pub async fn start_shaped(upstream: SocketAddr, shape: Shape) -> TcpProxy {
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
                    // Each piece goes on at once, as the peers sent it: Nagle's algorithm against the
                    // peers' delayed acknowledgements would add ~40 ms to a round trip.
                    let _ = (client.set_nodelay(true), server.set_nodelay(true));
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    // The connection's set-up crosses the network too (a round trip).
                    tokio::time::sleep(shape.one_way * 2).await;
                    tokio::join!(
                        pump(client_read, server_write, paused.clone(), shape),
                        pump(server_read, client_write, paused, shape)
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
