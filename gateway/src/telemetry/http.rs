//! The metrics endpoint: `/metrics` (OpenMetrics text), `/healthz`, `/readyz`, over HTTP/1.1
//! (hyper; already in the binary through the demo's embedded broker, so it costs no size).
//!
//! # Design constraints
//! - Bound to `127.0.0.1` by default: the endpoint has no authentication; expose it through a
//!   reverse proxy or by setting `metrics.address` deliberately.
//! - Bounded: at most [`MAX_CONNECTIONS`] connections at once; one more is closed at once
//!   (counted as `metrics_connection_failed`). A client must send its request headers within
//!   [`HEADER_TIMEOUT`]. Reading the spool's depth from its file runs on a blocking thread,
//!   at most once a second; rendering the text runs on the runtime (microseconds).
//! - Rebound on reload ([`MetricsEndpoint::set`]): the new address is bound before the old
//!   listener closes, so a bind that fails leaves the old endpoint serving. Connections being
//!   served finish on their own; every listener serves the same [`Telemetry`], so counters and
//!   readiness carry over.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;

use super::{Telemetry, events, metrics};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Time a client has to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// The endpoint, bound and serving.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `addr` (port 0: any free port) and serves `telemetry` on it until dropped. Logs
    /// the bound address.
    pub async fn start(addr: SocketAddr, telemetry: Arc<Telemetry>) -> std::io::Result<Self> {
        Self::bind(addr, telemetry)
    }

    /// [`MetricsServer::start`] without awaiting (binding does not block): call inside the
    /// runtime.
    pub fn bind(addr: SocketAddr, telemetry: Arc<Telemetry>) -> std::io::Result<Self> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // As `TcpListener::bind` does: a port left in TIME_WAIT by an earlier run is reusable.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(1024)?;
        let addr = listener.local_addr()?;
        events::metrics_listening(addr);
        let registry = Arc::new(metrics::registry(Arc::clone(&telemetry)));
        let task = tokio::spawn(accept_loop(listener, telemetry, registry));
        Ok(Self { addr, task })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The endpoint as configuration turns it on, off or moves it: the running server, if any.
#[derive(Debug)]
pub struct MetricsEndpoint {
    server: Option<MetricsServer>,
    telemetry: Arc<Telemetry>,
}

impl MetricsEndpoint {
    /// Serves `telemetry` on `addr` (`None`: no endpoint). Call inside the runtime.
    pub fn start(addr: Option<SocketAddr>, telemetry: Arc<Telemetry>) -> std::io::Result<Self> {
        let server = addr
            .map(|a| MetricsServer::bind(a, Arc::clone(&telemetry)))
            .transpose()?;
        Ok(Self { server, telemetry })
    }

    /// Where it listens now (`None`: off).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(MetricsServer::local_addr)
    }

    /// Moves the endpoint to `addr`, or turns it off (`None`). The new address is bound first:
    /// on error nothing changed, and the old endpoint (if any) keeps serving. A move to the
    /// wildcard address on the port the endpoint holds (`127.0.0.1:9464` → `0.0.0.0:9464`)
    /// therefore fails with "address in use": disable it in one reload and enable it in the
    /// next, or change the port too. Call inside the runtime.
    pub fn set(&mut self, addr: Option<SocketAddr>) -> std::io::Result<()> {
        let Some(addr) = addr else {
            if let Some(old) = self.server.take() {
                events::metrics_stopped(old.local_addr());
            }
            return Ok(());
        };
        let new = MetricsServer::bind(addr, Arc::clone(&self.telemetry))?;
        if let Some(old) = self.server.replace(new) {
            events::metrics_stopped(old.local_addr());
        }
        Ok(())
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, telemetry: Arc<Telemetry>, registry: Arc<Registry>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors and the like: wait a little rather than spin.
                events::metrics_connection_failed(&e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            events::metrics_connection_failed(&"too many connections; closed");
            continue;
        };
        let telemetry = Arc::clone(&telemetry);
        let registry = Arc::clone(&registry);
        tokio::spawn(async move {
            let service =
                service_fn(move |req| handle(req, Arc::clone(&telemetry), Arc::clone(&registry)));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                events::metrics_connection_failed(&e);
            }
            drop(permit);
        });
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<String> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

async fn handle(
    req: Request<Incoming>,
    telemetry: Arc<Telemetry>,
    registry: Arc<Registry>,
) -> Result<Response<String>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "only GET\n".into(),
        ));
    }
    Ok(match req.uri().path() {
        "/metrics" => {
            // Only reading the spool file blocks, and only when the cached depth is stale.
            if telemetry.spool_stale() {
                let t = Arc::clone(&telemetry);
                let _ = tokio::task::spawn_blocking(move || t.refresh_spool()).await;
            }
            reply(StatusCode::OK, OPENMETRICS, metrics::render(&registry))
        }
        "/healthz" => {
            let h = telemetry.health();
            let status = if h.ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            reply(status, TEXT, h.detail)
        }
        "/readyz" => {
            let (ready, body) = telemetry.readiness();
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            reply(status, TEXT, body)
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: try /metrics, /healthz, /readyz\n".into(),
        ),
    })
}
