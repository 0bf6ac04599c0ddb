//! Tests of `http`.

use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

struct FakeState {
    ready: AtomicBool,
}

impl AdminState for FakeState {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn render_metrics(&self) -> String {
        "# TYPE strata_up gauge\nstrata_up 1\n".to_string()
    }
}

/// Starts `serve` on a free loopback port.
async fn start(ready: bool) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let state = Arc::new(FakeState { ready: AtomicBool::new(ready) });
    tokio::spawn(serve(listener, state, shutdown.clone()));
    (addr, shutdown)
}

/// Sends `request` raw and returns everything the server wrote before closing.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    String::from_utf8(reply).unwrap()
}

/// Splits a response into its head (without the blank line) and body.
fn split(reply: &str) -> (&str, &str) {
    reply.split_once("\r\n\r\n").expect("a complete response head")
}

async fn get(ready: bool, target: &str) -> String {
    let (addr, _shutdown) = start(ready).await;
    exchange(addr, format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await
}

#[tokio::test]
async fn healthz_answers_ok() {
    let reply = get(false, "/healthz").await;
    let (head, body) = split(&reply);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(head.contains("\r\nContent-Length: 3\r\n"), "{reply}");
    assert!(head.contains("\r\nConnection: close"), "{reply}");
    assert_eq!(body, "ok\n");
}

#[tokio::test]
async fn readyz_follows_the_upstream() {
    let reply = get(true, "/readyz").await;
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert_eq!(split(&reply).1, "ready\n");
    let reply = get(false, "/readyz").await;
    assert!(reply.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{reply}");
    assert_eq!(split(&reply).1, "upstream unreachable\n");
}

#[tokio::test]
async fn metrics_render_with_prometheus_content_type_and_query_ignored() {
    let reply = get(true, "/metrics?name[]=strata_up").await;
    let (head, body) = split(&reply);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"), "{reply}");
    assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())), "{reply}");
    assert_eq!(body, "# TYPE strata_up gauge\nstrata_up 1\n");
}

#[tokio::test]
async fn head_sends_headers_only() {
    let (addr, _shutdown) = start(true).await;
    let reply = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
    let (head, body) = split(&reply);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(head.contains("\r\nContent-Length: 35\r\n"), "{reply}");
    assert_eq!(body, "");
}

#[tokio::test]
async fn unknown_path_is_404() {
    let reply = get(true, "/").await;
    assert!(reply.starts_with("HTTP/1.1 404 Not Found\r\n"), "{reply}");
}

#[tokio::test]
async fn other_methods_are_405_with_allow() {
    let (addr, _shutdown) = start(true).await;
    let reply = exchange(addr, b"POST /healthz HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi").await;
    let (head, _) = split(&reply);
    assert!(head.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{reply}");
    assert!(head.contains("\r\nAllow: GET, HEAD\r\n"), "{reply}");
}

#[tokio::test]
async fn malformed_request_line_is_400() {
    let (addr, _shutdown) = start(true).await;
    for request in [&b"NONSENSE\r\n\r\n"[..], b"GET healthz HTTP/1.1\r\n\r\n", b"GET /healthz HTTP/2\n\n"] {
        let reply = exchange(addr, request).await;
        assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{request:?}: {reply}");
    }
}

#[tokio::test]
async fn oversized_head_is_431() {
    let (addr, _shutdown) = start(true).await;
    let mut request = b"GET /healthz HTTP/1.1\r\nX-Padding: ".to_vec();
    request.resize(MAX_HEAD + 1024, b'a');
    let reply = exchange(addr, &request).await;
    assert!(reply.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{reply}");
}

#[tokio::test(start_paused = true)]
async fn incomplete_head_is_closed_after_the_timeout() {
    let (addr, _shutdown) = start(true).await;
    // Paused time auto-advances while both sides wait, so this takes no real 5 s.
    let reply = exchange(addr, b"GET /healthz HTTP/1.1\r\n").await;
    assert_eq!(reply, "");
}

#[tokio::test]
async fn serve_returns_on_shutdown() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let state = Arc::new(FakeState { ready: AtomicBool::new(true) });
    let server = tokio::spawn(serve(listener, state, shutdown.clone()));
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap();
}

#[test]
fn request_line_parses_method_and_target() {
    let line = parse_request_line(b"GET /readyz?verbose HTTP/1.0\r\nHost: x\r\n\r\n");
    assert_eq!(line, Some(RequestLine { method: "GET", target: "/readyz?verbose" }));
    assert_eq!(parse_request_line(b"GET /a b HTTP/1.1\r\n\r\n"), None);
    assert_eq!(parse_request_line(b"G\xffT / HTTP/1.1\r\n\r\n"), None);
}
