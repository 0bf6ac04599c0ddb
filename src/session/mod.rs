//! Per-client connection state that Redis keeps per connection and strata must keep per
//! client, because the client's commands may share an upstream connection with others.

pub mod lockstep;

use bytes::Bytes;

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
