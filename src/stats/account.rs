//! What to count for one request once its reply is known: which tiered keys it touched,
//! how (`Role`), and how a reply array maps to them. Built when a request is planned,
//! read by the pipeline's counting when the reply arrives; kept per queued command of a
//! transaction by the `Session` until EXEC.

use crate::tier::Class;
use crate::tier::plan::Role;

/// Accounting for one request's reply.
#[derive(Debug, PartialEq, Eq)]
pub struct Account {
    /// Tiered keys, what the request does with them, and their argument index.
    pub keys: AccountKeys,
    /// How a reply array maps to keys.
    pub elements: Elements,
    /// An integer 0 reply means "missing" (EXISTS, HEXISTS, SISMEMBER).
    pub zero_is_miss: bool,
}

/// The tiered keys of one request. One key at argument 1 (nearly every request) is held
/// inline in 8 bytes; several are boxed. Notes are moved several times per request, so
/// their size is paid on the hot path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountKeys {
    /// The key at argument 1.
    First(Class, Role),
    /// Any other set: (class, role, argument index).
    Many(Box<Vec<(Class, Role, u32)>>),
}

impl AccountKeys {
    /// From a plan's keys.
    pub fn from_roles(keys: &[(Class, Role, u32)]) -> AccountKeys {
        match keys {
            &[(class, role, 1)] => AccountKeys::First(class, role),
            _ => AccountKeys::Many(Box::new(keys.to_vec())),
        }
    }

    /// Every key as (class, role, argument index).
    pub fn iter(&self) -> impl Iterator<Item = (Class, Role, u32)> + '_ {
        let (first, many) = match self {
            AccountKeys::First(class, role) => (Some((*class, *role, 1)), &[][..]),
            AccountKeys::Many(keys) => (None, &keys[..]),
        };
        first.into_iter().chain(many.iter().copied())
    }
}

/// How the elements of an array reply relate to the request's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elements {
    /// The reply as a whole answers for every key.
    Whole,
    /// Element i is the key at argument i + 1 (MGET).
    PerKey,
    /// Each element is one field of the single key (HMGET, SMISMEMBER).
    PerField,
}
