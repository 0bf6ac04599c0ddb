//! Tests of `scan`.

use super::*;

#[test]
fn wanted_names_where_a_waited_for_bulk_ends() {
    let mut scanner = FrameScanner::request();
    let buf = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000000\r\nxx";
    assert_eq!(scanner.scan(buf, &Limits::UNBOUNDED), Ok(None));
    let header_end = buf.len() - 2;
    assert_eq!(scanner.wanted(buf, &Limits::UNBOUNDED), Some(header_end + 1_000_000 + 2));
    let mut reply = FrameScanner::reply();
    assert_eq!(reply.scan(b"$5\r\nab", &Limits::UNBOUNDED), Ok(None));
    assert_eq!(reply.wanted(b"$5\r\nab", &Limits::UNBOUNDED), Some(4 + 5 + 2));
    assert_eq!(reply.wanted(b"$5", &Limits::UNBOUNDED), None, "no complete header yet");
    assert_eq!(FrameScanner::reply().wanted(b"*2\r\n", &Limits::UNBOUNDED), None);
    let small = Limits { max_bulk: 100, max_multibulk: 10 };
    assert_eq!(scanner.wanted(buf, &small), None, "never sized past the bulk limit");
}

fn scan_all(input: &[u8]) -> Option<usize> {
    FrameScanner::reply().scan(input, &Limits::UNBOUNDED).unwrap()
}

#[test]
fn finds_simple_frames() {
    assert_eq!(scan_all(b"+OK\r\nextra"), Some(5));
    assert_eq!(scan_all(b"$-1\r\n"), Some(5));
    assert_eq!(scan_all(b"*-1\r\n"), Some(5));
    assert_eq!(scan_all(b"$3\r\na\r\n\r\n"), Some(9));
    assert_eq!(scan_all(b"*0\r\n"), Some(4));
    assert_eq!(scan_all(b"_\r\n"), Some(3));
}

#[test]
fn nested_and_resp3_aggregates() {
    let map = b"%2\r\n+a\r\n:1\r\n+b\r\n*2\r\n$1\r\nx\r\n#t\r\n";
    assert_eq!(scan_all(map), Some(map.len()));
    let attr = b"|1\r\n+key\r\n+val\r\n:42\r\n";
    assert_eq!(scan_all(attr), Some(attr.len()));
    let push = b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n";
    assert_eq!(scan_all(push), Some(push.len()));
}

#[test]
fn resumes_across_every_split_point() {
    let frame = b"*3\r\n$3\r\nSET\r\n*2\r\n:1\r\n,1.5\r\n%1\r\n+k\r\n$2\r\n\r\n\r\n";
    for split in 0..frame.len() {
        let mut scanner = FrameScanner::reply();
        let first = scanner.scan(&frame[..split], &Limits::UNBOUNDED).unwrap();
        assert_eq!(first, None, "split {split}");
        let done = scanner.scan(frame, &Limits::UNBOUNDED).unwrap();
        assert_eq!(done, Some(frame.len()), "split {split}");
    }
}

#[test]
fn agrees_with_redis_protocol_decoder() {
    let frames: [&[u8]; 4] = [
        b"*2\r\n$3\r\nfoo\r\n*1\r\n:-7\r\n",
        b"%1\r\n$1\r\na\r\n~2\r\n+x\r\n+y\r\n",
        b"=8\r\ntxt:abcd\r\n",
        b"(123456789012345678901234567890\r\n",
    ];
    for frame in frames {
        let (_, used) = redis_protocol::resp3::decode::complete::decode(frame).unwrap().unwrap();
        assert_eq!(scan_all(frame), Some(used));
    }
}

#[test]
fn rejects_garbage_and_enforces_limits() {
    let mut s = FrameScanner::request();
    assert!(s.scan(b"+OK\r\n", &Limits::UNBOUNDED).is_err());
    let limits = Limits { max_bulk: 10, max_multibulk: 2 };
    assert!(FrameScanner::request().scan(b"*3\r\n", &limits).is_err());
    assert!(FrameScanner::request().scan(b"*1\r\n$11\r\n", &limits).is_err());
    assert!(FrameScanner::request().scan(b"*1\r\n:1\r\n", &limits).is_err());
    assert!(FrameScanner::reply().scan(b"$abc\r\n", &limits).is_err());
    assert!(FrameScanner::reply().scan(b"$3\r\nabcXY", &limits).is_err());
}
#[test]
fn scalar_replies_are_measured_without_the_general_walk() {
    for frame in
        [&b"+OK\r\n"[..], b"-ERR x\r\n", b":12\r\n", b"$-1\r\n", b"$3\r\nabc\r\n", b"$0\r\n\r\n", b"_\r\n"]
    {
        assert_eq!(scalar_len(frame), Some(frame.len()), "{frame:?}");
        assert_eq!(scan_all(frame), Some(frame.len()));
    }
    assert_eq!(scalar_len(b"$5\r\nab"), None, "incomplete bulk");
    assert_eq!(scalar_len(b"*1\r\n:1\r\n"), None, "aggregates go to the scanner");
    assert_eq!(scalar_len(b"$12\r\nhello world!\r\n"), Some(19), "two-digit length");
    assert_eq!(scalar_len(b"$01\r\nx\r\n"), None, "leading zero goes to the scanner");
    assert!(FrameScanner::reply().scan(b"$01\r\nx\r\n", &Limits::UNBOUNDED).is_err());
    assert_eq!(scan_all(b"*1\r\n:1\r\n+OK\r\n"), Some(8), "the scanner takes the aggregate");
}
