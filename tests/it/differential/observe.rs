//! What a differential test sees of a daemon after each step, shared by the
//! fixed scenario (`differential.rs`) and the randomized test
//! (`randomized.rs`): reply frames byte for byte, the files below the
//! lockspace base with their modes, the daemon's kernel locks, and the fate of
//! the owner processes the test started. Also the client side that produces
//! the replies: one raw connection per client, frames written as given.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_util::codec::Encoder;
use virtlockd::protocol::xdr::XdrReader;
use virtlockd::protocol::{lock, status, FrameCodec, Header};

use crate::support::namespaced::Namespaced;

use super::scenario::BASE;

/// How long a CALL may take to be answered.
pub const REPLY_PATIENCE: Duration = Duration::from_secs(5);
/// How long to wait for a first frame after raw bytes (some get no reply).
pub const RAW_PATIENCE: Duration = Duration::from_millis(300);
/// Quiet time that ends a burst of replies.
pub const BURST_GAP: Duration = Duration::from_millis(100);

/// What one step made visible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub replies: Vec<Reply>,
    /// "path mode" of every file and directory below [`BASE`].
    pub files: Vec<String>,
    /// "READ 0-0 path" of every kernel lock of the daemon.
    pub locks: Vec<String>,
    /// "owner N: alive" or how it ended, for each owner process the test started.
    pub owners: Vec<String>,
}

#[derive(Clone, PartialEq, Eq)]
pub enum Reply {
    Frame(Vec<u8>),
    /// The daemon closed the connection.
    Closed,
    /// Nothing more came within the patience (a reply was still expected).
    Silence,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Closed => write!(f, "connection closed"),
            Reply::Silence => write!(f, "no reply"),
            Reply::Frame(bytes) => write!(f, "{}", describe_frame(bytes)),
        }
    }
}

/// The parts of two observations that differ, one per line.
pub fn difference(ours: &Observation, libvirt: &Observation) -> String {
    let mut out = String::new();
    if ours.replies != libvirt.replies {
        out += &format!(
            "  replies ours:    {:?}\n  replies libvirt: {:?}\n",
            ours.replies, libvirt.replies
        );
    }
    if ours.files != libvirt.files {
        out += &format!(
            "  files ours:    {:?}\n  files libvirt: {:?}\n",
            ours.files, libvirt.files
        );
    }
    if ours.locks != libvirt.locks {
        out += &format!(
            "  locks ours:    {:?}\n  locks libvirt: {:?}\n",
            ours.locks, libvirt.locks
        );
    }
    if ours.owners != libvirt.owners {
        out += &format!(
            "  owners ours:    {:?}\n  owners libvirt: {:?}\n",
            ours.owners, libvirt.owners
        );
    }
    out
}

/// The numbers of README's "Compatibility" list of deliberate fixes.
pub fn compatibility_fixes() -> Vec<u32> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Compatibility")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a Compatibility section");
    section
        .lines()
        .filter_map(|l| {
            let (n, _) = l.split_once(". **")?;
            n.trim().parse().ok()
        })
        .collect()
}

/// One client connection, speaking raw frames.
pub struct Conn {
    pub stream: UnixStream,
    pub serial: u32,
}

impl Conn {
    pub async fn connect(ns: &Namespaced) -> Self {
        let stream = UnixStream::connect(ns.socket()).await.expect("connect");
        Self { stream, serial: 0 }
    }

    pub async fn call(&mut self, call: &lock::LockCall) -> Vec<Reply> {
        let frame = call_frame(call, self.serial);
        self.serial += 1;
        self.stream.write_all(&frame).await.expect("write");
        // One reply; a missing one shows as an empty list.
        match tokio::time::timeout(REPLY_PATIENCE, read_frame(&mut self.stream)).await {
            Err(_) => Vec::new(),
            Ok(None) => vec![Reply::Closed],
            Ok(Some(frame)) => vec![Reply::Frame(frame)],
        }
    }

    /// Closes the connection and waits (bounded) until the daemon has seen
    /// the EOF: it then closes its end too.
    pub async fn close(mut self) {
        let _ = self.stream.shutdown().await;
        let mut sink = [0u8; 256];
        let _ = tokio::time::timeout(REPLY_PATIENCE, async {
            while matches!(self.stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }

    pub async fn raw(&mut self, bytes: &[u8]) -> Vec<Reply> {
        // The daemon may already have closed the connection: that shows in the read.
        let _ = self.stream.write_all(bytes).await;
        self.read_burst(RAW_PATIENCE).await
    }

    /// Frames until the connection closes or stays quiet: `first` for the
    /// first frame, [`BURST_GAP`] after each.
    pub async fn read_burst(&mut self, first: Duration) -> Vec<Reply> {
        let mut replies = Vec::new();
        let mut wait = first;
        loop {
            match tokio::time::timeout(wait, read_frame(&mut self.stream)).await {
                Err(_) => return replies,
                Ok(None) => {
                    replies.push(Reply::Closed);
                    return replies;
                }
                Ok(Some(frame)) => replies.push(Reply::Frame(frame)),
            }
            wait = BURST_GAP;
        }
    }
}

/// A lock-program CALL frame with this serial, as bytes on the wire.
pub fn call_frame(call: &lock::LockCall, serial: u32) -> Vec<u8> {
    let mut bytes = BytesMut::new();
    FrameCodec
        .encode(virtlockd::client::call_frame(call, serial), &mut bytes)
        .expect("a call frame fits in a packet");
    bytes.to_vec()
}

/// One whole frame (length word included), or `None` at EOF or error.
pub async fn read_frame(s: &mut UnixStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.ok()?;
    let n = u32::from_be_bytes(len) as usize;
    let mut frame = vec![0u8; n.max(4)];
    frame[..4].copy_from_slice(&len);
    s.read_exact(&mut frame[4..]).await.ok()?;
    Some(frame)
}

/// Creates a file or directory below [`BASE`] in the daemon's namespace.
pub fn prepare(ns: &Namespaced, rel: &str, dir: bool) {
    let path = ns.inside(&format!("{BASE}/{rel}"));
    if dir {
        std::fs::create_dir_all(&path).expect("fixture dir");
    } else {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("fixture parent");
        std::fs::write(&path, b"fixture").expect("fixture file");
    }
}

/// "relative/path 0100600" for everything below [`BASE`], sorted.
pub fn files(ns: &Namespaced) -> Vec<String> {
    let mut out = Vec::new();
    walk(&ns.inside(BASE), "", &mut |rel, meta| {
        out.push(format!("{rel} {:o}", meta.permissions().mode()));
    });
    out.sort();
    out
}

fn walk(dir: &Path, prefix: &str, f: &mut dyn FnMut(&str, &std::fs::Metadata)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let rel = format!("{prefix}{}", e.file_name().to_string_lossy());
        let Ok(meta) = e.metadata() else { continue };
        f(&rel, &meta);
        if meta.is_dir() {
            walk(&e.path(), &format!("{rel}/"), f);
        }
    }
}

/// The daemon's kernel locks, each named by the file it is on.
pub fn locks(ns: &Namespaced) -> Vec<String> {
    let mut names: HashMap<(u64, u64), String> = HashMap::new();
    walk(&ns.inside(BASE), "", &mut |rel, meta| {
        names.insert((meta.dev(), meta.ino()), rel.to_owned());
    });
    if let Ok(meta) = std::fs::metadata(ns.inside("/run/virtlockd.pid")) {
        names.insert((meta.dev(), meta.ino()), "<pid file>".to_owned());
    }
    // From the daemon's fds, not /proc/locks: that is served a page per
    // read(2), and a line can be skipped while other processes lock and
    // unlock (seen in long random runs, with both daemons).
    let mut out: Vec<String> = virtlockd::proclocks::of_pid_by_fd(ns.pid())
        .expect("/proc/PID/fdinfo")
        .iter()
        .map(|l| {
            let file = names
                .get(&(l.dev, l.inode))
                .cloned()
                .unwrap_or_else(|| format!("<unlinked inode {}>", l.inode));
            let end = l.end.map_or("EOF".to_owned(), |e| e.to_string());
            format!("{} {} {}-{end} {file}", l.kind, l.mode, l.start)
        })
        .collect();
    out.sort();
    out
}

/// A reply frame decoded for the failure report: header, and every field of
/// an error body.
pub fn describe_frame(bytes: &[u8]) -> String {
    let mut r = XdrReader::new(bytes.get(4..).unwrap_or_default());
    let Ok(h) = Header::decode(&mut r) else {
        return format!("short frame {bytes:02x?}");
    };
    let head = format!(
        "[prog {:#x} vers {} proc {} type {} serial {} status {} len {}]",
        h.prog,
        h.vers,
        h.proc_,
        h.msg_type,
        h.serial,
        h.status,
        bytes.len()
    );
    if h.status != status::ERROR {
        return head;
    }
    match error_fields(&mut r) {
        Some(e) => format!("{head} {e}"),
        None => format!("{head} undecodable error {bytes:02x?}"),
    }
}

/// `remote_error`: code, domain, message*, level, dom*, str1-3*, int1, int2, net*.
fn error_fields(r: &mut XdrReader<'_>) -> Option<String> {
    let opt_str = |r: &mut XdrReader<'_>| -> Option<String> {
        if r.optional().ok()? {
            Some(format!(
                "{:?}",
                String::from_utf8_lossy(r.string(1 << 20).ok()?)
            ))
        } else {
            Some("NULL".to_owned())
        }
    };
    let code = r.i32().ok()?;
    let domain = r.i32().ok()?;
    let message = opt_str(r)?;
    let level = r.i32().ok()?;
    let dom = r.optional().ok()?;
    if dom {
        return Some(format!(
            "code {code} domain {domain} message {message} dom set"
        ));
    }
    let (str1, str2, str3) = (opt_str(r)?, opt_str(r)?, opt_str(r)?);
    let (int1, int2) = (r.i32().ok()?, r.i32().ok()?);
    let net = r.optional().ok()?;
    Some(format!(
        "code {code} domain {domain} message {message} level {level} str1 {str1} \
         str2 {str2} str3 {str3} int1 {int1} int2 {int2} net {}",
        if net { "set" } else { "NULL" }
    ))
}
