//! Test support: real redis-server processes on free loopback ports, strata in-process,
//! and a raw RESP client for byte-level checks. No mocks: faults are real kills.
//!
//! strata runs as production runs it: on a thread of its own with the runtime
//! `strata::runtime(server.threads)` builds (the binary's; one thread by default), not
//! on the test's runtime, whose scheduler would order clients differently.
#![allow(dead_code)]

pub mod binary;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use strata::config::{Config, Overrides};
use strata::resp::{FrameScanner, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Longest any single test read may wait; a hang becomes a failure, not a stuck CI run.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind port 0")
}

/// A redis-server child process with no persistence, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts redis-server on a free port.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts redis-server with extra command-line arguments.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--dir", self.dir.path().to_str().expect("utf8 path")])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        self.child = Some(child);
        wait_for_port(self.port);
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Sends a signal (STOP, CONT) to the server process.
    pub fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.signal("CONT");
        self.kill();
    }
}

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("nothing listening on port {port} after 2 s");
}

/// strata running inside the test process, on its own thread and runtime.
pub struct Strata {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Strata {
    /// Starts strata in front of `upstream` with defaults plus `extra_toml`.
    pub async fn start(upstream: &str, extra_toml: &str) -> Strata {
        Self::launch(upstream, extra_toml, false).await.0
    }

    /// Starts strata on a thread running the runtime production builds for the config's
    /// `server.threads`; with `admin`, also binds an admin listener on `127.0.0.1:0`.
    async fn launch(upstream: &str, extra_toml: &str, admin: bool) -> (Strata, Option<SocketAddr>) {
        let overrides = Overrides { upstream: Some(upstream.to_string()), ..Overrides::default() };
        let config = Config::parse(extra_toml, &overrides).expect("test config is valid");
        let listener = StdListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let admin = admin.then(|| StdListener::bind("127.0.0.1:0").expect("bind admin"));
        let admin_addr = admin.as_ref().map(|a| a.local_addr().expect("admin addr"));
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let runtime = strata::runtime(config.server.threads).expect("strata's runtime");
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let listener = tokio_listener(listener);
                let admin = admin.map(tokio_listener);
                strata::run_with_admin(config, listener, admin, token).await;
            })
        });
        let strata = Strata { addr, shutdown, thread: Some(thread) };
        strata.wait_ready().await;
        (strata, admin_addr)
    }

    /// Waits until the shared connections answer PING (or 3 s pass, for tests where Redis is down).
    async fn wait_ready(&self) {
        for _ in 0..300 {
            let mut c = RawClient::connect(self.addr).await;
            if c.command(&["PING"]).await.starts_with(b"+PONG") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `redis://ADDR` for the redis crate.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Stops strata gracefully and waits for it (at most 10 s).
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let Some(thread) = self.thread.take() else { return };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !thread.is_finished() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
}

impl Drop for Strata {
    /// A test that ends without `stop` still shuts strata down (its thread is left to finish).
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A std listener handed to the runtime that will serve it (must run inside that runtime).
fn tokio_listener(listener: StdListener) -> tokio::net::TcpListener {
    listener.set_nonblocking(true).expect("nonblocking listener");
    tokio::net::TcpListener::from_std(listener).expect("listener on strata's runtime")
}

/// A byte-level RESP client.
pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl RawClient {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).await.expect("connect");
        RawClient { stream, buf: BytesMut::new() }
    }

    /// Connects to a port on loopback.
    pub async fn port(port: u16) -> RawClient {
        Self::connect(SocketAddr::from(([127, 0, 0, 1], port))).await
    }

    /// Writes raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads one complete reply frame, as raw bytes.
    pub async fn read_frame(&mut self) -> Bytes {
        self.try_read_frame().await.expect("a reply frame")
    }

    /// Reads one reply frame, or `None` if the connection closed first.
    pub async fn try_read_frame(&mut self) -> Option<Bytes> {
        let mut scanner = FrameScanner::reply();
        loop {
            if let Some(len) = scanner.scan(&self.buf, &Limits::UNBOUNDED).expect("valid RESP") {
                return Some(self.buf.split_to(len).freeze());
            }
            let read = tokio::time::timeout(READ_TIMEOUT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("reply within the read timeout");
            if read.ok()? == 0 {
                return None;
            }
        }
    }

    /// Sends one command and reads its reply.
    pub async fn command(&mut self, args: &[&str]) -> Bytes {
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send(&encode(&bytes)).await;
        self.read_frame().await
    }

    /// True once the peer closed the connection (reads EOF within the timeout).
    pub async fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(READ_TIMEOUT, self.stream.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// Encodes one command as a RESP multibulk.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Encodes a command given as text words.
pub fn cmd(words: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
    encode(&args)
}

impl Strata {
    /// Starts strata like `start`, also serving `/healthz`, `/readyz` and `/metrics` on an
    /// admin listener bound to `127.0.0.1:0`; returns strata and the admin address.
    pub async fn start_with_admin(upstream: &str, extra_toml: &str) -> (Strata, SocketAddr) {
        let (strata, admin) = Self::launch(upstream, extra_toml, true).await;
        (strata, admin.expect("admin listener bound"))
    }
}

/// One `GET path` on an HTTP port (the admin endpoints): the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect to the admin port");
        let request = format!("GET {path} HTTP/1.1\r\nHost: strata\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write request");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("read response");
        response
    };
    let response = tokio::time::timeout(READ_TIMEOUT, exchange).await.expect("HTTP response in time");
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head ends with a blank line");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status line HTTP/1.1 CODE REASON");
    (status, body.to_string())
}

/// The integer of a `:N\r\n` reply (panics on anything else).
pub fn int_reply(reply: &[u8]) -> i64 {
    std::str::from_utf8(reply)
        .ok()
        .and_then(|s| s.strip_prefix(':'))
        .and_then(|s| s.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("expected an integer reply, got {:?}", String::from_utf8_lossy(reply)))
}

/// Polls `check` every 10 ms until it holds; panics naming `what` after `READ_TIMEOUT`.
/// Tests wait for effects this way instead of sleeping a fixed time and hoping.
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of `field` in `INFO section` of the Redis on `port` (asked directly).
pub async fn redis_info_field(port: u16, section: &str, field: &str) -> Option<String> {
    let reply = RawClient::port(port).await.command(&["INFO", section]).await;
    let text = String::from_utf8_lossy(&reply).into_owned();
    let prefix = format!("{field}:");
    text.lines().find_map(|line| line.strip_prefix(&prefix).map(str::to_string))
}

/// Waits until `n` clients of the Redis on `port` are blocked (BLPOP and the like sent
/// through strata have reached Redis), instead of sleeping and hoping they have.
pub async fn wait_blocked(port: u16, n: usize) {
    let want = n.to_string();
    wait_until(&format!("{n} client(s) blocked in Redis"), || async {
        redis_info_field(port, "clients", "blocked_clients").await.as_deref() == Some(want.as_str())
    })
    .await;
}
