//! Splits a client's byte stream into requests: RESP multibulk or inline commands.
//!
//! The parser never copies a multibulk request: it reports the frame length and the
//! argument ranges inside it, so the handler can forward runs of requests as one slice of
//! its read buffer. Inline commands (`PING\r\n` from nc) are re-encoded as multibulk,
//! because the upstream connection is shared and must only ever see RESP.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use memchr::memchr;

use super::scan::{FrameScanner, Limits, ProtocolError, parse_len};

/// Longest inline command accepted, as Redis' PROTO_INLINE_MAX_SIZE.
const MAX_INLINE: usize = 64 * 1024;

/// One request found at the start of the buffer.
#[derive(Debug)]
pub enum Frame {
    /// A multibulk request of `len` bytes; arguments are ranges into those bytes.
    Multibulk { len: usize },
    /// An inline command of `consumed` bytes, re-encoded as multibulk in `encoded`;
    /// arguments are ranges into `encoded`.
    Inline { consumed: usize, encoded: Bytes },
    /// `len` bytes that carry no command (`*0`, `*-1` or a blank inline line); Redis
    /// ignores these without a reply.
    Empty { len: usize },
}

/// Stateful request parser for one client connection.
#[derive(Debug)]
pub struct RequestParser {
    scanner: FrameScanner,
    limits: Limits,
}

impl RequestParser {
    /// A parser enforcing the configured bulk and multibulk limits.
    pub fn new(limits: Limits) -> Self {
        RequestParser { scanner: FrameScanner::request(), limits }
    }

    /// The limits it enforces (a look-ahead parser gets the same).
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// After `next` returned `None`: the buffer length at which the bulk being waited for
    /// is complete, if one is (see `FrameScanner::wanted`).
    pub fn wanted(&self, buf: &[u8]) -> Option<usize> {
        self.scanner.wanted(buf, &self.limits)
    }

    /// Parses the request at the start of `buf`, filling `args` with argument ranges.
    /// Returns `None` when the request is not complete yet.
    pub fn next(&mut self, buf: &[u8], args: &mut Vec<Range<usize>>) -> Result<Option<Frame>, ProtocolError> {
        args.clear();
        match buf.first() {
            None => Ok(None),
            Some(b'*') => self.multibulk(buf, args),
            Some(_) => inline(buf, args),
        }
    }

    fn multibulk(
        &mut self,
        buf: &[u8],
        args: &mut Vec<Range<usize>>,
    ) -> Result<Option<Frame>, ProtocolError> {
        if let Some(len) = negative_count(buf) {
            // Redis ignores `*-N` requests without a reply; so does strata.
            return Ok(Some(Frame::Empty { len }));
        }
        if self.scanner.is_fresh() {
            if let Some(len) = quick_multibulk(buf, &self.limits, args) {
                return Ok(Some(Frame::Multibulk { len }));
            }
            args.clear();
        }
        let Some(len) = self.scanner.scan(buf, &self.limits)? else { return Ok(None) };
        let frame = &buf[..len];
        let (count, mut pos) = header(frame, 0)?;
        let count = count.unwrap_or(0);
        if count == 0 {
            return Ok(Some(Frame::Empty { len }));
        }
        for _ in 0..count {
            let (arg_len, after) = header(frame, pos)?;
            let arg_len = arg_len.ok_or(ProtocolError::InvalidLength("bulk"))? as usize;
            args.push(after..after + arg_len);
            pos = after + arg_len + 2;
        }
        Ok(Some(Frame::Multibulk { len }))
    }
}

/// A complete, plain multibulk request (`*N`, then N `$len` bulks, within the limits),
/// parsed in one pass with its argument ranges. `None` for anything else (incomplete,
/// unusual or invalid), which the resumable scanner then walks and, if need be, refuses
/// with the exact error: this path only ever accepts what the scanner would accept.
fn quick_multibulk(buf: &[u8], limits: &Limits, args: &mut Vec<Range<usize>>) -> Option<usize> {
    let (count, mut pos) = quick_header(buf, 0, b'*')?;
    if count == 0 || count > limits.max_multibulk {
        return None;
    }
    for _ in 0..count {
        let (len, start) = quick_header(buf, pos, b'$')?;
        if len > limits.max_bulk {
            return None;
        }
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        if buf.get(end..end.checked_add(2)?)? != b"\r\n" {
            return None;
        }
        // Bounded by the bytes present: each argument took at least 4 bytes of `buf`.
        args.push(start..end);
        pos = end + 2;
    }
    Some(pos)
}

/// `<kind><digits>\r\n` at `pos`: the number and the offset after the line. At most 18
/// digits, so the value cannot overflow; a leading zero is left to the scanner to refuse.
fn quick_header(buf: &[u8], pos: usize, kind: u8) -> Option<(u64, usize)> {
    if *buf.get(pos)? != kind || (buf.get(pos + 1) == Some(&b'0') && buf.get(pos + 2) != Some(&b'\r')) {
        return None;
    }
    let mut value = 0u64;
    let mut i = pos + 1;
    loop {
        match *buf.get(i)? {
            digit @ b'0'..=b'9' if i - pos <= 18 => value = value * 10 + u64::from(digit - b'0'),
            b'\r' if i > pos + 1 && buf.get(i + 1) == Some(&b'\n') => return Some((value, i + 2)),
            _ => return None,
        }
        i += 1;
    }
}

/// The header length of a `*-N\r\n` request, which carries no command.
fn negative_count(buf: &[u8]) -> Option<usize> {
    if buf.get(1) != Some(&b'-') {
        return None;
    }
    let nl = memchr(b'\n', buf)?;
    let digits = buf.get(2..nl.checked_sub(1)?)?;
    (!digits.is_empty() && digits.iter().all(u8::is_ascii_digit) && buf[nl - 1] == b'\r').then_some(nl + 1)
}

/// Reads a `<type><len>\r\n` header at `pos` of an already validated frame.
fn header(frame: &[u8], pos: usize) -> Result<(Option<u64>, usize), ProtocolError> {
    let nl = memchr(b'\n', &frame[pos..]).ok_or(ProtocolError::MissingCrlf)? + pos;
    let len = parse_len(&frame[pos + 1..nl - 1], "multibulk")?;
    Ok((len, nl + 1))
}

fn inline(buf: &[u8], args: &mut Vec<Range<usize>>) -> Result<Option<Frame>, ProtocolError> {
    let Some(nl) = memchr(b'\n', buf) else {
        return if buf.len() > MAX_INLINE { Err(ProtocolError::LineTooLong) } else { Ok(None) };
    };
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    // Redis stops at the NUL (C strings) and never runs the line; running what follows
    // the NUL, or the whole line, would be strata's guess at a command nobody sent.
    if memchr(0, line).is_some() {
        return Err(ProtocolError::InlineNul);
    }
    let words = split_inline(line)?;
    if words.is_empty() {
        return Ok(Some(Frame::Empty { len: nl + 1 }));
    }
    let mut encoded = BytesMut::with_capacity(line.len() + 16 * words.len());
    encoded.put_slice(format!("*{}\r\n", words.len()).as_bytes());
    for word in &words {
        encoded.put_slice(format!("${}\r\n", word.len()).as_bytes());
        args.push(encoded.len()..encoded.len() + word.len());
        encoded.put_slice(word);
        encoded.put_slice(b"\r\n");
    }
    Ok(Some(Frame::Inline { consumed: nl + 1, encoded: encoded.freeze() }))
}

/// Splits an inline line into words the way redis-cli and Redis' `sdssplitargs` do:
/// whitespace separates, double quotes allow escapes (`\n`, `\xHH`), single quotes are literal.
fn split_inline(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut words = Vec::new();
    let mut i = 0;
    while i < line.len() {
        if line[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let (word, next) = match line[i] {
            b'"' => double_quoted(line, i + 1)?,
            b'\'' => single_quoted(line, i + 1)?,
            _ => {
                let end = line[i..].iter().position(u8::is_ascii_whitespace).map_or(line.len(), |p| i + p);
                (line[i..end].to_vec(), end)
            }
        };
        words.push(word);
        i = next;
    }
    Ok(words)
}

const UNBALANCED: ProtocolError = ProtocolError::UnbalancedQuotes;

fn double_quoted(line: &[u8], mut i: usize) -> Result<(Vec<u8>, usize), ProtocolError> {
    let mut word = Vec::new();
    loop {
        match line.get(i) {
            None => return Err(UNBALANCED),
            Some(b'"') => return closing_quote(line, i, word),
            Some(b'\\') if line.get(i + 1) == Some(&b'x') && hex_pair(line, i + 2).is_some() => {
                word.extend(hex_pair(line, i + 2));
                i += 4;
            }
            Some(b'\\') if i + 1 < line.len() => {
                word.push(match line[i + 1] {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 8,
                    b'a' => 7,
                    other => other,
                });
                i += 2;
            }
            Some(&c) => {
                word.push(c);
                i += 1;
            }
        }
    }
}

fn single_quoted(line: &[u8], mut i: usize) -> Result<(Vec<u8>, usize), ProtocolError> {
    let mut word = Vec::new();
    loop {
        match line.get(i) {
            None => return Err(UNBALANCED),
            Some(b'\'') => return closing_quote(line, i, word),
            Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                word.push(b'\'');
                i += 2;
            }
            Some(&c) => {
                word.push(c);
                i += 1;
            }
        }
    }
}

/// A closing quote must be followed by whitespace or the end of the line.
fn closing_quote(line: &[u8], i: usize, word: Vec<u8>) -> Result<(Vec<u8>, usize), ProtocolError> {
    match line.get(i + 1) {
        Some(c) if !c.is_ascii_whitespace() => Err(UNBALANCED),
        _ => Ok((word, i + 1)),
    }
}

fn hex_pair(line: &[u8], i: usize) -> Option<u8> {
    let digits = line.get(i..i + 2)?;
    u8::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> (Option<Frame>, Vec<Vec<u8>>) {
        let mut parser = RequestParser::new(Limits::UNBOUNDED);
        let mut args = Vec::new();
        let frame = parser.next(input, &mut args).unwrap();
        let source: &[u8] = match &frame {
            Some(Frame::Inline { encoded, .. }) => encoded,
            _ => input,
        };
        let words = args.iter().map(|r| source[r.clone()].to_vec()).collect();
        (frame, words)
    }

    #[test]
    fn multibulk_arguments_are_binary_safe() {
        let input = b"*3\r\n$3\r\nSET\r\n$3\r\nk\0\n\r\n$4\r\n\r\n\r\n\r\n+rest";
        let (frame, words) = parse(input);
        assert!(matches!(frame, Some(Frame::Multibulk { len }) if len == input.len() - 5));
        assert_eq!(words, vec![b"SET".to_vec(), b"k\0\n".to_vec(), b"\r\n\r\n".to_vec()]);
    }

    #[test]
    fn inline_commands_are_reencoded() {
        let (frame, words) = parse(b"SET \"a b\" 'c d' \"\\x41\\n\"\r\n");
        assert_eq!(words, vec![b"SET".to_vec(), b"a b".to_vec(), b"c d".to_vec(), b"A\n".to_vec()]);
        let Some(Frame::Inline { encoded, .. }) = frame else { panic!("not inline") };
        assert!(encoded.starts_with(b"*4\r\n$3\r\nSET\r\n"));
        let (frame, words) = parse(b"PING\n");
        assert!(matches!(frame, Some(Frame::Inline { consumed: 5, .. })));
        assert_eq!(words, vec![b"PING".to_vec()]);
    }

    #[test]
    fn empty_and_incomplete_requests() {
        assert!(matches!(parse(b"\r\n").0, Some(Frame::Empty { len: 2 })));
        assert!(matches!(parse(b"*0\r\n").0, Some(Frame::Empty { len: 4 })));
        assert!(matches!(parse(b"*-10\r\n").0, Some(Frame::Empty { len: 6 })));
        assert!(parse(b"*2\r\n$3\r\nGET\r\n").0.is_none());
        assert!(parse(b"PIN").0.is_none());
    }

    #[test]
    fn one_pass_and_resumable_paths_agree() {
        let requests: [&[u8]; 6] = [
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
            b"*1\r\n$0\r\n\r\n",
            b"*2\r\n$3\r\nGET\r\n$01\r\nk\r\n",
            b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n",
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\r\n\r\n",
            b"*2\r\n$3\r\nGET\r\n$1\r\nkXY",
        ];
        for request in requests {
            let mut quick = Vec::new();
            let quick_len = quick_multibulk(request, &Limits::UNBOUNDED, &mut quick);
            let mut scanner = FrameScanner::request();
            let scanned = scanner.scan(request, &Limits::UNBOUNDED).ok().flatten();
            assert_eq!(quick_len, scanned, "{}", String::from_utf8_lossy(request));
            if quick_len.is_some() {
                assert_eq!(parse(request).1.len(), quick.len());
            }
        }
        // Over a limit, unterminated or incomplete: left to the scanner and its errors.
        let tight = Limits { max_bulk: 2, max_multibulk: 1 };
        assert!(quick_multibulk(b"*1\r\n$3\r\nGET\r\n", &tight, &mut Vec::new()).is_none());
        assert!(quick_multibulk(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n", &tight, &mut Vec::new()).is_none());
        assert!(quick_multibulk(b"*1\r\n$3\r\nGET", &Limits::UNBOUNDED, &mut Vec::new()).is_none());
        assert!(
            quick_multibulk(b"*1\r\n$99999999999999999999\r\n", &Limits::UNBOUNDED, &mut Vec::new())
                .is_none()
        );
        let mut parser = RequestParser::new(tight);
        assert!(parser.next(b"*1\r\n$3\r\nGET\r\n", &mut Vec::new()).is_err());
        // Redis refuses leading zeros (and would close the shared connection over them).
        for request in [&b"*2\r\n$3\r\nGET\r\n$01\r\nk\r\n"[..], b"*02\r\n$3\r\nGET\r\n$1\r\nk\r\n"] {
            let mut parser = RequestParser::new(Limits::UNBOUNDED);
            assert!(quick_multibulk(request, &Limits::UNBOUNDED, &mut Vec::new()).is_none());
            assert!(parser.next(request, &mut Vec::new()).is_err(), "{}", String::from_utf8_lossy(request));
        }
    }

    #[test]
    fn unbalanced_quotes_are_protocol_errors() {
        let mut parser = RequestParser::new(Limits::UNBOUNDED);
        assert!(parser.next(b"SET \"a\r\n", &mut Vec::new()).is_err());
        assert!(parser.next(b"SET \"a\"b\r\n", &mut Vec::new()).is_err());
    }

    #[test]
    fn a_nul_byte_in_an_inline_command_is_a_protocol_error() {
        let mut parser = RequestParser::new(Limits::UNBOUNDED);
        for line in [&b"SET k v\0x\r\n"[..], b"\0PING\r\n", b"GET \"a\0\"\n"] {
            let result = parser.next(line, &mut Vec::new());
            assert!(matches!(result, Err(ProtocolError::InlineNul)), "{line:?}: {result:?}");
        }
        // An escaped NUL is an argument byte like any other.
        let (_, words) = parse(b"SET k \"\\x00\"\r\n");
        assert_eq!(words[2], b"\0".to_vec());
    }
}
