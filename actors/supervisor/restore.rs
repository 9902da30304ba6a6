//! The supervisor's half of every restore (see `crate::restore` for where
//! the state comes from: a live upgrade, libvirt's daemon, or the crash-safe
//! store): the lockspaces rebuilt from the snapshot's fds on a thread of
//! their own, then listeners, server settings, fencing, and the clients in
//! batches, those with a request waiting first.

use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tracing::{debug, error, info, warn};

use super::{Listening, Server, Supervisor};
use crate::actors::adopt::{adopt_listener, adopt_stream};
use crate::actors::fence;
use crate::actors::gate::Slot;
use crate::actors::rpc::Peer;
use crate::client_limits::ClientLimits;
use crate::first_come::FirstCome;
use crate::lockspace::lease::Storage;
use crate::lockspace::LockSpace;
use crate::names::lossy_utf8;
use crate::protocol::lock::Owner;
use crate::session::Session;
use crate::state::{ClientState, Snapshot, ADMIN_SERVER, LOCK_SERVER};

/// Clients rebuilt per turn of the event loop after a live upgrade: small
/// enough that a client with a request waiting is not kept waiting behind
/// thousands of idle ones.
const RESTORE_BATCH: usize = 128;

/// Up to this many lock clients, the restore finds the ones with a request
/// waiting with a poll() before it rebuilds any (~1 us a socket here, beside
/// the lease table's rebuild). Beyond, the poll runs on a thread and the
/// rebuild starts in the old image's order, the clients it saw active first.
const SYNC_POLL_LIMIT: usize = 1024;

/// The lockspaces' rebuild, offered to a thread of its own.
type LockspaceRebuild =
    FirstCome<Box<dyn FnOnce() -> (Vec<LockSpace>, Duration) + Send>, (Vec<LockSpace>, Duration)>;

/// The state a live upgrade left, its lockspaces already being rebuilt on a
/// thread of their own from the moment it was read (see `Restored::start`).
pub struct Restored {
    /// Without its lockspaces (on the thread).
    snapshot: Snapshot,
    storage: Vec<Storage>,
    lockspaces: LockspaceRebuild,
    began: Instant,
}

impl Restored {
    /// Starts adopting the lease fds (thousands of table entries) at once, so
    /// that the rest of the start-up runs beside it; if no CPU was free for
    /// that by the time the supervisor needs them, it adopts them itself.
    pub fn start(mut snapshot: Snapshot, storage: Vec<Storage>) -> Self {
        let began = Instant::now();
        let states = std::mem::take(&mut snapshot.lockspaces);
        let lockspaces: LockspaceRebuild = FirstCome::spawn(
            "restore-leases",
            Box::new(move || {
                let spaces = states
                    .into_iter()
                    .map(LockSpace::restore)
                    .collect::<Vec<_>>();
                (spaces, began.elapsed())
            }),
        );
        Self {
            snapshot,
            storage,
            lockspaces,
            began,
        }
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }
}

impl Supervisor {
    /// Rebuilds lockspaces, listeners and clients from a live-upgrade snapshot.
    pub(super) fn restore(&mut self, restored: Restored, ctx: &mut Context<Self>) {
        let Restored {
            snapshot,
            storage,
            lockspaces,
            began: t0,
        } = restored;
        // The inherited fds stay without FD_CLOEXEC: the next upgrade keeps
        // them as they are (see `handoff::keep_across_exec`).
        self.restore_began = Some(t0);
        self.stale_fds = snapshot.stale_fds;
        let entered = t0.elapsed();
        let mut queue = Vec::new();
        for srv in snapshot.servers {
            let server = match srv.name.as_str() {
                LOCK_SERVER => Server::Lock,
                ADMIN_SERVER => Server::Admin,
                other => {
                    warn!(server = other, "unknown server in restart state; ignored");
                    continue;
                }
            };
            self.next_client_id
                .insert(server, srv.next_client_id.max(1));
            let settings = self.admin_state.server(server);
            settings.set_limits(ClientLimits::restored(
                srv.max_clients,
                srv.max_unauth_clients,
            ));
            if let Some(prio) = srv.prio_workers {
                settings.prio_workers.set(prio);
            }
            for l in srv.listeners {
                match adopt_listener(&l) {
                    Ok(listener) => self.listeners.push(Listening {
                        server,
                        listener: Rc::new(listener),
                        unlink: l.unlink,
                    }),
                    Err(e) => error!(fd = l.fd, error = %e, "cannot adopt listener"),
                }
            }
            for c in srv.clients {
                // Taken now: the gate counts every client from the start.
                let slot = self.gate(server).take();
                queue.push((server, c, slot));
            }
        }
        let servers_done = t0.elapsed();
        let waiting = self.queue_restored_clients(queue, ctx);
        let clients_done = t0.elapsed();
        match lockspaces.result() {
            Some((spaces, leases_done)) => {
                debug!(
                    entered_ms = entered.as_secs_f64() * 1e3,
                    servers_ms = servers_done.as_secs_f64() * 1e3,
                    clients_ms = clients_done.as_secs_f64() * 1e3,
                    leases_ms = leases_done.as_secs_f64() * 1e3,
                    "restore timing"
                );
                // A state may name one directory twice (libvirt keeps the first
                // and drops the rest, with their locks): merge them.
                let mut merged: Vec<(LockSpace, Storage)> = Vec::new();
                for (space, storage) in spaces.into_iter().zip(storage) {
                    match merged.iter_mut().find(|(m, _)| m.key() == space.key()) {
                        Some((m, _)) => m.absorb(space),
                        None => merged.push((space, storage)),
                    }
                }
                for (space, storage) in merged {
                    let key = space.key().to_vec();
                    let leases = space.len();
                    let addr = self.start_lockspace(space, storage);
                    self.lockspaces.insert_new(key.clone(), addr);
                    info!(lockspace = %lossy_utf8(&key), leases, "lockspace restored");
                }
            }
            None => error!("restoring the lockspaces failed; their leases are lost"),
        }
        if let Some(secs) = snapshot.timeout {
            self.idle.set_secs(secs);
        }
        // Every lockspace exists now: clients may be served. The ones with a
        // request waiting come first, on their own, so that the event loop
        // serves them next; the rest follow in batches between which the
        // event loop serves them.
        self.restore_clients(if waiting > 0 { waiting } else { RESTORE_BATCH }, ctx);
        for f in snapshot.fencing {
            if let Some(fencing) = self.lockspace_shared.fencing.start(f.pid, &f.label) {
                fence::spawn(fencing);
            }
        }
        debug!(
            restore_ms = t0.elapsed().as_secs_f64() * 1e3,
            at_us = crate::clock::epoch_micros(),
            "restored"
        );
    }

    /// Orders the clients a live upgrade left for the batched restore: lock
    /// clients with a request waiting (readable socket, or a request partly
    /// read before the exec) first, the other lock clients next, admin clients
    /// last, so that whatever an admin client asks about the lock clients is
    /// only answered once every one of them is back. Returns how many have a
    /// request waiting (0 when a thread is still looking).
    fn queue_restored_clients(
        &mut self,
        clients: Vec<(Server, ClientState, Slot)>,
        ctx: &mut Context<Self>,
    ) -> usize {
        let (lock, admin): (Vec<_>, Vec<_>) = clients
            .into_iter()
            .partition(|(s, _, _)| *s == Server::Lock);
        let fds: Vec<i32> = lock.iter().map(|(_, c, _)| c.fd).collect();
        if fds.len() > SYNC_POLL_LIMIT {
            // The snapshot's order (the clients quiesced in a request and
            // those active lately first), those with a request partly read
            // before all; the poll's answer moves the others with a request
            // waiting ahead of what is still queued (`Readable`).
            let (partial, rest): (Vec<_>, Vec<_>) = lock
                .into_iter()
                .partition(|(_, c, _)| !c.pending.is_empty());
            self.restoring
                .extend(partial.into_iter().chain(rest).chain(admin));
            let supervisor = ctx.address();
            std::thread::spawn(move || {
                let t = Instant::now();
                let waiting = readable(&fds);
                let ready: Vec<i32> = fds
                    .into_iter()
                    .zip(waiting)
                    .filter_map(|(fd, ready)| ready.then_some(fd))
                    .collect();
                debug!(
                    ms = t.elapsed().as_secs_f64() * 1e3,
                    ready = ready.len(),
                    "polled beside the restore"
                );
                supervisor.do_send(Readable(ready));
            });
            return 0;
        }
        let t = Instant::now();
        let waiting = readable(&fds);
        debug!(
            ms = t.elapsed().as_secs_f64() * 1e3,
            fds = fds.len(),
            "polled"
        );
        let (mut busy, idle): (Vec<_>, Vec<_>) = lock
            .into_iter()
            .zip(waiting)
            .partition(|((_, c, _), ready)| *ready || !c.pending.is_empty());
        let waiting = busy.len();
        busy.extend(idle);
        self.restoring
            .extend(busy.into_iter().map(|(client, _)| client).chain(admin));
        waiting
    }

    /// Moves the queued lock clients whose socket had something to read ahead
    /// of the other queued ones.
    fn promote_readable(&mut self, ready: Vec<i32>) {
        if ready.is_empty() || self.restoring.is_empty() {
            return;
        }
        let ready: std::collections::HashSet<i32> = ready.into_iter().collect();
        let (first, rest): (std::collections::VecDeque<_>, std::collections::VecDeque<_>) = self
            .restoring
            .drain(..)
            .partition(|(s, c, _)| *s == Server::Lock && ready.contains(&c.fd));
        self.restoring = first;
        self.restoring.extend(rest);
    }

    /// Rebuilds the next `batch` restored clients, and schedules the next
    /// batch after the event loop had its turn; accepting resumes after the last
    /// one (the gate already counts every restored client).
    fn restore_clients(&mut self, batch: usize, ctx: &mut Context<Self>) {
        let batch = self.restoring.len().min(batch);
        let clients: Vec<_> = self.restoring.drain(..batch).collect();
        for (server, c, slot) in clients {
            self.restore_client(server, c, slot, ctx);
        }
        if !self.restoring.is_empty() {
            ctx.spawn(
                actix::fut::wrap_future(tokio::task::yield_now())
                    .map(|(), act: &mut Self, ctx| act.restore_clients(RESTORE_BATCH, ctx)),
            );
        } else if let Some(began) = self.restore_began.take() {
            debug!(
                ms = began.elapsed().as_secs_f64() * 1e3,
                at_us = crate::clock::epoch_micros(),
                "every client restored"
            );
            if !self.upgrading && !self.shutting_down && self.accepting.is_empty() {
                self.start_accepting(ctx);
            }
            crate::actors::handoff::close_stale_later(
                std::mem::take(&mut self.stale_fds),
                self.connections.len(),
            );
        }
    }

    /// Rebuilds every client still waiting at once: what a new upgrade or a
    /// shutdown is about to act on must all be there.
    pub(super) fn finish_restoring_clients(&mut self, ctx: &mut Context<Self>) {
        let clients: Vec<_> = self.restoring.drain(..).collect();
        if !clients.is_empty() {
            info!(
                clients = clients.len(),
                "rebuilding the restored clients still waiting at once"
            );
        }
        for (server, c, slot) in clients {
            self.restore_client(server, c, slot, ctx);
        }
        self.restore_began = None;
        // Now, not on a thread an exec could cut short.
        crate::actors::handoff::close_stale_later(std::mem::take(&mut self.stale_fds), 0);
    }

    fn restore_client(
        &mut self,
        server: Server,
        c: ClientState,
        slot: Slot,
        ctx: &mut Context<Self>,
    ) {
        let stream = match adopt_stream(c.fd) {
            Ok(s) => s,
            Err(e) => {
                warn!(client = c.id, fd = c.fd, error = %e, "client lost in the upgrade");
                return;
            }
        };
        // Our snapshot carries the credentials of connect time; for
        // libvirt's state, SO_PEERCRED (kept by the kernel) tells them.
        let peer = match (c.peer_pid, c.peer_ids) {
            (Some(pid), Some((uid, gid))) => Peer { pid, uid, gid },
            (pid, _) => {
                let mut peer = Peer::of(&stream).unwrap_or(Peer {
                    pid: -1,
                    uid: self.euid,
                    gid: 0,
                });
                if let Some(pid) = pid {
                    peer.pid = pid;
                }
                peer
            }
        };
        self.launch(server, peer, stream, slot, Some(c), ctx);
    }
}

pub(super) fn restore_session(s: Option<crate::state::SessionState>) -> Session {
    let s = s.unwrap_or_default();
    let owner = s.owner.map(|o| Owner {
        uuid: o.uuid,
        name: o.name,
        id: o.id,
        pid: o.pid,
    });
    Session::restored(owner, s.restricted)
}

/// Which of `fds` have something to read (a request, or a hang-up), with one
/// poll() for all of them; all false if the poll fails (the order is then
/// only less useful).
fn readable(fds: &[i32]) -> Vec<bool> {
    let mut polled: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `polled` is a valid array of `polled.len()` pollfd entries; a
    // zero timeout never blocks; the fds are only looked at.
    let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, 0) };
    if n <= 0 {
        return vec![false; fds.len()];
    }
    polled.iter().map(|p| p.revents != 0).collect()
}

/// The restored lock clients whose socket had something to read, found by a
/// poll on a thread while the restore went on (see `SYNC_POLL_LIMIT`).
#[derive(Message)]
#[rtype(result = "()")]
struct Readable(Vec<i32>);

impl Handler<Readable> for Supervisor {
    type Result = ();
    fn handle(&mut self, m: Readable, _: &mut Self::Context) {
        self.promote_readable(m.0);
    }
}
