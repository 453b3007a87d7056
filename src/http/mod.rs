//! The operator's HTTP listener (`[http]`): `/metrics` for Prometheus, the JSON API of
//! `/api/v1/...`, and a live status page at `/`. Off unless configured.
//!
//! It only reads: the event counters and listener gauges of [`crate::metrics`], the
//! broker's state through `Broker::overview` and `Broker::clients`, the durable store's
//! health through `Broker::store_stats`. Those walks take one session lock at a time and
//! run on the blocking pool, so a scrape never holds up the workers that move messages.
//!
//! Bounded in every direction: HTTP/1.1 only, request heads of at most
//! [`MAX_HEADER_BYTES`] read within [`HEADER_TIMEOUT`], no request body ever read, each
//! connection closed after [`CONNECTION_LIFETIME`]; GET and HEAD only. The server binds
//! the socket, accepts, and holds `max_connections` to its limit, as for MQTT listeners.
//! Files:
//! * `mod.rs`: one connection's HTTP, the routes;
//! * `access.rs`: who may read (Basic against a password file, a bearer token, or
//!   loopback without credentials);
//! * `metrics.rs`: `/metrics` in the Prometheus text formats;
//! * `api.rs`: the JSON endpoints; `page.rs` and `status.html`: the status page.

mod access;
mod api;
mod metrics;
mod page;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::config::{Config, Http};
use crate::tls;

pub use access::Access;

/// The request line and headers together; larger ones get 431.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// hyper's read buffer (its minimum): what one connection can make the server hold.
const MAX_BUF_BYTES: usize = 16 * 1024;
/// Header lines in one request.
const MAX_HEADERS: usize = 32;
/// A request's head must arrive within this; the TLS handshake too.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection (keep-alive included) is closed after this, once its current response is
/// written; clients reconnect.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// How long a response still being written may take after the lifetime or shutdown.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

type Body = Full<Bytes>;

/// The `[http]` listener with its files read: TLS keys and the password file. Made by
/// `server::prepare` before anything listens, like the MQTT listeners' files.
pub struct Prepared {
    config: Http,
    tls: Option<TlsAcceptor>,
    access: Arc<Access>,
}

impl Prepared {
    /// The `[http]` listener of `config`, if there is one; `origin` names the file.
    pub fn new(config: &Config, origin: &str) -> Result<Option<Prepared>, String> {
        let Some(http) = &config.http else {
            return Ok(None);
        };
        let tls = match (&http.certfile, &http.keyfile) {
            (Some(certfile), Some(keyfile)) => {
                let keys = tls::Keys {
                    certfile,
                    keyfile,
                    cafile: None,
                    require_certificate: false,
                    tls_version: Default::default(),
                    alpn: &[b"http/1.1"],
                };
                Some(tls::acceptor_for(&keys, &format!("{origin}: [http]")).map_err(|e| e.0)?)
            }
            _ => None,
        };
        Ok(Some(Prepared {
            config: http.clone(),
            tls,
            access: Arc::new(Access::load(http, origin)?),
        }))
    }

    pub fn address(&self) -> SocketAddr {
        SocketAddr::new(self.config.bind, self.config.port)
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Its credentials, for SIGHUP to reload the password file.
    pub fn access(&self) -> Arc<Access> {
        self.access.clone()
    }

    /// `[http] max_connections` (0 = unlimited), for the server's accept loop.
    pub fn max_connections(&self) -> usize {
        self.config.max_connections
    }

    /// The listener, ready to serve the connections the server accepts on `local` (the
    /// address it bound for [`Prepared::address`]).
    pub fn into_server(self, broker: Arc<Broker>, local: SocketAddr) -> Arc<Server> {
        if !self.config.bind.is_loopback() && self.tls.is_none() {
            tracing::warn!(
                "[http] listens on {local} without TLS: passwords and tokens cross the \
                 network in clear (set [http] certfile and keyfile)"
            );
        }
        Arc::new(Server {
            ctx: Arc::new(Ctx {
                broker,
                access: self.access,
                local,
                tls: self.tls.is_some(),
                page: page::Page::new(),
            }),
            tls: self.tls,
        })
    }
}

/// The `[http]` listener, serving the connections the server's accept loop hands it.
pub struct Server {
    ctx: Arc<Ctx>,
    tls: Option<TlsAcceptor>,
}

impl Server {
    /// One accepted connection: the TLS handshake (within [`HEADER_TIMEOUT`]) if it is
    /// HTTPS, then its requests until it closes, [`CONNECTION_LIFETIME`] passes or
    /// `shutdown`.
    pub async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) {
        let _ = stream.set_nodelay(true);
        let ctx = self.ctx.clone();
        match &self.tls {
            None => serve_http(TokioIo::new(stream), peer, ctx, shutdown).await,
            Some(tls) => {
                let handshake = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    h = tls::handshake(tls, stream, peer, HEADER_TIMEOUT) => h,
                };
                if let Some(stream) = handshake {
                    serve_http(TokioIo::new(stream), peer, ctx, shutdown).await;
                }
            }
        }
    }
}

/// What every request of the listener shares.
struct Ctx {
    broker: Arc<Broker>,
    access: Arc<Access>,
    /// The address bound, for `/api/v1/listeners`.
    local: SocketAddr,
    tls: bool,
    page: page::Page,
}

/// One connection's requests, until the client closes it, [`CONNECTION_LIFETIME`] passes
/// or the broker shuts down (then the response being written gets [`CLOSE_GRACE`]).
async fn serve_http<I>(io: I, peer: SocketAddr, ctx: Arc<Ctx>, shutdown: CancellationToken)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(req, &ctx, peer).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_BUF_BYTES)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let finished = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = tokio::time::sleep(CONNECTION_LIFETIME) => None,
        _ = shutdown.cancelled() => None,
    };
    match finished {
        Some(Ok(())) => {}
        Some(Err(e)) => tracing::debug!(%peer, "[http] connection ended: {e}"),
        None => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
        }
    }
}

/// One request: the method, then the credentials, then the route.
async fn handle(
    req: Request<hyper::body::Incoming>,
    ctx: &Ctx,
    peer: SocketAddr,
) -> Response<Body> {
    let method = req.method();
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if let Err(denied) = ctx
        .access
        .check(req.headers(), peer.ip(), ctx.broker.auth())
        .await
    {
        return denied.response();
    }
    let query = req.uri().query().unwrap_or_default();
    match req.uri().path() {
        "/" => ctx.page.response(),
        "/metrics" => {
            let openmetrics = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|a| a.to_str().ok())
                .is_some_and(|a| a.contains("application/openmetrics-text"));
            metrics::serve(ctx.broker.clone(), openmetrics).await
        }
        "/api/v1/overview" => api::overview(ctx).await,
        "/api/v1/systree" => api::systree(ctx).await,
        "/api/v1/listeners" => api::listeners(ctx),
        "/api/v1/clients" => api::clients(ctx, query).await,
        "/api/v1/version" => text(StatusCode::OK, concat!(env!("CARGO_PKG_VERSION"), "\n")),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// A response with the headers every one carries: nothing is cached, nothing sniffed.
fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", body)
}

/// Runs `read` (a walk over the sessions) on the blocking pool.
async fn off_the_workers<T: Send + 'static>(
    read: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response<Body>> {
    tokio::task::spawn_blocking(read).await.map_err(|e| {
        tracing::error!("[http] reading the broker's state failed: {e}");
        text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
    })
}
