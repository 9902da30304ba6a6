//! Reads `/proc/locks`: what the kernel says a process holds. Used by tests to
//! assert real kernel state, and by operators' tooling.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// One line of `/proc/locks`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelLock {
    /// `POSIX`, `FLOCK`, `OFDLCK`, ...
    pub kind: String,
    /// `READ` or `WRITE`.
    pub mode: String,
    pub pid: i32,
    /// Device of the file (`st_dev`), from the `major:minor` in hex.
    pub dev: u64,
    pub inode: u64,
    pub start: u64,
    /// `None` for `EOF` (lock to the end of the file).
    pub end: Option<u64>,
}

/// Every lock in the system, skipping "->" lines (blocked waiters).
///
/// /proc/locks is a seq_file served a page per read(): when other processes
/// lock or unlock between two reads, a line can be skipped. The union of a few
/// complete reads is what was held throughout.
pub fn all() -> io::Result<Vec<KernelLock>> {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let text = std::fs::read_to_string("/proc/locks")?;
        seen.extend(text.lines().filter_map(parse_line));
    }
    Ok(seen.into_iter().collect())
}

/// Locks held by `pid`.
pub fn of_pid(pid: u32) -> io::Result<Vec<KernelLock>> {
    Ok(all()?.into_iter().filter(|l| l.pid == pid as i32).collect())
}

/// Locks held by `pid`, from `/proc/PID/fdinfo`: there each lock is listed
/// under the fd it was taken through, read per file under the file's own lock,
/// so, unlike in `/proc/locks`, no line is skipped while other processes lock
/// and unlock (see [`all`]).
pub fn of_pid_by_fd(pid: u32) -> io::Result<Vec<KernelLock>> {
    let mut seen = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        // An fd closed meanwhile is simply gone.
        let Ok(text) = entry.and_then(|e| std::fs::read_to_string(e.path())) else {
            continue;
        };
        seen.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("lock:"))
                .filter_map(parse_line),
        );
    }
    Ok(seen.into_iter().collect())
}

/// Locks held by `pid` on the file at `path` (matched by device and inode:
/// separate tmpfs mounts hand out the same small inode numbers).
pub fn of_pid_on(pid: u32, path: &Path) -> io::Result<Vec<KernelLock>> {
    Ok(of_pid(pid)?.into_iter().filter(on_file(path)?).collect())
}

/// Locks held by anybody on the file at `path`.
pub fn on(path: &Path) -> io::Result<Vec<KernelLock>> {
    Ok(all()?.into_iter().filter(on_file(path)?).collect())
}

/// A filter for the locks on the file at `path`.
fn on_file(path: &Path) -> io::Result<impl Fn(&KernelLock) -> bool> {
    let meta = std::fs::metadata(path)?;
    let (dev, ino) = (meta.dev(), meta.ino());
    Ok(move |l: &KernelLock| l.dev == dev && l.inode == ino)
}

fn parse_line(line: &str) -> Option<KernelLock> {
    // "1: POSIX  ADVISORY  WRITE 12916 fe:00:10166931 0 0"
    let mut f = line.split_whitespace();
    let _id = f.next()?;
    let kind = f.next()?;
    if kind == "->" {
        return None;
    }
    let _advisory = f.next()?;
    let mode = f.next()?;
    let pid = f.next()?.parse().ok()?;
    let (dev, inode) = parse_file_id(f.next()?)?;
    let start = f.next()?.parse().ok()?;
    let end = f.next()?;
    Some(KernelLock {
        kind: kind.to_owned(),
        mode: mode.to_owned(),
        pid,
        dev,
        inode,
        start,
        end: end.parse().ok(),
    })
}

/// "fe:00:10166931" (major and minor in hex, inode in decimal).
fn parse_file_id(field: &str) -> Option<(u64, u64)> {
    let mut parts = field.splitn(3, ':');
    let major = u32::from_str_radix(parts.next()?, 16).ok()?;
    let minor = u32::from_str_radix(parts.next()?, 16).ok()?;
    let inode = parts.next()?.parse().ok()?;
    Some((libc::makedev(major, minor), inode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_locks_lines() {
        let l = parse_line("1: POSIX  ADVISORY  WRITE 12916 fe:00:10166931 0 0").unwrap();
        assert_eq!(
            l,
            KernelLock {
                kind: "POSIX".into(),
                mode: "WRITE".into(),
                pid: 12916,
                dev: libc::makedev(0xfe, 0),
                inode: 10166931,
                start: 0,
                end: Some(0)
            }
        );
        let l = parse_line("2: FLOCK  ADVISORY  WRITE 1 00:1a:5 0 EOF").unwrap();
        assert_eq!(l.end, None);
        assert!(parse_line("2: -> POSIX ADVISORY WRITE 1 00:1a:5 0 EOF").is_none());
    }

    #[test]
    fn finds_a_lock_of_this_process_by_its_fd() {
        use std::os::fd::AsRawFd;
        let file = tempfile::NamedTempFile::new().unwrap();
        let lock = libc::flock {
            l_type: libc::F_RDLCK as i16,
            l_whence: libc::SEEK_SET as i16,
            l_start: 0,
            l_len: 1,
            l_pid: 0,
        };
        // SAFETY: F_SETLK with a valid flock struct on an open fd.
        assert_eq!(
            unsafe { libc::fcntl(file.as_file().as_raw_fd(), libc::F_SETLK, &lock) },
            0
        );
        let meta = std::fs::metadata(file.path()).unwrap();
        let mine = of_pid_by_fd(std::process::id()).unwrap();
        let on_file: Vec<_> = mine
            .iter()
            .filter(|l| l.dev == meta.dev() && l.inode == meta.ino())
            .collect();
        assert_eq!(on_file.len(), 1, "{mine:?}");
        assert_eq!((on_file[0].mode.as_str(), on_file[0].start), ("READ", 0));
    }

    /// An open file description lock belongs to no process: the kernel shows it
    /// as `OFDLCK` with pid -1, in /proc/locks and under its fd alike (so
    /// [`of_pid`] never lists it; [`on`] and [`of_pid_by_fd`] do).
    #[test]
    fn finds_an_ofd_lock_of_this_process_with_no_pid() {
        use std::os::fd::AsRawFd;
        let file = tempfile::NamedTempFile::new().unwrap();
        let lock = libc::flock {
            l_type: libc::F_WRLCK as i16,
            l_whence: libc::SEEK_SET as i16,
            l_start: 0,
            l_len: 1,
            // F_OFD_SETLK requires 0.
            l_pid: 0,
        };
        // SAFETY: F_OFD_SETLK with a valid flock struct on an open fd.
        assert_eq!(
            unsafe { libc::fcntl(file.as_file().as_raw_fd(), libc::F_OFD_SETLK, &lock) },
            0,
            "{}",
            io::Error::last_os_error()
        );
        let meta = std::fs::metadata(file.path()).unwrap();
        let want = KernelLock {
            kind: "OFDLCK".into(),
            mode: "WRITE".into(),
            pid: -1,
            dev: meta.dev(),
            inode: meta.ino(),
            start: 0,
            end: Some(0),
        };
        assert_eq!(on(file.path()).unwrap(), std::slice::from_ref(&want));
        let by_fd: Vec<_> = of_pid_by_fd(std::process::id())
            .unwrap()
            .into_iter()
            .filter(|l| l.dev == meta.dev() && l.inode == meta.ino())
            .collect();
        assert_eq!(by_fd, [want]);
        assert_eq!(of_pid_on(std::process::id(), file.path()).unwrap(), []);
    }
}
