//! A container whose virtlockd.service (our unit, crash-safe mode) can be
//! crashed on purpose: a drop-in names the crash-point file the daemon reads
//! (feature `failpoints`) and lifts the start rate limit, so that one
//! container serves a sequence of crashes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use virtlockd::client::{owner, Client, ClientError};

use crate::systemd::setup::{Host, Units, LOCKSPACE, PATIENCE};

/// The file a test writes a crash point's name into (inside the container).
pub const FAILPOINT_FILE: &str = "/run/vltest-failpoint";
const DROP_IN: &str = "/etc/systemd/system/virtlockd.service.d/vltest-crash.conf";

/// Two directory lockspaces, and two directories of direct leases (full
/// paths in the default lockspace): files made by the test, and files the
/// daemon creates (AUTOCREATE).
pub const LS_A: &str = LOCKSPACE;
pub const LS_B: &str = "/srv/vltest/lockspace-b";
pub const DIRECT: &str = "/srv/vltest/direct";
pub const DIRECT_AUTO: &str = "/srv/vltest/direct-auto";

pub struct CrashHost {
    pub h: Host,
}

impl std::ops::Deref for CrashHost {
    type Target = Host;
    fn deref(&self) -> &Host {
        &self.h
    }
}

impl CrashHost {
    /// Boots a container with our unit and the crash drop-in, the daemon
    /// started; or reports why the test cannot run here. A test that arms
    /// crash points (`crash_points`) needs a daemon built with the feature.
    pub fn boot_or_skip(test: &str, crash_points: bool) -> Option<Self> {
        if crash_points && !cfg!(feature = "failpoints") {
            crate::support::skip(
                test,
                "the daemon has no crash points: build with `cargo test --features failpoints`",
            );
            return None;
        }
        let h = Host::boot_or_skip(test, Units::Ours)?;
        let drop_in = h.c.path(DROP_IN);
        std::fs::create_dir_all(drop_in.parent().expect("drop-in dir")).expect("drop-in dir");
        // Many crashes within seconds: systemd's default start limit (5 in
        // 10 s) would give up on the unit.
        std::fs::write(
            &drop_in,
            format!(
                "[Unit]\nStartLimitIntervalSec=0\n\n\
                 [Service]\nEnvironment=VIRTLOCKD_FAILPOINT={FAILPOINT_FILE}\n\
                 # Info: what each recovery found, for the failure messages.\n\
                 Environment=LIBVIRT_DEBUG=2\n"
            ),
        )
        .expect("write drop-in");
        h.c.exec_ok(&format!(
            "mkdir -p {LS_B} {DIRECT} {DIRECT_AUTO} && systemctl daemon-reload && \
             timeout --foreground {} systemctl start virtlockd.service",
            PATIENCE.as_secs()
        ));
        let ch = Self { h };
        assert_eq!(ch.crash_safety()["mode"], "active", "{}", ch.journal(""));
        Some(ch)
    }

    /// Arms crash point `point` (`NAME` or `NAME:abort`): the next daemon
    /// that reaches it dies there.
    pub fn arm(&self, point: &str) {
        std::fs::write(self.c.path(FAILPOINT_FILE), point).expect("arm crash point");
    }

    /// Whether an armed point is still waiting to be reached.
    pub fn armed(&self) -> bool {
        self.c.path(FAILPOINT_FILE).exists()
    }

    /// SIGKILL to the daemon, through systemd (as the OOM killer would).
    /// Once this returns, the daemon runs no more code.
    pub fn kill_daemon(&self) {
        self.c
            .exec_ok("systemctl kill -s SIGKILL virtlockd.service");
    }

    /// How often systemd restarted the daemon.
    pub fn restarts(&self) -> u32 {
        self.show("virtlockd.service", &["NRestarts"])["NRestarts"]
            .parse()
            .expect("NRestarts")
    }

    /// Waits until systemd has restarted the daemon `restarts` times in all
    /// and the last one is ready (READY=1: recovery done); its pid.
    #[track_caller]
    pub fn wait_restarted(&self, restarts: u32) -> (u32, Duration) {
        let t = Instant::now();
        self.wait_for(&format!("restart #{restarts} of the daemon"), || {
            self.restarts() >= restarts && self.state() == "active/running" && self.main_pid() != 0
        });
        assert_eq!(self.restarts(), restarts, "more restarts than crashes");
        (self.main_pid(), t.elapsed())
    }

    /// The journal says a daemon reached `point` (`NAME[:abort]`), and the
    /// last daemon that died was killed by the signal the point names. (The
    /// daemon's own line may reach journald after systemd's line about its
    /// death: no order between the two is asked for. That this crash, not
    /// an earlier one, was at `point` shows in [`CrashHost::armed`].)
    #[track_caller]
    pub fn assert_crashed_at(&self, point: &str) {
        let (name, status) = match point.strip_suffix(":abort") {
            Some(n) => (n, "status=6/ABRT"),
            None => (point, "status=9/KILL"),
        };
        self.wait_for(
            &format!("the crash at {point} ({status}) in the journal"),
            || {
                // By identifier, not by unit: journald finds the unit of a
                // line through its sender's pid, and a sender killed right
                // after sending is often gone by then.
                let own = self.c.exec(
                    "journalctl -b -t virtlockd -o cat --no-pager --grep 'crash point reached'",
                );
                let reached = String::from_utf8_lossy(&own.stdout)
                    .lines()
                    .any(|l| l.contains(name));
                let died = self
                    .journal("-o cat")
                    .lines()
                    .rfind(|l| l.starts_with("virtlockd.service: Main process exited"))
                    .is_some_and(|l| l.contains(status));
                reached && died
            },
        );
    }

    /// The lines the daemons of this boot logged (found by identifier: see
    /// [`CrashHost::assert_crashed_at`]), less the one per busy ACQUIRE.
    pub fn daemon_lines(&self) -> String {
        let out = self.c.exec(
            "journalctl -b -t virtlockd -o short-precise --no-pager | grep -v 'acquire refused'",
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `virtlockctl status --json`'s crash_safety object.
    pub fn crash_safety(&self) -> serde_json::Value {
        self.ctl(&["status"])["crash_safety"].clone()
    }

    /// `virtlockctl locks --json`: (lockspace or None, name) -> (owner pids
    /// sorted, status).
    pub fn listed(&self) -> BTreeMap<(Option<String>, String), (Vec<u64>, String)> {
        let locks = self.ctl(&["locks"]);
        locks["leases"]
            .as_array()
            .expect("leases")
            .iter()
            .map(|l| {
                let mut owners: Vec<u64> = l["owners"]
                    .as_array()
                    .expect("owners")
                    .iter()
                    .map(|o| o["pid"].as_u64().expect("owner pid"))
                    .collect();
                owners.sort_unstable();
                (
                    (
                        l["lockspace"].as_str().map(str::to_owned),
                        l["name"].as_str().expect("name").to_owned(),
                    ),
                    (owners, l["status"].as_str().unwrap_or("").to_owned()),
                )
            })
            .collect()
    }

    /// Owner pids of the lock server's clients (0: not registered), sorted.
    pub fn lock_client_owners(&self) -> Vec<u64> {
        let clients = self.ctl(&["clients"]);
        let mut owners: Vec<u64> = clients["clients"]
            .as_array()
            .expect("clients")
            .iter()
            .filter(|c| c["server"] == "virtlockd")
            .map(|c| c["owner"]["pid"].as_u64().unwrap_or(0))
            .collect();
        owners.sort_unstable();
        owners
    }

    /// A new connection registered for fake owner `pid` (no such process in
    /// the container: its disconnect releases and fences nothing), bounded.
    pub async fn connect(&self, pid: u32) -> Result<Client, ClientError> {
        let mut c = bounded("connect", Client::connect(self.socket())).await?;
        bounded("REGISTER", c.register(&owner("vm", pid - 4_000_000, pid))).await?;
        Ok(c)
    }

    /// [`CrashHost::connect`], with both directory lockspaces created.
    pub async fn open(&self, owner: u32) -> Client {
        let mut c = self
            .connect(owner)
            .await
            .unwrap_or_else(|e| panic!("owner {owner}: connect: {e}"));
        for ls in [LS_A, LS_B] {
            bounded("CREATE_LOCKSPACE", c.create_lockspace(ls.as_bytes()))
                .await
                .expect("CREATE_LOCKSPACE");
        }
        c
    }

    /// Files left in the directories where leases are created (AUTOCREATE
    /// removes its files on release).
    pub fn autocreated_files(&self) -> Vec<String> {
        let mut left = Vec::new();
        for dir in [LS_A, LS_B, DIRECT_AUTO] {
            let path = self.c.path(dir);
            for e in std::fs::read_dir(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .flatten()
            {
                left.push(format!("{dir}/{}", e.file_name().to_string_lossy()));
            }
        }
        left
    }
}

/// `fut`, or a panic if neither an answer nor a close came in time: a
/// client must never hang on a crashed daemon.
pub async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: neither answered nor closed within {PATIENCE:?}"))
}

/// What became of one call.
#[derive(Debug)]
pub enum Answer {
    Done,
    /// "Lockspace resource '...' is locked".
    Busy,
    /// Any other error of the daemon's (its text is read through Debug, in
    /// failure messages).
    Refused(#[allow(dead_code)] String),
    /// The connection ended (EOF or reset) instead of a reply.
    Closed(String),
}

impl Answer {
    pub fn of(r: Result<(), ClientError>) -> Self {
        match r {
            Ok(()) => Self::Done,
            Err(ClientError::Remote(e)) if e.message.ends_with("' is locked") => Self::Busy,
            Err(ClientError::Remote(e)) => Self::Refused(e.message),
            Err(e @ (ClientError::Closed | ClientError::Frame(_))) => Self::Closed(e.to_string()),
            Err(e) => Self::Refused(e.to_string()),
        }
    }
}
