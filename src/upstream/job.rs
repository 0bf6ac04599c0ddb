//! What a client hands a connection task (`Job`, inside a `Msg`) and what it gets back
//! (`Replies`, or the socket itself for pass-through: `Detached`).

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::fence::Held;

/// Requests to write and the sender for their replies.
#[derive(Debug)]
pub struct Job {
    /// Exact bytes to write: one or more complete requests, possibly in several chunks
    /// (a client's raw bytes around the requests strata rewrote), written in order.
    pub payload: Vec<Bytes>,
    /// Number of reply frames the payload produces.
    pub frames: usize,
    /// Whether the replies should come with where each frame ends (`Replies::ends`).
    pub frame_ends: bool,
    /// Receives the reply frames.
    pub reply: oneshot::Sender<Replies>,
    /// Key stripes the requests hold (shared connections); released with the replies.
    pub fences: Held,
}

/// The replies to one job.
#[derive(Debug, Default)]
pub struct Replies {
    /// The reply frames, concatenated as Redis sent them.
    pub bytes: Bytes,
    /// Where each frame ends in `bytes`, if the job asked (`Job::frame_ends`). This task
    /// finds the ends anyway; passing them on spares whoever counts the replies a second
    /// walk. Not one end per frame (an offset beyond u32) means: measure them again.
    pub ends: FrameEnds,
    /// When the replies arrived, read once per socket read for all the jobs it completes,
    /// for jobs that asked for frame ends (whose replies are counted, with their latency).
    pub arrived: Option<Instant>,
    /// Set when strata wrote `bytes` itself because Redis did not answer: what failed,
    /// for the decisions that depend on it (read-through while Redis is down).
    pub failed: Option<crate::error::Error>,
}

/// Frame end offsets; inline for a typical pipeline of 16.
pub type FrameEnds = smallvec::SmallVec<[u32; 16]>;

impl Replies {
    /// Replies without frame ends.
    pub fn bytes(bytes: Bytes) -> Replies {
        Replies { bytes, ends: FrameEnds::new(), arrived: None, failed: None }
    }

    /// `error`'s reply once per expected reply frame, in place of Redis' replies.
    pub fn failed(error: crate::error::Error, frames: usize) -> Replies {
        Replies { failed: Some(error.clone()), ..Replies::bytes(error.repeated(frames)) }
    }
}

/// A message to a connection task.
#[derive(Debug)]
pub enum Msg {
    /// Write these requests.
    Job(Job),
    /// Hand the socket back once nothing is in flight (pub/sub and MONITOR take it over).
    Detach(oneshot::Sender<Detached>),
}

/// A socket taken back from its task, with any bytes already read from it.
#[derive(Debug)]
pub struct Detached {
    /// The upstream socket.
    pub stream: TcpStream,
    /// Bytes read but not yet delivered.
    pub leftover: BytesMut,
}
