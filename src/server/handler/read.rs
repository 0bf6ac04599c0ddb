//! The client's read buffer: how much room each read gets, a buffer sized once for a
//! large value, and giving that back when the value is gone.

use bytes::BytesMut;

use super::Handler;

/// A value larger than this is received into a buffer sized for it once.
pub(super) const LARGE_VALUE: usize = 1024 * 1024;
/// Read buffer growth step, to start with.
pub(super) const READ_CHUNK: usize = 16 * 1024;
/// Largest growth step: a client whose reads fill the buffer (large pipelines, large
/// values) gets room for its whole batch in one read, up to this.
pub(super) const MAX_READ_CHUNK: usize = 256 * 1024;

/// The read buffer growth step after a read of `read` bytes into `room`: doubled when the
/// read filled the room (a batch split over two reads costs a second read, job and reply
/// write), halved when reads use little of it, so idle clients do not keep large buffers.
/// No room means the buffer was empty and the read brought its own small one: no sign of
/// a large batch.
pub(super) fn next_read_chunk(chunk: usize, read: usize, room: usize) -> usize {
    if room > 0 && read >= room {
        (chunk * 2).min(MAX_READ_CHUNK)
    } else if read < chunk / 8 {
        (chunk / 2).max(READ_CHUNK)
    } else {
        chunk
    }
}

impl Handler {
    /// Reads what the client sent before it was accepted (up to 1 MiB; a large value goes
    /// on in the run loop), so it goes to Redis before any later client's requests. `false`
    /// when the client closed without sending anything.
    pub(super) fn read_what_came_first(&mut self) -> std::io::Result<bool> {
        // A peek first: reading into the empty buffer would allocate it, and the run loop
        // would then size it for a batch of requests before any arrived (16 KiB for every
        // idle client of a connection pool).
        match peek(&self.stream) {
            Ok(0) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
            _ => {}
        }
        loop {
            match self.stream.try_read_buf(&mut self.rbuf) {
                Ok(0) => return Ok(!self.rbuf.is_empty()),
                Ok(_) if self.rbuf.len() < self.rbuf.capacity() => return Ok(true),
                // A large value goes on in the run loop, which sizes its buffer once.
                Ok(_) if self.rbuf.len() >= LARGE_VALUE => return Ok(true),
                Ok(_) => self.rbuf.reserve(READ_CHUNK),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) => return Err(e),
            }
        }
    }

    /// Makes room to read into. A large value being received gets room for all of it at
    /// once: its pages are touched only as its bytes arrive, where a buffer grown by
    /// doubling would hold it twice while copying. A buffer a large request left empty is
    /// given back.
    pub(super) fn size_read_buffer(&mut self) {
        let Handler { rbuf, read_chunk, parser, large, closing, .. } = self;
        if rbuf.capacity() == 0 || *closing {
            // Nothing sent yet: the first read brings its own small buffer.
            return;
        }
        // Split-off requests share the buffer's allocation: keeping even its empty tail
        // would keep a large value's memory alive, so what follows it moves out.
        if *large && rbuf.len() < LARGE_VALUE {
            *rbuf = BytesMut::from(&rbuf[..]);
            *large = false;
        }
        let wanted = parser.wanted(rbuf);
        if let Some(wanted) = wanted
            && wanted > rbuf.capacity()
            && wanted - rbuf.len() > LARGE_VALUE
        {
            rbuf.reserve(wanted - rbuf.len());
            *large = true;
        } else if wanted.is_some_and(|w| w <= rbuf.capacity()) && rbuf.len() >= LARGE_VALUE {
            // The end of a large value is still to come and has its room: growing the
            // buffer now would copy the value (a doubling, since it is nearly full).
        } else if rbuf.capacity() - rbuf.len() < *read_chunk / 2 {
            rbuf.reserve((*read_chunk).max(rbuf.len().min(4 * 1024 * 1024)));
        }
    }
}

/// Looks at the client's first byte without reading it: `Ok(0)` when it closed,
/// `WouldBlock` when nothing came yet.
pub(crate) fn peek(stream: &tokio::net::TcpStream) -> std::io::Result<usize> {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
    socket2::SockRef::from(stream).peek(&mut byte)
}
