//! One client's state changes outside the forwarding path: answers strata gives itself,
//! RESET and QUIT, moving to another protocol's connections, the pinned connection, and
//! what `CLIENT LIST` shows (the last command, the published session view).

use bytes::Bytes;

use super::Handler;
use crate::resp::{ProtocolError, Reply};
use crate::server::action::Action;
use crate::server::pending::{Keys, Pending};
use crate::server::registry::View;

/// The name of the client's last command, copied only when the command changes: per
/// request this is one pointer comparison.
#[derive(Default)]
pub(super) struct LastCommand {
    /// Address of its table entry, only ever compared.
    entry: usize,
    pub(super) name: String,
    /// Changed since it was last published.
    pub(super) changed: bool,
}

impl LastCommand {
    #[inline(always)]
    pub(super) fn saw(&mut self, info: Option<&crate::command::CommandInfo>) {
        if let Some(info) = info
            && std::ptr::from_ref(info) as usize != self.entry
        {
            self.entry = std::ptr::from_ref(info) as usize;
            self.name.clear();
            self.name.push_str(&info.name);
            self.changed = true;
        }
    }
}

impl Handler {
    pub(super) async fn act(&mut self, action: Action, raw: Bytes) -> std::io::Result<()> {
        match action {
            Action::Forward(route) => self.forward(route, vec![raw], 1, Vec::new(), Keys::new()).await,
            Action::ForwardBytes(route, bytes) => {
                self.forward(route, vec![bytes], 1, Vec::new(), Keys::new()).await
            }
            Action::ForwardHello(proto) => self.forward_hello(proto, raw).await?,
            Action::Local(reply) => self.local(reply),
            Action::Close(reply) => {
                self.drain().await?;
                self.local(reply);
                self.closing = true;
            }
            Action::Reset => {
                self.drain().await?;
                self.routes.own.set(None);
                self.fencing.own_connection_dropped();
                self.session.reset();
                self.reassign();
                self.local(Reply::Status("RESET"));
            }
            Action::PassThrough(_) => unreachable!("handled by process"),
        }
        Ok(())
    }

    pub(super) fn local(&mut self, reply: Reply) {
        let protocol = self.session.protocol;
        if self.routes.shared.slot.protocol != protocol {
            self.reassign();
        }
        self.queue.push_back(Pending::Ready(reply.to_bytes(protocol)));
    }

    /// Moves the client to a shared connection of its (new) protocol, and drops an idle
    /// pinned connection that speaks the old one.
    pub(super) fn reassign(&mut self) {
        self.routes.shared.reassign(self.session.protocol);
        if self.routes.own.protocol().is_some_and(|p| p != self.session.protocol)
            && !self.session.needs_pinned()
        {
            self.routes.own.set(None);
            self.fencing.own_connection_dropped();
        }
    }

    /// Publishes the session for `CLIENT LIST`.
    pub(super) fn publish(&mut self) {
        self.last_cmd.changed = false;
        self.registration.handle.publish(View::of(&self.session, &self.last_cmd.name));
    }

    pub(super) fn protocol_error(&mut self, e: ProtocolError) {
        tracing::debug!(client = self.session.id, error = %e, "protocol error; closing client");
        self.queue.push_back(Pending::Ready(
            Reply::err(format!("Protocol error: {e}")).to_bytes(self.session.protocol),
        ));
        self.closing = true;
    }
}
