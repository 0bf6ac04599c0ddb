//! Building a plan for a request that needs more than accounting: the TTL policy of each
//! write family (SET options, SETEX/PSETEX/EXPIRE* clamps, GETEX, PERSIST, RESTORE, and the
//! generic `PEXPIRE … NX` after any other write), then the bytes to send and how to cut
//! the reply (`finish`).

use bytes::Bytes;

use super::{Class, Classified, Input, Mode, Plan, ReplyFix, Role, key_roles};
use crate::config::PersistPolicy;
use crate::resp::Reply;
use crate::resp::reply::{encode_command, encode_command_parts};
use crate::tier::TtlPolicy;

#[derive(Default)]
struct Counts {
    ttl_rewrites: u32,
    clamps: u32,
    persist_denied: u32,
}

pub(super) struct Builder<'a> {
    input: &'a Input<'a>,
    /// The request's arguments once one of them changes.
    args: Option<Vec<Vec<u8>>>,
    /// `PX <ms>` added at the end, kept apart so the most common rewrite (`SET k v` on a
    /// TTL tier) copies the request's arguments once and allocates nothing else.
    append_px: Option<u64>,
    /// Commands to run after the request (PEXPIRE …).
    extra: Vec<Vec<Vec<u8>>>,
    keys: Classified,
    counts: Counts,
    /// Keys given a default TTL by `enforce_after_write`, by class.
    rewritten: smallvec::SmallVec<[Class; 4]>,
    refuse: Option<Reply>,
}

impl<'a> Builder<'a> {
    pub(super) fn new(input: &'a Input<'a>, keys: Classified) -> Builder<'a> {
        Builder {
            input,
            args: None,
            append_px: None,
            extra: Vec::new(),
            keys,
            counts: Counts::default(),
            rewritten: smallvec::SmallVec::new(),
            refuse: None,
        }
    }

    fn policy_of(&self, key_pos: usize) -> &TtlPolicy {
        &self.input.table.tier(self.keys[key_pos].0.tier).policy
    }

    /// The tier policy of the first key, when it enforces a TTL.
    fn first_ttl_policy(&self) -> Option<&TtlPolicy> {
        Some(self.policy_of(0)).filter(|p| p.enforces_ttl())
    }

    pub(super) fn apply_policy(&mut self) {
        let name = self.input.info.name.as_str();
        let handled = match name {
            "set" => self.set(),
            "setex" => self.clamp_ttl_arg(1_000, false, b"PSETEX"),
            "psetex" => self.clamp_ttl_arg(1, false, b"PSETEX"),
            "getex" => self.getex(),
            "expire" => self.clamp_ttl_arg(1_000, false, b"PEXPIRE"),
            "pexpire" => self.clamp_ttl_arg(1, false, b"PEXPIRE"),
            "expireat" => self.clamp_ttl_arg(1_000, true, b"PEXPIRE"),
            "pexpireat" => self.clamp_ttl_arg(1, true, b"PEXPIRE"),
            "persist" => self.persist(),
            "restore" => self.restore(),
            // COPY … DB n writes into another database, where strata's PEXPIRE (sent in
            // the current one) would not reach the copy; left as the client sent it.
            "copy" => self.input.argv.iter().skip(3).any(|a| a.eq_ignore_ascii_case(b"db")),
            _ => false,
        };
        if !handled {
            self.generic();
        }
    }

    /// Writes get the default TTL where they left none; sliding reads push it out.
    fn generic(&mut self) {
        for pos in 0..self.keys.len() {
            let (_, role, index, _) = self.keys[pos];
            let policy = self.policy_of(pos).clone();
            if !policy.enforces_ttl() {
                continue;
            }
            let key = self.input.argv[index].to_vec();
            match role {
                Role::Write => self.enforce_after_write(pos, &policy, key),
                Role::Read if policy.sliding && self.input.mode != Mode::Watching => {
                    self.refresh(&policy, key)
                }
                _ => {}
            }
        }
    }

    fn enforce_after_write(&mut self, pos: usize, policy: &TtlPolicy, key: Vec<u8>) {
        let fresh = policy.fresh_ms().unwrap_or(0);
        self.extra.push(pexpire(&key, fresh, Some("NX")));
        if let Some(max) = policy.max_ms {
            self.extra.push(pexpire(&key, max, Some("LT")));
        }
        if let Some(min) = policy.min_ms {
            self.extra.push(pexpire(&key, min, Some("GT")));
        }
        if policy.sliding {
            self.extra.push(pexpire(&key, fresh, Some("GT")));
        }
        // Booked on the key's own tier: one command may write keys of several tiers.
        self.rewritten.push(self.keys[pos].0);
    }

    fn refresh(&mut self, policy: &TtlPolicy, key: Vec<u8>) {
        let fresh = policy.fresh_ms().unwrap_or(0);
        self.extra.push(pexpire(&key, fresh, Some("GT")));
    }

    /// `SET k v [NX|XX] [GET] [EX|PX|EXAT|PXAT t|KEEPTTL]`.
    fn set(&mut self) -> bool {
        let Some(policy) = self.first_ttl_policy().cloned() else { return true };
        let argv = self.input.argv;
        let mut ttl_at = None;
        let mut keepttl = false;
        let mut i = 3;
        while i < argv.len() {
            match lower(argv[i]).as_str() {
                "ex" | "px" | "exat" | "pxat" if i + 1 < argv.len() => {
                    ttl_at = Some(i);
                    i += 2;
                }
                "keepttl" => {
                    keepttl = true;
                    i += 1;
                }
                "nx" | "xx" | "get" => i += 1,
                // An option this table does not know (newer Redis/Valkey: IFEQ …) or a
                // syntax error: wrap it like any write, so the key still gets its TTL; a
                // syntax error comes back from MULTI's queueing untouched.
                _ => return false,
            }
        }
        match (ttl_at, keepttl) {
            (Some(at), _) => self.clamp_option(&policy, at),
            (None, true) => {
                let key = argv[1].to_vec();
                self.enforce_after_write(0, &policy, key);
            }
            (None, false) => {
                self.append_px = Some(policy.fresh_ms().unwrap_or(0));
                self.counts.ttl_rewrites += 1;
            }
        }
        true
    }

    /// Clamps `EX|PX|EXAT|PXAT value` at argument `at`, rewriting it as `PX ms`.
    fn clamp_option(&mut self, policy: &TtlPolicy, at: usize) {
        let argv = self.input.argv;
        let unit = match lower(argv[at]).as_str() {
            "ex" | "exat" => 1_000,
            _ => 1,
        };
        let absolute = lower(argv[at]).ends_with("at");
        let Some(relative) = self.relative_ms(argv[at + 1], unit, absolute) else { return };
        if let Some(clamped) = policy.clamp_ms(relative) {
            let args = self.args_mut();
            args[at] = b"PX".to_vec();
            args[at + 1] = clamped.to_string().into_bytes();
            self.counts.clamps += 1;
        }
    }

    /// A positive TTL in ms from a client's number, or `None` when Redis will reject it
    /// or delete the key (zero, negative, in the past, not a number).
    fn relative_ms(&self, value: &[u8], unit: u64, absolute: bool) -> Option<u64> {
        let n = redis_integer(value)?;
        let ms = u64::try_from(n).ok()?.checked_mul(unit)?;
        // Redis rejects expiry times that overflow once made absolute; leave those to it.
        let absolute_ms = if absolute { ms } else { ms.checked_add(self.input.now_ms())? };
        if absolute_ms > i64::MAX as u64 {
            return None;
        }
        let ms = if absolute { ms.checked_sub(self.input.now_ms())? } else { ms };
        (ms > 0).then_some(ms)
    }

    /// `SETEX k s v`, `PSETEX k ms v`, `EXPIRE k t [NX|XX|GT|LT]` and friends: the TTL is
    /// argument 2; outside the tier's bounds it is clamped and the command becomes its
    /// millisecond, relative form `as_command` (PSETEX or PEXPIRE), which replies the same.
    fn clamp_ttl_arg(&mut self, unit: u64, absolute: bool, as_command: &[u8]) -> bool {
        let Some(policy) = self.first_ttl_policy().cloned() else { return true };
        let Some(ms) = self.relative_ms(self.input.argv[2], unit, absolute) else { return true };
        if let Some(clamped) = policy.clamp_ms(ms) {
            let args = self.args_mut();
            args[0] = as_command.to_vec();
            args[2] = clamped.to_string().into_bytes();
            self.counts.clamps += 1;
        }
        true
    }

    /// `GETEX k [EX|PX|EXAT|PXAT t|PERSIST]`.
    fn getex(&mut self) -> bool {
        let Some(policy) = self.first_ttl_policy().cloned() else { return true };
        let argv = self.input.argv;
        match argv.get(2).map(|a| lower(a)).as_deref() {
            None if policy.sliding && self.input.mode != Mode::Watching => {
                let key = argv[1].to_vec();
                self.refresh(&policy, key);
            }
            None => {}
            Some("persist") if argv.len() == 3 => {
                if let Some(ms) = self.persist_replacement(&policy) {
                    let args = self.args_mut();
                    args[2] = b"PX".to_vec();
                    args.push(ms.to_string().into_bytes());
                }
            }
            Some("ex" | "px" | "exat" | "pxat") if argv.len() == 4 => self.clamp_option(&policy, 2),
            Some(_) => {}
        }
        true
    }

    /// `PERSIST k`: refused, or the TTL is replaced with the tier's maximum.
    fn persist(&mut self) -> bool {
        let Some(policy) = self.first_ttl_policy().cloned() else { return true };
        if let Some(ms) = self.persist_replacement(&policy) {
            self.extra.push(pexpire(self.input.argv[1], ms, None));
        }
        true
    }

    /// Under `deny` sets the refusal and returns `None`; under `max` the replacement TTL.
    fn persist_replacement(&mut self, policy: &TtlPolicy) -> Option<u64> {
        match policy.persist {
            PersistPolicy::ApplyMax => policy.persist_replacement_ms(),
            PersistPolicy::Deny => {
                let tier = &self.input.table.tier(self.keys[0].0.tier).name;
                self.refuse = Some(Reply::err(format!(
                    "strata: PERSIST refused, keys of tier '{tier}' must keep a TTL (tier persist = \"deny\")"
                )));
                self.counts.persist_denied += 1;
                None
            }
        }
    }

    /// `RESTORE k ttl payload [REPLACE] [ABSTTL] …`: 0 means no TTL, so it gets the default.
    fn restore(&mut self) -> bool {
        let Some(policy) = self.first_ttl_policy().cloned() else { return true };
        let argv = self.input.argv;
        let absolute = argv.iter().skip(4).any(|a| a.eq_ignore_ascii_case(b"absttl"));
        let base = if absolute { self.input.now_ms() } else { 0 };
        let new_ttl = if argv[2] == b"0" {
            self.counts.ttl_rewrites += 1;
            policy.fresh_ms()
        } else {
            let clamped = self.relative_ms(argv[2], 1, absolute).and_then(|ms| policy.clamp_ms(ms));
            self.counts.clamps += u32::from(clamped.is_some());
            clamped
        };
        if let Some(ms) = new_ttl {
            self.args_mut()[2] = (base + ms).to_string().into_bytes();
        }
        true
    }

    fn args_mut(&mut self) -> &mut Vec<Vec<u8>> {
        let argv = self.input.argv;
        self.args.get_or_insert_with(|| argv.iter().map(|a| a.to_vec()).collect())
    }

    pub(super) fn finish(self) -> Plan {
        let keys = key_roles(&self.keys);
        let mut plan = Plan {
            rewrite: None,
            frames: 1,
            fix: ReplyFix::None,
            refuse: self.refuse,
            keys,
            queued_extra: 0,
            ttl_rewrites: self.counts.ttl_rewrites,
            rewritten: self.rewritten,
            clamps: self.counts.clamps,
            persist_denied: self.counts.persist_denied,
        };
        if plan.refuse.is_some() {
            return plan;
        }
        let mut digits = itoa::Buffer::new();
        let px = self.append_px.map(|ms| [&b"PX"[..], digits.format(ms).as_bytes()]);
        let appended: &[&[u8]] = px.as_ref().map_or(&[], |p| &p[..]);
        let request = match self.args {
            Some(args) => {
                let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                Some(encode_command_parts(&refs, appended))
            }
            None if !appended.is_empty() => Some(encode_command_parts(self.input.argv, appended)),
            None => None,
        };
        if self.extra.is_empty() {
            plan.rewrite = request;
            return plan;
        }
        let request = request.unwrap_or_else(|| encode_command(self.input.argv));
        let extra: Vec<Bytes> = self.extra.iter().map(|c| encode(c)).collect();
        let only_refresh = plan.keys.iter().all(|(_, role, _)| *role != Role::Write);
        let wrap = self.input.mode == Mode::Plain && !only_refresh;
        plan.rewrite = Some(assemble(wrap, request, &extra));
        plan.frames = 1 + extra.len() + if wrap { 2 } else { 0 };
        plan.fix = if wrap {
            ReplyFix::Exec { extra: extra.len() }
        } else {
            ReplyFix::DropTrailing { extra: extra.len() }
        };
        if self.input.mode == Mode::InMulti {
            plan.queued_extra = extra.len() as u16;
        }
        plan
    }
}

fn assemble(wrap: bool, request: Bytes, extra: &[Bytes]) -> Bytes {
    let mut out = Vec::with_capacity(request.len() + extra.iter().map(Bytes::len).sum::<usize>() + 32);
    if wrap {
        out.extend_from_slice(b"*1\r\n$5\r\nMULTI\r\n");
    }
    out.extend_from_slice(&request);
    for command in extra {
        out.extend_from_slice(command);
    }
    if wrap {
        out.extend_from_slice(b"*1\r\n$4\r\nEXEC\r\n");
    }
    Bytes::from(out)
}

fn pexpire(key: &[u8], ms: u64, option: Option<&str>) -> Vec<Vec<u8>> {
    let mut cmd = vec![b"PEXPIRE".to_vec(), key.to_vec(), ms.to_string().into_bytes()];
    if let Some(option) = option {
        cmd.push(option.as_bytes().to_vec());
    }
    cmd
}

fn encode(args: &[Vec<u8>]) -> Bytes {
    let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    encode_command(&refs)
}

fn lower(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_ascii_lowercase()
}

/// Parses an integer the way Redis' `string2ll` does: no sign but `-`, no leading zeros,
/// no spaces. Anything else is left for Redis to reject with its own error.
fn redis_integer(value: &[u8]) -> Option<i64> {
    let digits = value.strip_prefix(b"-").unwrap_or(value);
    let canonical = match digits {
        [b'0'] => value.len() == 1,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if !canonical {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

impl Input<'_> {
    fn now_ms(&self) -> u64 {
        *self.now_ms.get_or_init(|| {
            let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            since_epoch.map_or(0, |d| d.as_millis() as u64)
        })
    }
}
