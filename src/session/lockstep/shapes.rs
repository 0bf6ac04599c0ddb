//! The shapes of the frames lockstep reads: subscribe-family confirmations, published
//! messages, and the redirect id in `CLIENT GETREDIR`/`TRACKINGINFO` replies.

use super::{FAMILY, Received};
use crate::resp::frames::element_slices;

/// `name` in lower case, in `buf` (longer names are nothing strata follows).
pub(super) fn lower<'a>(name: &[u8], buf: &'a mut [u8; 16]) -> &'a [u8] {
    match buf.get_mut(..name.len()) {
        Some(out) => {
            out.copy_from_slice(name);
            out.make_ascii_lowercase();
            out
        }
        None => b"",
    }
}

/// The content of a bulk string frame.
fn bulk(frame: &[u8]) -> Option<&[u8]> {
    let body = frame.strip_prefix(b"$")?;
    let at = memchr::memchr(b'\n', body)? + 1;
    body.get(at..body.len().checked_sub(2)?)
}

/// A subscribe-family confirmation (`[kind, channel, count]`): its `FAMILY` index and count.
pub(super) fn confirmation(frame: &[u8]) -> Option<(usize, i64)> {
    if !(frame.starts_with(b"*3\r\n") || frame.starts_with(b">3\r\n")) {
        return None;
    }
    let elements = element_slices(frame)?;
    let name = bulk(elements[0])?;
    let family = FAMILY.iter().position(|f| f.eq_ignore_ascii_case(name))?;
    let count = std::str::from_utf8(elements[2].strip_prefix(b":")?.strip_suffix(b"\r\n")?).ok()?;
    Some((family, count.parse().ok()?))
}

/// A published message on a subscribed RESP2 connection.
pub(super) fn is_message(frame: &[u8]) -> bool {
    frame.starts_with(b"*3\r\n$7\r\nmessage\r\n")
        || frame.starts_with(b"*4\r\n$8\r\npmessage\r\n")
        || frame.starts_with(b"*3\r\n$8\r\nsmessage\r\n")
}

/// Where the redirect target's Redis id is in a `CLIENT GETREDIR` (`:id`) or
/// `CLIENT TRACKINGINFO` (`… redirect :id …`) reply.
pub(super) fn named_redirect(frame: &[u8]) -> Received {
    let at = if frame.starts_with(b":") {
        Some(1)
    } else {
        memchr::memmem::find(frame, b"$8\r\nredirect\r\n:").map(|i| i + 15)
    };
    let Some(start) = at else { return Received::Forward };
    let Some(len) = memchr::memchr(b'\r', &frame[start..]) else { return Received::Forward };
    let id = std::str::from_utf8(&frame[start..start + len]).ok().and_then(|s| s.parse().ok());
    match id {
        Some(id) if id > 0 => Received::Redirect(start..start + len, id),
        _ => Received::Forward,
    }
}
