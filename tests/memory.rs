//! Memory for large values, measured on the strata binary's resident set: a value in
//! flight costs about its own size once (not its declared length, not twice while a
//! buffer grows), the memory goes back once it is done, and `limits.max_clients_memory`
//! closes the largest client when all clients' buffers pass it. The largest value Redis
//! takes, 512 MB, goes through and back unchanged.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use support::binary::Binary;
use support::{RawClient, RedisServer, cmd};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const MIB: u64 = 1024 * 1024;

/// One test of this file at a time: they move hundreds of MB, and a peak measured while
/// another moves 512 MB on the same two cores is that one's starvation, not strata's size.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Samples the binary's resident set every millisecond until `Peak::finish`.
fn watch_peak(strata: &Arc<Binary>) -> Peak {
    let peak = Arc::new(AtomicU64::new(strata.rss()));
    let stop = Arc::new(AtomicBool::new(false));
    let (me, p, s) = (strata.clone(), peak.clone(), stop.clone());
    let thread = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            p.fetch_max(me.rss(), Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    Peak { peak, stop, thread: Some(thread) }
}

struct Peak {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Peak {
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// Reads and discards exactly `len` bytes.
async fn read_exactly(c: &mut RawClient, mut len: usize) {
    let mut chunk = vec![0u8; 1 << 20];
    while len > 0 {
        let n = tokio::time::timeout(Duration::from_secs(20), c.stream.read(&mut chunk[..len.min(1 << 20)]))
            .await
            .expect("reply in time")
            .expect("read");
        assert!(n > 0, "closed early");
        len -= n;
    }
}

/// SETs a value of `size` bytes through `strata` (its last `late` bytes 300 ms after the
/// rest), then GETs it, and checks that each costs about the value's size once, with
/// the SET's memory given back before the GET is measured.
async fn set_then_get_held_once(strata: &Arc<Binary>, size: usize, late: usize) {
    let start = strata.rss();
    let mut c = RawClient::connect(strata.addr).await;
    let peak = watch_peak(strata);
    let mut set = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${size}\r\n").into_bytes();
    set.resize(set.len() + size, b'v');
    set.extend_from_slice(b"\r\n");
    let (most, end) = set.split_at(set.len() - late);
    c.send(most).await;
    if late > 0 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.send(end).await;
    }
    drop(set);
    assert_eq!(&c.read_frame().await[..], b"+OK\r\n");
    let set_peak = peak.finish();
    let done = Instant::now();
    while strata.rss() > start + 16 * MIB {
        assert!(done.elapsed() < Duration::from_secs(5), "still {} MiB 5 s after SET", strata.rss() / MIB);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peak = watch_peak(strata);
    c.send(&cmd(&["GET", "big"])).await;
    read_exactly(&mut c, format!("${size}\r\n").len() + size + 2).await;
    let get_peak = peak.finish();
    let allowed = start + size as u64 * 5 / 4;
    assert!(set_peak <= allowed, "SET: peak {} MiB, start {} MiB", set_peak / MIB, start / MIB);
    assert!(get_peak <= allowed, "GET: peak {} MiB, start {} MiB", get_peak / MIB, start / MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_value_costs_its_size_once_and_is_given_back() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    let strata = Arc::new(Binary::start(&redis.url(), "").await);
    let size = 96 * MIB as usize;
    let start = strata.rss();
    set_then_get_held_once(&strata, size, 0).await;
    // Given back within 5 s.
    let done = Instant::now();
    while strata.rss() > start + 16 * MIB {
        assert!(done.elapsed() < Duration::from_secs(5), "still {} MiB after 5 s", strata.rss() / MIB);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_value_costs_what_arrived_not_its_declared_length() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    let strata = Arc::new(Binary::start(&redis.url(), "").await);
    let start = strata.rss();
    let mut c = RawClient::connect(strata.addr).await;
    let declared = 160 * MIB as usize;
    let sent = 32 * MIB as usize;
    let mut head = format!("*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n${declared}\r\n").into_bytes();
    head.resize(head.len() + sent, b'h');
    c.stream.write_all(&head).await.expect("write");
    // Poll until strata holds what was sent, then judge.
    let started = Instant::now();
    while strata.rss() < start + sent as u64 * 9 / 10 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rss = strata.rss();
    assert!(
        rss <= start + sent as u64 * 5 / 4,
        "{} MiB for {} MiB sent",
        (rss - start) / MIB,
        sent as u64 / MIB
    );
    drop(c);
    let done = Instant::now();
    while strata.rss() > start + 16 * MIB {
        assert!(done.elapsed() < Duration::from_secs(5), "still {} MiB after 5 s", strata.rss() / MIB);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_memory_cap_closes_the_largest_client() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    let strata = Binary::start(&redis.url(), "[limits]\nmax_clients_memory = 33554432\n").await;
    let mut small = RawClient::connect(strata.addr).await;
    assert_eq!(&small.command(&["SET", "k", "v"]).await[..], b"+OK\r\n");
    // A 48 MiB value on its way: over the 32 MiB cap, so its sender is closed.
    let mut big = RawClient::connect(strata.addr).await;
    let mut head = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n", 48 * MIB).into_bytes();
    head.resize(head.len() + MIB as usize, b'b');
    big.send(&head).await;
    assert!(big.is_closed().await, "the largest client must be closed");
    assert_eq!(&small.command(&["GET", "k"]).await[..], b"$1\r\nv\r\n", "the others are served");
    // A reader that never reads a large reply is closed too.
    let value = "r".repeat(40 * MIB as usize);
    let mut direct = RawClient::port(redis.port).await;
    assert_eq!(&direct.command(&["SET", "large", &value]).await[..], b"+OK\r\n");
    let mut lazy = RawClient::connect(strata.addr).await;
    lazy.send(&cmd(&["GET", "large"])).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Now read: a closed client gets part of the reply, then the end of the stream.
    let mut got = 0usize;
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), lazy.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got += n,
            Err(_) => panic!("neither closed nor answered"),
        }
    }
    assert!(got < value.len(), "the lazy reader got the whole reply ({got} bytes): not closed");
    assert_eq!(&small.command(&["GET", "k"]).await[..], b"$1\r\nv\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_512_mb_value_is_set_and_got_through_strata_exactly_as_redis_holds_it() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    // Moving 512 MB each way can take longer than the default command timeout (5 s) on a
    // loaded two-core machine, where strata would rightly answer with a timeout error
    // instead: this test is about the bytes, so it allows a minute.
    let strata = Binary::start(&redis.url(), "[upstream]\ncommand_timeout_ms = 60000\n").await;
    // 512 MB, Redis' own limit (proto-max-bulk-len), of bytes that are not all alike.
    let size = 512 * MIB as usize;
    let mut seed = 0x9e37_79b9_u32;
    let block: Vec<u8> = (0..MIB)
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 24) as u8
        })
        .collect();
    let head = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${size}\r\n").into_bytes();
    let mut set = head.clone();
    set.reserve(size + 2);
    for _ in 0..size / MIB as usize {
        set.extend_from_slice(&block);
    }
    set.extend_from_slice(b"\r\n");
    let mut c = RawClient::connect(strata.addr).await;
    c.send(&set).await;
    assert_eq!(&c.read_frame().await[..], b"+OK\r\n");
    let mut direct = RawClient::port(redis.port).await;
    assert_eq!(&direct.command(&["STRLEN", "big"]).await[..], format!(":{size}\r\n").as_bytes());
    c.send(&cmd(&["GET", "big"])).await;
    let through = c.read_frame().await;
    let value = &set[head.len()..];
    assert!(
        through.ends_with(value),
        "the value came back changed: {} bytes, starting {:?}",
        through.len(),
        String::from_utf8_lossy(&through[..through.len().min(120)])
    );
    assert_eq!(&through[..through.len() - value.len()], format!("${size}\r\n").as_bytes());
    drop(set);
    direct.send(&cmd(&["GET", "big"])).await;
    let straight = direct.read_frame().await;
    assert!(through == straight, "strata's reply differs from Redis' own");
}

/// Copies both ways at once, except that towards strata the last 1,000 bytes of the
/// first bulk reply of `size` bytes come 300 ms after the rest. Returns its address.
async fn late_end_relay(redis_port: u16, size: usize) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
    let addr = listener.local_addr().expect("relay addr");
    let header = format!("${size}\r\n").into_bytes();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(redis) = tokio::net::TcpStream::connect(("127.0.0.1", redis_port)).await else { return };
            let (mut from_client, mut to_client) = client.into_split();
            let (mut from_redis, mut to_redis) = redis.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_client, &mut to_redis).await;
            });
            let header = header.clone();
            tokio::spawn(async move {
                // Bytes of the reply still to forward before the pause, once it began.
                let mut before_pause: Option<usize> = None;
                let mut chunk = vec![0u8; 1 << 20];
                while let Ok(n) = from_redis.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                    let mut data = &chunk[..n];
                    if before_pause.is_none()
                        && let Some(at) = data.windows(header.len()).position(|w| w == &header[..])
                    {
                        before_pause = Some(at + header.len() + size + 2 - 1000);
                    }
                    if let Some(left) = before_pause.as_mut().filter(|left| **left > 0 && **left < usize::MAX)
                    {
                        let now = (*left).min(data.len());
                        if to_client.write_all(&data[..now]).await.is_err() {
                            return;
                        }
                        data = &data[now..];
                        *left -= now;
                        if *left == 0 {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            before_pause = Some(usize::MAX);
                        }
                    }
                    if to_client.write_all(data).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// The end of a large value arriving in a separate, late read must not make strata grow
/// (and so copy) the buffer that already holds the rest: on the client's side (its last
/// bytes sent late) and on Redis' side (a relay holds back the end of the reply).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_value_whose_end_comes_late_is_held_once() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    let size = 48 * MIB as usize;
    let relay = late_end_relay(redis.port, size).await;
    let strata = Arc::new(Binary::start(&format!("redis://{relay}"), "").await);
    set_then_get_held_once(&strata, size, 1000).await;
}
