//! Fuzzing the parsers on stable Rust (proptest): the reply scanner (`FrameScanner`) and
//! the request parser (`RequestParser`) against redis-protocol's decoders as the reference.
//!
//! Valid RESP2/RESP3 (random nesting, binary bulks) is cut at random points and fed in
//! growing prefixes, as reads arrive: each frame must end exactly where the reference says,
//! never earlier. Arbitrary bytes, and valid frames with bytes flipped, inserted or cut,
//! must never panic, and whatever is accepted must be a frame of the reference's length.
//! A huge declared length (`$999999999`, `*2147483647`) with few bytes behind it must not
//! make either allocate: a counting global allocator records the largest request.
//!
//! CI runs a few thousand cases per property (`PROPTEST_CASES`, default 2000). By hand:
//! `PROPTEST_CASES=2500000 cargo test --release --test fuzz_parsers` (4 properties:
//! 10 million inputs).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use strata::resp::{Frame, FrameScanner, Limits, RequestParser};

/// The system allocator, recording the largest single allocation asked for.
struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: as `alloc`; `ptr` and `layout` are the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A RESP value; `resp3` marks the types only RESP3 has.
#[derive(Debug, Clone)]
enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    NullBulk,
    NullArray,
    Array(Vec<Value>),
    Null,
    Bool(bool),
    Double(f64),
    BigNumber(String),
    Verbatim(Vec<u8>),
    BlobError(Vec<u8>),
    Map(Vec<(Value, Value)>),
    Set(Vec<Value>),
}

fn line_text() -> impl Strategy<Value = String> {
    "[ -~]{0,20}"
}

fn scalar(resp3: bool) -> BoxedStrategy<Value> {
    let resp2 = prop_oneof![
        line_text().prop_map(Value::Simple),
        line_text().prop_map(|s| Value::Error(format!("ERR {s}"))),
        any::<i64>().prop_map(Value::Int),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::Bulk),
    ];
    if !resp3 {
        return prop_oneof![4 => resp2, 1 => Just(Value::NullBulk), 1 => Just(Value::NullArray)].boxed();
    }
    prop_oneof![
        4 => resp2,
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => prop_oneof![any::<i32>().prop_map(|n| f64::from(n) / 8.0), Just(f64::INFINITY)].prop_map(Value::Double),
        1 => "-?[1-9][0-9]{0,40}".prop_map(Value::BigNumber),
        1 => proptest::collection::vec(any::<u8>(), 0..32).prop_map(Value::Verbatim),
        1 => proptest::collection::vec(any::<u8>(), 0..32).prop_map(Value::BlobError),
    ]
    .boxed()
}

fn hashable() -> impl Strategy<Value = Value> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Bulk),
        line_text().prop_map(Value::Simple),
        any::<i64>().prop_map(Value::Int),
    ]
}

fn value(resp3: bool) -> BoxedStrategy<Value> {
    scalar(resp3)
        .prop_recursive(4, 64, 8, move |inner| {
            let arrays = proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array);
            if !resp3 {
                return arrays.boxed();
            }
            // The reference keeps sets and map keys in hash containers: hashable scalars only.
            prop_oneof![
                arrays,
                proptest::collection::vec(hashable(), 0..8).prop_map(Value::Set),
                proptest::collection::vec((hashable(), inner), 0..6).prop_map(Value::Map),
            ]
            .boxed()
        })
        .boxed()
}

fn encode(value: &Value, out: &mut Vec<u8>) {
    let mut line = |marker: char, text: &str| out.extend(format!("{marker}{text}\r\n").bytes());
    match value {
        Value::Simple(s) => line('+', s),
        Value::Error(s) => line('-', s),
        Value::Int(n) => line(':', &n.to_string()),
        Value::NullBulk => line('$', "-1"),
        Value::NullArray => line('*', "-1"),
        Value::Null => line('_', ""),
        Value::Bool(b) => line('#', if *b { "t" } else { "f" }),
        Value::Double(d) if d.is_infinite() => line(',', "inf"),
        Value::Double(d) => line(',', &d.to_string()),
        Value::BigNumber(n) => line('(', n),
        Value::Bulk(b) => blob(out, '$', b),
        Value::BlobError(b) => blob(out, '!', b),
        Value::Verbatim(b) => blob(out, '=', &[&b"txt:"[..], b].concat()),
        Value::Array(items) | Value::Set(items) => {
            let marker = if matches!(value, Value::Set(_)) { '~' } else { '*' };
            out.extend(format!("{marker}{}\r\n", items.len()).bytes());
            items.iter().for_each(|item| encode(item, out));
        }
        Value::Map(pairs) => {
            out.extend(format!("%{}\r\n", pairs.len()).bytes());
            for (k, v) in pairs {
                encode(k, out);
                encode(v, out);
            }
        }
    }
}

fn blob(out: &mut Vec<u8>, marker: char, bytes: &[u8]) {
    out.extend(format!("{marker}{}\r\n", bytes.len()).bytes());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// The reference's frame length at the start of `buf` (RESP3 decoder, or RESP2's).
fn reference_len(buf: &[u8], resp3: bool) -> Result<Option<usize>, String> {
    if resp3 {
        redis_protocol::resp3::decode::complete::decode(buf)
            .map(|f| f.map(|(_, n)| n))
            .map_err(|e| e.to_string())
    } else {
        redis_protocol::resp2::decode::decode(buf).map(|f| f.map(|(_, n)| n)).map_err(|e| e.to_string())
    }
}

/// Scans `stream` as it would arrive in pieces ending at `cuts`; returns each frame's length.
fn scan_in_pieces(stream: &[u8], cuts: &[usize]) -> Vec<usize> {
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    ends.push(stream.len());
    ends.sort_unstable();
    let (mut start, mut frames, mut scanner) = (0, Vec::new(), FrameScanner::reply());
    for end in ends {
        while let Some(len) =
            scanner.scan(&stream[start..end], &Limits::UNBOUNDED).expect("valid RESP is accepted")
        {
            frames.push(len);
            start += len;
        }
    }
    frames
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// Valid frames, several in a row, cut anywhere: the scanner finds the reference's boundaries.
    #[test]
    fn reply_scanner_finds_the_reference_boundaries(
        resp3 in any::<bool>(),
        values in proptest::collection::vec(value(true), 1..4),
        values2 in proptest::collection::vec(value(false), 1..4),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let values = if resp3 { values } else { values2 };
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for v in &values {
            let before = stream.len();
            encode(v, &mut stream);
            let len = reference_len(&stream[before..], resp3).expect("reference decodes").expect("complete");
            prop_assert_eq!(len, stream.len() - before, "reference and encoder agree");
            want.push(len);
        }
        prop_assert_eq!(scan_in_pieces(&stream, &cuts), want);
    }

    /// Requests (arrays of binary bulks) cut anywhere: the parser ends each where the
    /// reference does, with the reference's arguments.
    #[test]
    fn request_parser_agrees_with_the_reference(
        requests in proptest::collection::vec(proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8), 1..5),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let mut stream = Vec::new();
        for args in &requests {
            let array = Value::Array(args.iter().cloned().map(Value::Bulk).collect());
            encode(&array, &mut stream);
        }
        let mut ends: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        ends.push(stream.len());
        ends.sort_unstable();
        let (mut parser, mut ranges, mut start, mut seen) = (RequestParser::new(Limits::UNBOUNDED), Vec::new(), 0, 0);
        for end in ends {
            while let Some(frame) = parser.next(&stream[start..end], &mut ranges).expect("valid request") {
                let Frame::Multibulk { len } = frame else { panic!("not a multibulk: {frame:?}") };
                let (reference, used) = redis_protocol::resp2::decode::decode(&stream[start..]).unwrap().unwrap();
                prop_assert_eq!(len, used);
                let args: Vec<Vec<u8>> = ranges.iter().map(|r| stream[start + r.start..start + r.end].to_vec()).collect();
                let redis_protocol::resp2::types::OwnedFrame::Array(items) = reference else { panic!("array") };
                let want: Vec<Vec<u8>> = items.into_iter().map(|f| match f {
                    redis_protocol::resp2::types::OwnedFrame::BulkString(b) => b,
                    other => panic!("not a bulk: {other:?}"),
                }).collect();
                prop_assert_eq!(&args, &want);
                prop_assert_eq!(&args, &requests[seen]);
                start += len;
                seen += 1;
            }
        }
        prop_assert_eq!(seen, requests.len());
    }

    /// Arbitrary bytes, alone or spliced into a valid frame: no panic; what the scanner
    /// accepts is a frame the reference decodes to the same length (the scanner may be
    /// stricter: leading zeros, streamed types; and laxer on scalar lines it only measures).
    #[test]
    fn arbitrary_bytes_never_panic(
        resp3 in any::<bool>(),
        prefix in value(true),
        noise in proptest::collection::vec(any::<u8>(), 0..64),
        at in any::<usize>(),
        cut in any::<usize>(),
    ) {
        let mut bytes = Vec::new();
        encode(&prefix, &mut bytes);
        let at = at % (bytes.len() + 1);
        bytes.splice(at..at, noise.iter().copied());
        let keep = cut % (bytes.len() + 1);
        bytes.truncate(keep.max(1));
        let mut scanner = FrameScanner::reply();
        if let Ok(Some(len)) = scanner.scan(&bytes, &Limits::UNBOUNDED) {
            prop_assert!(len <= bytes.len());
            if let Ok(Some(reference)) = reference_len(&bytes, resp3) {
                prop_assert_eq!(len, reference, "{:?}", String::from_utf8_lossy(&bytes));
            }
        }
        let mut parser = RequestParser::new(Limits { max_bulk: 1 << 20, max_multibulk: 1 << 16 });
        let mut ranges = Vec::new();
        if let Ok(Some(Frame::Multibulk { len })) = parser.next(&bytes, &mut ranges) {
            prop_assert!(len <= bytes.len() && ranges.iter().all(|r| r.end <= len));
            if let Ok(Some(used)) = reference_len(&bytes, false) {
                prop_assert_eq!(len, used);
            }
        }
    }

    /// A declared length far beyond the bytes present is never allocated, whole or cut.
    #[test]
    fn declared_lengths_are_not_allocated(
        len in 1_000_000_000u64..u64::MAX / 2,
        kind in 0..4u8,
        tail in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        let header = match kind {
            0 => format!("${len}\r\n"),
            1 => format!("*{len}\r\n"),
            2 => format!("*1\r\n${len}\r\n"),
            _ => format!("%{len}\r\n"),
        };
        let bytes = [header.as_bytes(), &tail].concat();
        LARGEST.store(0, Ordering::Relaxed);
        let _ = FrameScanner::reply().scan(&bytes, &Limits::UNBOUNDED);
        let _ = RequestParser::new(Limits::UNBOUNDED).next(&bytes, &mut Vec::new());
        // Other tests allocate concurrently, but never more than a few KiB at once.
        prop_assert!(LARGEST.load(Ordering::Relaxed) < 1 << 20, "allocated {} bytes", LARGEST.load(Ordering::Relaxed));
    }
}

/// Found by `arbitrary_bytes_never_panic`: an element that is a bare CRLF (its "type
/// byte" is the `\r`) made `read_line` slice `buf[1..0]`. It must be refused, not panic.
#[test]
fn a_bare_crlf_element_is_refused_without_a_panic() {
    for bytes in [&b"\r\n"[..], b"*1\r\n\r\n", b"%1\r\n+k\r\n\r\n"] {
        let scanned = std::panic::catch_unwind(|| FrameScanner::reply().scan(bytes, &Limits::UNBOUNDED));
        assert!(matches!(scanned, Ok(Err(_))), "{:?}: {scanned:?}", String::from_utf8_lossy(bytes));
    }
}
