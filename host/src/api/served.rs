//! An axum app served on its own small tokio runtime, shut down gracefully: what the job
//! control API and the deployment server share.
//!
//! Connections are bounded as hyper and axum servers are in production: at most
//! [`ConnectionLimits::max_connections`] at once (further clients wait in the kernel's
//! accept queue, so one client's idle or half-open connections cannot take the process's
//! file descriptors), and a request's headers must arrive within
//! [`ConnectionLimits::header_timeout`], which also closes a keep-alive connection that
//! stays idle that long.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};

/// How many connections a server holds and how long it waits for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Longest wait for a request's headers (and for the next request on an idle
    /// keep-alive connection).
    pub header_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits { max_connections: 256, header_timeout: Duration::from_secs(10) }
    }
}

/// A running HTTP server. Dropping it stops taking requests, lets answers in flight go
/// out (waiting at most 2 s), then shuts down.
pub struct Served {
    runtime: tokio::runtime::Runtime,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Served {
    /// Serves `app` on `listener` (bound in `runtime`; plain TCP or
    /// [`super::tls::TlsListener`]) within `limits`; `what` names it in the log.
    pub fn spawn<L>(
        runtime: tokio::runtime::Runtime,
        listener: L,
        app: axum::Router,
        what: &'static str,
        limits: ConnectionLimits,
    ) -> Served
    where
        L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    {
        let (shutdown, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let server = runtime.spawn(async move {
            let mut listener = listener;
            let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
            let graceful = hyper_util::server::graceful::GracefulShutdown::new();
            loop {
                // A permit first: a full server leaves new connections queued.
                let permit = tokio::select! {
                    permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                    _ = &mut stopped => break,
                };
                let (io, peer) = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = &mut stopped => break,
                };
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_timeout)
                    .serve_connection(TokioIo::new(io), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(%peer, error = %e, "{what}: connection closed");
                    }
                    drop(permit);
                });
            }
            drop(listener);
            graceful.shutdown().await;
            tracing::debug!("{what} stopped");
        });
        Served { runtime, shutdown: Some(shutdown), server: Some(server) }
    }

    /// Stops taking requests and waits for the answers in flight.
    pub fn shut_down(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            let wait = async move { tokio::time::timeout(std::time::Duration::from_secs(2), server).await };
            let _ = self.runtime.block_on(wait);
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shut_down();
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;

    fn serve(limits: ConnectionLimits) -> (Served, std::net::SocketAddr) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let address = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
        (Served::spawn(runtime, listener, app, "test server", limits), address)
    }

    fn get(address: std::net::SocketAddr) -> String {
        let mut stream = TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn half_open_connections_are_closed_after_the_header_timeout() {
        let limits = ConnectionLimits { max_connections: 4, header_timeout: Duration::from_millis(300) };
        let (_served, address) = serve(limits);
        // Four clients that send half a request and then nothing: the server closes each
        // (an end of stream, not our 10 s read timeout) ...
        let mut idle: Vec<TcpStream> = (0..4)
            .map(|_| {
                let mut stream = TcpStream::connect(address).unwrap();
                stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                stream
            })
            .collect();
        for stream in &mut idle {
            let mut rest = Vec::new();
            assert!(stream.read_to_end(&mut rest).is_ok(), "a half-open connection was left open");
        }
        // ... and serves a real request afterwards.
        assert!(get(address).ends_with("hello"));
    }

    #[test]
    fn connections_beyond_the_limit_wait_for_a_free_one() {
        let limits = ConnectionLimits { max_connections: 2, header_timeout: Duration::from_secs(60) };
        let (_served, address) = serve(limits);
        let held: Vec<TcpStream> = (0..2)
            .map(|_| {
                let mut stream = TcpStream::connect(address).unwrap();
                stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").unwrap();
                stream
            })
            .collect();
        // A third client is not served while both connections are held ...
        let mut third = TcpStream::connect(address).unwrap();
        third.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
        third.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut byte = [0u8; 1];
        let early = third.read(&mut byte);
        assert!(early.is_err(), "served beyond the connection limit: {early:?}");
        // ... and is once one of them goes.
        drop(held);
        third.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut answer = String::new();
        third.read_to_string(&mut answer).unwrap();
        assert!(answer.ends_with("hello"), "{answer}");
    }
}
