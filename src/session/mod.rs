//! Per-client connection state that Redis keeps per connection and strata must keep per
//! client, because the client's commands may share an upstream connection with others.

pub mod lockstep;

use bytes::Bytes;

use crate::command::Kind;
use crate::resp::reply::Protocol;

/// What strata remembers about one client connection.
#[derive(Debug)]
pub struct Session {
    /// strata's client id (CLIENT ID, HELLO).
    pub id: u64,
    /// Protocol chosen with HELLO.
    pub protocol: Protocol,
    /// CLIENT SETNAME / HELLO SETNAME.
    pub name: Option<Bytes>,
    /// CLIENT SETINFO LIB-NAME / LIB-VER.
    pub lib: (Option<Bytes>, Option<Bytes>),
    /// Inside MULTI … EXEC.
    pub in_multi: bool,
    /// WATCH is active.
    pub watching: bool,
    /// SELECT, AUTH as another user or READONLY changed the connection for good (until
    /// RESET): the client stays on its own upstream connection.
    pub sticky: bool,
    /// Inside MULTI: for each command queued so far, how many commands strata queued
    /// after it (tier TTLs), so EXEC's reply can be cut back. Two bytes per queued
    /// command, the same growth Redis itself allows for the transaction.
    pub tx_mask: Vec<u16>,
    /// Inside MULTI: what to count for each queued command once EXEC's array arrives.
    pub tx_accounts: Vec<Option<crate::stats::Account>>,
    /// strata's transaction bookkeeping is running (a nested MULTI leaves it alone).
    pub tx_open: bool,
    /// SELECT moved the client off the upstream URL's database: read-through rules
    /// describe that database (and write back to it), so they do not apply.
    pub other_db: bool,
    /// The database the client selected (as asked; CLIENT LIST shows it).
    pub db: i64,
    /// CLIENT NO-EVICT / NO-TOUCH, shown by CLIENT LIST (strata's upstream connections
    /// are shared, so Redis never sees them).
    pub no_evict: bool,
    pub no_touch: bool,
    /// The upstream URL's database, where a new or RESET connection starts.
    home_db: i64,
}

impl Session {
    /// A fresh RESP2 session on database 0.
    pub fn new(id: u64) -> Session {
        Session::on_db(id, 0)
    }

    /// A fresh RESP2 session on database `db`, the one its upstream connections use.
    pub fn on_db(id: u64, db: i64) -> Session {
        Session {
            id,
            protocol: Protocol::Resp2,
            name: None,
            lib: (None, None),
            in_multi: false,
            watching: false,
            sticky: false,
            tx_mask: Vec::new(),
            tx_accounts: Vec::new(),
            tx_open: false,
            other_db: false,
            db,
            home_db: db,
            no_evict: false,
            no_touch: false,
        }
    }

    /// True while the client's commands must run on its own upstream connection.
    pub fn needs_pinned(&self) -> bool {
        self.in_multi || self.watching || self.sticky
    }

    /// Applies what a request of `kind` does to the state strata keeps for the client's
    /// connection, as it is routed (so the next request in the same pipeline is routed by
    /// it). `Some(true)`: this request goes on the client's own connection; `Some(false)`:
    /// it changes nothing (a SELECT of the database the shared connections use); `None`:
    /// it is routed as the connection was before it.
    pub fn observe(&mut self, kind: Kind, argv: &[&[u8]]) -> Option<bool> {
        match kind {
            Kind::Multi => self.in_multi = true,
            // Without MULTI, Redis refuses them and the WATCH stays.
            Kind::Exec | Kind::Discard => {
                if std::mem::take(&mut self.in_multi) {
                    self.watching = false;
                }
                return None;
            }
            // Refused inside MULTI, where the transaction's connection is used anyway.
            Kind::Watch => self.watching |= !self.in_multi,
            Kind::Unwatch => {
                self.watching = false;
                return None;
            }
            Kind::ReadMode => self.sticky = true,
            Kind::Select => return Some(self.select(argv)),
            _ => return None,
        }
        Some(true)
    }

    /// SELECT: `false` when it selects the database the shared connections use and the
    /// client has no connection of its own (nothing changes).
    fn select(&mut self, argv: &[&[u8]]) -> bool {
        let same_db = argv.len() == 2 && argv[1] == self.home_db.to_string().as_bytes();
        if same_db && !self.needs_pinned() {
            return false;
        }
        self.sticky = true;
        if let Some(db) = argv.get(1).and_then(|a| std::str::from_utf8(a).ok()?.parse().ok()) {
            self.db = db;
        }
        // Until Redis answers we cannot know the SELECT succeeded; assuming the other
        // database only switches read-through off for the client, which is the safe side.
        self.other_db = !same_db;
        true
    }

    /// AUTH as another user, or HELLO that Redis must see: the client's connection is its
    /// own from now on.
    pub fn pin(&mut self) {
        self.sticky = true;
    }

    /// Starts strata's transaction bookkeeping at MULTI (a nested MULTI, which Redis
    /// refuses, leaves the open one alone).
    pub fn open_tx(&mut self) {
        if !self.tx_open {
            self.tx_open = true;
            self.tx_mask.clear();
            self.tx_accounts.clear();
        }
    }

    /// Ends strata's transaction bookkeeping, returning the mask and accounts gathered.
    pub fn close_tx(&mut self) -> (Vec<u16>, Vec<Option<crate::stats::Account>>) {
        self.tx_open = false;
        (std::mem::take(&mut self.tx_mask), std::mem::take(&mut self.tx_accounts))
    }

    /// Back to the state of a new connection, as RESET does (the id stays).
    pub fn reset(&mut self) {
        *self = Session::on_db(self.id, self.home_db);
    }
}
