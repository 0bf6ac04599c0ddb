//! The command table: every command's flags and key positions.
//!
//! Built from the upstream's `COMMAND` reply at start-up so it matches the Redis that
//! actually runs, with Redis 7.0's table compiled in for when the upstream is unreachable.
//! It answers two questions per request: what kind of command is this, and which
//! arguments are keys. It does not decide routing; `server::route` does.

mod keyspec;
mod kind;
mod names;
mod special;

use std::collections::HashMap as StdHashMap;

/// Command names are looked up for every request; foldhash is several times faster than
/// SipHash here, and the table is fixed, so there is no flooding to defend against.
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;

use redis_protocol::resp2::types::OwnedFrame;

use keyspec::text;
pub use keyspec::{BeginSearch, FindKeys, KeyError, KeyRef, KeySpec, Keys, flag};
pub use kind::Kind;
pub use names::Names;

/// Raw `COMMAND` reply captured from redis-server 7.0.15, the fallback table.
const BUILTIN_COMMAND_REPLY: &[u8] = include_bytes!("redis-7.0-command.resp");

/// Command flag bits (a subset of Redis' command flags that strata acts on).
pub mod cmd_flag {
    /// May modify the dataset.
    pub const WRITE: u32 = 1;
    /// Never modifies the dataset.
    pub const READONLY: u32 = 1 << 1;
    /// May block the connection (BLPOP, XREAD BLOCK, WAIT).
    pub const BLOCKING: u32 = 1 << 2;
    /// Keys cannot be found from fixed positions alone.
    pub const MOVABLEKEYS: u32 = 1 << 3;
    /// Pub/sub command.
    pub const PUBSUB: u32 = 1 << 4;
    /// Administrative command.
    pub const ADMIN: u32 = 1 << 5;
    /// Not allowed inside scripts.
    pub const NOSCRIPT: u32 = 1 << 6;
}

/// Why a `COMMAND` reply could not be turned into a table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The reply is not complete RESP.
    #[error("COMMAND reply is not valid RESP: {0}")]
    Decode(String),
    /// The reply does not have the documented shape.
    #[error("COMMAND reply has an unexpected shape at {0}")]
    Shape(&'static str),
}

/// Where the table came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableSource {
    /// The upstream's own `COMMAND` reply.
    Upstream,
    /// The compiled-in Redis 7.0 table.
    Builtin,
}

/// What strata knows about one command or subcommand.
#[derive(Debug, Clone)]
pub struct CommandInfo {
    /// Lower-case full name, `get` or `client|setname`.
    pub name: String,
    /// Redis arity: exact argument count, or the negated minimum.
    pub arity: i64,
    /// `cmd_flag::*` bits.
    pub flags: u32,
    /// Key specifications, in Redis' order.
    pub key_specs: Vec<KeySpec>,
    /// Subcommands by name (without the `parent|` prefix).
    pub subcommands: Names,
    /// How strata treats it by name.
    pub kind: Kind,
    /// `single_key`, worked out once from `key_specs`.
    first_key: Option<u16>,
}

impl CommandInfo {
    /// True when every bit of `bits` is set.
    pub fn has(&self, bits: u32) -> bool {
        self.flags & bits == bits
    }

    /// The key-spec flags of a command whose one key is its first argument (GET, SET,
    /// HGET, INCR …: most requests), so the hot path can skip the general key search.
    #[inline]
    pub fn single_key(&self) -> Option<u16> {
        self.first_key
    }

    /// A command as the table holds it.
    pub fn new(
        name: String,
        arity: i64,
        flags: u32,
        key_specs: Vec<KeySpec>,
        subcommands: Names,
    ) -> CommandInfo {
        let first_key = match &key_specs[..] {
            [
                KeySpec {
                    flags,
                    begin: keyspec::BeginSearch::Index(1),
                    find: keyspec::FindKeys::Range { last_key: 0, .. },
                },
            ] => Some(*flags),
            _ => None,
        };
        let kind = Kind::of(name.as_bytes());
        CommandInfo { name, arity, flags, key_specs, subcommands, kind, first_key }
    }
}

/// All commands by lower-case name.
#[derive(Debug, Clone)]
pub struct CommandTable {
    commands: Names,
    source: TableSource,
}

impl CommandTable {
    /// Builds the table from the raw RESP2 bytes of a `COMMAND` reply.
    pub fn from_reply(bytes: &[u8], source: TableSource) -> Result<CommandTable, TableError> {
        let (frame, _) = redis_protocol::resp2::decode::decode(bytes)
            .map_err(|e| TableError::Decode(e.to_string()))?
            .ok_or_else(|| TableError::Decode("incomplete reply".into()))?;
        let OwnedFrame::Array(entries) = frame else { return Err(TableError::Shape("top level")) };
        let mut commands = Names::default();
        for entry in &entries {
            let info = parse_command(entry)?;
            commands.insert(&info.name.clone().into_bytes(), Arc::new(info));
        }
        Ok(CommandTable { commands, source })
    }

    /// The compiled-in Redis 7.0.15 table.
    pub fn builtin() -> CommandTable {
        // The embedded bytes are tested (see tests below), so failing here is a build defect.
        Self::from_reply(BUILTIN_COMMAND_REPLY, TableSource::Builtin)
            .expect("embedded COMMAND table is valid")
    }

    /// Where this table came from.
    pub fn source(&self) -> TableSource {
        self.source
    }

    /// Number of top-level commands.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// True when the table has no commands.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Finds the command (or subcommand, for containers like CLIENT) a request names.
    pub fn lookup(&self, args: &[&[u8]]) -> Option<&Arc<CommandInfo>> {
        let info = self.commands.get(args.first()?)?;
        if info.subcommands.is_empty() || args.len() < 2 {
            return Some(info);
        }
        Some(info.subcommands.get(args[1]).unwrap_or(info))
    }

    /// The keys of a request, as Redis would find them.
    pub fn keys(&self, args: &[&[u8]]) -> Result<Keys, KeyError> {
        let Some(info) = self.lookup(args) else { return Ok(Keys::new()) };
        keys_of(info, args)
    }
}

/// The keys of a request for an already looked-up command.
pub fn keys_of(info: &CommandInfo, args: &[&[u8]]) -> Result<Keys, KeyError> {
    let mut keys = Keys::new();
    for spec in &info.key_specs {
        match spec.find(args, &mut keys) {
            Err(KeyError::Undescribed) => {
                return special::keys(&info.name, args, &info.key_specs)
                    .map(Keys::from_vec)
                    .ok_or(KeyError::Undescribed);
            }
            other => other?,
        }
    }
    Ok(keys)
}

fn parse_command(frame: &OwnedFrame) -> Result<CommandInfo, TableError> {
    let OwnedFrame::Array(fields) = frame else { return Err(TableError::Shape("command entry")) };
    let name = fields.first().and_then(text).ok_or(TableError::Shape("command name"))?;
    let name = String::from_utf8_lossy(&name).to_ascii_lowercase();
    let arity = match fields.get(1) {
        Some(OwnedFrame::Integer(n)) => *n,
        _ => return Err(TableError::Shape("arity")),
    };
    let flags = match fields.get(2) {
        Some(OwnedFrame::Array(items)) => items.iter().filter_map(text).map(|f| command_flag(&f)).sum(),
        _ => return Err(TableError::Shape("flags")),
    };
    let key_specs = match fields.get(8) {
        Some(OwnedFrame::Array(specs)) => specs.iter().map(KeySpec::parse).collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    let mut subcommands = Names::default();
    if let Some(OwnedFrame::Array(subs)) = fields.get(9) {
        for sub in subs {
            let info = parse_command(sub)?;
            let short = info.name.rsplit('|').next().unwrap_or(&info.name).as_bytes().to_vec();
            subcommands.insert(&short, Arc::new(info));
        }
    }
    Ok(CommandInfo::new(name, arity, flags, key_specs, subcommands))
}

fn command_flag(name: &[u8]) -> u32 {
    match name {
        b"write" => cmd_flag::WRITE,
        b"readonly" => cmd_flag::READONLY,
        b"blocking" => cmd_flag::BLOCKING,
        b"movablekeys" => cmd_flag::MOVABLEKEYS,
        b"pubsub" => cmd_flag::PUBSUB,
        b"admin" => cmd_flag::ADMIN,
        b"noscript" => cmd_flag::NOSCRIPT,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_indexes(table: &CommandTable, line: &str) -> Vec<usize> {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        table.keys(&args).unwrap().iter().map(|k| k.index).collect()
    }

    #[test]
    fn builtin_table_finds_keys_like_redis() {
        let table = CommandTable::builtin();
        assert!(table.len() > 200);
        assert_eq!(key_indexes(&table, "GET k"), vec![1]);
        assert_eq!(key_indexes(&table, "MSET a 1 b 2 c 3"), vec![1, 3, 5]);
        assert_eq!(key_indexes(&table, "EVAL s 2 k1 k2 a1"), vec![3, 4]);
        assert_eq!(key_indexes(&table, "XREAD COUNT 2 STREAMS s1 s2 0 0"), vec![4, 5]);
        assert_eq!(key_indexes(&table, "ZUNIONSTORE d 2 a b WEIGHTS 1 2"), vec![1, 3, 4]);
        assert_eq!(key_indexes(&table, "SORT src BY w LIMIT 0 1 GET x STORE dst"), vec![1, 10]);
        assert_eq!(key_indexes(&table, "OBJECT ENCODING k"), vec![2]);
        assert_eq!(key_indexes(&table, "PING"), Vec::<usize>::new());
    }

    #[test]
    fn flags_and_subcommands() {
        let table = CommandTable::builtin();
        let blpop = table.lookup(&[b"blpop"]).unwrap();
        assert!(blpop.has(cmd_flag::BLOCKING | cmd_flag::WRITE));
        let setname = table.lookup(&[b"CLIENT", b"SetName", b"x"]).unwrap();
        assert_eq!(setname.name, "client|setname");
        assert!(table.lookup(&[b"nosuchcommand"]).is_none());
    }

    #[test]
    fn bad_numkeys_is_an_error_not_a_guess() {
        let table = CommandTable::builtin();
        let args: Vec<&[u8]> = vec![b"EVAL", b"s", b"x"];
        assert_eq!(table.keys(&args), Err(KeyError::BadKeyCount));
        let args: Vec<&[u8]> = vec![b"EVAL", b"s", b"5", b"k"];
        assert_eq!(table.keys(&args), Err(KeyError::BadKeyCount));
    }
}
