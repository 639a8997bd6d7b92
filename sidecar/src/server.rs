//! Assembles and runs the sidecar: store, controller, timers, retention, notifications and the
//! admin API on a socket, with graceful shutdown (stop accepting, end long-polls and streams,
//! drain with a timeout).

use crate::api::{ApiConfig, App};
use crate::clock::SharedClock;
use crate::controller::Controller;
use crate::metrics::Metrics;
use crate::retention::Retention;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct ServerOptions {
    pub listen: SocketAddr,
    pub db: PathBuf,
    pub api: ApiConfig,
    /// What audit the store keeps.
    pub retention: Retention,
    pub clock: SharedClock,
    /// How long in-flight requests may take to finish after shutdown starts.
    pub drain_timeout: Duration,
    /// Where each release's evidence report is written when it ends; `None`: nowhere.
    pub reports: Option<PathBuf>,
}

/// A running sidecar.
pub struct Server {
    addr: SocketAddr,
    app: App,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

// === impl Server ===

impl Server {
    /// Opens the store, loads every rollout, binds and starts serving. Ready when it returns.
    pub async fn start(opts: ServerOptions) -> Result<Server, String> {
        let metrics = Arc::new(Metrics::new());
        let db = opts.db.clone();
        let clock = opts.clock.clone();
        let ctl = tokio::task::spawn_blocking(move || Controller::open(&db, clock, metrics))
            .await
            .map_err(|e| format!("opening the store failed: {e}"))?
            .map_err(|e| format!("--db {}: {e}", opts.db.display()))?;
        let listener = TcpListener::bind(opts.listen)
            .await
            .map_err(|e| format!("--listen {}: {e}", opts.listen))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("--listen {}: {e}", opts.listen))?;
        let (shutdown, rx) = watch::channel(false);
        let app = App::new(ctl.clone(), opts.api, rx.clone());
        let driver = ctl.spawn_driver(rx.clone());
        let analysis = crate::analysis::runner::spawn(ctl.clone(), rx.clone());
        let gates = crate::gate::spawn_runner(ctl.clone(), rx.clone());
        let retention = opts.retention.spawn(ctl.clone(), rx.clone());
        let notify = crate::notify::spawn(ctl.clone(), rx.clone());
        let mut tasks = vec![driver, analysis, gates, retention, notify];
        if let Some(dir) = opts.reports {
            tasks.push(crate::report::spawn_writer(ctl.clone(), dir, rx.clone()));
        }
        tasks.push(tokio::spawn(accept(
            listener,
            app.clone(),
            rx,
            opts.drain_timeout,
        )));
        tracing::info!(%addr, db = %opts.db.display(), "linnet sidecar listening");
        Ok(Server {
            addr,
            app,
            shutdown,
            tasks,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn app(&self) -> &App {
        &self.app
    }

    /// Stops accepting, ends long-polls and streams, drains, and stops the timers.
    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        for t in self.tasks {
            if let Err(e) = t.await {
                tracing::warn!(error = %e, "a server task failed");
            }
        }
    }
}

async fn accept(
    listener: TcpListener,
    app: App,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, peer) = tokio::select! {
            conn = listener.accept() => match conn {
                Ok(c) => c,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = crate::signal::stopped(&mut shutdown) => break,
        };
        let app = app.clone();
        let svc = service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(app.handle(req).await) }
        });
        let conn = graceful.watch(
            builder
                .serve_connection(TokioIo::new(stream), svc)
                .into_owned(),
        );
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(drain) => tracing::warn!(timeout = ?drain, "drain timed out; closing the remaining connections"),
    }
}
