//! Differential test against libvirt's virtlockd: one scenario (see
//! `differential/scenario.rs`) runs against our daemon and against
//! `/usr/sbin/virtlockd`, each in its own mount namespace with the lockspaces at
//! the same path. After every step the test records the reply frames byte for
//! byte (so every field: status, code, domain, message, level, dom, str1-3, int1,
//! int2, net), the files below the lockspace base with their modes, and the
//! daemon's kernel locks (mode, range, which file). Any difference must be one of
//! the deliberate fixes of README's Compatibility section, and every allowed
//! difference must still occur. Needs root, namespaces and libvirt's daemon.

mod scenario;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use virtlockd::protocol::xdr::XdrReader;
use virtlockd::protocol::{lock, msg_type, status, Header};

use crate::support::namespaced::{prerequisites, Impl, Namespaced};
use scenario::{Act, Step, ALLOWED, BASE};

/// How long a CALL may take to be answered.
const REPLY_PATIENCE: Duration = Duration::from_secs(5);
/// How long to wait for a first frame after raw bytes (some get no reply).
const RAW_PATIENCE: Duration = Duration::from_millis(300);
/// Quiet time that ends a burst of replies.
const BURST_GAP: Duration = Duration::from_millis(100);

/// What one step made visible.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observation {
    replies: Vec<Reply>,
    /// "path mode" of every file and directory below [`BASE`].
    files: Vec<String>,
    /// "READ 0-0 path" of every kernel lock of the daemon.
    locks: Vec<String>,
}

#[derive(Clone, PartialEq, Eq)]
enum Reply {
    Frame(Vec<u8>),
    /// The daemon closed the connection.
    Closed,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Closed => write!(f, "connection closed"),
            Reply::Frame(bytes) => write!(f, "{}", describe_frame(bytes)),
        }
    }
}

#[tokio::test]
async fn same_replies_files_and_locks_as_libvirt() {
    if !prerequisites("same_replies_files_and_locks_as_libvirt") {
        return;
    }
    let steps = scenario::steps();
    let (ours, libvirt) = tokio::join!(observe(Impl::Ours, &steps), observe(Impl::Libvirt, &steps));
    let fixes = compatibility_fixes();
    let mut unexplained = Vec::new();
    let mut seen_fixes = BTreeMap::new();
    for ((step, o), l) in steps.iter().zip(&ours).zip(&libvirt) {
        let allowed = allowed_fix(&step.label);
        match (o == l, allowed) {
            (true, _) => {}
            (false, Some(fix)) => {
                seen_fixes.insert(step.label.clone(), fix);
            }
            (false, None) => {
                unexplained.push(format!("step `{}`:\n{}", step.label, difference(o, l)))
            }
        }
    }
    assert!(
        unexplained.is_empty(),
        "{} differences that are not deliberate fixes:\n{}",
        unexplained.len(),
        unexplained.join("\n")
    );
    let allowlisted: Vec<&Step> = steps
        .iter()
        .filter(|s| allowed_fix(&s.label).is_some())
        .collect();
    for step in &allowlisted {
        let fix = allowed_fix(&step.label).unwrap_or_default();
        assert!(
            fixes.contains(&fix),
            "fix {fix} (step `{}`) is not in README's Compatibility list {fixes:?}",
            step.label
        );
        assert!(
            seen_fixes.contains_key(&step.label),
            "step `{}` is allowed to differ (fix {fix}) but did not",
            step.label
        );
    }
    eprintln!(
        "differential: {} steps, {} identical, {} deliberate differences: {seen_fixes:?}",
        steps.len(),
        steps.len() - seen_fixes.len(),
        seen_fixes.len(),
    );
}

/// The parts of two observations that differ, one per line.
fn difference(ours: &Observation, libvirt: &Observation) -> String {
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
    out
}

/// The README fix a step label is tied to, if any.
fn allowed_fix(label: &str) -> Option<u32> {
    ALLOWED
        .iter()
        .find(|(prefix, _)| label.starts_with(prefix))
        .map(|&(_, fix)| fix)
}

/// The numbers of README's "Compatibility" list of deliberate fixes.
fn compatibility_fixes() -> Vec<u32> {
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

/// Runs every step against one implementation; one observation per step.
async fn observe(which: Impl, steps: &[Step]) -> Vec<Observation> {
    let mut ns = Namespaced::start(which);
    drop(ns.wait_serving(which, "start-up").await);
    let mut conns: HashMap<usize, Conn> = HashMap::new();
    let mut out = Vec::with_capacity(steps.len());
    for step in steps {
        let replies = match &step.act {
            Act::Call(call) => {
                let conn = connection(&mut conns, &ns, step.conn).await;
                conn.call(call).await
            }
            Act::Raw(bytes) => {
                let conn = connection(&mut conns, &ns, step.conn).await;
                conn.raw(bytes).await
            }
            Act::Close => {
                if let Some(conn) = conns.remove(&step.conn) {
                    conn.close().await;
                }
                Vec::new()
            }
            Act::File(rel) => {
                prepare(&ns, rel, false);
                Vec::new()
            }
            Act::Dir(rel) => {
                prepare(&ns, rel, true);
                Vec::new()
            }
        };
        out.push(Observation {
            replies,
            files: files(&ns),
            locks: locks(&ns),
        });
    }
    ns.assert_alive(&format!("{which:?} at the end of the scenario"));
    out
}

async fn connection<'a>(
    conns: &'a mut HashMap<usize, Conn>,
    ns: &Namespaced,
    n: usize,
) -> &'a mut Conn {
    if let std::collections::hash_map::Entry::Vacant(e) = conns.entry(n) {
        let stream = UnixStream::connect(ns.socket()).await.expect("connect");
        e.insert(Conn { stream, serial: 0 });
    }
    conns.get_mut(&n).expect("connection")
}

/// One client connection, speaking raw frames.
struct Conn {
    stream: UnixStream,
    serial: u32,
}

impl Conn {
    async fn call(&mut self, call: &lock::LockCall) -> Vec<Reply> {
        let mut payload = BytesMut::new();
        call.encode(&mut payload);
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&((28 + payload.len()) as u32).to_be_bytes());
        Header {
            prog: lock::PROGRAM,
            vers: lock::VERSION,
            proc_: call.procedure() as i32,
            msg_type: msg_type::CALL,
            serial: self.serial,
            status: status::OK,
        }
        .encode(&mut frame);
        frame.extend_from_slice(&payload);
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
    async fn close(mut self) {
        let _ = self.stream.shutdown().await;
        let mut sink = [0u8; 256];
        let _ = tokio::time::timeout(REPLY_PATIENCE, async {
            while matches!(self.stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }

    async fn raw(&mut self, bytes: &[u8]) -> Vec<Reply> {
        // The daemon may already have closed the connection: that shows in the read.
        let _ = self.stream.write_all(bytes).await;
        self.read_burst(RAW_PATIENCE).await
    }

    /// Frames until the connection closes or stays quiet: `first` for the
    /// first frame, [`BURST_GAP`] after each.
    async fn read_burst(&mut self, first: Duration) -> Vec<Reply> {
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

/// One whole frame (length word included), or `None` at EOF or error.
async fn read_frame(s: &mut UnixStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.ok()?;
    let n = u32::from_be_bytes(len) as usize;
    let mut frame = vec![0u8; n.max(4)];
    frame[..4].copy_from_slice(&len);
    s.read_exact(&mut frame[4..]).await.ok()?;
    Some(frame)
}

/// Creates a file or directory below [`BASE`] in the daemon's namespace.
fn prepare(ns: &Namespaced, rel: &str, dir: bool) {
    let path = ns.inside(&format!("{BASE}/{rel}"));
    if dir {
        std::fs::create_dir_all(&path).expect("fixture dir");
    } else {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("fixture parent");
        std::fs::write(&path, b"fixture").expect("fixture file");
    }
}

/// "relative/path 0100600" for everything below [`BASE`], sorted.
fn files(ns: &Namespaced) -> Vec<String> {
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
fn locks(ns: &Namespaced) -> Vec<String> {
    let mut names: HashMap<(u64, u64), String> = HashMap::new();
    walk(&ns.inside(BASE), "", &mut |rel, meta| {
        names.insert((meta.dev(), meta.ino()), rel.to_owned());
    });
    if let Ok(meta) = std::fs::metadata(ns.inside("/run/virtlockd.pid")) {
        names.insert((meta.dev(), meta.ino()), "<pid file>".to_owned());
    }
    let mut out: Vec<String> = virtlockd::proclocks::of_pid(ns.pid())
        .expect("/proc/locks")
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
fn describe_frame(bytes: &[u8]) -> String {
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
