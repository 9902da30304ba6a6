//! The lockspace layouts libvirt's lockd plugin uses, against a running daemon:
//!
//! * direct disk locks in the default lockspace (`""`, name = disk path);
//! * a file lockspace whose lease names are the SHA-256 of the disk path
//!   (`file_lockspace_dir` in qemu-lockd.conf);
//! * LVM- and SCSI-style lockspaces whose names are a volume UUID / SCSI ID
//!   (`lvm_lockspace_dir`, `scsi_lockspace_dir`);
//! * a `<lease>` in a custom lockspace (exclusive, no AUTOCREATE: the file must exist).
//!
//! It follows libvirt's call sequence: a "QEMU" connection that registers the VM's
//! pid and restricts itself (kept open for the VM's life), and short "libvirtd"
//! connections that register the same owner and acquire or release. A `sleep`
//! process stands in for QEMU. (Real QEMU opens its connection itself; one that
//! closed it while holding leases would be fenced, so this example never registers
//! its own pid.)
//!
//! Usage: multi_lockspace [SOCKET] [BASE_DIR]
//! (defaults: /run/libvirt/virtlockd-sock, a new directory under /tmp)

use std::path::{Path, PathBuf};

#[path = "common/stand_in.rs"]
mod stand_in;

use virtlockd::client::{owner, Client};
use virtlockd::protocol::lock::{Owner, ACQUIRE_AUTOCREATE, ACQUIRE_SHARED};

fn b(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}

struct Lease {
    what: &'static str,
    lockspace: Vec<u8>,
    name: Vec<u8>,
    flags: u32,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let socket = args
        .next()
        .unwrap_or_else(|| "/run/libvirt/virtlockd-sock".into());
    let base = match args.next() {
        Some(dir) => PathBuf::from(dir),
        None => tempfile::tempdir()?.keep(),
    };
    let files = base.join("lockd/files");
    let lvm = base.join("lockd/lvmvolumes");
    let scsi = base.join("lockd/scsivolumes");
    let custom = base.join("leases/mylockspace");
    let disk = base.join("images/vm1.qcow2");
    let shared_disk = base.join("images/shared.img");
    std::fs::create_dir_all(base.join("images"))?;
    std::fs::write(&disk, b"")?;
    std::fs::write(&shared_disk, b"")?;

    // Driver start-up: one connection per configured lockspace, no registration.
    for dir in [&files, &lvm, &scsi] {
        let mut c = Client::connect(&socket).await?;
        c.create_lockspace(&b(dir)).await?;
        println!("lockspace ready: {}", dir.display());
    }
    // A lease lockspace is made by an administrator's tool, and its files too.
    let mut admin = Client::connect(&socket).await?;
    admin.create_lockspace(&b(&custom)).await?;
    admin.create_lockspace(&b(&custom)).await?; // idempotent
    let mut qemu_process = stand_in::qemu()?;
    let vm = owner("vm1", 1, qemu_process.id());
    admin.register(&vm).await?;
    admin.create_resource(&b(&custom), b"mylease").await?;
    drop(admin);

    // VM start: the forked QEMU child registers itself and restricts the
    // connection, which then lives as long as QEMU.
    let mut qemu = Client::connect(&socket).await?;
    qemu.register(&vm).await?;
    qemu.restrict().await?;

    let disk_hash = virtlockd::names::lease_name(&b(&disk));
    let leases = [
        Lease {
            what: "custom lease",
            lockspace: b(&custom),
            name: b"mylease".to_vec(),
            flags: 0,
        },
        Lease {
            what: "direct disk lock",
            lockspace: Vec::new(),
            name: b(&disk),
            flags: 0,
        },
        Lease {
            what: "shareable disk (direct, shared)",
            lockspace: Vec::new(),
            name: b(&shared_disk),
            flags: ACQUIRE_SHARED,
        },
        Lease {
            what: "file lockspace (sha256 of path)",
            lockspace: b(&files),
            name: disk_hash.into_bytes(),
            flags: ACQUIRE_AUTOCREATE,
        },
        Lease {
            what: "LVM volume (by LV UUID)",
            lockspace: b(&lvm),
            name: b"Qfr8lr-0bAy-cVUk-lYJw-Qd2R-W0u6-H0qx1A".to_vec(),
            flags: ACQUIRE_AUTOCREATE,
        },
        Lease {
            what: "SCSI LUN (by scsi_id)",
            lockspace: b(&scsi),
            name: b"36001405e0c1d6a3fb9b4a2c9e8b1f3d2".to_vec(),
            flags: ACQUIRE_AUTOCREATE,
        },
    ];

    // CPUs start: libvirtd acquires everything on a short connection.
    let mut libvirtd = session(&socket, &vm).await?;
    for l in &leases {
        libvirtd.acquire(&l.lockspace, &l.name, l.flags).await?;
        println!(
            "acquired {:<34} {}",
            l.what,
            String::from_utf8_lossy(&l.name)
        );
    }
    drop(libvirtd);

    // A second VM on the same disk is refused.
    let mut intruder = session(&socket, &owner("vm2", 2, 4_000_002)).await?;
    match intruder.acquire(b"", &b(&disk), 0).await {
        Err(e) => println!("vm2 on the same disk: {e}"),
        Ok(()) => return Err("vm2 got the disk lock".into()),
    }
    // ... but may share the shareable disk.
    intruder
        .acquire(b"", &b(&shared_disk), ACQUIRE_SHARED)
        .await?;
    intruder.release(b"", &b(&shared_disk)).await?;
    drop(intruder);

    // CPUs stop: libvirtd releases everything; then QEMU exits.
    let mut libvirtd = session(&socket, &vm).await?;
    for l in &leases {
        libvirtd.release(&l.lockspace, &l.name).await?;
    }
    drop(libvirtd);
    drop(qemu);
    qemu_process.kill()?;
    qemu_process.wait()?;
    println!("all leases released; files under {}", base.display());
    Ok(())
}

async fn session(socket: &str, vm: &Owner) -> Result<Client, Box<dyn std::error::Error>> {
    let mut c = Client::connect(socket).await?;
    c.register(vm).await?;
    Ok(c)
}
