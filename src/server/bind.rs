//! Binding the listeners. `tokio::net::TcpListener::bind` always asks `listen(2)` for a
//! backlog of 128; bursts of thousands of connects (a fleet restarting) then overflow the
//! accept queue and each connect past it waits a second for its SYN to be retried. Like
//! Redis' `tcp-backlog`, the backlog here is `server.tcp_backlog` (the kernel caps it at
//! `net.core.somaxconn`).

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket, lookup_host};

/// Listens on `address` (`host:port`; a host name is resolved and its addresses tried in
/// order, as tokio's `bind` does) with a queue of `backlog` connections not yet accepted.
pub async fn bind(address: &str, backlog: u32) -> io::Result<TcpListener> {
    let mut last = None;
    for addr in lookup_host(address).await? {
        match bind_one(addr, backlog) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "resolves to no address")))
}

fn bind_one(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // As tokio's bind: a restarted strata can listen again while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;
    use std::time::Duration;

    use super::bind;

    /// Connects complete in the kernel while nobody accepts, up to backlog + 1; past that
    /// the SYN is dropped and the connect waits (here: times out).
    fn connects_completed(addr: std::net::SocketAddr, tries: usize) -> (usize, Vec<TcpStream>) {
        let mut open = Vec::new();
        for _ in 0..tries {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(stream) => open.push(stream),
                Err(_) => break,
            }
        }
        (open.len(), open)
    }

    #[tokio::test]
    async fn the_backlog_is_the_one_asked_for() {
        let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if somaxconn < 200 {
            eprintln!("net.core.somaxconn is {somaxconn}; the kernel would cap the backlog, skipped");
            return;
        }
        let listener = bind("127.0.0.1:0", 200).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (completed, _open) =
            tokio::task::spawn_blocking(move || connects_completed(addr, 180)).await.unwrap();
        // With tokio's own bind (backlog 128) the 130th connect would stall.
        assert_eq!(completed, 180, "connects completed without accept");
        let small = bind("127.0.0.1:0", 4).await.unwrap();
        let addr = small.local_addr().unwrap();
        let (completed, _open) =
            tokio::task::spawn_blocking(move || connects_completed(addr, 20)).await.unwrap();
        assert_eq!(completed, 5, "a backlog of 4 holds 5 connections");
    }
}
