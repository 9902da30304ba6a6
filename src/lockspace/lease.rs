//! The only code that opens lease files and calls fcntl. Keeping it in one file
//! makes the rule of POSIX record locks checkable by reading: a file we hold a lock
//! on is opened exactly once, through [`Lease`], and closed only when the lease ends.
//!
//! In crash-safe mode (`crate::crash`) new leases are OFD locks instead: they
//! belong to the open file description, which a parked reference keeps alive
//! past this process, so they are ended by an explicit unlock, never by a
//! close alone; and the open file of a released one may be kept as a
//! [`Spare`] for the next acquire of its name.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{LazyLock, Mutex, PoisonError};

use nix::errno::Errno;
use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::sys::stat::{fstat, stat, Mode, SFlag};

/// Identity of a file: (device, inode).
type FileId = (u64, u64);

/// No device has this number: the id of a lease adopted unidentified, never
/// in the held-file table.
const UNIDENTIFIED_DEV: u64 = u64::MAX;

/// Every file this process holds a lease on, whatever lockspace or name reached
/// it. POSIX locks belong to the process and the inode, so two names for one file
/// (`""` + full path vs. directory + name, symlinks, `a` vs `./a`) must never both
/// hold a lease: releasing one would silently drop the other's kernel lock.
/// libvirt does not check this (spec §12.2).
static HELD: LazyLock<Mutex<HashMap<FileId, Held, BuildIdHasher>>> =
    LazyLock::new(Default::default);

/// (device, inode) pairs need no DoS-resistant hashing (they come from the
/// kernel, not from clients): a multiply-xor mix, on every acquire and release.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

type BuildIdHasher = std::hash::BuildHasherDefault<IdHasher>;

#[derive(Default)]
struct Held {
    leases: u32,
    /// fds opened to an already-held file. Closing them would drop the holder's
    /// lock, so they stay open until the last lease on the file ends.
    parked: Parked,
}

/// Extra fds of a held file: almost always none, so a held file costs one
/// word for them (a boxed slice's two made every entry of the held-file
/// table 40 bytes instead of 32).
#[derive(Default)]
#[allow(clippy::box_collection)] // the box is the point: one word, not three
struct Parked(Option<Box<Vec<OwnedFd>>>);

impl Parked {
    fn push(&mut self, fd: OwnedFd) {
        self.0.get_or_insert_with(Default::default).push(fd);
    }

    fn iter(&self) -> impl Iterator<Item = &OwnedFd> {
        self.0.iter().flat_map(|v| v.iter())
    }
}

/// An open lease file. Dropping it closes the fd, which releases the kernel lock.
#[derive(Debug)]
pub struct Lease {
    /// Closed in `Drop` while [`HELD`] is locked (see there); `None` only
    /// there, once taken.
    fd: Option<OwnedFd>,
    id: FileId,
    /// An OFD lock (crash-safe mode) rather than a POSIX one. Its open file
    /// description may be referenced outside this process too (parked, see
    /// `crate::crash`), so it is unlocked explicitly, never by a close alone.
    ofd: bool,
    /// The lease's name in the crash-safe store (0: not parked).
    tag: u64,
}

/// Why a lease file could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    Sys(Errno),
    /// The file is already held under another name or lockspace.
    HeldElsewhere,
}

impl From<Errno> for OpenError {
    fn from(e: Errno) -> Self {
        Self::Sys(e)
    }
}

/// Lock mode on byte 0 of a lease file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

impl Lease {
    /// Opens an existing file read-write (never created here). Not
    /// close-on-exec: the daemon starts no other program, and a live upgrade's
    /// exec must keep every lease open (no per-lease fcntl then).
    pub fn open_existing(path: &Path) -> Result<Self, OpenError> {
        let fd = open(path, OFlag::O_RDWR, Mode::empty())?;
        Self::claim(fd)
    }

    /// Opens or creates (mode 0600) a file read-write; kept across exec, as
    /// [`Lease::open_existing`].
    pub fn open_or_create(path: &Path) -> Result<Self, OpenError> {
        let fd = open(
            path,
            OFlag::O_RDWR | OFlag::O_CREAT,
            Mode::from_bits_truncate(0o600),
        )?;
        Self::claim(fd)
    }

    /// Registers a freshly opened fd as the only lease on its file.
    fn claim(fd: OwnedFd) -> Result<Self, OpenError> {
        let st = fstat(fd.as_fd())?;
        let id = (st.st_dev, st.st_ino);
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = held.entry(id).or_default();
        if entry.leases > 0 {
            entry.parked.push(fd);
            return Err(OpenError::HeldElsewhere);
        }
        entry.leases = 1;
        Ok(Self {
            fd: Some(fd),
            id,
            ofd: crate::crash::active(),
            tag: 0,
        })
    }

    /// Adopts fds inherited across exec (live upgrade), with the file identity
    /// the snapshot gives, or else after an fstat (which also checks it is open). A state written by another daemon may hold one file twice;
    /// both are kept. One pass over the held-file table for all of them: a
    /// restore adopts thousands while every client waits.
    pub fn adopt_all(fds: &[(RawFd, Option<FileId>, bool)]) -> Vec<Result<Self, Errno>> {
        let ids: Vec<Result<FileId, Errno>> =
            fds.iter()
                .map(|&(fd, known, _)| match known {
                    // Our own snapshot: the lease's fd was open when its frozen
                    // lockspace wrote it, and nothing closes a lease fd while the
                    // actors are frozen; lease fds are not close-on-exec, so it is
                    // the same open file now, its identity known without a syscall.
                    Some(id) => Ok(id),
                    // SAFETY: a borrowed fd used only for fstat, which fails on a closed fd.
                    None => fstat(unsafe { BorrowedFd::borrow_raw(fd) })
                        .map(|st| (st.st_dev, st.st_ino)),
                })
                .collect();
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        held.reserve(fds.len());
        fds.iter()
            .zip(ids)
            .map(|(&(fd, _, ofd), id)| {
                let id = id?;
                held.entry(id).or_default().leases += 1;
                // SAFETY: open (see above), inherited for this lease and owned
                // by nothing else in this process.
                let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                Ok(Self {
                    fd: Some(fd),
                    id,
                    ofd,
                    tag: 0,
                })
            })
            .collect()
    }

    /// The file's (device, inode); `None` for a lease adopted unidentified.
    pub fn file_id(&self) -> Option<FileId> {
        (self.id.0 != UNIDENTIFIED_DEV).then_some(self.id)
    }

    /// Non-blocking record lock on byte 0, length 1: what libvirt's
    /// `virFileLock(fd, shared, 0, 1, false)` does, as a POSIX lock, or in
    /// crash-safe mode the same range as an OFD lock (which other processes
    /// and hosts see alike). `Err(EAGAIN|EACCES)` = conflict.
    pub fn lock(&self, mode: LockMode) -> Result<(), Errno> {
        if self.ofd {
            return ofd_lock(self.fd()?, mode);
        }
        let fl = byte_zero(match mode {
            LockMode::Shared => libc::F_RDLCK,
            LockMode::Exclusive => libc::F_WRLCK,
        });
        fcntl(self.fd()?, FcntlArg::F_SETLK(&fl)).map(drop)
    }

    /// Whether this is an OFD lock (else POSIX).
    pub fn is_ofd(&self) -> bool {
        self.ofd
    }

    /// Takes an OFD lock in place of this lease's POSIX one, after a crash
    /// restore: the POSIX lock ended with the process that held it, and only
    /// an OFD lock outlives the next crash.
    pub fn relock_as_ofd(&mut self, mode: LockMode) -> Result<(), Errno> {
        self.ofd = true;
        self.lock(mode)
    }

    /// The lease's name in the crash-safe store (0: not parked).
    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// Names the lease in the crash-safe store: one adopted (parked already
    /// under `tag`) or one about to be parked.
    pub fn set_tag(&mut self, tag: u64) {
        self.tag = tag;
    }

    /// Adopts an inherited fd whose file can no longer be identified (its
    /// filesystem answers fstat with an error): a lease already known to be lost
    /// before a live upgrade. It joins no held-file entry; it only keeps the fd
    /// until the owner releases it.
    pub fn adopt_unidentified(fd: RawFd) -> Result<Self, Errno> {
        // SAFETY: a flag query on a borrowed fd, which fails on a closed fd.
        fcntl(unsafe { BorrowedFd::borrow_raw(fd) }, FcntlArg::F_GETFD)?;
        // SAFETY: open (checked above), inherited for this lease, owned by nothing else.
        let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(Self {
            fd: Some(owned),
            id: (UNIDENTIFIED_DEV, fd as u64),
            ofd: false,
            tag: 0,
        })
    }

    /// What kind of filesystem the open file lives on (fstatfs of our fd: no
    /// second open, which could drop our lock when closed).
    pub fn storage(&self) -> Result<Storage, Errno> {
        let fs = nix::sys::statfs::fstatfs(self.fd()?)?;
        Ok(storage_from_magic(fs.filesystem_type().0 as u64))
    }

    /// Whether `path` still names the file this lease holds (same device and
    /// inode), by `stat`: never opened, since closing a second fd of the file
    /// would drop our locks on it.
    pub fn is_at(&self, path: &Path) -> Result<bool, Errno> {
        stat(path).map(|st| (st.st_dev, st.st_ino) == self.id)
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// The open fd (always there outside `drop`).
    pub(super) fn fd(&self) -> Result<BorrowedFd<'_>, Errno> {
        self.fd.as_ref().map(AsFd::as_fd).ok_or(Errno::EBADF)
    }
}

/// A released crash-safe lease's open file, kept (unlocked, still parked in
/// the crash-safe store) so that the next ACQUIRE of the same resource takes
/// it up again instead of opening, parking and later freeing a new one. It
/// is no lease: it holds no lock and is not in the held-file table. Dropping
/// it closes the fd.
#[derive(Debug)]
pub struct Spare {
    /// `None` only once revived.
    fd: Option<OwnedFd>,
    id: FileId,
    tag: u64,
}

impl Lease {
    /// Ends this lease but keeps its open file as a [`Spare`] (crash-safe
    /// mode, a parked OFD lease); any other lease is simply dropped.
    pub fn retire(mut self) -> Option<Spare> {
        if !self.ofd || self.tag == 0 || self.id.0 == UNIDENTIFIED_DEV {
            return None;
        }
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        if held.get(&self.id).is_some_and(|entry| entry.leases > 1) {
            // Another lease holds the file too (a state adopted with one file
            // under two names), perhaps with a POSIX lock: closing a spare of
            // it later would drop that lock. Dropped instead, which parks the
            // fd beside that lease.
            drop(held);
            return None;
        }
        let fd = self.fd.take()?;
        // Unlocked under the table's lock, as a drop would.
        let _ = ofd_unlock(fd.as_fd());
        held.remove(&self.id);
        Some(Spare {
            fd: Some(fd),
            id: self.id,
            tag: self.tag,
        })
    }
}

impl Spare {
    /// Takes the file up as a lease again if no other lease holds it now.
    pub fn revive(mut self) -> Result<Lease, OpenError> {
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = held.entry(self.id).or_default();
        if entry.leases > 0 {
            return Err(OpenError::HeldElsewhere);
        }
        let fd = self.fd.take().ok_or(OpenError::Sys(Errno::EBADF))?;
        entry.leases = 1;
        Ok(Lease {
            fd: Some(fd),
            id: self.id,
            ofd: true,
            tag: self.tag,
        })
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        // Closed (its parked reference stays until the store's next
        // compaction), unless revived.
        if self.fd.is_some() {
            crate::crash::forget(self.tag);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // The fd is closed with HELD locked: otherwise another lockspace thread
        // could claim and lock the same file between our bookkeeping and our
        // close, and our close would drop its brand-new lock.
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(fd) = self.fd.take() else { return };
        if self.ofd {
            // A parked reference keeps the description (and its lock) alive
            // past our close: unlock it explicitly. Only this description's
            // lock ends; another lease's on the same file is its own.
            let _ = ofd_unlock(fd.as_fd());
        }
        match held.get_mut(&self.id) {
            Some(entry) if entry.leases > 1 => {
                // Another lease (adopted from a state that held the file under
                // two names) still needs the lock: keep our fd open with it.
                entry.leases -= 1;
                entry.parked.push(fd);
            }
            _ => {
                // Parked fds close with the entry, then ours: the file's locks
                // end with its last lease, as they must.
                held.remove(&self.id);
                drop(fd);
            }
        }
    }
}

/// Takes (or, if this description holds it already, keeps) an OFD lock on
/// byte 0 of `fd`: how a crash restore re-asserts a lease on the open file
/// description it got back from the store. `Err(EAGAIN|EACCES)` = conflict.
pub fn ofd_lock(fd: BorrowedFd<'_>, mode: LockMode) -> Result<(), Errno> {
    let kind = match mode {
        LockMode::Shared => libc::F_RDLCK,
        LockMode::Exclusive => libc::F_WRLCK,
    };
    fcntl(fd, FcntlArg::F_OFD_SETLK(&byte_zero(kind))).map(drop)
}

/// Ends the OFD lock of this open file description on byte 0 of `fd`, if it
/// holds one (another description's lock on the file is its own).
pub fn ofd_unlock(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    fcntl(fd, FcntlArg::F_OFD_SETLK(&byte_zero(libc::F_UNLCK))).map(drop)
}

/// The lock range of a lease: byte 0, length 1.
fn byte_zero(kind: libc::c_int) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 1,
        l_pid: 0,
    }
}

/// fds parked beside a held lease (see [`HELD`]). A live upgrade must keep them
/// open across exec too: the exec closing one would drop the lease's lock.
pub fn parked_fds() -> Vec<RawFd> {
    HELD.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
        .flat_map(|h| h.parked.iter().map(AsRawFd::as_raw_fd))
        .collect()
}

/// Whether `file` is one this process holds a lease on (by fstat: no open).
pub fn is_held(file: &impl AsFd) -> bool {
    let held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    fstat(file.as_fd()).is_ok_and(|st| held.contains_key(&(st.st_dev, st.st_ino)))
}

/// Whether `path` names a file this process holds a lease on (by stat: no open).
pub fn is_path_held(path: &Path) -> bool {
    let held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    stat(path).is_ok_and(|st| held.contains_key(&(st.st_dev, st.st_ino)))
}

/// For an fd opened for something other than a lease (a log file): hands it
/// back unless its file is held as a lease. A held file's fd is parked beside
/// the lease instead, because closing it would drop the lease's lock; it closes
/// with the file's last lease.
pub fn unless_held(fd: OwnedFd) -> Result<OwnedFd, HeldFile> {
    let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    park_if_held(&mut held, fd)
}

/// Closes an fd opened for something other than a lease (a log file), unless
/// its file became a held lease meanwhile: then it is parked (see
/// [`unless_held`]). The check and the close happen with [`HELD`] locked, so a
/// lease claimed on the file by another thread cannot slip in between.
pub fn close_unless_held(fd: OwnedFd) {
    let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    if let Ok(fd) = park_if_held(&mut held, fd) {
        drop(fd);
    }
}

fn park_if_held(
    held: &mut HashMap<FileId, Held, BuildIdHasher>,
    fd: OwnedFd,
) -> Result<OwnedFd, HeldFile> {
    match fstat(fd.as_fd()) {
        Ok(st) => match held.get_mut(&(st.st_dev, st.st_ino)) {
            Some(entry) => {
                entry.parked.push(fd);
                Err(HeldFile)
            }
            None => Ok(fd),
        },
        Err(_) => {
            // Which file it is cannot be told: keeping it open is the only way
            // not to risk a lease's lock.
            std::mem::forget(fd);
            Err(HeldFile)
        }
    }
}

/// The file is held as a lease by this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("file is held as a lease")]
pub struct HeldFile;

/// Whether a lock error means "somebody else holds it".
pub fn is_conflict(e: Errno) -> bool {
    matches!(e, Errno::EAGAIN | Errno::EACCES)
}

/// Creates `path` (mode 0600) if missing, leaving an existing file untouched.
///
/// libvirt opens with `O_WRONLY|O_CREAT` and closes. We must not: if the file is
/// held as a lease (perhaps under another name), closing any fd of it would drop
/// that lock. So an existing path is only `stat`ed, never opened.
pub fn touch(path: &Path) -> Result<(), Errno> {
    // Held across create and close: a lease claimed on this new file by another
    // thread in between would lose its lock to our close.
    let _held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    match open(
        path,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    ) {
        Ok(fd) => {
            // A file we just created cannot carry one of our locks.
            drop(fd);
            Ok(())
        }
        Err(Errno::EEXIST) => {
            let st = stat(path)?;
            if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
                Err(Errno::EISDIR)
            } else {
                Ok(())
            }
        }
        Err(e) => Err(e),
    }
}

/// Removes a file; a missing file is not an error.
pub fn remove(path: &Path) -> Result<(), Errno> {
    match nix::unistd::unlink(path) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// What `path` is: missing, a directory, or something else.
#[derive(Debug, PartialEq, Eq)]
pub enum PathKind {
    Missing,
    Directory,
    Other,
}

pub fn path_kind(path: &Path) -> Result<PathKind, Errno> {
    match stat(path) {
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR => {
            Ok(PathKind::Directory)
        }
        Ok(_) => Ok(PathKind::Other),
        Err(Errno::ENOENT) => Ok(PathKind::Missing),
        Err(e) => Err(e),
    }
}

/// `mkdir -p` with mode 0700 for every created component (minus umask).
pub fn make_dirs(path: &Path) -> Result<(), Errno> {
    match nix::unistd::mkdir(path, Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(Errno::ENOENT) => {
            match path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => make_dirs(parent)?,
                _ => return Err(Errno::ENOENT),
            }
            match nix::unistd::mkdir(path, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Where a lockspace's files live, as far as blocking is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// A local filesystem: syscalls return promptly, so the lockspace runs on
    /// the event thread.
    Local,
    /// Syscalls may hang: a network or FUSE filesystem (named by its kind), one
    /// that could not be classified, or anywhere at all (the default
    /// lockspace). Such a lockspace needs a thread of its own, and its leases
    /// are revalidated.
    MayHang(&'static str),
}

impl Storage {
    /// The default lockspace's: its files may be on any filesystem.
    pub const ANYWHERE: Storage = Storage::MayHang("any");
}

/// Classifies the filesystem under `path` by its statfs magic number.
pub fn storage_of(path: &Path) -> Result<Storage, Errno> {
    let fs = nix::sys::statfs::statfs(path)?;
    Ok(storage_from_magic(fs.filesystem_type().0 as u64))
}

/// Filesystems whose syscalls can hang, by statfs `f_type`, with the kind name
/// the daemon logs. `virtlockctl check` (src/ctl/fscheck.rs) names mount types
/// by this table too; its tests check that the two agree.
pub const NETWORK_FILESYSTEMS: &[(u64, &str)] = &[
    (0x6969, "nfs"),
    (0xff53_4d42, "cifs"),
    (0xfe53_4d42, "smb2"),
    (0x517b, "smb"),
    (0x00c3_6400, "ceph"),
    (0x0116_1970, "gfs2"),
    (0x7461_636f, "ocfs2"),
    // Every FUSE filesystem (GlusterFS, ceph-fuse, sshfs, ...) and the
    // kernel's virtiofs, which answers statfs with the FUSE magic.
    (0x6573_5546, "fuse"),
    // A virtiofs host share whose statfs reports its own magic (Docker
    // Desktop's, shown by `stat -f` as 0x6a656a63): files of the host,
    // served over virtio, whose calls hang when the host side does.
    (0x6a65_6a63, "virtiofs"),
    (0x0102_1997, "9p"),
    (0x5346_414f, "afs"),
    (0x6b41_4653, "kafs"),
    (0x1304_6203, "lustre"),
    (0x0bd0_0bd0, "lustre"),
    (0x4750_4653, "gpfs"),
];

/// Network filesystems by statfs `f_type`; everything else counts as local.
pub fn storage_from_magic(magic: u64) -> Storage {
    NETWORK_FILESYSTEMS
        .iter()
        .find(|(m, _)| *m == magic)
        .map_or(Storage::Local, |(_, kind)| Storage::MayHang(kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touch_never_opens_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let lease = Lease::open_or_create(&p).unwrap();
        lease.lock(LockMode::Exclusive).unwrap();
        touch(&p).unwrap();
        // Our lock must still be there. /proc/locks is read through the reader that
        // tolerates other tests locking and unlocking while it is read.
        let mine = crate::proclocks::of_pid_on(std::process::id(), &p).unwrap();
        assert!(mine.iter().any(|l| l.mode == "WRITE"), "{mine:?}");
        assert_eq!(touch(dir.path()), Err(Errno::EISDIR));
    }

    #[test]
    fn make_dirs_creates_parents_0700() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/c");
        make_dirs(&p).unwrap();
        make_dirs(&p).unwrap();
        let mode = std::fs::metadata(dir.path().join("a"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
        assert_eq!(path_kind(&p).unwrap(), PathKind::Directory);
    }

    #[test]
    fn tmp_is_local_and_nfs_is_not() {
        assert_eq!(storage_of(Path::new("/tmp")).unwrap(), Storage::Local);
        assert_eq!(storage_from_magic(0x6969), Storage::MayHang("nfs"));
        assert_eq!(
            storage_from_magic(0x6a65_6a63),
            Storage::MayHang("virtiofs")
        );
        assert_eq!(storage_from_magic(0xef53), Storage::Local);
    }
}
