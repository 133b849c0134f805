//! An axum app served on its own small tokio runtime, shut down gracefully: what the job
//! control API and the deployment server share.

/// A running HTTP server. Dropping it stops taking requests, lets answers in flight go
/// out (waiting at most 2 s), then shuts down.
pub struct Served {
    runtime: tokio::runtime::Runtime,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Served {
    /// Serves `app` on `listener` (bound in `runtime`; plain TCP or
    /// [`super::tls::TlsListener`]); `what` names it in the log.
    pub fn spawn<L>(runtime: tokio::runtime::Runtime, listener: L, app: axum::Router, what: &'static str) -> Served
    where
        L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    {
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = runtime.spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "{what} stopped");
            }
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
