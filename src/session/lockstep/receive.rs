//! The replies half of lockstep: each frame from Redis is a reply to the oldest request
//! owing one, or a push; confirmations keep the subscription counts.

use super::shapes::{confirmation, is_message, named_redirect};
use super::{Effect, Lockstep, Owed, Received};
use crate::resp::frames::{element_slices, is_error};
use crate::resp::reply::Protocol;

impl Lockstep {
    /// Notes one whole frame from Redis: a reply to the oldest request owing one, or a push.
    pub fn receive(&mut self, frame: &[u8]) -> Received {
        if self.uncounted {
            return Received::Forward;
        }
        let pushed = frame.first() == Some(&b'>');
        if let Some((family, count)) = confirmation(frame) {
            let front = matches!(self.owed.front(), Some(Owed::Confirm { family: f, .. }) if *f == family);
            if pushed || front || (self.protocol == Protocol::Resp2 && self.subscribed()) {
                self.count(family, count);
                if front {
                    self.confirmed(family);
                }
                return Received::Forward;
            }
        }
        if pushed || (self.protocol == Protocol::Resp2 && self.subscribed() && is_message(frame)) {
            return Received::Forward;
        }
        match self.owed.pop_front() {
            Some(owed) => self.settle(owed, frame),
            None => {
                // A reply nothing owed: strata's count is wrong, so it stops counting.
                tracing::warn!("lockstep: a reply no request owed; the connection stays the client's");
                self.stop_counting();
                Received::Forward
            }
        }
    }

    /// A subscribe-family confirmation's count, `count` after the change it confirms.
    fn count(&mut self, family: usize, count: i64) {
        match family / 2 {
            0 => self.channels = count - self.patterns,
            1 => self.patterns = count - self.channels,
            _ => self.shard = count,
        }
    }

    /// The oldest request, of `family`, got one more confirmation.
    fn confirmed(&mut self, family: usize) {
        let remaining = [self.channels, self.patterns, self.shard][family / 2];
        let done = match self.owed.front_mut() {
            Some(Owed::Confirm { left: Some(left), .. }) => {
                *left -= 1;
                *left == 0
            }
            _ => remaining <= 0,
        };
        if done {
            self.owed.pop_front();
        }
    }

    /// Applies what the reply `frame` to `owed` says.
    fn settle(&mut self, owed: Owed, frame: &[u8]) -> Received {
        if is_error(frame) {
            return Received::Forward;
        }
        match owed {
            Owed::Reply(Effect::NamesRedirect) => return named_redirect(frame),
            Owed::Reply(effect) => self.apply(effect),
            Owed::Exec(effects) => {
                let elements = element_slices(frame).unwrap_or_default();
                for (element, effect) in elements.iter().zip(effects) {
                    if !is_error(element) {
                        self.apply(effect);
                    }
                }
            }
            Owed::Confirm { .. } => {}
        }
        Received::Forward
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::Tracking(on) => self.tracking = on,
            Effect::Protocol(protocol) => self.protocol = protocol,
            Effect::Unknown => self.stop_counting(),
            Effect::None | Effect::NamesRedirect => {}
        }
    }
}
