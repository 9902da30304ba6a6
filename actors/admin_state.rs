//! What the admin server reads and changes besides the supervisor's own state:
//! the client table, each server's client gate and settings, the lockspaces and
//! the lease count (for inspection), the logging handle and the daemon's history. Shared by the supervisor and every admin
//! connection (all on the main event thread).

use std::cell::Cell;
use std::sync::Arc;

use super::clients::ClientTable;
use super::gate::ClientGate;
use super::lease_count::LeaseCount;
use super::lockspace_table::LockspaceTable;
use super::supervisor::Server;
use crate::client_limits::ClientLimits;
use crate::logging::LogHandle;

/// Facts about the daemon process kept across live upgrades.
#[derive(Clone, Default)]
pub struct DaemonInfo {
    /// Changes logging live; `None` only where no logging was installed.
    pub log: Option<LogHandle>,
    /// Live upgrades done before this process image started.
    pub upgrades: u64,
    /// When the daemon first started, seconds since the epoch.
    pub started_at: i64,
}

/// One RPC server's settings as the admin API shows them.
pub struct ServerSettings {
    pub gate: Arc<ClientGate>,
    /// `nclients_unauth_max`: kept and validated as libvirt does, though no
    /// client of ours ever waits for authentication.
    pub unauth_max: Cell<usize>,
    /// `prioWorkers` as last set. libvirt would start that many idle threads;
    /// we have no worker pool (see the README), so it is only remembered.
    pub prio_workers: Cell<u32>,
}

impl ServerSettings {
    pub fn new(gate: Arc<ClientGate>) -> Self {
        let max = gate.max();
        Self {
            gate,
            unauth_max: Cell::new(max),
            prio_workers: Cell::new(0),
        }
    }

    /// Journals these settings as `server`'s (crash-safe mode).
    pub fn journal(&self, server: Server) {
        crate::crash::record_or_log(&crate::crash::Entry::Server {
            server: server.journal_id(),
            max_clients: self.gate.max() as u64,
            max_unauth_clients: self.unauth_max.get() as u64,
            prio_workers: self.prio_workers.get(),
        });
    }

    pub fn limits(&self) -> ClientLimits {
        ClientLimits {
            max: self.gate.max(),
            unauth_max: self.unauth_max.get(),
        }
    }

    /// Puts `limits` into effect; answers whether `max` changed. Raising it
    /// lets clients waiting in the backlog in at once; lowering it disconnects
    /// nobody.
    pub fn set_limits(&self, limits: ClientLimits) -> bool {
        self.unauth_max.set(limits.unauth_max);
        let changed = self.gate.max() != limits.max;
        if changed {
            self.gate.set_max(limits.max);
        }
        changed
    }
}

pub struct AdminState {
    pub clients: ClientTable,
    pub lock: ServerSettings,
    pub admin: ServerSettings,
    pub lockspaces: LockspaceTable,
    pub leases: LeaseCount,
    pub info: DaemonInfo,
}

impl AdminState {
    pub fn server(&self, server: Server) -> &ServerSettings {
        match server {
            Server::Lock => &self.lock,
            Server::Admin => &self.admin,
        }
    }
}

/// The two servers, as srv-list shows them (libvirt's hash order).
pub const SERVERS: [Server; 2] = [Server::Admin, Server::Lock];

/// A server by its admin-API name.
pub fn server_named(name: &str) -> Option<Server> {
    SERVERS.into_iter().find(|s| s.name() == name)
}
