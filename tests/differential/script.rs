//! The seeded generator: one script per client, each command with how its reply is compared.
//!
//! A script is a list of steps; a step is a pipeline (depth 1 to 20,000) written at once
//! before reading, or in random chunks while reading, or written and then dropped. The
//! generator tracks what decides the replies (MULTI, CLIENT REPLY), so it knows which
//! commands get a reply and never produces one whose reply is not the same on every run.

use std::collections::BTreeSet;

use fastrand::Rng;

use crate::commands::data_command;

/// How a command's reply is compared; see the masks in `main.rs`'s module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Byte for byte.
    Exact,
    /// No reply (CLIENT REPLY OFF, or SKIP before it).
    Silent,
    /// An unordered collection (a set's members): elements sorted before comparing.
    Unordered,
    /// A remaining time to live: any positive value counts as the same.
    Ttl,
    /// HELLO: answered by strata itself; only the aggregate header and `proto` compared.
    Hello,
    /// Not compared (after a dropped client, how many of its writes Redis ran is not known).
    Any,
}

/// One command: its RESP bytes and the check its reply gets.
#[derive(Debug, Clone)]
pub struct Cmd {
    pub bytes: Vec<u8>,
    pub check: Check,
}

/// How a step's bytes are written.
#[derive(Debug, Clone, Copy)]
pub enum Write {
    /// All of it before reading any reply.
    Before,
    /// In chunks of random size (split anywhere) while the replies are read.
    While { chunks: u64 },
    /// All of it, then read `after` replies and close the connection.
    Drop { after: usize },
}

/// One pipeline.
#[derive(Debug, Clone)]
pub struct Step {
    pub cmds: Vec<Cmd>,
    pub write: Write,
}

/// What one client does, and which of its keys hold state to compare afterwards.
#[derive(Debug, Clone)]
pub struct Script {
    pub name: String,
    pub steps: Vec<Step>,
    /// The databases it selected (its keys are compared in each).
    pub dbs: BTreeSet<u8>,
    /// Its key space (every key starts with the client's prefix).
    pub keys: Vec<String>,
    /// True if the script ends with a dropped connection (its final state is not compared).
    pub dropped: bool,
}

/// Reply mode, as Redis' CLIENT REPLY keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replies {
    On,
    Off,
    SkipNext,
}

/// The generator's view of one client's connection.
pub struct Gen {
    pub rng: Rng,
    pub prefix: String,
    multi: bool,
    replies: Replies,
    /// Explicit stream IDs, increasing for the whole client (no `*`, nothing to mask).
    pub stream_seq: u64,
    dbs: BTreeSet<u8>,
}

/// The most request bytes written before reading: Redis reads any amount (its reply
/// buffer grows without bound), a proxy with bounded buffers stops reading once the
/// client's socket is full of unread replies, and the client's write then never ends.
const MAX_WRITTEN_BEFORE: usize = 1 << 20;

/// The key kinds of a client's key space, and how many keys of each.
pub const KINDS: [(&str, usize); 7] =
    [("str", 4), ("cnt", 2), ("h", 3), ("l", 3), ("s", 3), ("z", 3), ("x", 2)];

impl Gen {
    /// A generator for the client whose keys start with `prefix`.
    pub fn new(seed: u64, prefix: String) -> Gen {
        Gen {
            rng: Rng::with_seed(seed),
            prefix,
            multi: false,
            replies: Replies::On,
            stream_seq: 0,
            dbs: BTreeSet::from([0]),
        }
    }

    /// A key of `kind`; now and then one of another kind (WRONGTYPE is a reply too).
    pub fn key(&mut self, kind: &str) -> Vec<u8> {
        let (kind, n) = if self.rng.u8(..) < 20 {
            KINDS[self.rng.usize(..KINDS.len())]
        } else {
            *KINDS.iter().find(|(k, _)| *k == kind).expect("known kind")
        };
        format!("{}{kind}:{}", self.prefix, self.rng.usize(..n)).into_bytes()
    }

    /// Appends a command, with the check the connection's reply mode gives it.
    fn push(&mut self, out: &mut Vec<Cmd>, args: &[&[u8]], check: Check) {
        let check = match self.replies {
            Replies::On => check,
            Replies::Off => Check::Silent,
            Replies::SkipNext => {
                self.replies = Replies::On;
                Check::Silent
            }
        };
        out.push(Cmd { bytes: crate::support::encode(args), check });
    }

    fn push_data(&mut self, out: &mut Vec<Cmd>, in_multi: bool) {
        let (args, check) = data_command(self, in_multi);
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        self.push(out, &refs, check);
    }

    /// A state command (MULTI, EXEC, WATCH, SELECT, HELLO, CLIENT REPLY) or a data command.
    fn push_any(&mut self, out: &mut Vec<Cmd>) {
        let roll = self.rng.u32(..1000);
        if self.multi {
            match roll {
                0..80 => self.exec(out, b"EXEC"),
                80..100 => self.exec(out, b"DISCARD"),
                100..110 => self.select(out),
                _ => self.push_data(out, true),
            }
            return;
        }
        let off = self.replies != Replies::On;
        match roll {
            0..30 if !off => {
                self.multi = true;
                self.push(out, &[b"MULTI"], Check::Exact);
            }
            30..50 if !off => {
                let key = self.key("str");
                self.push(out, &[b"WATCH", &key], Check::Exact);
            }
            50..55 => self.push(out, &[b"UNWATCH"], Check::Exact),
            55..75 => self.select(out),
            75..90 if !off => {
                let version: &[u8] = if self.rng.bool() { b"3" } else { b"2" };
                self.push(out, &[b"HELLO", version], Check::Hello);
            }
            90..105 if !off => {
                let (mode, next) = if self.rng.bool() {
                    (&b"OFF"[..], Replies::Off)
                } else {
                    (&b"SKIP"[..], Replies::SkipNext)
                };
                self.push(out, &[b"CLIENT", b"REPLY", mode], Check::Silent);
                self.replies = next;
            }
            105..200 if self.replies == Replies::Off => {
                self.replies = Replies::On;
                self.push(out, &[b"CLIENT", b"REPLY", b"ON"], Check::Exact);
            }
            200..203 => self.push(out, &[b"EXEC"], Check::Exact),
            _ => self.push_data(out, false),
        }
    }

    fn exec(&mut self, out: &mut Vec<Cmd>, word: &[u8]) {
        self.multi = false;
        self.push(out, &[word], Check::Exact);
    }

    fn select(&mut self, out: &mut Vec<Cmd>) {
        let db = self.rng.u8(0..4);
        self.dbs.insert(db);
        self.push(out, &[b"SELECT", db.to_string().as_bytes()], Check::Exact);
    }

    /// A pipeline of `depth` commands of any kind.
    pub fn step(&mut self, depth: usize) -> Step {
        let mut cmds = Vec::with_capacity(depth);
        for _ in 0..depth {
            self.push_any(&mut cmds);
        }
        let write = self.write(&cmds);
        Step { cmds, write }
    }

    /// A deep pipeline of cheap data commands (the kind back-pressure is for).
    pub fn deep_step(&mut self, depth: usize) -> Step {
        let mut cmds = Vec::with_capacity(depth);
        let counter = format!("{}cnt:0", self.prefix).into_bytes();
        let list = format!("{}l:0", self.prefix).into_bytes();
        for i in 0..depth {
            match self.rng.u8(..4) {
                0 => self.push(&mut cmds, &[b"INCR", &counter], Check::Exact),
                1 => self.push(&mut cmds, &[b"GET", &counter], Check::Exact),
                2 => self.push(&mut cmds, &[b"RPUSH", &list, i.to_string().as_bytes()], Check::Exact),
                _ => self.push(&mut cmds, &[b"PING"], Check::Exact),
            }
        }
        let write = self.write(&cmds);
        Step { cmds, write }
    }

    /// A state command that pins the connection (SELECT, WATCH, MULTI, HELLO 3) or none.
    pub fn stateful_step(&mut self) -> Step {
        let mut cmds = Vec::new();
        match self.rng.u8(..5) {
            0 => self.select(&mut cmds),
            1 => {
                let key = format!("{}str:0", self.prefix).into_bytes();
                self.push(&mut cmds, &[b"WATCH", &key], Check::Exact);
            }
            2 => {
                self.multi = true;
                self.push(&mut cmds, &[b"MULTI"], Check::Exact);
            }
            3 => self.push(&mut cmds, &[b"HELLO", b"3"], Check::Hello),
            _ => self.push(&mut cmds, &[b"PING"], Check::Exact),
        }
        Step { cmds, write: Write::Before }
    }

    /// A step that closes an open MULTI and turns replies back on, so the script ends clean.
    pub fn closing_step(&mut self) -> Step {
        let mut cmds = Vec::new();
        if self.multi {
            self.exec(&mut cmds, b"EXEC");
        }
        if self.replies != Replies::On {
            self.replies = Replies::On;
            self.push(&mut cmds, &[b"CLIENT", b"REPLY", b"ON"], Check::Exact);
        }
        self.push(&mut cmds, &[b"PING"], Check::Exact);
        Step { cmds, write: Write::Before }
    }

    /// Before reading, or while; a pipeline over `MAX_WRITTEN_BEFORE` always while reading.
    fn write(&mut self, cmds: &[Cmd]) -> Write {
        let bytes: usize = cmds.iter().map(|c| c.bytes.len()).sum();
        if bytes <= MAX_WRITTEN_BEFORE && self.rng.u8(..10) < 6 {
            Write::Before
        } else {
            Write::While { chunks: self.rng.u64(..) }
        }
    }

    /// A pipeline depth: mostly short, sometimes hundreds, now and then thousands.
    pub fn depth(&mut self) -> usize {
        match self.rng.u8(..100) {
            0..70 => self.rng.usize(1..=8),
            70..92 => self.rng.usize(9..=300),
            92..98 => self.rng.usize(1000..=3000),
            _ => self.rng.usize(3000..=20_000),
        }
    }

    /// The databases selected so far.
    pub fn dbs(&self) -> BTreeSet<u8> {
        self.dbs.clone()
    }

    /// Every key this client may have written.
    pub fn keys(&self) -> Vec<String> {
        KINDS
            .iter()
            .flat_map(|(kind, n)| (0..*n).map(move |i| format!("{}{kind}:{i}", self.prefix)))
            .collect()
    }
}

/// The script of an ordinary client: a pinning state first half of the time, then steps.
pub fn client_script(seed: u64, name: String, prefix: String, deep_first: bool) -> Script {
    let mut g = Gen::new(seed, prefix);
    let mut steps = Vec::new();
    if deep_first {
        steps.push(g.stateful_step());
        let depth = g.rng.usize(1025..=20_000);
        // In one write before reading: back-pressure must pause and resume reading.
        steps.push(Step { write: Write::Before, ..g.deep_step(depth) });
    }
    for _ in 0..g.rng.usize(3..=12) {
        let depth = g.depth();
        let step = if deep_first && g.rng.u8(..4) == 0 {
            // Again past the back-pressure threshold, on whatever state the client is in now.
            let depth = g.rng.usize(1025..=6000);
            Step { write: Write::Before, ..g.deep_step(depth) }
        } else if depth > 300 && g.rng.bool() {
            g.deep_step(depth)
        } else {
            g.step(depth)
        };
        steps.push(step);
    }
    let dropped = g.rng.u8(..10) == 0;
    if dropped {
        let depth = g.rng.usize(1..=2000);
        let mut step = g.step(depth);
        let after = g.rng.usize(..=step.cmds.len());
        step.write = Write::Drop { after: if g.rng.bool() { 0 } else { after } };
        steps.push(step);
    } else {
        steps.push(g.closing_step());
    }
    Script { name, steps, dbs: g.dbs(), keys: g.keys(), dropped }
}
