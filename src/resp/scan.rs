//! Finds where one complete RESP2/RESP3 frame ends, without building it.
//!
//! Replies are forwarded as the bytes Redis sent, so strata only needs frame boundaries.
//! The scanner is resumable: a 10 MB LRANGE reply arriving in 64 KiB reads is walked
//! once in total, not once per read. It owns no buffer; callers pass the same buffer
//! (grown at the end) on every call until a frame is complete.

use memchr::memchr;

/// Why a byte stream is not valid RESP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The first byte of an element is not a RESP type marker.
    #[error("invalid frame type byte '{0}'")]
    InvalidType(char),
    /// A length or count is not a decimal integer, or is negative where it cannot be.
    #[error("invalid {0} length")]
    InvalidLength(&'static str),
    /// A length exceeds a configured limit.
    #[error("invalid {what} length ({len} exceeds the limit of {limit})")]
    TooLong { what: &'static str, len: u64, limit: u64 },
    /// A bulk string is not followed by CRLF.
    #[error("expected CRLF after bulk data")]
    MissingCrlf,
    /// A header line grew past the longest line strata accepts.
    #[error("too big inline request")]
    LineTooLong,
    /// An inline command contains a NUL byte. Redis neither runs nor answers such a line
    /// (the connection goes silent); strata answers this error and closes instead.
    #[error("NUL byte in inline request")]
    InlineNul,
    /// An inline command has an unterminated quote.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// An element type a request may not contain (requests are arrays of bulk strings).
    #[error("expected '$', got '{0}'")]
    NotBulk(char),
    /// RESP3 streamed aggregates are never sent by Redis and are refused.
    #[error("streamed RESP3 types are not supported")]
    Streamed,
}

/// Limits applied while scanning; replies from Redis use `Limits::UNBOUNDED`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest bulk string length accepted.
    pub max_bulk: u64,
    /// Largest element count of one aggregate.
    pub max_multibulk: u64,
}

impl Limits {
    /// No limits beyond what fits in memory: used for replies from the trusted upstream.
    pub const UNBOUNDED: Limits = Limits { max_bulk: u64::MAX, max_multibulk: u64::MAX };
}

/// Longest header line (`$123\r\n`, `+OK\r\n`) read before giving up. Simple strings and
/// errors from Redis can carry messages, so this is generous; it bounds a garbage stream.
const MAX_LINE: usize = 64 * 1024;

/// Resumable scanner state for one frame at the start of a buffer.
#[derive(Debug, Default)]
pub struct FrameScanner {
    /// Offset up to which the frame has been validated.
    pos: usize,
    /// Elements still expected at each open aggregate level, outermost first.
    /// Grows only with actual nesting in the data, so it is bounded by the frame size.
    pending: Vec<u64>,
    /// Requests must be a top-level array of bulk strings.
    request: bool,
}

/// Just past the first `\n` of `buf`, looked for within `MAX_LINE` bytes. Scalar reply
/// lines are a few bytes long (`$2\r\n`, `+OK\r\n`), where a plain loop beats setting up
/// `memchr`'s vector search; longer lines still get it.
#[inline]
fn short_line_end(buf: &[u8]) -> Option<usize> {
    const SHORT: usize = 16;
    match buf.iter().take(SHORT).position(|&b| b == b'\n') {
        Some(at) => Some(at + 1),
        None if buf.len() <= SHORT => None,
        None => memchr::memchr(b'\n', &buf[SHORT..buf.len().min(MAX_LINE)]).map(|at| SHORT + at + 1),
    }
}

/// The length of a complete scalar reply frame (`+ - : _ , #` lines and `$n` bulks) at
/// the start of `buf`; `None` for anything else, incomplete or unusual (aggregates,
/// streamed strings, oversized lines), which the general scanner then handles and
/// validates.
pub fn scalar_len(buf: &[u8]) -> Option<usize> {
    let line_end = short_line_end(buf)?;
    if line_end < 3 || buf[line_end - 2] != b'\r' {
        return None;
    }
    match buf[0] {
        b'+' | b'-' | b':' => Some(line_end),
        b'_' if line_end == 3 => Some(line_end),
        b'$' => {
            let digits = &buf[1..line_end - 2];
            if digits == b"-1" {
                return Some(line_end);
            }
            // Leading zeros, like anything unusual, go to the general scanner (which refuses them).
            let leading_zero = digits.len() > 1 && digits[0] == b'0';
            if digits.is_empty()
                || digits.len() > 18
                || leading_zero
                || !digits.iter().all(u8::is_ascii_digit)
            {
                return None;
            }
            // At most 18 checked digits: cannot overflow. Runs for every reply, so no str parse.
            let len = digits.iter().fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
            let total = line_end + len + 2;
            (buf.len() >= total && &buf[total - 2..total] == b"\r\n").then_some(total)
        }
        _ => None,
    }
}

/// One parsed element header.
enum Header {
    /// The element is complete after `len` bytes.
    Leaf(usize),
    /// An aggregate header of `len` bytes followed by `children` elements.
    Aggregate(usize, u64),
}

impl FrameScanner {
    /// A scanner for replies (any RESP2/RESP3 type).
    pub fn reply() -> Self {
        Self::default()
    }

    /// A scanner for client requests (multibulk arrays of bulk strings only).
    pub fn request() -> Self {
        FrameScanner { request: true, ..Self::default() }
    }

    /// True unless a frame was left incomplete and scanning it will resume.
    pub fn is_fresh(&self) -> bool {
        self.pos == 0 && self.pending.is_empty()
    }

    /// After `scan` returned `None`: the buffer length at which the bulk string being
    /// waited for is complete, when one is (`$<len>` seen, its bytes not all here). Lets
    /// a caller size its buffer once for a large value instead of growing it by copies.
    pub fn wanted(&self, buf: &[u8], limits: &Limits) -> Option<usize> {
        let rest = buf.get(self.pos..)?;
        if !matches!(rest.first(), Some(b'$' | b'!' | b'=')) {
            return None;
        }
        let (line, line_len) = read_line(rest).ok()??;
        // A length past the limit is refused by `scan`, never sized for.
        let len = parse_len(line, "bulk").ok()??;
        let len = usize::try_from(len).ok().filter(|_| len <= limits.max_bulk)?;
        self.pos.checked_add(line_len)?.checked_add(len)?.checked_add(2)
    }

    /// Returns the length of the complete frame at the start of `buf`, or `None` if more
    /// bytes are needed. After `Some`, the scanner is reset for the next frame.
    pub fn scan(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, ProtocolError> {
        // Most replies are one complete scalar; measure those without the general walk.
        if !self.request
            && self.pos == 0
            && self.pending.is_empty()
            && let Some(len) = scalar_len(buf)
        {
            return Ok(Some(len));
        }
        loop {
            let header = match self.header(buf, limits)? {
                Some(h) => h,
                None => return Ok(None),
            };
            match header {
                Header::Aggregate(len, children) if children > 0 => {
                    self.pos += len;
                    self.pending.push(children);
                }
                Header::Aggregate(len, _) | Header::Leaf(len) => {
                    self.pos += len;
                    if self.complete_one() {
                        let total = self.pos;
                        self.pos = 0;
                        return Ok(Some(total));
                    }
                }
            }
        }
    }

    /// Marks one element complete; returns true when the whole frame is.
    fn complete_one(&mut self) -> bool {
        while let Some(top) = self.pending.last_mut() {
            *top -= 1;
            if *top > 0 {
                return false;
            }
            self.pending.pop();
        }
        true
    }

    fn header(&self, buf: &[u8], limits: &Limits) -> Result<Option<Header>, ProtocolError> {
        let Some(&marker) = buf.get(self.pos) else { return Ok(None) };
        let top_level = self.pending.is_empty();
        if self.request {
            if top_level && marker != b'*' {
                return Err(ProtocolError::InvalidType(marker as char));
            }
            if !top_level && marker != b'$' {
                return Err(ProtocolError::NotBulk(marker as char));
            }
        }
        let Some((line, line_len)) = read_line(&buf[self.pos..])? else { return Ok(None) };
        match marker {
            b'+' | b'-' | b':' | b',' | b'#' | b'_' | b'(' => Ok(Some(Header::Leaf(line_len))),
            b'$' | b'!' | b'=' => self.bulk(buf, line, line_len, limits),
            b'*' | b'~' | b'>' => aggregate(line, line_len, 1, limits),
            b'%' => aggregate(line, line_len, 2, limits),
            // An attribute map precedes the element it annotates: its pairs plus that element.
            b'|' => match aggregate(line, line_len, 2, limits)? {
                Some(Header::Aggregate(len, n)) => Ok(Some(Header::Aggregate(len, n + 1))),
                other => Ok(other),
            },
            other => Err(ProtocolError::InvalidType(other as char)),
        }
    }

    fn bulk(
        &self,
        buf: &[u8],
        line: &[u8],
        line_len: usize,
        limits: &Limits,
    ) -> Result<Option<Header>, ProtocolError> {
        if line == b"?" {
            return Err(ProtocolError::Streamed);
        }
        let len = match parse_len(line, "bulk")? {
            None => return Ok(Some(Header::Leaf(line_len))),
            Some(len) => len,
        };
        if len > limits.max_bulk {
            return Err(ProtocolError::TooLong { what: "bulk", len, limit: limits.max_bulk });
        }
        let len = usize::try_from(len).map_err(|_| ProtocolError::InvalidLength("bulk"))?;
        let end = self.pos + line_len + len;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::MissingCrlf);
        }
        Ok(Some(Header::Leaf(line_len + len + 2)))
    }
}

fn aggregate(
    line: &[u8],
    line_len: usize,
    per_entry: u64,
    limits: &Limits,
) -> Result<Option<Header>, ProtocolError> {
    if line == b"?" {
        return Err(ProtocolError::Streamed);
    }
    match parse_len(line, "multibulk")? {
        None => Ok(Some(Header::Leaf(line_len))),
        Some(n) if n > limits.max_multibulk => {
            Err(ProtocolError::TooLong { what: "multibulk", len: n, limit: limits.max_multibulk })
        }
        Some(n) => Ok(Some(Header::Aggregate(line_len, n.saturating_mul(per_entry)))),
    }
}

/// Returns the header line after the type byte (without CRLF) and the line's full length.
fn read_line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    match memchr(b'\n', buf) {
        // At least the type byte before the CRLF: a bare `\r\n` element is malformed.
        Some(nl) if nl >= 2 && buf[nl - 1] == b'\r' => Ok(Some((&buf[1..nl - 1], nl + 1))),
        Some(_) => Err(ProtocolError::MissingCrlf),
        None if buf.len() > MAX_LINE => Err(ProtocolError::LineTooLong),
        None => Ok(None),
    }
}

/// Parses a RESP length; `-1` (null) gives `None`. Leading zeros are refused, as Redis'
/// `string2ll` refuses them: a request Redis would reject must not reach a shared
/// connection, where Redis' protocol error would close it under every client.
pub(crate) fn parse_len(line: &[u8], what: &'static str) -> Result<Option<u64>, ProtocolError> {
    if line == b"-1" {
        return Ok(None);
    }
    let leading_zero = line.len() > 1 && line[0] == b'0';
    if line.is_empty() || line.len() > 19 || leading_zero || !line.iter().all(u8::is_ascii_digit) {
        return Err(ProtocolError::InvalidLength(what));
    }
    Ok(Some(line.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'))))
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
