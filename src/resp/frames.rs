//! Reading reply frames without decoding them: cutting a batch of replies into each
//! request's share, the elements of an array, and whether a frame is an error. Used by
//! the way back (`pipeline::reply`), counting and read-through alike.

use bytes::Bytes;

use super::{FrameScanner, Limits};

/// True for an error reply (`-` simple, `!` RESP3 blob error).
pub fn is_error(frame: &[u8]) -> bool {
    matches!(frame.first(), Some(b'-' | b'!'))
}

/// Cuts a batch's replies into each request's share, by the frame ends the connection
/// found or, without them, by measuring the frames again.
pub struct Shares<'a> {
    bytes: &'a [u8],
    ends: &'a [u32],
    offset: usize,
    frame: usize,
}

impl<'a> Shares<'a> {
    /// `ends` one per frame of the requests, or empty.
    pub fn new(bytes: &'a [u8], ends: &'a [u32]) -> Shares<'a> {
        Shares { bytes, ends, offset: 0, frame: 0 }
    }

    /// The next `frames` frames; `None` if the bytes run short or are malformed.
    pub fn next(&mut self, frames: usize) -> Option<&'a [u8]> {
        let start = self.offset;
        let end = match (frames, self.ends.is_empty()) {
            (0, _) => start,
            (_, false) => *self.ends.get(self.frame + frames - 1)? as usize,
            (_, true) => start + frames_len(&self.bytes[start..], frames)?,
        };
        self.frame += frames;
        self.offset = end;
        self.bytes.get(start..end)
    }
}

/// The length of the first `n` complete frames of `buf`.
pub fn frames_len(buf: &[u8], n: usize) -> Option<usize> {
    let mut len = 0;
    for _ in 0..n {
        let rest = &buf[len..];
        // `scan` measures scalar replies without its general walk.
        len += FrameScanner::reply().scan(rest, &Limits::UNBOUNDED).ok()??;
    }
    Some(len)
}

/// The elements of an array (`*`, `~`, `>`) reply, each as its raw frame; `None` for
/// anything else, including null arrays.
pub fn array_elements(reply: &Bytes) -> Option<Vec<Bytes>> {
    Some(element_slices(reply)?.into_iter().map(|e| reply.slice_ref(e)).collect())
}

/// `array_elements` as slices of `reply`, for counting without reference-counted copies.
pub fn element_slices(reply: &[u8]) -> Option<Vec<&[u8]>> {
    if !matches!(reply.first(), Some(b'*' | b'~' | b'>')) {
        return None;
    }
    let header_end = memchr::memchr(b'\n', reply)? + 1;
    let count: i64 = std::str::from_utf8(reply.get(1..header_end.checked_sub(2)?)?).ok()?.parse().ok()?;
    let count = usize::try_from(count).ok()?;
    // Bounded by the reply: every element takes at least three bytes of it.
    let mut elements = Vec::with_capacity(count.min(reply.len() / 3));
    let mut offset = header_end;
    for _ in 0..count {
        let len = frames_len(&reply[offset..], 1)?;
        elements.push(&reply[offset..offset + len]);
        offset += len;
    }
    Some(elements)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cut_alike_with_and_without_frame_ends() {
        let bytes = b"+OK\r\n$2\r\nxx\r\n*2\r\n:1\r\n:2\r\n$-1\r\n";
        let notes = [2, 1, 1];
        let expected: [&[u8]; 3] = [b"+OK\r\n$2\r\nxx\r\n", b"*2\r\n:1\r\n:2\r\n", b"$-1\r\n"];
        let ends = [5, 13, 25, 30];
        for ends in [&ends[..], &[]] {
            let mut shares = Shares::new(bytes, ends);
            for (note, want) in notes.into_iter().zip(expected) {
                assert_eq!(shares.next(note), Some(want), "ends {ends:?}");
            }
        }
        let mut short = Shares::new(b"+OK\r\n", &[]);
        assert_eq!(short.next(2), None);
    }
}
