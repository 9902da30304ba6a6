//! The lock engine, free of actors and sockets: a lockspace's resource table, its
//! owners, shared and exclusive leases, AUTOCREATE files and the race checks that
//! make them safe. Semantics follow libvirt's `virlockspace.c` (spec §6), with the
//! fixes listed in README's compatibility section.
//!
//! The kernel does not report conflicts between two fds of one process, so inside
//! the daemon this table is the only arbiter between owners; the fcntl lock on each
//! lease file is what other hosts and processes see.

pub mod error;
pub mod inspect;
pub mod lease;
pub mod owners;
pub mod revalidate;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::warn;

use crate::names::lossy_utf8;
pub use error::LockError;
use lease::{is_conflict, Lease, LockMode, OpenError, PathKind, Spare};
pub use owners::Owners;
pub use revalidate::{LeaseStatus, Loss, LossCause};

use crate::protocol::lock::{Owner, ACQUIRE_AUTOCREATE, ACQUIRE_SHARED};

/// A lock owner: the pid a client registered (normally QEMU's), not the pid of
/// the connection that made the call.
pub type OwnerPid = i32;

/// How often AUTOCREATE retries when the file is unlinked or replaced between our
/// open and our lock. libvirt retries forever; a hostile process could then spin
/// the lockspace, so we stop and report the resource busy.
const MAX_AUTOCREATE_RETRIES: usize = 64;

/// One held resource: its lease fd (exactly one per resource) and its owners.
/// Its file's path is not kept: it is the lockspace's directory and the name
/// (see [`LockSpace::path_of`]), computed when needed, which is rarely.
#[derive(Debug)]
pub struct Resource {
    lease: Lease,
    /// `ACQUIRE_SHARED` / `ACQUIRE_AUTOCREATE` as given by the first acquirer.
    pub flags: u32,
    /// One entry per acquisition; a shared resource may list an owner twice.
    pub owners: Owners,
    /// Seconds since the epoch (all that is ever shown of it): 8 bytes, not
    /// a `SystemTime`'s 16, in every lease record.
    pub acquired_at: i64,
    /// Held, or lost (see [`revalidate`]).
    pub status: LeaseStatus,
    /// Whether the lease file is on network storage and so is revalidated;
    /// found out (fstatfs) at its first check.
    checked: Option<bool>,
    /// Consecutive checks that failed with an error of the filesystem (see
    /// [`revalidate`]); reset by a check that succeeds. Never more than
    /// [`revalidate::FAILED_CHECKS_FOR_LOSS`]; a u16 keeps the record at 80
    /// bytes.
    failures: u16,
}

impl Resource {
    pub fn shared(&self) -> bool {
        self.flags & ACQUIRE_SHARED != 0
    }

    pub fn autocreate(&self) -> bool {
        self.flags & ACQUIRE_AUTOCREATE != 0
    }

    pub fn fd(&self) -> std::os::fd::RawFd {
        self.lease.raw_fd()
    }

    /// Ends the lease: AUTOCREATE files are unlinked *before* the fd is closed, so
    /// that a racing acquirer's inode re-check sees the file go. A shared lease only
    /// deletes the file if nobody else (another host or process) still shares it.
    ///
    /// `journal` runs after the file is gone and before the lock ends: a crash
    /// before it finds the lease still held (its file maybe gone, which the
    /// next release tolerates), a crash after it finds the lease released.
    ///
    /// In crash-safe mode the open file of a lease whose file stays (not
    /// AUTOCREATE) comes back as a [`Spare`] for the next acquire of the name.
    ///
    /// `path` is built only when needed (a lost or AUTOCREATE lease): most
    /// releases need no path, and the release path allocates nothing for it.
    fn free(self, path: impl FnOnce() -> PathBuf, journal: impl FnOnce()) -> Option<Spare> {
        if self.status.is_lost() {
            let path = path();
            // The lock is gone and another host may hold the file now: unlinking
            // it would let a third one lock a new file of the same name.
            warn!(path = %path.display(), "lost lease released; its file is left in place");
            journal();
            self.close();
            return None;
        }
        if self.autocreate() {
            let path = path();
            let sole_holder = !self.shared() || self.lease.lock(LockMode::Exclusive).is_ok();
            if sole_holder {
                if let Err(e) = lease::remove(&path) {
                    warn!(path = %path.display(), error = %e, "cannot delete lease file");
                }
            }
            journal();
            self.close();
            return None;
        }
        journal();
        // The lock ends before the record reaches the store (at the next
        // flush, before the reply): a crash in between finds the lease still
        // held, re-takes its lock, and closes the releasing connection, whose
        // RELEASE was never acknowledged.
        self.lease.retire()
    }

    fn close(self) {
        discard(self.lease);
    }

    /// Why and since when (epoch seconds) the lease is lost, as the state
    /// carries it: `(None, 0)` while held.
    fn loss(&self) -> (Option<String>, i64) {
        match &self.status {
            LeaseStatus::Held => (None, 0),
            LeaseStatus::Lost(l) => (
                Some(l.cause.to_string()),
                crate::clock::epoch_seconds(l.since),
            ),
        }
    }

    /// The resource as a live upgrade encodes it in place (see
    /// [`LockSpace::encode_state`]): [`Resource::state`] without the copies.
    fn view<'a>(&'a self, name: &'a [u8]) -> crate::state::encoded::ResourceView<'a> {
        let (lost_reason, lost_since) = self.loss();
        crate::state::encoded::ResourceView {
            name,
            path: b"",
            fd: self.fd(),
            lock_held: !self.status.is_lost(),
            flags: self.flags,
            owners: &self.owners,
            acquired_at: self.acquired_at,
            lost_reason,
            lost_since,
            file_id: self.lease.file_id(),
            ofd: self.lease.is_ofd(),
            tag: self.lease.tag(),
        }
    }

    /// The resource as a live upgrade or the crash journal carries it (no
    /// path: the name makes it).
    fn state(&self, name: &[u8]) -> crate::state::ResourceState {
        self.view(name).to_state()
    }
}

/// One lockspace: the default one (resource name = file path) or a directory.
#[derive(Debug)]
pub struct LockSpace {
    /// The directory exactly as the client named it; `None` for the default lockspace.
    dir: Option<Vec<u8>>,
    resources: HashMap<Box<[u8]>, Resource>,
    /// What each owner holding something here registered (name, UUID, domain
    /// id), with the number of its ownership entries, for inspection. Counted so
    /// that a release never has to scan the table.
    owners: HashMap<OwnerPid, OwnerEntry>,
    /// Open files of recently released leases (crash-safe mode; see [`Spare`]).
    spares: HashMap<Box<[u8]>, Spare>,
}

/// An owner's registration details and how many ownership entries it has here.
#[derive(Debug, Default)]
struct OwnerEntry {
    details: Option<Arc<Owner>>,
    entries: usize,
}

impl LockSpace {
    /// The default lockspace: resource names are file paths.
    pub fn default_space() -> Self {
        Self {
            dir: None,
            resources: HashMap::new(),
            owners: HashMap::new(),
            spares: HashMap::new(),
        }
    }

    /// A directory lockspace; the directory must exist (see [`create_directory`]).
    pub fn directory(dir: Vec<u8>) -> Self {
        Self {
            dir: Some(dir),
            resources: HashMap::new(),
            owners: HashMap::new(),
            spares: HashMap::new(),
        }
    }

    /// The key clients use for this lockspace (`""` for the default one).
    pub fn key(&self) -> &[u8] {
        self.dir.as_deref().unwrap_or(b"")
    }

    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.resources.values()
    }

    pub fn len(&self) -> usize {
        self.resources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// Journals `name` as it is now (crash-safe mode; nothing otherwise),
    /// with the store's next flush, which comes before any reply.
    fn journal(&self, name: &[u8]) -> Result<(), crate::crash::CrashError> {
        if !crate::crash::active() {
            return Ok(());
        }
        crate::crash::defer(None, &[self.resource_entry(name)])
    }

    fn resource_entry(&self, name: &[u8]) -> crate::crash::Entry {
        let tag = self.resources.get(name).map_or(0, |r| r.lease.tag());
        self.resource_entry_tagged(name, tag)
    }

    fn resource_entry_tagged(&self, name: &[u8], tag: u64) -> crate::crash::Entry {
        crate::crash::Entry::Resource {
            lockspace: self.key().to_vec(),
            name: name.to_vec(),
            held: self
                .resources
                .get(name)
                // Neither name nor path inside: the entry names the resource,
                // the restore derives the path from lockspace and name, and
                // the journal is written on every acquire and release.
                .map(|r| (tag, r.state(b""))),
        }
    }

    /// Journals that `name` is freed; a failure is logged (the release itself
    /// cannot be undone).
    fn journal_freed(key: &[u8], name: &[u8]) {
        crate::failpoint::crash_point("release:file-removed");
        if crate::crash::active() {
            let freed = crate::crash::Entry::Resource {
                lockspace: key.to_vec(),
                name: name.to_vec(),
                held: None,
            };
            if let Err(e) = crate::crash::defer(None, &[freed]) {
                tracing::error!(error = %e, "lease release not journaled; a crash now would bring it back");
            }
        }
    }

    /// Journals a change of `name` nobody can be told of (logged on failure).
    fn journal_or_log(&self, name: &[u8]) {
        if let Err(e) = self.journal(name) {
            tracing::error!(error = %e, resource = %lossy_utf8(name), "lease change not journaled; a crash now would lose it");
        }
    }

    /// The journal record of what `o` registered, as an owner here.
    fn owner_entry(&self, o: &Owner) -> crate::crash::Entry {
        crate::crash::Entry::Owner {
            lockspace: self.key().to_vec(),
            owner: crate::state::OwnerState {
                uuid: o.uuid,
                name: o.name.clone(),
                id: o.id,
                pid: o.pid,
            },
        }
    }

    /// Tags the new lease of resource `name`, parks it and journals it, with
    /// the store's next flush (crash-safe mode; nothing otherwise).
    fn park_and_journal(&mut self, name: &[u8]) -> Result<(), crate::crash::CrashError> {
        if !crate::crash::active() {
            return Ok(());
        }
        let Some(fd) = self.resources.get(name).map(Resource::fd) else {
            return Ok(());
        };
        let tag = crate::crash::defer_new_lease(fd, |tag| self.resource_entry_tagged(name, tag))?;
        if let Some(res) = self.resources.get_mut(name) {
            res.lease.set_tag(tag);
        }
        Ok(())
    }

    /// Keeps the open file of a released lease for the next acquire of `name`.
    fn keep_spare(&mut self, name: &[u8], spare: Option<Spare>) {
        let Some(spare) = spare else { return };
        if self.spares.len() >= MAX_SPARES {
            // Any one goes: a host re-takes few leases soon after release.
            if let Some(old) = self.spares.keys().next().cloned() {
                self.spares.remove(&old);
            }
        }
        self.spares.insert(name.into(), spare);
    }

    /// The released lease of `name` taken up again, locked, if its file is
    /// still the one at `path`; `Ok(None)` if there is none to take up.
    fn revive_spare(
        &mut self,
        name: &[u8],
        path: &Path,
        mode: LockMode,
    ) -> Result<Option<Lease>, LockError> {
        let Some(spare) = self.spares.remove(name) else {
            return Ok(None);
        };
        let Ok(lease) = spare.revive() else {
            return Ok(None);
        };
        if let Err(e) = lock(&lease, path, name, mode) {
            // Held by somebody else: busy, as a fresh open would find it.
            let spare = lease.retire();
            self.keep_spare(name, spare);
            return Err(e);
        }
        match lease.is_at(path) {
            Ok(true) => Ok(Some(lease)),
            // Replaced or removed since: not the file the name names now.
            _ => {
                discard(lease);
                Ok(None)
            }
        }
    }

    /// The file of resource `name`: see [`path_in`].
    pub fn path_of(&self, name: &[u8]) -> PathBuf {
        path_in(self.dir.as_deref(), name)
    }

    /// Refuses names that are not a single file inside the directory. libvirt lets
    /// `../x` escape the lockspace (with root privileges); we do not.
    fn check_name(&self, name: &[u8]) -> Result<(), LockError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
            return Err(LockError::InvalidName {
                name: lossy_utf8(name),
                dir: lossy_utf8(dir),
            });
        }
        Ok(())
    }

    /// ACQUIRE (spec §6.4) on behalf of `owner`.
    pub fn acquire(&mut self, name: &[u8], owner: OwnerPid, flags: u32) -> Result<(), LockError> {
        self.acquire_as(name, owner, flags, None)
    }

    /// ACQUIRE, remembering what the owner registered (shown by inspection).
    pub fn acquire_as(
        &mut self,
        name: &[u8],
        owner: OwnerPid,
        flags: u32,
        details: Option<Arc<Owner>>,
    ) -> Result<(), LockError> {
        self.take(name, owner, flags)?;
        let entry = self.owners.entry(owner).or_default();
        entry.entries += 1;
        let first = entry.entries == 1;
        if details.is_some() {
            entry.details = details;
        }
        if first && crate::crash::active() {
            if let Some(o) = self.owners.get(&owner).and_then(|e| e.details.as_deref()) {
                if let Err(e) = crate::crash::defer(None, &[self.owner_entry(o)]) {
                    tracing::error!(error = %e, "owner details not journaled");
                }
            }
        }
        Ok(())
    }

    /// One fewer ownership entry of `owner`.
    fn forget_one(&mut self, owner: OwnerPid) {
        if let Some(e) = self.owners.get_mut(&owner) {
            e.entries = e.entries.saturating_sub(1);
            if e.entries == 0 {
                self.owners.remove(&owner);
            }
        }
    }

    /// What `owner` registered, if it holds something here and we know it.
    pub fn owner_details(&self, owner: OwnerPid) -> Option<&Arc<Owner>> {
        self.owners.get(&owner).and_then(|e| e.details.as_ref())
    }

    fn take(&mut self, name: &[u8], owner: OwnerPid, flags: u32) -> Result<(), LockError> {
        self.check_name(name)?;
        let want_shared = flags & ACQUIRE_SHARED != 0;
        if let Some(res) = self.resources.get_mut(name) {
            if res.shared() && want_shared && !res.status.is_lost() {
                res.owners.push(owner);
                if let Err(e) = self.journal(name) {
                    // Not safe from a crash: undo, and fail the request.
                    if let Some(res) = self.resources.get_mut(name) {
                        res.owners.pop();
                    }
                    return Err(LockError::CrashStore(e.to_string()));
                }
                return Ok(());
            }
            return Err(LockError::Busy(lossy_utf8(name)));
        }
        let path = self.path_of(name);
        let mode = if want_shared {
            LockMode::Shared
        } else {
            LockMode::Exclusive
        };
        let revived = if flags & ACQUIRE_AUTOCREATE == 0 {
            self.revive_spare(name, &path, mode)?
        } else {
            None
        };
        let was_parked = revived.is_some();
        let lease = if let Some(lease) = revived {
            lease
        } else if flags & ACQUIRE_AUTOCREATE != 0 {
            acquire_autocreate(&path, name, mode)?
        } else {
            let lease = Lease::open_existing(&path).map_err(|e| match e {
                OpenError::Sys(errno) => LockError::Open {
                    path: path.display().to_string(),
                    errno,
                },
                OpenError::HeldElsewhere => LockError::Busy(lossy_utf8(name)),
            })?;
            lock(&lease, &path, name, mode)?;
            lease
        };
        self.resources.insert(
            name.into(),
            Resource {
                lease,
                flags,
                owners: Owners::one(owner),
                acquired_at: crate::clock::now_epoch_seconds(),
                status: LeaseStatus::Held,
                checked: None,
                failures: 0,
            },
        );
        // Parked before journaled: a crash in between leaves a parked lease the
        // journal does not name, which the restore releases (the request was
        // never answered, and its connection is closed).
        crate::failpoint::crash_point("acquire:locked");
        let deferred = if was_parked {
            self.journal(name)
        } else {
            self.park_and_journal(name)
        };
        if let Err(e) = deferred {
            if let Some(res) = self.resources.remove(name) {
                res.close();
            }
            return Err(LockError::CrashStore(e.to_string()));
        }
        Ok(())
    }

    /// RELEASE (spec §6.5): drops one ownership entry of `owner`.
    pub fn release(&mut self, name: &[u8], owner: OwnerPid) -> Result<(), LockError> {
        let res = self
            .resources
            .get_mut(name)
            .ok_or_else(|| LockError::NotLocked(lossy_utf8(name)))?;
        let idx = res
            .owners
            .iter()
            .position(|&o| o == owner)
            .ok_or(LockError::NotOwner(owner as i64))?;
        res.owners.remove(idx);
        if res.owners.is_empty() {
            if let Some(res) = self.resources.remove(name) {
                let key = self.key();
                let dir = self.dir.as_deref();
                let spare = res.free(|| path_in(dir, name), || Self::journal_freed(key, name));
                self.keep_spare(name, spare);
            }
        } else {
            self.journal_or_log(name);
        }
        self.forget_one(owner);
        Ok(())
    }

    /// Release on disconnect (spec §6.6): removes **every** entry of `owner` (libvirt
    /// removes one per resource and leaks duplicates of shared leases). Returns the
    /// names released, so the caller can log them and decide on fencing.
    pub fn release_owner(&mut self, owner: OwnerPid) -> Vec<Vec<u8>> {
        let mut released = Vec::new();
        let mut emptied = Vec::new();
        for (name, res) in self.resources.iter_mut() {
            let before = res.owners.len();
            res.owners.retain(|o| *o != owner);
            if res.owners.len() != before {
                released.push(name.to_vec());
                if res.owners.is_empty() {
                    emptied.push(name.to_vec());
                }
            }
        }
        for name in &released {
            if !emptied.contains(name) {
                self.journal_or_log(name);
            }
        }
        for name in emptied {
            if let Some(res) = self.resources.remove(name.as_slice()) {
                let key = self.key();
                let dir = self.dir.as_deref();
                let spare = res.free(|| path_in(dir, &name), || Self::journal_freed(key, &name));
                self.keep_spare(&name, spare);
            }
        }
        self.owners.remove(&owner);
        released
    }

    /// Closes the spare open files of released leases (a cache, see
    /// [`Spare`]). A live upgrade does this before it writes the state: lease
    /// fds are not close-on-exec, so a spare would pass to the new image
    /// without anything there that knows of it.
    pub fn close_spares(&mut self) {
        self.spares.clear();
    }

    /// The table as a live upgrade carries it (fds by number; they stay open).
    /// Without paths: each is the directory and the name, and a live upgrade
    /// waits for every byte encoded and decoded (libvirt's JSON writer puts
    /// them back).
    pub fn state(&self) -> crate::state::LockspaceState {
        crate::state::LockspaceState {
            directory: self.dir.clone(),
            resources: self
                .resources
                .iter()
                .map(|(name, r)| r.state(name))
                .collect(),
            owners: self.owner_states(),
        }
    }

    /// [`LockSpace::state`] encoded straight from the lease table (live
    /// upgrade): the same bytes, without a copy of every lease first.
    pub fn encode_state(
        &self,
    ) -> Result<crate::state::encoded::EncodedLockspace, crate::state::StateError> {
        crate::state::encoded::EncodedLockspace::encode(
            self.dir.clone(),
            self.resources.iter().map(|(name, r)| r.view(name)),
            &self.owner_states(),
            self.resources.values().map(Resource::fd).collect(),
        )
    }

    fn owner_states(&self) -> Vec<crate::state::OwnerState> {
        self.owners
            .values()
            .filter_map(|e| e.details.as_deref())
            .map(|o| crate::state::OwnerState {
                uuid: o.uuid,
                name: o.name.clone(),
                id: o.id,
                pid: o.pid,
            })
            .collect()
    }

    /// Rebuilds the owner counts from the table, keeping known details.
    fn recount(&mut self) {
        let mut counts: HashMap<OwnerPid, OwnerEntry> = HashMap::new();
        for r in self.resources.values() {
            for &o in &r.owners {
                counts.entry(o).or_default().entries += 1;
            }
        }
        for (pid, e) in counts.iter_mut() {
            e.details = self.owners.get(pid).and_then(|old| old.details.clone());
        }
        self.owners = counts;
    }

    /// Rebuilds a lockspace from a live-upgrade state, adopting its fds. A
    /// resource whose fd is not open is dropped (and logged): its lock is gone.
    /// The fds stay without FD_CLOEXEC, as every lease fd is.
    pub fn restore(state: crate::state::LockspaceState) -> Self {
        let fds: Vec<_> = state
            .resources
            .iter()
            .map(|r| (r.fd, r.file_id, r.ofd))
            .collect();
        let leases = Lease::adopt_all(&fds);
        let mut resources = HashMap::with_capacity(state.resources.len());
        for (r, lease) in state.resources.into_iter().zip(leases) {
            let mut lease = match lease {
                Ok(l) => l,
                // A lease lost before the upgrade, on a filesystem that now fails
                // every call: kept (as lost) until its owner releases it.
                Err(e) if !r.lock_held && e != nix::errno::Errno::EBADF => {
                    match Lease::adopt_unidentified(r.fd) {
                        Ok(l) => l,
                        Err(e) => {
                            warn!(resource = %lossy_utf8(&r.name), fd = r.fd, error = %e, "lost lease's fd gone in the upgrade; dropped");
                            continue;
                        }
                    }
                }
                Err(e) => {
                    warn!(resource = %lossy_utf8(&r.name), fd = r.fd, error = %e, "lease fd lost in the upgrade; dropped");
                    continue;
                }
            };
            lease.set_tag(r.tag);
            // Our snapshots carry no path (the name makes it): no path is
            // built per lease then, while every client waits.
            let path = (!r.path.is_empty()).then(|| path_in(state.directory.as_deref(), &r.name));
            if let Some(path) = path.filter(|p| p.as_os_str().as_bytes() != r.path.as_slice()) {
                // libvirt and we both make it so; a state that says otherwise
                // is not ours to trust: the file is where the name says.
                warn!(
                    resource = %lossy_utf8(&r.name),
                    state_path = %lossy_utf8(&r.path),
                    path = %path.display(),
                    "lease path in the restart state differs from its lockspace and name; using the latter"
                );
            }
            let acquired_at = r.acquired_at.max(0);
            resources.insert(
                r.name.into_boxed_slice(),
                Resource {
                    lease,
                    flags: r.flags,
                    owners: Owners::from_vec(r.owners),
                    acquired_at,
                    status: if r.lock_held {
                        LeaseStatus::Held
                    } else {
                        LeaseStatus::restored_lost(r.lost_reason, r.lost_since)
                    },
                    checked: None,
                    failures: 0,
                },
            );
        }
        let mut space = Self {
            dir: state.directory,
            resources,
            owners: HashMap::new(),
            spares: HashMap::new(),
        };
        for o in state.owners {
            space.owners.entry(o.pid as OwnerPid).or_default().details = Some(Arc::new(Owner {
                uuid: o.uuid,
                name: o.name,
                id: o.id,
                pid: o.pid,
            }));
        }
        space.recount();
        space
    }

    /// Takes over the resources of a restored duplicate of this lockspace. A
    /// name held in both keeps its first entry; the other's lease stays open
    /// (parked with the file) so that no lock is dropped.
    pub fn absorb(&mut self, other: LockSpace) {
        for (name, res) in other.resources {
            match self.resources.get_mut(&name) {
                Some(kept) => {
                    kept.owners.extend(res.owners.iter().copied());
                    // Same file, held by `kept`: dropping this lease parks its
                    // fd instead of closing it (see `Lease`'s Drop).
                    drop(res.lease);
                }
                None => {
                    self.resources.insert(name, res);
                }
            }
        }
        for (pid, e) in other.owners {
            let mine = self.owners.entry(pid).or_default();
            if mine.details.is_none() {
                mine.details = e.details;
            }
        }
        self.recount();
    }

    /// Frees every resource (daemon shutdown); returns their names.
    pub fn release_all(&mut self) -> Vec<Vec<u8>> {
        self.owners.clear();
        let key = self.key().to_vec();
        let dir = self.dir.as_deref();
        self.spares.clear();
        self.resources
            .drain()
            .map(|(name, res)| {
                drop(res.free(|| path_in(dir, &name), || Self::journal_freed(&key, &name)));
                name.into_vec()
            })
            .collect()
    }

    /// CREATE_RESOURCE: touch the file (mode 0600) unless the name is held.
    pub fn create_resource(&mut self, name: &[u8]) -> Result<(), LockError> {
        self.check_name(name)?;
        if self.resources.contains_key(name) {
            return Err(LockError::Busy(lossy_utf8(name)));
        }
        let path = self.path_of(name);
        lease::touch(&path).map_err(|errno| LockError::CreateFile {
            path: path.display().to_string(),
            errno,
        })
    }

    /// DELETE_RESOURCE: unlink the file unless the name is held; missing is fine.
    pub fn delete_resource(&mut self, name: &[u8]) -> Result<(), LockError> {
        self.check_name(name)?;
        if self.resources.contains_key(name) {
            return Err(LockError::Busy(lossy_utf8(name)));
        }
        let path = self.path_of(name);
        lease::remove(&path).map_err(|errno| LockError::Delete {
            path: path.display().to_string(),
            errno,
        })
    }
}

fn lock(lease: &Lease, path: &Path, name: &[u8], mode: LockMode) -> Result<(), LockError> {
    lease.lock(mode).map_err(|errno| {
        if is_conflict(errno) {
            LockError::Busy(lossy_utf8(name))
        } else {
            LockError::Lock {
                path: path.display().to_string(),
                errno,
            }
        }
    })
}

/// Open-or-create, lock, then make sure the path still names the inode we locked:
/// a releasing holder may have unlinked it (or someone replaced it) in between.
fn acquire_autocreate(path: &Path, name: &[u8], mode: LockMode) -> Result<Lease, LockError> {
    let shown = || path.display().to_string();
    for _ in 0..MAX_AUTOCREATE_RETRIES {
        let lease = Lease::open_or_create(path).map_err(|e| match e {
            OpenError::Sys(errno) => LockError::OpenCreate {
                path: shown(),
                errno,
            },
            OpenError::HeldElsewhere => LockError::Busy(lossy_utf8(name)),
        })?;
        lock(&lease, path, name, mode)?;
        match lease.is_at(path) {
            Ok(true) => return Ok(lease),
            // Unlinked or replaced since we opened it: our lock protects nothing.
            _ => continue,
        }
    }
    Err(LockError::Busy(lossy_utf8(name)))
}

/// Ends `lease` and closes its fd, out of the crash-safe store's list first.
fn discard(lease: Lease) {
    crate::crash::forget(lease.tag());
    drop(lease);
}

/// Spare open files a lockspace keeps at most (see [`Spare`]).
const MAX_SPARES: usize = 256;

/// `dir + "/" + name` (plain concatenation, as libvirt), or the name itself
/// in the default lockspace (`dir` None).
pub fn path_in(dir: Option<&[u8]>, name: &[u8]) -> PathBuf {
    match dir {
        None => PathBuf::from(OsStr::from_bytes(name)),
        Some(dir) => {
            let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
            p.extend_from_slice(dir);
            p.push(b'/');
            p.extend_from_slice(name);
            PathBuf::from(std::ffi::OsString::from_vec(p))
        }
    }
}

/// Makes sure a directory lockspace's directory exists (`mkdir -p`, mode 0700).
/// Blocking: call it off the event threads.
pub fn create_directory(dir: &[u8]) -> Result<(), LockError> {
    let path = Path::new(OsStr::from_bytes(dir));
    match lease::path_kind(path) {
        Ok(PathKind::Directory) => Ok(()),
        Ok(PathKind::Other) => Err(LockError::NotADirectory(lossy_utf8(dir))),
        Ok(PathKind::Missing) => {
            lease::make_dirs(path).map_err(|errno| LockError::CreateLockspace {
                dir: lossy_utf8(dir),
                errno,
            })
        }
        Err(errno) => Err(LockError::CreateLockspace {
            dir: lossy_utf8(dir),
            errno,
        }),
    }
}

#[cfg(test)]
mod tests;
