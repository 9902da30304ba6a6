//! An unreadable journal: the records of the crash journal are overwritten
//! with garbage, then the daemon is killed. The restarted daemon cannot tell
//! whose leases it holds, yet drops none: every parked lease stays held,
//! listed in the default lockspace under its file's path for an unknown
//! owner (pid 0), until an administrator releases it with `virtlockctl
//! release-unknown`, which releases no lease with a known owner.

use virtlockd::protocol::lock::{ACQUIRE_AUTOCREATE, ACQUIRE_SHARED};

use super::ledger::Res;
use super::rig::{Answer, CrashHost, DIRECT, LS_A, LS_B};

const CHECKER: u32 = 4_090_000;

/// The journal memfd of daemon `pid`, as a path inside the container.
fn journal_fd(ch: &CrashHost, pid: u32) -> String {
    let dir = ch.c.path(&format!("/proc/{pid}/fd"));
    let found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|t| t.to_string_lossy().starts_with("/memfd:virtlockd-journal"))
        })
        .map(|e| format!("/proc/{pid}/fd/{}", e.file_name().to_string_lossy()))
        .collect();
    assert_eq!(found.len(), 1, "journal memfds of {pid}: {found:?}");
    found[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_safe_unreadable_journal_keeps_every_lease_for_an_unknown_owner() {
    let test = "crash_safe_unreadable_journal_keeps_every_lease_for_an_unknown_owner";
    let Some(ch) = CrashHost::boot_or_skip(test, false) else {
        return;
    };
    ch.c.exec_ok(&format!("touch {DIRECT}/disk0"));
    let leases = [
        (4_000_001, Res::in_dir(LS_A, "a0", ACQUIRE_AUTOCREATE)),
        (4_000_001, Res::direct(format!("{DIRECT}/disk0"), 0)),
        (4_000_002, Res::in_dir(LS_A, "a1", ACQUIRE_AUTOCREATE)),
        (
            4_000_002,
            Res::in_dir(LS_B, "s0", ACQUIRE_SHARED | ACQUIRE_AUTOCREATE),
        ),
        (
            4_000_003,
            Res::in_dir(LS_B, "s0", ACQUIRE_SHARED | ACQUIRE_AUTOCREATE),
        ),
    ];
    let mut clients = Vec::new();
    for owner in [4_000_001, 4_000_002, 4_000_003] {
        let mut c = ch.open(owner).await;
        for (_, r) in leases.iter().filter(|(o, _)| *o == owner) {
            r.acquire(&mut c).await.expect("ACQUIRE");
        }
        clients.push(c);
    }
    let files: Vec<String> = {
        let mut f: Vec<String> = leases.iter().map(|(_, r)| r.path()).collect();
        f.dedup();
        f
    };
    let inodes: Vec<u64> = files.iter().map(|f| ch.inode(f)).collect();
    let crashed = ch.main_pid();
    let mut locked = ch.locked_inodes(crashed);
    locked.dedup();
    let mut want = inodes.clone();
    want.sort_unstable();
    assert_eq!(locked, want);

    // Garbage over every record (the 4 KiB header, magic and generation,
    // stays), through the memfd itself.
    let journal = journal_fd(&ch, crashed);
    ch.c.exec_ok(&format!(
        "yes garbage | head -c 65536 | dd of={journal} bs=4096 seek=1 conv=notrunc status=none"
    ));
    ch.kill_daemon();
    let (pid, back) = ch.wait_restarted(1);
    assert_ne!(pid, crashed);

    // Every lease file still locked, by the new daemon, with OFD locks.
    let mut locked = ch.locked_inodes(pid);
    locked.dedup();
    assert_eq!(
        locked,
        want,
        "locks after the restart; journal:\n{}",
        ch.journal("-o cat")
    );
    let kernel = ch.kernel_locks();
    for (file, inode) in files.iter().zip(&inodes) {
        assert!(
            kernel
                .iter()
                .any(|l| l.inode == *inode && l.class == "OFDLCK"),
            "{file}: no OFD lock in /proc/locks: {kernel:?}"
        );
    }
    // Listed under its path, in the default lockspace, owner unknown.
    let listed = ch.listed();
    for file in &files {
        let key = (None, file.clone());
        assert_eq!(
            listed.get(&key).map(|(o, s)| (o.as_slice(), s.as_str())),
            Some((&[0u64][..], "held")),
            "{file} in {listed:?}; journal:\n{}",
            ch.journal("-o cat")
        );
    }
    assert_eq!(listed.len(), files.len(), "{listed:?}");
    // Busy to a second owner, by name in its lockspace and by its path.
    let mut checker = ch.open(CHECKER).await;
    for (_, r) in &leases {
        for probe in [
            r.clone(),
            Res::direct(r.path(), r.flags & ACQUIRE_AUTOCREATE),
        ] {
            match Answer::of(probe.acquire_exclusive(&mut checker).await) {
                Answer::Busy => {}
                other => panic!("{probe}: a second owner gets {other:?}, not busy"),
            }
        }
    }
    let safety = ch.crash_safety();
    assert_eq!(safety["mode"], "active", "{safety}");
    assert_eq!(safety["recoveries"], 1, "{safety}");
    eprintln!(
        "{test}: journal of daemon {crashed} overwritten; {pid} ready {back:?} after the kill \
         with all {} lease files held for owner pid 0",
        files.len()
    );

    // A lease with a known owner is never released this way.
    let mut known = ch.connect(4_000_004).await.expect("connect");
    ch.c.exec_ok(&format!("touch {DIRECT}/disk1"));
    let disk1 = Res::direct(format!("{DIRECT}/disk1"), 0);
    disk1.acquire(&mut known).await.expect("ACQUIRE disk1");
    let refused = release_unknown(&ch, &disk1.path());
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("has a known owner"),
        "release-unknown of a known owner's lease: {refused:?}"
    );
    // The administrator releases the unknown ones: their locks end and a
    // second owner takes each file.
    for file in &files {
        let out = release_unknown(&ch, file);
        assert!(out.status.success(), "release-unknown {file}: {out:?}");
    }
    let listed = ch.listed();
    assert_eq!(
        listed.keys().map(|(_, n)| n.clone()).collect::<Vec<_>>(),
        [disk1.path()],
        "{listed:?}"
    );
    let mut locked = ch.locked_inodes(pid);
    locked.dedup();
    assert_eq!(locked, [ch.inode(&disk1.path())]);
    for (_, r) in &leases {
        let free = Res::direct(r.path(), 0);
        free.acquire_exclusive(&mut checker)
            .await
            .unwrap_or_else(|e| panic!("{free} after release-unknown: {e}"));
        free.release(&mut checker).await.expect("RELEASE");
    }
    let again = release_unknown(&ch, &files[0]);
    assert!(
        !again.status.success()
            && String::from_utf8_lossy(&again.stderr).contains("no lease of an unknown owner"),
        "release-unknown twice: {again:?}"
    );
}

/// `virtlockctl release-unknown FILE` from the host, against the daemon's
/// admin socket (the path is the file's inside the container).
fn release_unknown(ch: &CrashHost, file: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_virtlockctl"))
        .arg("--socket")
        .arg(ch.c.path(crate::systemd::setup::ADMIN_SOCKET))
        .args(["release-unknown", file])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run virtlockctl")
}
