//! The commands strata treats by name, resolved to a one-byte `Kind` when the command
//! table is built. Routing and preparing a request then compare a byte instead of
//! matching strings, which they would otherwise do for every request.

/// How strata treats a command, beyond its flags and key specs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    /// Nothing special: routed by flags, tiered by keys.
    #[default]
    Plain,
    /// HELLO: answered per client.
    Hello,
    /// AUTH: may switch the client to its own connection.
    Auth,
    /// CLIENT and its subcommands: partly answered per client.
    Client,
    /// STRATA: strata's own command (not in Redis' table).
    Strata,
    /// SELECT: another database pins the client.
    Select,
    /// MULTI.
    Multi,
    /// EXEC.
    Exec,
    /// DISCARD.
    Discard,
    /// WATCH.
    Watch,
    /// UNWATCH.
    Unwatch,
    /// READONLY, READWRITE: cluster read mode, a per-connection state.
    ReadMode,
    /// SUBSCRIBE and friends, MONITOR, SYNC, PSYNC: replies stop being one per request.
    Streaming,
    /// QUIT.
    Quit,
    /// RESET.
    Reset,
    /// WAIT, WAITAOF: block on replication.
    Wait,
    /// XREAD, XREADGROUP: block only with BLOCK.
    StreamRead,
    /// INFO: strata appends its section.
    Info,
    /// CONFIG RESETSTAT: also resets strata's counters.
    ConfigResetStat,
    /// SET: the one write with a rewrite fast path.
    Set,
    /// MGET: element i of the reply answers for key i.
    Mget,
    /// HMGET, SMISMEMBER: each element of the reply is one field of the key.
    PerField,
    /// EXISTS, HEXISTS, SISMEMBER: an integer 0 means missing.
    ZeroIsMiss,
}

impl Kind {
    /// The kind of a command by its lower-case full name (`get`, `client|setname`).
    /// Subcommands share their container's kind unless they have their own.
    pub fn of(name: &[u8]) -> Kind {
        if name == b"config|resetstat" {
            return Kind::ConfigResetStat;
        }
        let container = name.split(|&b| b == b'|').next().unwrap_or(name);
        match container {
            b"hello" => Kind::Hello,
            b"auth" => Kind::Auth,
            b"client" => Kind::Client,
            b"strata" => Kind::Strata,
            b"select" => Kind::Select,
            b"multi" => Kind::Multi,
            b"exec" => Kind::Exec,
            b"discard" => Kind::Discard,
            b"watch" => Kind::Watch,
            b"unwatch" => Kind::Unwatch,
            b"readonly" | b"readwrite" => Kind::ReadMode,
            b"subscribe" | b"psubscribe" | b"ssubscribe" | b"unsubscribe" | b"punsubscribe"
            | b"sunsubscribe" | b"monitor" | b"sync" | b"psync" => Kind::Streaming,
            b"quit" => Kind::Quit,
            b"reset" => Kind::Reset,
            b"wait" | b"waitaof" => Kind::Wait,
            b"xread" | b"xreadgroup" => Kind::StreamRead,
            b"info" => Kind::Info,
            b"set" => Kind::Set,
            b"mget" => Kind::Mget,
            b"hmget" | b"smismember" => Kind::PerField,
            b"exists" | b"hexists" | b"sismember" => Kind::ZeroIsMiss,
            _ => Kind::Plain,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subcommands_take_their_containers_kind_unless_named() {
        assert_eq!(Kind::of(b"client|setname"), Kind::Client);
        assert_eq!(Kind::of(b"config|resetstat"), Kind::ConfigResetStat);
        assert_eq!(Kind::of(b"config|get"), Kind::Plain);
        assert_eq!(Kind::of(b"get"), Kind::Plain);
        assert_eq!(Kind::of(b"xreadgroup"), Kind::StreamRead);
    }
}
