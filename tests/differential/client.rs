//! Runs one script on one connection and records every reply as the bytes that came.
//!
//! A stall (no reply byte for `stall` while replies are owed, or no request byte taken
//! for as long) ends the script with a note saying where: that is how a hang shows.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use strata::resp::{FrameScanner, Limits};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::script::{Check, Script, Step, Write};

/// What a client saw: its replies in order, and why it stopped early, if it did.
#[derive(Debug, Default)]
pub struct Transcript {
    pub replies: Vec<Bytes>,
    pub stopped: Option<String>,
}

/// Runs `script` against `addr`, giving up on a stall of `stall`.
pub async fn run(addr: SocketAddr, script: &Script, stall: Duration) -> Transcript {
    let mut transcript = Transcript::default();
    let mut stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(e) => {
            transcript.stopped = Some(format!("connect: {e}"));
            return transcript;
        }
    };
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::new();
    for (index, step) in script.steps.iter().enumerate() {
        let result = run_step(&mut stream, &mut buf, step, stall, &mut transcript.replies).await;
        if let Err(why) = result {
            let depth = step.cmds.len();
            transcript.stopped = Some(format!("step {index} (depth {depth}, {:?}): {why}", step.write));
            return transcript;
        }
    }
    transcript
}

async fn run_step(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    step: &Step,
    stall: Duration,
    replies: &mut Vec<Bytes>,
) -> Result<(), String> {
    let bytes: Vec<u8> = step.cmds.iter().flat_map(|c| c.bytes.iter().copied()).collect();
    let owed = step.cmds.iter().filter(|c| c.check != Check::Silent).count();
    match step.write {
        Write::Before => {
            write_all(stream, &bytes, stall, &[bytes.len()]).await?;
            read_replies(stream, buf, owed, stall, replies).await
        }
        Write::While { chunks } => {
            let cuts = chunk_cuts(chunks, bytes.len());
            let (mut rd, mut wr) = stream.split();
            let writing = write_all(&mut wr, &bytes, stall, &cuts);
            let reading = read_replies(&mut rd, buf, owed, stall, replies);
            let (wrote, read) = tokio::join!(writing, reading);
            wrote.and(read)
        }
        Write::Drop { after } => {
            write_all(stream, &bytes, stall, &[bytes.len()]).await?;
            read_replies(stream, buf, after.min(owed), stall, replies).await?;
            // Closing with replies unread: the kernel may reset the connection.
            let _ = stream.shutdown().await;
            Ok(())
        }
    }
}

/// Chunk ends for a write split at random points (seeded per step).
fn chunk_cuts(seed: u64, len: usize) -> Vec<usize> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut cuts = Vec::new();
    let mut at = 0;
    while at < len {
        let size = match rng.u8(..4) {
            0 => rng.usize(1..=8),
            1 => rng.usize(1..=200),
            _ => rng.usize(1..=65_536),
        };
        at = (at + size).min(len);
        cuts.push(at);
    }
    cuts
}

/// Writes `bytes`, in chunks ending at `cuts`; fails if no byte is taken for `stall`.
async fn write_all<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
    stall: Duration,
    cuts: &[usize],
) -> Result<(), String> {
    let mut at = 0;
    for &end in cuts {
        while at < end {
            match tokio::time::timeout(stall, w.write(&bytes[at..end])).await {
                Err(_) => {
                    return Err(format!(
                        "no request byte taken for {stall:?}: {at} of {} written",
                        bytes.len()
                    ));
                }
                Ok(Err(e)) => return Err(format!("write after {at} of {} bytes: {e}", bytes.len())),
                Ok(Ok(n)) => at += n,
            }
        }
        if cuts.len() > 1 {
            tokio::task::yield_now().await;
        }
    }
    Ok(())
}

/// Reads `owed` reply frames; fails on a stall, a close or bytes that are not RESP.
async fn read_replies<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    owed: usize,
    stall: Duration,
    replies: &mut Vec<Bytes>,
) -> Result<(), String> {
    let mut scanner = FrameScanner::reply();
    let mut got = 0;
    while got < owed {
        match scanner.scan(buf, &Limits::UNBOUNDED) {
            Err(e) => return Err(format!("reply {got} of {owed} is not RESP: {e}")),
            Ok(Some(len)) => {
                replies.push(buf.split_to(len).freeze());
                got += 1;
                continue;
            }
            Ok(None) => {}
        }
        match tokio::time::timeout(stall, r.read_buf(buf)).await {
            Err(_) => {
                return Err(format!("hang: no reply byte for {stall:?} with {got} of {owed} replies read"));
            }
            Ok(Ok(0)) => return Err(format!("connection closed with {got} of {owed} replies read")),
            Ok(Err(e)) => return Err(format!("read with {got} of {owed} replies read: {e}")),
            Ok(Ok(_)) => {}
        }
    }
    Ok(())
}
