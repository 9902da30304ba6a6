//! The model of the daemon's state kept while a random sequence is generated
//! (see `random.rs`): lockspaces, the lease table with every ownership entry,
//! which files and directories exist, each connection's registration and
//! restriction, the owner processes. For each candidate step it predicts
//! libvirt's replies (status, code, domain), whether the daemon closes the
//! connection, which owners are fenced, and which deliberate fix of README's
//! Compatibility section the step exercises with the exact difference it
//! makes; or it says the step is unpredictable, and the generator draws
//! another.

use std::collections::{BTreeMap, BTreeSet};

use virtlockd::client::owner;
use virtlockd::protocol::lock::{self, LockCall};
use virtlockd::protocol::msg_type;

use super::super::scenario::BASE;

/// Connection slots: 0..TEST_CONNS opened by the test, the rest by owner processes.
pub const CONNS: usize = 6;
pub(super) const TEST_CONNS: usize = 4;

/// Who a REGISTER names: a made-up owner (`Fake(id)`: id, pid 4_000_000 + id,
/// but pid 0 for id 7 and pid 0xFFFFFFFF (-1 as a pid_t) for id 8, both
/// accepted by libvirt; id 0 is refused) or owner
/// process number `k` of the run (`Child(k)`, its real pid, known only when the
/// step runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerRef {
    Fake(u32),
    Child(usize),
}

/// A lock-program call, with the owner symbolic.
#[derive(Debug, Clone)]
pub enum Op {
    Register {
        owner: OwnerRef,
        flags: u32,
    },
    Restrict {
        flags: u32,
    },
    New {
        path: Vec<u8>,
        flags: u32,
    },
    CreateLockspace {
        path: Vec<u8>,
    },
    CreateResource {
        path: Vec<u8>,
        name: Vec<u8>,
        flags: u32,
    },
    DeleteResource {
        path: Vec<u8>,
        name: Vec<u8>,
        flags: u32,
    },
    Acquire {
        path: Vec<u8>,
        name: Vec<u8>,
        flags: u32,
    },
    Release {
        path: Vec<u8>,
        name: Vec<u8>,
        flags: u32,
    },
}

impl Op {
    /// The call as sent, with `pid_of(k)` the pid of owner process `k`.
    pub fn to_call(&self, pid_of: &dyn Fn(usize) -> u32) -> LockCall {
        let b = |v: &Vec<u8>| bytes::Bytes::from(v.clone());
        match self {
            Op::Register { owner: o, flags } => LockCall::Register {
                owner: match *o {
                    OwnerRef::Fake(7) => owner("vm-7", 7, 0),
                    OwnerRef::Fake(8) => owner("vm-8", 8, u32::MAX),
                    OwnerRef::Fake(id) => owner(&format!("vm-{id}"), id, 4_000_000 + id),
                    OwnerRef::Child(k) => owner(&format!("owner-{k}"), 100 + k as u32, pid_of(k)),
                },
                flags: *flags,
            },
            Op::Restrict { flags } => LockCall::Restrict { flags: *flags },
            Op::New { path, flags } => LockCall::New {
                path: b(path),
                flags: *flags,
            },
            Op::CreateLockspace { path } => LockCall::CreateLockspace { path: b(path) },
            Op::CreateResource { path, name, flags } => LockCall::CreateResource {
                path: b(path),
                name: b(name),
                flags: *flags,
            },
            Op::DeleteResource { path, name, flags } => LockCall::DeleteResource {
                path: b(path),
                name: b(name),
                flags: *flags,
            },
            Op::Acquire { path, name, flags } => LockCall::Acquire {
                path: b(path),
                name: b(name),
                flags: *flags,
            },
            Op::Release { path, name, flags } => LockCall::Release {
                path: b(path),
                name: b(name),
                flags: *flags,
            },
        }
    }

    fn describe(&self) -> String {
        let s = |v: &[u8]| shorten(v);
        match self {
            Op::Register { owner, flags } => format!("REGISTER {owner:?} flags={flags:#x}"),
            Op::Restrict { flags } => format!("RESTRICT flags={flags:#x}"),
            Op::New { path, flags } => format!("NEW {} flags={flags:#x}", s(path)),
            Op::CreateLockspace { path } => format!("CREATE_LOCKSPACE {}", s(path)),
            Op::CreateResource { path, name, flags } => {
                format!("CREATE_RESOURCE {} {} flags={flags:#x}", s(path), s(name))
            }
            Op::DeleteResource { path, name, flags } => {
                format!("DELETE_RESOURCE {} {} flags={flags:#x}", s(path), s(name))
            }
            Op::Acquire { path, name, flags } => {
                format!("ACQUIRE {} {} flags={flags:#x}", s(path), s(name))
            }
            Op::Release { path, name, flags } => {
                format!("RELEASE {} {} flags={flags:#x}", s(path), s(name))
            }
        }
    }
}

/// Bytes as a readable, bounded string for traces.
fn shorten(v: &[u8]) -> String {
    let text = String::from_utf8_lossy(v).replace(BASE, "$B");
    if text.len() > 40 {
        format!("{:?}..({} bytes)", &text[..20], v.len())
    } else {
        format!("{text:?}")
    }
}

/// How a call's frame is altered without changing its meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mangle {
    None,
    /// Eight bytes after the arguments (ignored by the decoder).
    Trailing,
    /// Type CALL_WITH_FDS with an fd count of 0.
    WithNoFds,
    /// The path argument followed by a NUL and more bytes (the daemon cuts there).
    NulInPath,
    /// Type CALL_WITH_FDS with an fd count of 1, the fd sent after the frame.
    WithOneFd,
}

/// One frame of a step.
#[derive(Debug, Clone)]
pub enum Piece {
    Call { op: Op, serial: u32, mangle: Mangle },
    Bytes { what: String, bytes: Vec<u8> },
}

impl Piece {
    /// The bytes on the wire.
    pub fn encode(&self, pid_of: &dyn Fn(usize) -> u32) -> Vec<u8> {
        match self {
            Piece::Bytes { bytes, .. } => bytes.clone(),
            Piece::Call { op, serial, mangle } => {
                let mut call = op.to_call(pid_of);
                if *mangle == Mangle::NulInPath {
                    if let LockCall::CreateLockspace { path } = &call {
                        let mut p = path.to_vec();
                        p.extend_from_slice(b"\0junk");
                        call = LockCall::CreateLockspace { path: p.into() };
                    }
                }
                let mut f = super::super::observe::call_frame(&call, *serial);
                match mangle {
                    Mangle::Trailing => f.extend_from_slice(&[0; 8]),
                    Mangle::WithNoFds | Mangle::WithOneFd => {
                        let nfds = u32::from(*mangle == Mangle::WithOneFd);
                        f[16..20].copy_from_slice(&msg_type::CALL_WITH_FDS.to_be_bytes());
                        f.splice(28..28, nfds.to_be_bytes());
                    }
                    Mangle::None | Mangle::NulInPath => {}
                }
                let len = f.len() as u32;
                f[..4].copy_from_slice(&len.to_be_bytes());
                f
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Piece::Bytes { what, .. } => what.clone(),
            Piece::Call { op, serial, mangle } => {
                let m = match mangle {
                    Mangle::None => "",
                    Mangle::Trailing => " +8 trailing bytes",
                    Mangle::WithNoFds => " as CALL_WITH_FDS nfds=0",
                    Mangle::NulInPath => " path+NUL+junk",
                    Mangle::WithOneFd => " as CALL_WITH_FDS with one fd attached",
                };
                format!("{} serial={serial}{m}", op.describe())
            }
        }
    }
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum Act {
    /// Opens the slot: by the test, or by a new owner process `child`.
    Connect { conn: usize, child: Option<usize> },
    /// Writes these frames (in two writes if `split`).
    Send {
        conn: usize,
        pieces: Vec<Piece>,
        split: bool,
    },
    /// The client closes the connection.
    Close { conn: usize },
    /// The test creates a plain file at `BASE/<rel>`.
    File(String),
}

/// One reply as the model predicts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    Ok,
    Err(i32, i32),
    Pong,
}

/// A deliberate fix of README's Compatibility list, with the exact difference
/// it makes at this step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    /// 1: NEW on a path that cannot be a directory: libvirt says OK, we give
    /// this error (code, domain 51, message).
    NewNotDirectory { code: i32, message: String },
    /// 2: an owner disconnect with duplicate shared entries: libvirt leaks
    /// these resources (paths below BASE; whether AUTOCREATE left a file).
    LeakedEntries { leaked: Vec<(String, bool)> },
    /// 3: a name that leaves the lockspace: our INVALID_ARG error.
    EscapingName { message: String },
    /// 6: CREATE_RESOURCE of a file leased under another name: libvirt drops
    /// the kernel lock on it.
    CreateOfLeasedFile { rel: String },
    /// 9: an error quoting non-UTF-8 bytes: ours shows them as U+FFFD.
    NonUtf8Text,
    /// 10: a call with an fd attached: we close the connection, libvirt
    /// answers the call.
    FdAttached,
    /// 16: a length word below 28 without the bytes it announces: we close the
    /// connection at once, libvirt waits for them.
    ShortLengthWord,
    /// 11: a second lease on a leased file under another name: busy for us,
    /// granted by libvirt (its lock then has `mode`).
    SecondName {
        message: String,
        rel: String,
        mode: &'static str,
    },
}

impl Fix {
    pub fn number(&self) -> u32 {
        match self {
            Fix::NewNotDirectory { .. } => 1,
            Fix::LeakedEntries { .. } => 2,
            Fix::EscapingName { .. } => 3,
            Fix::CreateOfLeasedFile { .. } => 6,
            Fix::NonUtf8Text => 9,
            Fix::FdAttached => 10,
            Fix::ShortLengthWord => 16,
            Fix::SecondName { .. } => 11,
        }
    }
}

/// What the model predicts for a step.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// Reply frames of libvirt's daemon, in order.
    pub replies: Vec<Expected>,
    /// The daemon closes the connection after them.
    pub closes: bool,
    /// libvirt's daemon stays silent and keeps the connection open while it
    /// waits for more bytes: nothing else may be written.
    pub silent: bool,
    /// Owner processes fenced by this step.
    pub kills: Vec<usize>,
    pub fix: Option<Fix>,
    /// The daemons' states differ after this step: the sequence ends here.
    pub terminal: bool,
}

pub struct Step {
    pub act: Act,
    pub expect: Expect,
}

impl Step {
    pub fn describe(&self) -> String {
        let act = match &self.act {
            Act::Connect { conn, child: None } => format!("c{conn} connect"),
            Act::Connect {
                conn,
                child: Some(k),
            } => format!("c{conn} connect as owner process {k}"),
            Act::Close { conn } => format!("c{conn} close"),
            Act::File(rel) => format!("file $B/{rel}"),
            Act::Send {
                conn,
                pieces,
                split,
            } => {
                let parts: Vec<String> = pieces.iter().map(Piece::describe).collect();
                format!(
                    "c{conn} {}{}",
                    parts.join(" | "),
                    if *split { " (split in two writes)" } else { "" }
                )
            }
        };
        let e = &self.expect;
        let mut out = format!("{act}  => {:?}", e.replies);
        if e.closes {
            out += " closed";
        }
        if e.silent {
            out += " silent";
        }
        if !e.kills.is_empty() {
            out += &format!(" fences owner process {:?}", e.kills);
        }
        if let Some(f) = &e.fix {
            out += &format!(" [fix {}]", f.number());
        }
        out
    }
}

/// A step the model cannot predict exactly: the generator picks another.
pub(super) struct Unpredictable;

pub(super) type Predicted<T> = Result<T, Unpredictable>;

#[derive(Debug, Clone)]
pub(super) struct ConnState {
    /// The owner process that opened it, if not the test.
    pub(super) child: Option<usize>,
    pub(super) owner: Option<OwnerRef>,
    restricted: bool,
    serial: u32,
}

#[derive(Debug, Clone)]
pub(super) struct Resource {
    pub(super) shared: bool,
    autocreate: bool,
    pub(super) owners: Vec<OwnerRef>,
    /// The file's canonical path.
    file: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Space {
    /// libvirt stored a NULL lockspace here (NEW that failed): looks missing.
    null: bool,
    pub(super) resources: BTreeMap<Vec<u8>, Resource>,
}

/// What a path names (after the kernel's lookup rules).
enum Node {
    File,
    Dir,
    /// `parent`: whether the directory it would be created in exists.
    Missing {
        parent: bool,
    },
}

const ENOENT: i32 = 2;
const ENOTDIR: i32 = 20;
const EISDIR: i32 = 21;
const ENAMETOOLONG: i32 = 36;

fn strerror(errno: i32) -> &'static str {
    match errno {
        ENOTDIR => "Not a directory",
        ENAMETOOLONG => "File name too long",
        ENOENT => "No such file or directory",
        EISDIR => "Is a directory",
        _ => "?",
    }
}

/// Outcome of one call: the reply, and the fix it exercises.
struct Outcome {
    reply: Expected,
    fix: Option<Fix>,
    terminal: bool,
}

impl Outcome {
    fn ok() -> Self {
        Self {
            reply: Expected::Ok,
            fix: None,
            terminal: false,
        }
    }

    fn err(code: i32, domain: i32) -> Self {
        Self {
            reply: Expected::Err(code, domain),
            fix: None,
            terminal: false,
        }
    }

    /// An error whose message quotes `text`: fix 9 when it is not UTF-8.
    fn err_quoting(code: i32, domain: i32, text: &[u8]) -> Self {
        Self {
            reply: Expected::Err(code, domain),
            fix: std::str::from_utf8(text)
                .is_err()
                .then_some(Fix::NonUtf8Text),
            terminal: false,
        }
    }
}

pub(super) const RPC: i32 = 7;
const LOCKSPACE: i32 = 51;

#[derive(Debug, Clone)]
pub struct Model {
    pub(super) conns: Vec<Option<ConnState>>,
    /// Whether each owner process is still running.
    pub(super) children: Vec<bool>,
    pub(super) spaces: BTreeMap<Vec<u8>, Space>,
    files: BTreeSet<Vec<u8>>,
    dirs: BTreeSet<Vec<u8>>,
    /// A connection the two daemons no longer agree on (one closed it): the
    /// client closes it next.
    pub(super) doomed: Option<usize>,
}

impl Model {
    pub(super) fn new() -> Self {
        let mut spaces = BTreeMap::new();
        spaces.insert(Vec::new(), Space::default());
        let dirs = ["/", "/run", BASE]
            .iter()
            .map(|d| d.as_bytes().to_vec())
            .collect();
        Self {
            conns: vec![None; CONNS],
            children: Vec::new(),
            spaces,
            files: BTreeSet::new(),
            dirs,
            doomed: None,
        }
    }

    fn kind(&self, canon: &[u8]) -> Option<bool> {
        if self.dirs.contains(canon) {
            Some(true)
        } else if self.files.contains(canon) {
            Some(false)
        } else {
            None
        }
    }

    /// The kernel's lookup of an absolute path, on the model's files.
    fn resolve(&self, raw: &[u8]) -> Result<(Vec<u8>, Node), i32> {
        let mut stack: Vec<&[u8]> = Vec::new();
        let canon = |stack: &[&[u8]]| -> Vec<u8> {
            if stack.is_empty() {
                return b"/".to_vec();
            }
            let mut c = Vec::new();
            for s in stack {
                c.push(b'/');
                c.extend_from_slice(s);
            }
            c
        };
        let comps: Vec<&[u8]> = raw.split(|&b| b == b'/').collect();
        let last = comps.iter().rposition(|c| !c.is_empty()).unwrap_or(0);
        for (i, comp) in comps.iter().enumerate() {
            if comp.is_empty() {
                continue;
            }
            match self.kind(&canon(&stack)) {
                Some(true) => {}
                Some(false) => return Err(ENOTDIR),
                None => {
                    return Ok((canon(&stack), Node::Missing { parent: false }));
                }
            }
            match *comp {
                b"." => {}
                b".." => {
                    stack.pop();
                }
                name if name.len() > 255 => return Err(ENAMETOOLONG),
                name => stack.push(name),
            }
            if i == last {
                break;
            }
        }
        let c = canon(&stack);
        let node = match self.kind(&c) {
            Some(true) => Node::Dir,
            Some(false) => Node::File,
            None => Node::Missing { parent: true },
        };
        if raw.ends_with(b"/") && matches!(node, Node::File) {
            return Err(ENOTDIR);
        }
        Ok((c, node))
    }

    /// `mkdir -p` (mode 0700) as both daemons create a lockspace directory.
    fn make_lockspace_dir(&mut self, key: &[u8]) -> Result<(), (i32, String)> {
        let shown = String::from_utf8_lossy(key);
        match self.resolve(key) {
            Ok((_, Node::Dir)) => Ok(()),
            Ok((_, Node::File)) => Err((
                1,
                format!(
                    "internal error: Lockspace location {shown} exists, but is not a directory"
                ),
            )),
            Ok((_, Node::Missing { .. })) => {
                // Every missing component becomes a directory (`.` names
                // the directory it is in).
                let mut path = Vec::new();
                for comp in key
                    .split(|&b| b == b'/')
                    .filter(|c| !c.is_empty() && *c != b".")
                {
                    path.push(b'/');
                    path.extend_from_slice(comp);
                    if comp.len() > 255 {
                        return Err((
                            38,
                            format!(
                                "Unable to create lockspace {shown}: {}",
                                strerror(ENAMETOOLONG)
                            ),
                        ));
                    }
                    match self.kind(&path) {
                        Some(true) => {}
                        Some(false) => {
                            return Err((
                                38,
                                format!(
                                    "Unable to create lockspace {shown}: {}",
                                    strerror(ENOTDIR)
                                ),
                            ))
                        }
                        None => {
                            self.dirs.insert(path.clone());
                        }
                    }
                }
                Ok(())
            }
            Err(e) => Err((
                38,
                format!("Unable to create lockspace {shown}: {}", strerror(e)),
            )),
        }
    }

    pub(super) fn space(&self, key: &[u8]) -> Option<&Space> {
        self.spaces.get(key).filter(|s| !s.null)
    }

    fn path_of(key: &[u8], name: &[u8]) -> Vec<u8> {
        if key.is_empty() {
            return name.to_vec();
        }
        let mut p = key.to_vec();
        p.push(b'/');
        p.extend_from_slice(name);
        p
    }

    /// The entry leasing `file` under another lockspace or name, if any.
    fn leased_elsewhere(&self, file: &[u8], key: &[u8], name: &[u8]) -> Option<&Resource> {
        self.spaces.iter().find_map(|(k, s)| {
            s.resources
                .iter()
                .find(|(n, r)| r.file == file && !(k.as_slice() == key && n.as_slice() == name))
                .map(|(_, r)| r)
        })
    }

    fn rel(file: &[u8]) -> String {
        let f = String::from_utf8_lossy(file);
        f.strip_prefix(&format!("{BASE}/")).unwrap_or(&f).to_owned()
    }

    /// Checks (a) flags, (b) restricted, (c) registered, in libvirt's order.
    fn admit(&self, conn: usize, flags: u32, allowed: u32, needs_owner: bool) -> Option<Outcome> {
        let c = self.conns[conn].as_ref()?;
        if flags & !allowed != 0 {
            return Some(Outcome::err(8, RPC));
        }
        if c.restricted {
            return Some(Outcome::err(29, RPC));
        }
        if needs_owner && c.owner.is_none() {
            return Some(Outcome::err(55, RPC));
        }
        None
    }

    /// Checks, lockspace lookup and fix 3's name check of the resource calls.
    fn resource_checks(
        &self,
        conn: usize,
        key: &[u8],
        name: &[u8],
        flags: u32,
        allowed: u32,
    ) -> Result<Option<Fix>, Outcome> {
        if let Some(o) = self.admit(conn, flags, allowed, true) {
            return Err(o);
        }
        if self.space(key).is_none() {
            return Err(Outcome::err_quoting(1, RPC, key));
        }
        let escapes = !key.is_empty()
            && (name.is_empty() || name == b"." || name == b".." || name.contains(&b'/'));
        Ok(escapes.then(|| Fix::EscapingName {
            message: format!(
                "invalid argument: resource name '{}' is not valid in lockspace '{}'",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(key)
            ),
        }))
    }

    fn owner_of(&self, conn: usize) -> OwnerRef {
        self.conns[conn]
            .as_ref()
            .and_then(|c| c.owner)
            .unwrap_or(OwnerRef::Fake(0))
    }

    fn call(&mut self, conn: usize, op: &Op) -> Predicted<Outcome> {
        match op {
            Op::Register { owner, flags } => {
                if let Some(o) = self.admit(conn, *flags, 0, false) {
                    return Ok(o);
                }
                if *owner == OwnerRef::Fake(0) {
                    return Ok(Outcome::err(55, RPC));
                }
                if let Some(c) = self.conns[conn].as_mut() {
                    c.owner = Some(*owner);
                }
                Ok(Outcome::ok())
            }
            Op::Restrict { flags } => {
                if let Some(o) = self.admit(conn, *flags, 0, true) {
                    return Ok(o);
                }
                if let Some(c) = self.conns[conn].as_mut() {
                    c.restricted = true;
                }
                Ok(Outcome::ok())
            }
            Op::New { path, flags } => {
                if let Some(o) = self.admit(conn, *flags, 0, true) {
                    return Ok(o);
                }
                if path.is_empty() {
                    return Ok(Outcome::err(55, RPC));
                }
                if self.space(path).is_some() {
                    return Ok(Outcome::err_quoting(1, RPC, path));
                }
                let was_null = self.spaces.contains_key(path);
                match self.make_lockspace_dir(path) {
                    Ok(()) if was_null => Err(Unpredictable),
                    Ok(()) => {
                        self.spaces.insert(path.clone(), Space::default());
                        Ok(Outcome::ok())
                    }
                    Err(_) if std::str::from_utf8(path).is_err() => Err(Unpredictable),
                    Err((code, message)) => {
                        self.spaces.insert(
                            path.clone(),
                            Space {
                                null: true,
                                ..Space::default()
                            },
                        );
                        Ok(Outcome {
                            reply: Expected::Ok,
                            fix: Some(Fix::NewNotDirectory { code, message }),
                            terminal: false,
                        })
                    }
                }
            }
            Op::CreateLockspace { path } => {
                if let Some(o) = self.admit(conn, 0, 0, false) {
                    return Ok(o);
                }
                if self.space(path).is_some() {
                    return Ok(Outcome::ok());
                }
                let was_null = self.spaces.contains_key(path);
                match self.make_lockspace_dir(path) {
                    Ok(()) if was_null => Err(Unpredictable),
                    Ok(()) => {
                        self.spaces.insert(path.clone(), Space::default());
                        Ok(Outcome::ok())
                    }
                    Err((code, _)) => Ok(Outcome::err_quoting(code, LOCKSPACE, path)),
                }
            }
            Op::CreateResource { path, name, flags } => {
                let fix = match self.resource_checks(conn, path, name, *flags, 0) {
                    Err(o) => return Ok(o),
                    Ok(f) => f,
                };
                let held = self
                    .space(path)
                    .is_some_and(|s| s.resources.contains_key(name));
                let file = Self::path_of(path, name);
                let outcome = if held {
                    Outcome::err_quoting(87, LOCKSPACE, name)
                } else {
                    match self.resolve(&file) {
                        Err(_) | Ok((_, Node::Dir)) | Ok((_, Node::Missing { parent: false })) => {
                            Outcome::err_quoting(38, 0, &file)
                        }
                        Ok((canon, Node::File)) => {
                            if self.leased_elsewhere(&canon, path, name).is_some() {
                                if fix.is_some() || std::str::from_utf8(&file).is_err() {
                                    return Err(Unpredictable);
                                }
                                return Ok(Outcome {
                                    reply: Expected::Ok,
                                    fix: Some(Fix::CreateOfLeasedFile {
                                        rel: Self::rel(&canon),
                                    }),
                                    terminal: true,
                                });
                            }
                            Outcome::ok()
                        }
                        Ok((canon, Node::Missing { parent: true })) => {
                            if fix.is_some() {
                                // libvirt would create a file outside the lockspace.
                                return Err(Unpredictable);
                            }
                            self.files.insert(canon);
                            Outcome::ok()
                        }
                    }
                };
                with_escape_fix(outcome, fix)
            }
            Op::DeleteResource { path, name, flags } => {
                let fix = match self.resource_checks(conn, path, name, *flags, 0) {
                    Err(o) => return Ok(o),
                    Ok(f) => f,
                };
                let held = self
                    .space(path)
                    .is_some_and(|s| s.resources.contains_key(name));
                let file = Self::path_of(path, name);
                let outcome = if held {
                    Outcome::err_quoting(87, LOCKSPACE, name)
                } else {
                    match self.resolve(&file) {
                        Err(_) | Ok((_, Node::Dir)) => Outcome::err_quoting(38, LOCKSPACE, &file),
                        Ok((_, Node::Missing { .. })) => Outcome::ok(),
                        Ok((canon, Node::File)) => {
                            if fix.is_some() || self.leased_elsewhere(&canon, path, name).is_some()
                            {
                                return Err(Unpredictable);
                            }
                            self.files.remove(&canon);
                            Outcome::ok()
                        }
                    }
                };
                with_escape_fix(outcome, fix)
            }
            Op::Acquire { path, name, flags } => {
                let fix = match self.resource_checks(
                    conn,
                    path,
                    name,
                    *flags,
                    lock::ACQUIRE_SHARED | lock::ACQUIRE_AUTOCREATE,
                ) {
                    Err(o) => return Ok(o),
                    Ok(f) => f,
                };
                let owner = self.owner_of(conn);
                let shared = flags & lock::ACQUIRE_SHARED != 0;
                let autocreate = flags & lock::ACQUIRE_AUTOCREATE != 0;
                let space = self.spaces.get_mut(path.as_slice()).ok_or(Unpredictable)?;
                if let Some(r) = space.resources.get_mut(name.as_slice()) {
                    if fix.is_some() {
                        return Err(Unpredictable);
                    }
                    if r.shared && shared {
                        r.owners.push(owner);
                        return Ok(Outcome::ok());
                    }
                    return Ok(Outcome::err_quoting(87, LOCKSPACE, name));
                }
                let file = Self::path_of(path, name);
                let (canon, created) = match self.resolve(&file) {
                    Err(_) | Ok((_, Node::Dir)) | Ok((_, Node::Missing { parent: false })) => {
                        return with_escape_fix(Outcome::err_quoting(38, LOCKSPACE, &file), fix);
                    }
                    Ok((_, Node::Missing { parent: true })) if !autocreate => {
                        return with_escape_fix(Outcome::err_quoting(38, LOCKSPACE, &file), fix);
                    }
                    Ok((canon, Node::Missing { parent: true })) => (canon, true),
                    Ok((canon, Node::File)) => (canon, false),
                };
                if fix.is_some() {
                    // libvirt would lease a file outside the lockspace.
                    return Err(Unpredictable);
                }
                if self.leased_elsewhere(&canon, path, name).is_some() {
                    if std::str::from_utf8(name).is_err() {
                        return Err(Unpredictable);
                    }
                    return Ok(Outcome {
                        reply: Expected::Ok,
                        fix: Some(Fix::SecondName {
                            message: format!(
                                "resource busy: Lockspace resource '{}' is locked",
                                String::from_utf8_lossy(name)
                            ),
                            rel: Self::rel(&canon),
                            mode: if shared { "READ" } else { "WRITE" },
                        }),
                        terminal: true,
                    });
                }
                if created {
                    self.files.insert(canon.clone());
                }
                let space = self.spaces.get_mut(path.as_slice()).ok_or(Unpredictable)?;
                space.resources.insert(
                    name.clone(),
                    Resource {
                        shared,
                        autocreate,
                        owners: vec![owner],
                        file: canon,
                    },
                );
                Ok(Outcome::ok())
            }
            Op::Release { path, name, flags } => {
                if let Some(o) = self.admit(conn, *flags, 0, true) {
                    return Ok(o);
                }
                if self.space(path).is_none() {
                    return Ok(Outcome::err_quoting(1, RPC, path));
                }
                let owner = self.owner_of(conn);
                let space = self.spaces.get_mut(path.as_slice()).ok_or(Unpredictable)?;
                let Some(r) = space.resources.get_mut(name.as_slice()) else {
                    return Ok(Outcome::err_quoting(87, LOCKSPACE, name));
                };
                let Some(at) = r.owners.iter().position(|&o| o == owner) else {
                    if matches!(owner, OwnerRef::Child(_)) {
                        // The error quotes the owner's pid, different in each run.
                        return Err(Unpredictable);
                    }
                    return Ok(Outcome::err(1, LOCKSPACE));
                };
                r.owners.remove(at);
                if r.owners.is_empty() {
                    if let Some(r) = space.resources.remove(name.as_slice()) {
                        if r.autocreate {
                            self.files.remove(&r.file);
                        }
                    }
                }
                Ok(Outcome::ok())
            }
        }
    }

    /// The connection is gone (closed by either side): an owner process's own
    /// connection releases its leases, and it is fenced if it held any.
    fn disconnect(&mut self, conn: usize, expect: &mut Expect) -> Predicted<()> {
        let Some(c) = self.conns[conn].take() else {
            return Ok(());
        };
        let (Some(k), Some(OwnerRef::Child(o))) = (c.child, c.owner) else {
            return Ok(());
        };
        if k != o {
            return Ok(());
        }
        if self.spaces.values().any(|s| s.null) {
            // libvirt dereferences the NULL lockspace and segfaults.
            return Err(Unpredictable);
        }
        let owner = OwnerRef::Child(k);
        let mut held = 0;
        let mut leaked = Vec::new();
        for space in self.spaces.values_mut() {
            let mut freed = Vec::new();
            for (name, r) in space.resources.iter_mut() {
                let mine = r.owners.iter().filter(|&&x| x == owner).count();
                if mine == 0 {
                    continue;
                }
                held += 1;
                if mine > 1 {
                    if mine < r.owners.len() {
                        // libvirt's leftover entry would not show yet.
                        return Err(Unpredictable);
                    }
                    leaked.push((Self::rel(&r.file), r.autocreate));
                }
                r.owners.retain(|&x| x != owner);
                if r.owners.is_empty() {
                    freed.push(name.clone());
                }
            }
            for name in freed {
                if let Some(r) = space.resources.remove(&name) {
                    if r.autocreate {
                        self.files.remove(&r.file);
                    }
                }
            }
        }
        if held > 0 {
            self.children[k] = false;
            expect.kills.push(k);
        }
        if !leaked.is_empty() {
            if expect.fix.is_some() {
                return Err(Unpredictable);
            }
            expect.fix = Some(Fix::LeakedEntries { leaked });
            expect.terminal = true;
        }
        Ok(())
    }

    pub(super) fn next_serial(&mut self, conn: usize) -> u32 {
        match self.conns[conn].as_mut() {
            Some(c) => {
                c.serial += 1;
                c.serial - 1
            }
            None => 0,
        }
    }

    /// Applies a candidate step; `Unpredictable` leaves the model to be discarded.
    pub(super) fn apply(&mut self, act: Act, malformed: &[Effect]) -> Predicted<Step> {
        let mut expect = Expect::default();
        match &act {
            Act::Connect { conn, child } => {
                if let Some(k) = child {
                    self.children.push(true);
                    debug_assert_eq!(*k + 1, self.children.len());
                }
                self.conns[*conn] = Some(ConnState {
                    child: *child,
                    owner: None,
                    restricted: false,
                    serial: 0,
                });
            }
            Act::Close { conn } => {
                if self.doomed == Some(*conn) {
                    self.doomed = None;
                }
                self.disconnect(*conn, &mut expect)?
            }
            Act::File(rel) => {
                let path = format!("{BASE}/{rel}").into_bytes();
                match self.resolve(&path) {
                    Ok((canon, Node::Missing { parent: true })) => {
                        self.files.insert(canon);
                    }
                    _ => return Err(Unpredictable),
                }
            }
            Act::Send { conn, pieces, .. } => {
                let one_fd = matches!(
                    pieces.as_slice(),
                    [Piece::Call {
                        mangle: Mangle::WithOneFd,
                        ..
                    }]
                );
                if one_fd {
                    // Only a test connection: closing it releases nothing.
                    if *conn >= TEST_CONNS {
                        return Err(Unpredictable);
                    }
                    self.doomed = Some(*conn);
                }
                for (i, piece) in pieces.iter().enumerate() {
                    let effect = match piece {
                        Piece::Call { op, .. } => {
                            let o = self.call(*conn, op)?;
                            if o.fix.is_some() || o.terminal {
                                if pieces.len() > 1 {
                                    return Err(Unpredictable);
                                }
                                expect.fix = o.fix;
                                expect.terminal = o.terminal;
                            }
                            Effect::Reply(o.reply)
                        }
                        Piece::Bytes { .. } => malformed[i],
                    };
                    match effect {
                        Effect::Reply(r) => expect.replies.push(r),
                        Effect::Nothing => {}
                        Effect::WaitsForMore => {
                            if *conn >= TEST_CONNS || pieces.len() > 1 {
                                return Err(Unpredictable);
                            }
                            expect.silent = true;
                            expect.fix = Some(Fix::ShortLengthWord);
                            self.doomed = Some(*conn);
                        }
                        Effect::Close => {
                            expect.closes = true;
                            self.disconnect(*conn, &mut expect)?;
                        }
                    }
                }
                if one_fd {
                    if expect.fix.is_some() {
                        return Err(Unpredictable);
                    }
                    expect.fix = Some(Fix::FdAttached);
                }
            }
        }
        Ok(Step { act, expect })
    }
}

/// Adds fix 3 to an outcome of libvirt that changes nothing; our reply is the
/// INVALID_ARG error.
fn with_escape_fix(outcome: Outcome, fix: Option<Fix>) -> Predicted<Outcome> {
    match fix {
        None => Ok(outcome),
        Some(_) if outcome.fix.is_some() => Err(Unpredictable),
        Some(f) => Ok(Outcome {
            fix: Some(f),
            ..outcome
        }),
    }
}

/// What a frame does to the connection, when the model does not compute it.
#[derive(Debug, Clone, Copy)]
pub enum Effect {
    Reply(Expected),
    Nothing,
    Close,
    /// libvirt waits for the rest of the frame (fix 16: we close).
    WaitsForMore,
}
