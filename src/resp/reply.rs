//! Replies strata composes itself (HELLO, CLIENT ID, errors, INFO), encoded in the
//! client's protocol version. Replies from Redis never pass through here.

use bytes::{BufMut, Bytes, BytesMut};

/// The protocol a client speaks, chosen with HELLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// RESP2, the default for every new connection.
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

/// A reply value that strata builds; encodes per protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`-style status.
    Status(&'static str),
    /// An error line; the text must start with an error code such as `ERR`.
    Error(String),
    /// An integer.
    Int(i64),
    /// A binary-safe string.
    Bulk(Bytes),
    /// Text as Redis sends CLIENT LIST or INFO: a bulk string in RESP2, a verbatim
    /// string (`=…txt:`) in RESP3.
    Text(Bytes),
    /// A missing value: `$-1` in RESP2, `_` in RESP3.
    Null,
    /// An array of replies.
    Array(Vec<Reply>),
    /// A map: a RESP3 map, or a flat key/value array in RESP2.
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    /// An `-ERR …` reply.
    pub fn err(message: impl std::fmt::Display) -> Reply {
        Reply::Error(format!("ERR {message}"))
    }

    /// A bulk string from text.
    pub fn text(s: impl Into<String>) -> Reply {
        Reply::Bulk(Bytes::from(s.into()))
    }

    /// Appends the encoding of this reply for `protocol` to `out`.
    pub fn encode(&self, protocol: Protocol, out: &mut BytesMut) {
        match self {
            Reply::Status(s) => line(out, b'+', s.as_bytes()),
            Reply::Error(e) => line(out, b'-', sanitize(e).as_bytes()),
            Reply::Int(n) => line(out, b':', n.to_string().as_bytes()),
            Reply::Bulk(b) => {
                line(out, b'$', b.len().to_string().as_bytes());
                out.put_slice(b);
                out.put_slice(b"\r\n");
            }
            Reply::Text(t) if protocol == Protocol::Resp3 => {
                line(out, b'=', (t.len() + 4).to_string().as_bytes());
                out.put_slice(b"txt:");
                out.put_slice(t);
                out.put_slice(b"\r\n");
            }
            Reply::Text(t) => Reply::Bulk(t.clone()).encode(protocol, out),
            Reply::Null if protocol == Protocol::Resp3 => out.put_slice(b"_\r\n"),
            Reply::Null => out.put_slice(b"$-1\r\n"),
            Reply::Array(items) => {
                line(out, b'*', items.len().to_string().as_bytes());
                items.iter().for_each(|item| item.encode(protocol, out));
            }
            Reply::Map(pairs) => {
                let (marker, count) = match protocol {
                    Protocol::Resp3 => (b'%', pairs.len()),
                    Protocol::Resp2 => (b'*', pairs.len() * 2),
                };
                line(out, marker, count.to_string().as_bytes());
                for (k, v) in pairs {
                    k.encode(protocol, out);
                    v.encode(protocol, out);
                }
            }
        }
    }

    /// The encoding of this reply as a standalone buffer.
    pub fn to_bytes(&self, protocol: Protocol) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(protocol, &mut out);
        out.freeze()
    }
}

/// Encodes a request (a multibulk of bulk strings), for commands strata rewrites.
pub fn encode_command(args: &[&[u8]]) -> Bytes {
    encode_command_parts(args, &[])
}

/// Encodes `args` followed by `extra` as one request, in one exactly sized buffer (this
/// runs for every rewritten request).
pub fn encode_command_parts(args: &[&[u8]], extra: &[&[u8]]) -> Bytes {
    let all = || args.iter().chain(extra);
    let size: usize = 16 + all().map(|a| a.len() + 16).sum::<usize>();
    let mut out = BytesMut::with_capacity(size);
    let mut digits = itoa::Buffer::new();
    line(&mut out, b'*', digits.format(args.len() + extra.len()).as_bytes());
    for arg in all() {
        line(&mut out, b'$', digits.format(arg.len()).as_bytes());
        out.put_slice(arg);
        out.put_slice(b"\r\n");
    }
    out.freeze()
}

fn line(out: &mut BytesMut, marker: u8, body: &[u8]) {
    out.put_u8(marker);
    out.put_slice(body);
    out.put_slice(b"\r\n");
}

/// Error and status lines cannot contain CR or LF; Redis replaces them with spaces too.
fn sanitize(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_flatten_in_resp2() {
        let map = Reply::Map(vec![(Reply::text("a"), Reply::Int(1))]);
        assert_eq!(&map.to_bytes(Protocol::Resp2)[..], b"*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(&map.to_bytes(Protocol::Resp3)[..], b"%1\r\n$1\r\na\r\n:1\r\n");
    }

    #[test]
    fn null_and_errors() {
        assert_eq!(&Reply::Null.to_bytes(Protocol::Resp2)[..], b"$-1\r\n");
        assert_eq!(&Reply::Null.to_bytes(Protocol::Resp3)[..], b"_\r\n");
        assert_eq!(&Reply::err("bad\r\nthing").to_bytes(Protocol::Resp2)[..], b"-ERR bad  thing\r\n");
    }

    #[test]
    fn encodings_decode_with_redis_protocol() {
        let reply = Reply::Array(vec![Reply::Status("OK"), Reply::Bulk(Bytes::from_static(b"\0\r\n"))]);
        let bytes = reply.to_bytes(Protocol::Resp3);
        let (_, used) = redis_protocol::resp3::decode::complete::decode(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
    }
}
