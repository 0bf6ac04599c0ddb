//! The admin HTTP port: `/healthz`, `/readyz` and `/metrics` on a minimal HTTP/1.1 server.
//! It owns request framing, routing and the bounds of that port (head size, time, connections);
//! what the endpoints report comes from the caller's [`AdminState`]. One request per
//! connection, no bodies, no keep-alive: three GET endpoints do not justify hyper.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Largest request head (request line plus headers). Probes and Prometheus send a few hundred
/// bytes; a bigger head is not a scraper and gets 431 instead of more of our memory.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its whole head. Without it a peer that connects and trickles
/// bytes (slowloris) would hold a connection slot forever.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed to write a response: a scraper that stops reading must not hold a slot either.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bounds on draining the client's leftover input before closing (see `linger`).
const LINGER_TIMEOUT: Duration = Duration::from_secs(1);
const LINGER_MAX: usize = 64 * 1024;
/// Admin connections served at once. Probes and scrapers need a handful; the bound keeps a
/// misbehaving client from spending the proxy's file descriptors and memory on this port.
const MAX_CONNECTIONS: usize = 64;
/// Back-off after a failed accept (out of file descriptors and the like) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// Content type of the Prometheus text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// What the admin endpoints ask of the running proxy.
pub trait AdminState: Send + Sync + 'static {
    /// True when the upstream Redis is reachable (for /readyz).
    fn ready(&self) -> bool;
    /// The Prometheus text exposition for /metrics.
    fn render_metrics(&self) -> String;
}

/// Serves /healthz, /readyz and /metrics on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, state: Arc<dyn AdminState>, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // Taking the permit before accepting leaves excess connections in the kernel backlog
        // rather than accepting sockets we would not serve.
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit,
        };
        // The semaphore is never closed; if it were, there would be nothing left to serve.
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            handle(stream, peer, &*state).await;
            drop(permit);
        });
    }
}

/// Answers one request on `stream`, then closes it.
async fn handle(mut stream: TcpStream, peer: SocketAddr, state: &dyn AdminState) {
    let response = match receive_head(&mut stream).await {
        Ok(head) => respond(&head, state),
        Err(HeadError::TooLarge) => Response::text(Status::HeaderTooLarge, "request header too large\n"),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "admin connection closed without a request");
            return;
        }
    };
    let written = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&response.encode())).await;
    match written {
        Ok(Ok(())) => linger(stream).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "admin response write failed"),
        Err(_) => tracing::debug!(%peer, "admin response write timed out"),
    }
}

/// Why no request head was read.
#[derive(Debug, thiserror::Error)]
enum HeadError {
    /// The peer closed before the blank line that ends the head.
    #[error("peer closed before the end of the request head")]
    Closed,
    /// The head did not end within `MAX_HEAD` bytes.
    #[error("request head longer than {MAX_HEAD} bytes")]
    TooLarge,
    /// The head did not arrive within `HEAD_TIMEOUT`.
    #[error("no complete request head within {HEAD_TIMEOUT:?}")]
    Timeout,
    /// The socket failed.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the request head within `HEAD_TIMEOUT`.
async fn receive_head(stream: &mut TcpStream) -> Result<Vec<u8>, HeadError> {
    tokio::time::timeout(HEAD_TIMEOUT, read_head(stream)).await.unwrap_or(Err(HeadError::Timeout))
}

/// Reads until the blank line that ends the head, never buffering more than `MAX_HEAD` bytes.
async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, HeadError> {
    let mut buf = vec![0; MAX_HEAD];
    let mut len = 0;
    loop {
        let free = buf.get_mut(len..).filter(|free| !free.is_empty()).ok_or(HeadError::TooLarge)?;
        let n = stream.read(free).await?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        len += n;
        if head_complete(&buf[..len]) {
            buf.truncate(len);
            return Ok(buf);
        }
    }
}

/// True once `buf` holds the blank line ending a head; bare LF is accepted for `printf | nc`.
fn head_complete(buf: &[u8]) -> bool {
    memmem::find(buf, b"\r\n\r\n").is_some() || memmem::find(buf, b"\n\n").is_some()
}

/// Half-closes, then discards what the client still sends for a short, bounded while.
async fn linger(mut stream: TcpStream) {
    // Closing a socket with unread input makes the kernel send RST, which can destroy the
    // response before the client reads it (after a 431, or a request with a body).
    if stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 1024];
        let mut total = 0;
        while total < LINGER_MAX {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    // Elapsing is the expected end for a client that keeps its side open; nothing to report.
    let _ = tokio::time::timeout(LINGER_TIMEOUT, drain).await;
}

/// The method and target of a request line.
#[derive(Debug, PartialEq, Eq)]
struct RequestLine<'a> {
    method: &'a str,
    target: &'a str,
}

/// Parses `METHOD SP /target SP HTTP/1.x` from the first line of `head`; `None` if malformed.
fn parse_request_line(head: &[u8]) -> Option<RequestLine<'_>> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line.strip_suffix(b"\r").unwrap_or(line)).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let valid = parts.next().is_none()
        && !method.is_empty()
        && method.bytes().all(is_token_byte)
        && target.starts_with('/')
        && target.bytes().all(|b| b.is_ascii_graphic())
        && matches!(version, "HTTP/1.0" | "HTTP/1.1");
    valid.then_some(RequestLine { method, target })
}

/// RFC 9110 `tchar`: the bytes a method name may contain.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Routes a complete head to its response.
fn respond(head: &[u8], state: &dyn AdminState) -> Response {
    let Some(request) = parse_request_line(head) else {
        return Response::text(Status::BadRequest, "bad request\n");
    };
    let path = request.target.split_once('?').map_or(request.target, |(path, _query)| path);
    // Path before method: 405 means "this resource exists but not for that method".
    let mut response = match Endpoint::find(path) {
        None => Response::text(Status::NotFound, "not found\n"),
        Some(_) if !matches!(request.method, "GET" | "HEAD") => {
            Response::text(Status::MethodNotAllowed, "method not allowed\n")
        }
        Some(endpoint) => endpoint.respond(state),
    };
    response.head_only = request.method == "HEAD";
    response
}

/// The resources this port serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Health,
    Ready,
    Metrics,
}

impl Endpoint {
    /// The endpoint at `path`, if any.
    fn find(path: &str) -> Option<Self> {
        match path {
            "/healthz" => Some(Endpoint::Health),
            "/readyz" => Some(Endpoint::Ready),
            "/metrics" => Some(Endpoint::Metrics),
            _ => None,
        }
    }

    /// The response to a GET of this endpoint.
    fn respond(self, state: &dyn AdminState) -> Response {
        match self {
            // Answering at all is the liveness signal; the upstream's state is /readyz's business.
            Endpoint::Health => Response::text(Status::Ok, "ok\n"),
            Endpoint::Ready if state.ready() => Response::text(Status::Ok, "ready\n"),
            Endpoint::Ready => Response::text(Status::Unavailable, "upstream unreachable\n"),
            Endpoint::Metrics => Response {
                content_type: METRICS_CONTENT_TYPE,
                ..Response::text(Status::Ok, state.render_metrics())
            },
        }
    }
}

/// The statuses this port sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    HeaderTooLarge,
    Unavailable,
}

impl Status {
    /// Code and reason phrase for the status line.
    fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::HeaderTooLarge => "431 Request Header Fields Too Large",
            Status::Unavailable => "503 Service Unavailable",
        }
    }
}

/// One response, always closing the connection after it.
#[derive(Debug)]
struct Response {
    status: Status,
    content_type: &'static str,
    body: String,
    /// HEAD: send the headers (with the GET body's length) but not the body.
    head_only: bool,
}

impl Response {
    /// A plain-text response.
    fn text(status: Status, body: impl Into<String>) -> Self {
        Response { status, content_type: TEXT_CONTENT_TYPE, body: body.into(), head_only: false }
    }

    /// The bytes on the wire.
    fn encode(&self) -> Vec<u8> {
        let allow = if self.status == Status::MethodNotAllowed { "Allow: GET, HEAD\r\n" } else { "" };
        let head = format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
            self.status.line(),
            self.content_type,
            self.body.len(),
        );
        let mut out = head.into_bytes();
        if !self.head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
