//! The table of connected clients of both servers, as the admin server shows
//! them: id, connect time, peer credentials, and for lock clients the owner they
//! registered. Every actor of the daemon's main event thread shares it (the
//! supervisor and all connections run there), so a query never waits for a busy
//! connection; each connection keeps its own row current.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use super::rpc::Peer;
use super::standing::LinkView;
use super::supervisor::Server;
use crate::protocol::lock::Owner;

/// One connection as the admin server sees it.
#[derive(Debug, Clone)]
pub struct ClientRecord {
    /// Seconds since the epoch.
    pub conn_time: i64,
    pub peer: Peer,
    /// Whether it has made an RPC call since this process started: libvirt
    /// builds a client's identity on its first call, and client-info reports
    /// "No identity information" before that.
    pub called: bool,
    pub owner: Option<Arc<Owner>>,
    pub restricted: bool,
    /// Where the connection stands for a live upgrade (see `standing`); set
    /// once its actor runs, cleared when it stops.
    pub link: Option<Rc<LinkView>>,
    /// An admin client-disconnect was sent to it: a live upgrade must ask it
    /// (its question queues behind the close) rather than hand it over.
    pub closing: bool,
}

/// Rows keyed by (server, id); ids grow, so iteration is connection order.
#[derive(Clone, Default)]
pub struct ClientTable(Rc<RefCell<BTreeMap<(Server, u64), ClientRecord>>>);

impl ClientTable {
    /// Marks the row of `(server, id)` as closing (see [`ClientRecord::closing`]).
    pub fn mark_closing(&self, server: Server, id: u64) {
        if let Some(r) = self.0.borrow_mut().get_mut(&(server, id)) {
            r.closing = true;
        }
    }

    /// Adds a row; it lives as long as the returned entry.
    pub fn insert(&self, server: Server, id: u64, record: ClientRecord) -> ClientEntry {
        self.0.borrow_mut().insert((server, id), record);
        ClientEntry {
            table: self.clone(),
            key: (server, id),
        }
    }

    pub fn get(&self, server: Server, id: u64) -> Option<ClientRecord> {
        self.0.borrow().get(&(server, id)).cloned()
    }

    /// The clients of one server, in connection order.
    pub fn of(&self, server: Server) -> Vec<(u64, ClientRecord)> {
        self.0
            .borrow()
            .iter()
            .filter(|((s, _), _)| *s == server)
            .map(|((_, id), r)| (*id, r.clone()))
            .collect()
    }

    /// Looks at every row in order, without a copy (a live upgrade reads
    /// thousands at once).
    pub fn each(&self, mut f: impl FnMut(Server, u64, &ClientRecord)) {
        for (&(server, id), record) in self.0.borrow().iter() {
            f(server, id, record);
        }
    }

    pub fn count(&self, server: Server) -> usize {
        self.0.borrow().keys().filter(|(s, _)| *s == server).count()
    }
}

/// A connection's own row; dropping it removes the row.
pub struct ClientEntry {
    table: ClientTable,
    key: (Server, u64),
}

impl ClientEntry {
    /// The server the connection is a client of.
    pub fn server(&self) -> Server {
        self.key.0
    }

    /// The connection's id on its server.
    pub fn id(&self) -> u64 {
        self.key.1
    }

    /// Changes this connection's row.
    pub fn update(&self, f: impl FnOnce(&mut ClientRecord)) {
        if let Some(r) = self.table.0.borrow_mut().get_mut(&self.key) {
            f(r);
        }
    }
}

impl Drop for ClientEntry {
    fn drop(&mut self) {
        self.table.0.borrow_mut().remove(&self.key);
    }
}
