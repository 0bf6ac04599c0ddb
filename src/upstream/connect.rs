//! Opening an upstream connection: TCP connect, then the handshake that puts it in the
//! protocol, user and database strata's clients expect.

use bytes::{BufMut, Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::UpstreamError;
use super::conn::READ_CHUNK;
use crate::config::UpstreamConfig;
use crate::resp::reply::Protocol;
use crate::resp::{FrameScanner, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A connected, authenticated socket with any bytes read past the handshake.
pub struct Connected {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read beyond the handshake replies (normally empty).
    pub leftover: BytesMut,
    /// The HELLO reply (RESP3 connections) or `None`.
    pub hello: Option<Bytes>,
    /// Redis' id for this connection, when asked for.
    pub client_id: Option<i64>,
}

/// Connects and runs the handshake within the configured connect timeout.
/// With `want_id`, also asks for the connection's Redis client id.
pub async fn connect(
    config: &UpstreamConfig,
    protocol: Protocol,
    want_id: bool,
) -> Result<Connected, UpstreamError> {
    timeout(config.connect_timeout, connect_inner(config, protocol, want_id))
        .await
        .map_err(|_| UpstreamError::Connect(format!("timed out after {:?}", config.connect_timeout)))?
}

async fn connect_inner(
    config: &UpstreamConfig,
    protocol: Protocol,
    want_id: bool,
) -> Result<Connected, UpstreamError> {
    // A host name, not a cached SocketAddr: `TcpStream::connect` resolves it on every
    // (re)connect, so a managed Redis whose address moves on failover is found again.
    let address = config.url.address();
    let mut stream =
        TcpStream::connect(&address).await.map_err(|e| UpstreamError::Connect(format!("{address}: {e}")))?;
    stream.set_nodelay(true).map_err(|e| UpstreamError::Connect(e.to_string()))?;
    let (mut payload, mut frames) = handshake(config, protocol);
    if want_id {
        push_command(&mut payload, &["CLIENT", "ID"]);
        frames += 1;
    }
    let mut leftover = BytesMut::new();
    let replies = roundtrip(&mut stream, &mut leftover, &payload, frames)
        .await
        .map_err(|e| UpstreamError::Connect(format!("handshake with {address}: {e}")))?;
    // The liveness PING (RESP2 without AUTH, first) counts as answered when Redis says it
    // is loading, busy or without its master: HELLO and AUTH pass in those states too, and
    // the clients then get Redis' own error.
    let ping_at = (protocol == Protocol::Resp2 && config.url.password.is_none()).then_some(0);
    let refused = |(i, r): &(usize, &Bytes)| {
        let busy = [&b"-LOADING"[..], b"-BUSY", b"-MASTERDOWN"].iter().any(|e| r.starts_with(e));
        (r.starts_with(b"-") || r.starts_with(b"!")) && !(Some(*i) == ping_at && busy)
    };
    if let Some((_, err)) = replies.iter().enumerate().find(refused) {
        let text = String::from_utf8_lossy(err).trim().to_string();
        return Err(UpstreamError::Handshake(text));
    }
    let hello = (protocol == Protocol::Resp3).then(|| replies[0].clone());
    let client_id = want_id.then(|| parse_integer(&replies[frames - 1])).flatten();
    Ok(Connected { stream, leftover, hello, client_id })
}

/// The handshake requests and how many replies they produce.
fn handshake(config: &UpstreamConfig, protocol: Protocol) -> (BytesMut, usize) {
    let url = &config.url;
    let mut out = BytesMut::new();
    let mut frames = 0;
    let user = url.username.as_deref().unwrap_or("default");
    match (protocol, &url.password) {
        (Protocol::Resp3, Some(pass)) => push_command(&mut out, &["HELLO", "3", "AUTH", user, pass]),
        (Protocol::Resp3, None) => push_command(&mut out, &["HELLO", "3"]),
        (Protocol::Resp2, Some(pass)) => push_command(&mut out, &["AUTH", user, pass]),
        // A connection is healthy only once Redis has answered on it: a stopped Redis
        // (SIGSTOP) or a listener that never reads still completes the TCP connect.
        (Protocol::Resp2, None) => push_command(&mut out, &["PING"]),
    }
    frames += 1;
    if url.db != 0 {
        push_command(&mut out, &["SELECT", &url.db.to_string()]);
        frames += 1;
    }
    (out, frames as usize)
}

/// The value of a `:N` integer reply.
fn parse_integer(reply: &[u8]) -> Option<i64> {
    std::str::from_utf8(reply.strip_prefix(b":")?).ok()?.trim_end().parse().ok()
}

/// Appends one request in RESP multibulk form.
pub fn push_command(out: &mut BytesMut, args: &[&str]) {
    out.put_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.put_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.put_slice(arg.as_bytes());
        out.put_slice(b"\r\n");
    }
}

/// Writes `payload` and reads exactly `frames` replies, for handshakes and probes.
pub async fn roundtrip(
    stream: &mut TcpStream,
    rbuf: &mut BytesMut,
    payload: &[u8],
    frames: usize,
) -> std::io::Result<Vec<Bytes>> {
    stream.write_all(payload).await?;
    let mut replies = Vec::with_capacity(frames);
    let mut scanner = FrameScanner::reply();
    while replies.len() < frames {
        match scanner.scan(rbuf, &Limits::UNBOUNDED) {
            Ok(Some(len)) => replies.push(rbuf.split_to(len).freeze()),
            Ok(None) => {
                rbuf.reserve(READ_CHUNK);
                if stream.read_buf(rbuf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
    }
    Ok(replies)
}
