//! `virtlockctl check DIR`: which filesystem a lockspace lives on and whether
//! the fcntl locks the daemon takes there are seen by other hosts. A lock
//! daemon on every host protects shared disks only if they are; a mount with
//! `nolock` or a FUSE filesystem without lock support silently protects
//! nothing across hosts. [`assess`] is the one place that rule lives.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::lockspace::lease::{storage_of, Storage};

/// Mount types (as /proc/self/mountinfo names them) of filesystems served by
/// another machine or by the host, with the kind the daemon's statfs table
/// (`lease::NETWORK_FILESYSTEMS`) gives their magic: the daemon must treat every
/// one of them as storage whose calls can hang. The tests hold [`assess`], this
/// table and the daemon's table together.
pub const NETWORK_TYPES: &[(&str, &str)] = &[
    ("nfs", "nfs"),
    ("nfs4", "nfs"),
    ("cifs", "cifs"),
    ("smb3", "cifs"),
    ("ceph", "ceph"),
    ("fuse.ceph-fuse", "fuse"),
    ("fuse.glusterfs", "fuse"),
    ("gfs2", "gfs2"),
    ("ocfs2", "ocfs2"),
    ("gpfs", "gpfs"),
    ("lustre", "lustre"),
    ("9p", "9p"),
    // The kernel's virtiofs answers statfs with the FUSE magic; Docker
    // Desktop's virtiofs share (mount type `fakeowner`) with its own.
    ("virtiofs", "fuse"),
    ("fakeowner", "virtiofs"),
];

/// Whether fcntl locks under a directory reach other hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Other hosts' lock daemons see our locks (cluster or network locking).
    OtherHosts,
    /// Only processes of this host see them.
    ThisHostOnly,
}

/// What `check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub reach: Reach,
    /// Why, in one sentence.
    pub reason: String,
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub dev: (u32, u32),
    pub mount_point: PathBuf,
    /// `ext4`, `nfs4`, `fuse.glusterfs`, ...
    pub fstype: String,
    pub source: String,
    /// Per-mount and superblock options together.
    pub options: Vec<String>,
}

/// The report of `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub dir: PathBuf,
    pub mount: Option<Mount>,
    /// The daemon's own classification (statfs magic): whether its syscalls may hang.
    pub storage: Storage,
    pub assessment: Assessment,
}

fn unescape(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = |j: usize| {
            b.get(j)
                .filter(|c| (b'0'..=b'7').contains(c))
                .map(|c| c - b'0')
        };
        let escaped = match (b[i], octal(i + 1), octal(i + 2), octal(i + 3)) {
            // At most \377: anything above is not an escape the kernel writes.
            (b'\\', Some(h @ 0..=3), Some(m), Some(l)) => Some(h * 64 + m * 8 + l),
            _ => None,
        };
        if let Some(v) = escaped {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses one mountinfo line; `None` if malformed.
pub fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let (head, tail) = line.split_once(" - ")?;
    let head: Vec<&str> = head.split(' ').collect();
    let tail: Vec<&str> = tail.split(' ').collect();
    if head.len() < 6 || tail.len() < 3 {
        return None;
    }
    let (maj, min) = head[2].split_once(':')?;
    let mut options: Vec<String> = head[5].split(',').map(str::to_owned).collect();
    options.extend(tail[2].split(',').map(str::to_owned));
    Some(Mount {
        dev: (maj.parse().ok()?, min.parse().ok()?),
        mount_point: PathBuf::from(unescape(head[4])),
        fstype: tail[0].to_owned(),
        source: unescape(tail[1]),
        options,
    })
}

/// The mount `dir` is on: the last mount of its device whose mount point is a
/// prefix of the directory (later lines are mounted on top of earlier ones).
pub fn mount_of(mountinfo: &str, dir: &Path, dev: (u32, u32)) -> Option<Mount> {
    mountinfo
        .lines()
        .filter_map(parse_mountinfo_line)
        .filter(|m| dir.starts_with(&m.mount_point))
        .fold(None, |best: Option<Mount>, m| {
            let better = match &best {
                None => true,
                Some(b) => {
                    (m.dev == dev, m.mount_point.as_os_str().len())
                        >= (b.dev == dev, b.mount_point.as_os_str().len())
                }
            };
            if better {
                Some(m)
            } else {
                best
            }
        })
}

fn has(options: &[String], opt: &str) -> bool {
    options.iter().any(|o| o == opt)
}

fn option_value<'a>(options: &'a [String], key: &str) -> Option<&'a str> {
    options
        .iter()
        .find_map(|o| o.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

/// The rule: whether fcntl locks on a filesystem of type `fstype` mounted with
/// `options` reach other hosts. `ocfs2_stack` is the content of
/// /sys/fs/ocfs2/cluster_stack (`None` if absent: no cluster stack loaded).
pub fn assess(fstype: &str, options: &[String], ocfs2_stack: Option<&str>) -> Assessment {
    use Reach::*;
    let r = |reach, reason: &str| Assessment {
        reach,
        reason: reason.to_owned(),
    };
    match fstype {
        "nfs" | "nfs4" => {
            if has(options, "nolock") {
                r(ThisHostOnly, "NFS mounted with nolock: locks are kept on this host only")
            } else if matches!(option_value(options, "local_lock"), Some("all" | "posix")) {
                r(ThisHostOnly, "NFS mounted with local_lock=all or local_lock=posix: fcntl locks are kept on this host only")
            } else {
                r(OtherHosts, "NFS: fcntl locks go to the server (NLM or NFSv4 locking)")
            }
        }
        "ocfs2" => {
            if has(options, "localflocks") {
                r(ThisHostOnly, "OCFS2 mounted with localflocks: locks are kept on this host only")
            } else if has(options, "heartbeat=none") {
                r(ThisHostOnly, "OCFS2 in local mode (heartbeat=none): no cluster locking")
            } else if ocfs2_stack.map_or(true, |s| s.trim().is_empty()) {
                r(ThisHostOnly, "OCFS2 without a cluster stack (/sys/fs/ocfs2/cluster_stack missing): locks are not clustered")
            } else {
                r(OtherHosts, "OCFS2 with a cluster stack: fcntl locks are cluster-wide")
            }
        }
        "gfs2" => {
            if has(options, "localflocks") {
                r(ThisHostOnly, "GFS2 mounted with localflocks: locks are kept on this host only")
            } else if option_value(options, "lockproto") == Some("lock_nolock") {
                r(ThisHostOnly, "GFS2 with lockproto=lock_nolock: no cluster locking")
            } else {
                r(OtherHosts, "GFS2 with DLM: fcntl locks are cluster-wide")
            }
        }
        "cifs" | "smb3" => {
            if has(options, "nobrl") {
                r(ThisHostOnly, "CIFS mounted with nobrl: byte-range locks are not sent to the server")
            } else {
                r(OtherHosts, "CIFS/SMB: byte-range locks go to the server")
            }
        }
        "ceph" | "fuse.ceph-fuse" => r(OtherHosts, "CephFS: fcntl locks are cluster-wide"),
        "fuse.glusterfs" => r(OtherHosts, "GlusterFS: fcntl locks go to the bricks (cluster-wide)"),
        "gpfs" => r(OtherHosts, "GPFS: fcntl locks are cluster-wide"),
        "lustre" => {
            if has(options, "flock") {
                r(OtherHosts, "Lustre mounted with flock: locks are cluster-wide")
            } else {
                r(ThisHostOnly, "Lustre without the flock option: locks are local or refused")
            }
        }
        t if t == "fuse" || t.starts_with("fuse.") || t.starts_with("fuseblk") => r(
            ThisHostOnly,
            "a FUSE filesystem not known to pass fcntl locks to other hosts: the kernel keeps them on this host",
        ),
        "9p" | "virtiofs" | "fakeowner" => r(ThisHostOnly, "a guest share: locks stay on this host"),
        _ => r(ThisHostOnly, "a local filesystem: locks protect against other processes of this host only"),
    }
}

/// Why `check` could not look.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{}: {source}", dir.display())]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read /proc/self/mountinfo: {0}")]
    Mountinfo(#[source] std::io::Error),
    #[error("statfs {}: {errno}", dir.display())]
    Statfs { dir: PathBuf, errno: nix::Error },
}

/// Looks at `dir` (which must exist).
pub fn check(dir: &Path) -> Result<Report, CheckError> {
    let dir_err = |source| CheckError::Dir {
        dir: dir.to_path_buf(),
        source,
    };
    let canonical = std::fs::canonicalize(dir).map_err(dir_err)?;
    let meta = std::fs::metadata(&canonical).map_err(dir_err)?;
    let dev = meta.dev();
    let dev = (
        nix::sys::stat::major(dev) as u32,
        nix::sys::stat::minor(dev) as u32,
    );
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(CheckError::Mountinfo)?;
    let mount = mount_of(&mountinfo, &canonical, dev);
    let storage = storage_of(&canonical).map_err(|errno| CheckError::Statfs {
        dir: canonical.clone(),
        errno,
    })?;
    let ocfs2_stack = std::fs::read_to_string("/sys/fs/ocfs2/cluster_stack").ok();
    let assessment = match &mount {
        Some(m) => assess(&m.fstype, &m.options, ocfs2_stack.as_deref()),
        None => Assessment {
            reach: Reach::ThisHostOnly,
            reason: "mount not found in /proc/self/mountinfo; assuming local".into(),
        },
    };
    Ok(Report {
        dir: canonical,
        mount,
        storage,
        assessment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_takes_only_octal_escapes() {
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape(r"/mnt/back\134slash"), "/mnt/back\\slash");
        // Not escapes: digits 8 and 9, values above \377, a short tail.
        assert_eq!(unescape(r"/x\089"), r"/x\089");
        assert_eq!(unescape(r"/x\777"), r"/x\777");
        assert_eq!(unescape(r"/x\04"), r"/x\04");
    }

    fn opts(s: &str) -> Vec<String> {
        s.split(',').map(str::to_owned).collect()
    }

    #[test]
    fn the_rule() {
        use Reach::*;
        let cases = [
            ("ext4", "rw,relatime", None, ThisHostOnly),
            ("tmpfs", "rw", None, ThisHostOnly),
            ("nfs4", "rw,vers=4.2", None, OtherHosts),
            ("nfs", "rw,vers=3,nolock", None, ThisHostOnly),
            ("nfs4", "rw,local_lock=posix", None, ThisHostOnly),
            ("nfs4", "rw,local_lock=none", None, OtherHosts),
            ("nfs", "rw,local_lock=flock", None, OtherHosts),
            ("ocfs2", "rw", None, ThisHostOnly),
            ("ocfs2", "rw", Some("o2cb\n"), OtherHosts),
            ("ocfs2", "rw,heartbeat=none", Some("o2cb"), ThisHostOnly),
            ("gfs2", "rw,localflocks", None, ThisHostOnly),
            ("gfs2", "rw", None, OtherHosts),
            ("fuse.glusterfs", "rw,user_id=0", None, OtherHosts),
            ("fuse.sshfs", "rw", None, ThisHostOnly),
            ("fuse", "rw", None, ThisHostOnly),
            ("ceph", "rw", None, OtherHosts),
            ("cifs", "rw,nobrl", None, ThisHostOnly),
        ];
        for (fs, o, stack, want) in cases {
            assert_eq!(
                assess(fs, &opts(o), stack).reach,
                want,
                "{fs} {o} {stack:?}"
            );
        }
    }

    #[test]
    fn mountinfo_lines() {
        let info = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
40 22 0:45 / /mnt/with\\040space rw - nfs4 srv:/x rw,vers=4.2,local_lock=none
41 40 0:46 / /mnt/with\\040space/inner rw - fuse.glusterfs h:/v rw,user_id=0
";
        let m = parse_mountinfo_line(info.lines().nth(1).unwrap()).unwrap();
        assert_eq!(m.mount_point, Path::new("/mnt/with space"));
        assert_eq!((m.dev, m.fstype.as_str()), ((0, 45), "nfs4"));
        assert!(has(&m.options, "local_lock=none"));
        let at = |p: &str, dev| mount_of(info, Path::new(p), dev).unwrap().fstype;
        assert_eq!(at("/mnt/with space/inner/ls", (0, 46)), "fuse.glusterfs");
        assert_eq!(at("/mnt/with space/d", (0, 45)), "nfs4");
        assert_eq!(at("/var/lib", (254, 0)), "ext4");
        assert!(parse_mountinfo_line("garbage").is_none());
    }

    #[test]
    fn a_local_directory_is_this_host_only() {
        let d = tempfile::tempdir().unwrap();
        let r = check(d.path()).unwrap();
        assert!(r.mount.is_some());
        if r.storage == Storage::Local {
            assert_eq!(r.assessment.reach, Reach::ThisHostOnly);
        }
        assert!(check(&d.path().join("missing")).is_err());
    }

    #[test]
    fn every_network_type_is_known_here_and_to_the_daemon() {
        use crate::lockspace::lease::NETWORK_FILESYSTEMS;
        for (fstype, kind) in NETWORK_TYPES {
            assert!(
                NETWORK_FILESYSTEMS.iter().any(|(_, k)| k == kind),
                "{fstype}: the daemon has no statfs magic of kind {kind}"
            );
            let a = assess(fstype, &[], Some("o2cb"));
            assert!(
                !a.reason.starts_with("a local filesystem"),
                "{fstype} is taken for a local filesystem"
            );
        }
    }
}
