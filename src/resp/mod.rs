//! RESP framing: finding frames in byte streams and encoding the replies strata makes itself.
//!
//! Frames that pass through strata are never decoded into values and re-encoded; see
//! `scan` for boundaries and `request` for client requests. `reply` builds strata's own
//! replies with redis-protocol's encoders, in the client's protocol version.

pub mod frames;
pub mod reply;
pub mod request;
pub mod scan;

pub use reply::Reply;
pub use request::{Frame, RequestParser};
pub use scan::{FrameScanner, Limits, ProtocolError};
