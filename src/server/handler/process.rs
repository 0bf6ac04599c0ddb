//! The middle of a client's turn: every complete request in the read buffer is parsed,
//! decided (`route::decide`), prepared (`pipeline::prepare`) and either answered, queued
//! in a run of shared-route requests (one slice of the read buffer to Redis), or sent on
//! its own route. A route change waits for every earlier reply first.

use bytes::{Buf, Bytes, BytesMut};
use tokio::time::Instant;

use super::super::action::{Action, Route, RouteContext};
use super::super::pending::{Run, defer, env, keep_spare, keep_spare_keys};
use super::super::route::{decide, may_block};
use crate::command::cmd_flag;
use crate::pipeline::{self, Prepared, Through};
use crate::resp::{Frame, ProtocolError};
use crate::upstream::ServerInfo;
use crate::upstream::fence::{Access, stripes_of};

use super::{Flow, Handler};

impl Handler {
    /// Routes every complete request in the read buffer, batching shared-route runs.
    pub(super) async fn process(&mut self) -> std::io::Result<Flow> {
        let depth = self.ctx.config.limits.max_pipeline_depth;
        let server = self.ctx.server.load_full();
        let mut run = Run {
            notes: std::mem::take(&mut self.spare_notes),
            keys: std::mem::take(&mut self.spare_keys),
            ..Run::default()
        };
        // One clock read per batch of requests: latency is accounted per batch anyway.
        let batch_start = Instant::now();
        self.batch_start = batch_start;
        self.parked = false;
        while !self.closing {
            if self.queue.len() + run.frames >= depth {
                self.parked = true;
                break;
            }
            let parsed = self.parser.next(&self.rbuf[run.len..], &mut self.ranges);
            let frame = match parsed {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    self.flush_run(&mut run).await;
                    self.protocol_error(e);
                    break;
                }
            };
            let (len, encoded) = match frame {
                Frame::Empty { len } => {
                    run.len += len;
                    continue;
                }
                Frame::Multibulk { len } => (len, None),
                Frame::Inline { consumed, encoded } => (consumed, Some(encoded)),
            };
            let Some(routed) = self.step(&server, &mut run, len, encoded.as_ref(), batch_start) else {
                continue;
            };
            let (action, prepared) = *routed;
            let flow = self.dispatch(&mut run, len, encoded, action, prepared).await?;
            // Every request that may change what CLIENT LIST shows takes this path.
            self.publish();
            if let Some(flow) = flow {
                return Ok(flow);
            }
        }
        self.registration.handle.touch(batch_start);
        if self.last_cmd.changed {
            self.last_cmd.changed = false;
            self.registration.handle.publish_cmd(&self.last_cmd.name);
        }
        self.flush_run(&mut run).await;
        // Every request read with the one that waited is sent (or parked): later readers
        // may go now.
        self.fencing.waiting = None;
        keep_spare(&mut self.spare_notes, std::mem::take(&mut run.notes));
        keep_spare_keys(&mut self.spare_keys, std::mem::take(&mut run.keys));
        if self.rbuf.len() >= self.ctx.config.limits.max_client_buffer && !self.closing {
            self.protocol_error(ProtocolError::TooLong {
                what: "query buffer",
                len: self.rbuf.len() as u64,
                limit: self.ctx.config.limits.max_client_buffer as u64,
            });
        }
        Ok(Flow::Continue)
    }

    /// Decides one request's route and prepares it (tiers, read-through, accounting). The
    /// request is `rbuf[offset..offset + len]`, or `encoded` for an inline command.
    #[inline(always)]
    fn route_one(
        &mut self,
        server: &ServerInfo,
        offset: usize,
        len: usize,
        encoded: Option<&Bytes>,
        batch_start: Instant,
    ) -> (Action, Prepared) {
        let Handler { ctx, session, rbuf, ranges, last_cmd, fencing, .. } = self;
        let stripes = &mut fencing.stripes;
        let source: &[u8] = encoded.map_or(&rbuf[offset..offset + len], |e| &e[..]);
        // On the stack for the usual few arguments: this runs for every request.
        // Built in place: `collect` would build it elsewhere and copy all 136 bytes.
        let mut argv: smallvec::SmallVec<[&[u8]; 8]> = smallvec::SmallVec::new();
        argv.extend(ranges.iter().map(|r| &source[r.clone()]));
        let command = server.commands.lookup(&argv).map(|i| &**i);
        last_cmd.saw(command);
        let route_ctx = RouteContext {
            info: command,
            commands: &server.commands,
            version: &server.version,
            upstream: &ctx.config.upstream.url,
            registry: &ctx.registry,
            tiers: &ctx.tiers,
        };
        let action = decide(session, &route_ctx, &argv);
        stripes.clear();
        fencing.blocking = false;
        match &action {
            // Inside MULTI nothing blocks: queued, it holds its keys for EXEC.
            Action::Forward(Route::Pinned) | Action::ForwardBytes(Route::Pinned, _)
                if may_block(command, &argv) && !session.in_multi =>
            {
                fencing.blocking = true;
            }
            Action::Forward(route) | Action::ForwardBytes(route, _) => {
                stripes_of(command, &argv, stripes);
                if *route == Route::Pinned {
                    fencing.transaction(session.in_multi, command.map(|i| i.kind));
                }
            }
            _ => {}
        }
        let prepared = match action {
            Action::Forward(route) => {
                let info = || ctx.info_extra();
                let mut env = env(ctx, &server.commands, &info, batch_start);
                env.upstream_down = route == Route::Shared && !ctx.breaker.is_closed();
                pipeline::prepare(&env, session, &argv, source, command)
            }
            _ => Prepared::Untouched,
        };
        // A read rewritten by its tier (a sliding TTL's GETEX) writes.
        let rewritten = matches!(&prepared, Prepared::Forward { rewrite: Some(_), .. });
        self.fencing.access = match command {
            Some(info) if info.has(cmd_flag::READONLY) && !rewritten => Access::Read,
            _ => Access::Write,
        };
        (action, prepared)
    }

    /// Routes and prepares the request of `len` bytes after the run, and adds it to the run
    /// when it can join. That is the usual case: it has no await (no future is built per
    /// request) and moves nothing large. Anything else comes back, boxed, for `dispatch`.
    fn step(
        &mut self,
        server: &ServerInfo,
        run: &mut Run,
        len: usize,
        encoded: Option<&Bytes>,
        batch_start: Instant,
    ) -> Option<Box<(Action, Prepared)>> {
        let (action, prepared) = self.route_one(server, run.len, len, encoded, batch_start);
        let inline = encoded.is_some();
        let joins = matches!(action, Action::Forward(Route::Shared))
            && self.last_route == Route::Shared
            && match &prepared {
                Prepared::Untouched => !inline,
                // An inline command joins once re-encoded as RESP (its rewrite).
                Prepared::Forward { rewrite, .. } => !inline || rewrite.is_some(),
                _ => false,
            };
        // A request whose key is in flight on another connection goes through `dispatch`,
        // which may wait.
        if !joins || self.take_stripes(Route::Shared).is_err() {
            return Some(Box::new((action, prepared)));
        }
        match prepared {
            Prepared::Untouched => run.add(&mut self.rbuf, len, None, None),
            Prepared::Forward { rewrite, note } => run.add(&mut self.rbuf, len, rewrite, Some(note)),
            _ => unreachable!("only joining requests get here"),
        }
        None
    }

    /// Answers one request that cannot join the shared run, or sends it on its own.
    /// `Some(flow)` ends processing (the connection goes into pass-through).
    async fn dispatch(
        &mut self,
        run: &mut Run,
        len: usize,
        encoded: Option<Bytes>,
        action: Action,
        prepared: Prepared,
    ) -> std::io::Result<Option<Flow>> {
        let (rewrite, note) = match prepared {
            Prepared::Untouched => (None, None),
            Prepared::Forward { rewrite, note } => (rewrite, Some(note)),
            Prepared::Answer(reply) => {
                self.flush_run(run).await;
                self.rbuf.advance(len);
                self.local(reply);
                return Ok(None);
            }
            Prepared::FromDatabase(through) => {
                self.flush_run(run).await;
                self.rbuf.advance(len);
                let piece = pipeline::reply::Piece::Load { through, original: None };
                self.queue.push_back(defer(&self.ctx, vec![piece], 1, false));
                return Ok(None);
            }
        };
        self.flush_run(run).await;
        let route = match &action {
            Action::Forward(route) | Action::ForwardBytes(route, _) => *route,
            _ => Route::Shared,
        };
        if !self.fence(route, len).await {
            self.rbuf.advance(len);
            return Ok(None);
        }
        if let Action::PassThrough(rewritten) = action {
            let first = rewritten.or(encoded);
            if first.is_some() {
                self.rbuf.advance(len);
            }
            return Ok(Some(Flow::PassThrough(first)));
        }
        let raw = self.rbuf.split_to(len).freeze();
        match (&action, note) {
            (Action::Forward(route), Some(mut note)) => {
                let frames = note.frames;
                // A deferred read keeps the request as the client sent it (a rewrite goes).
                let mut requests = BytesMut::new();
                if let Through::Read(read) = &mut note.through
                    && !read.keep(encoded.as_ref().unwrap_or(&raw), &mut requests)
                {
                    note.through = Through::No;
                }
                let request = rewrite.or(encoded).unwrap_or(raw);
                self.forward(*route, vec![request], frames, vec![note], requests.freeze()).await;
            }
            _ => self.act(action, encoded.unwrap_or(raw)).await?,
        }
        Ok(None)
    }

    /// Sends the batched shared-route run, if any, as one job.
    async fn flush_run(&mut self, run: &mut Run) {
        if run.len == 0 && run.parts.is_empty() {
            return;
        }
        // A run of nothing but empty lines is consumed, never sent.
        let (payload, frames, notes, requests) = run.take(&mut self.rbuf);
        if frames > 0 {
            self.forward(Route::Shared, payload, frames, notes, requests).await;
        }
    }
}
