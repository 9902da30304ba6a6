//! `examples/qemu_lockd` with the shipped `examples/qemu-lockd/*.conf` samples:
//! each lease layout of libvirt's lockd plugin (direct, SHA-256 file lockspace,
//! LVM/SCSI configuration falling back for non-devices, `<lease>` elements)
//! takes the kernel lock it should, refuses a second VM, and cleans up.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::support::{example, Daemon};

/// A shipped sample with libvirt's `/var/lib/libvirt` moved under `base`.
fn sample_conf(name: &str, base: &Path) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/qemu-lockd")
        .join(name);
    let text = std::fs::read_to_string(&shipped).expect("shipped sample");
    let conf = base.join(name);
    let moved = text.replace("/var/lib/libvirt", &base.join("var").display().to_string());
    std::fs::write(&conf, moved).expect("write conf");
    conf
}

fn sha256_hex(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    Sha256::digest(path.as_os_str().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A running `qemu_lockd --hold`: leases taken, waiting to release.
struct Vm {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    seen: Vec<String>,
}

impl Vm {
    async fn start(d: &Daemon, args: &[&str]) -> Self {
        let mut child = tokio::process::Command::new(example("qemu_lockd"))
            .arg("--socket")
            .arg(d.socket())
            .arg("--hold")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn qemu_lockd");
        let stdout = child.stdout.take().expect("stdout");
        let mut vm = Self {
            child,
            lines: BufReader::new(stdout).lines(),
            seen: Vec::new(),
        };
        vm.read_until("held").await;
        vm
    }

    async fn read_until(&mut self, want: &str) {
        let wait = async {
            while let Some(line) = self.lines.next_line().await.expect("read") {
                let done = line == want;
                self.seen.push(line);
                if done {
                    return true;
                }
            }
            false
        };
        let found = tokio::time::timeout(Duration::from_secs(10), wait).await;
        assert!(
            matches!(found, Ok(true)),
            "no `{want}` from qemu_lockd; it said:\n{}",
            self.seen.join("\n")
        );
    }

    /// Lets it release; asserts it exits 0.
    async fn stop(mut self) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"\n").await.expect("write");
        self.read_until("released").await;
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("qemu_lockd exits")
            .expect("wait");
        assert!(status.success(), "{}", self.seen.join("\n"));
    }
}

/// A second VM on the same disks: the example fails with the daemon's error.
async fn second_vm_is_refused(d: &Daemon, args: &[&str], name: &str) {
    let out = tokio::process::Command::new(example("qemu_lockd"))
        .arg("--socket")
        .arg(d.socket())
        .args(args)
        .output()
        .await
        .expect("run qemu_lockd");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second VM got the lease");
    let want = format!("resource busy: Lockspace resource '{name}' is locked");
    assert!(err.contains(&want), "expected `{want}` in:\n{err}");
}

#[tokio::test]
async fn direct_leases_lock_the_disk_itself() {
    let d = Daemon::start();
    let disk = d.base().join("vm1.img");
    std::fs::write(&disk, b"").expect("disk");
    let conf = sample_conf("direct.conf", &d.base());
    let args = [
        "--conf",
        conf.to_str().expect("utf-8"),
        disk.to_str().expect("utf-8"),
    ];

    let vm = Vm::start(&d, &args).await;
    assert_eq!(d.kernel_locks_on(&disk), ["POSIX WRITE 0-0"]);
    second_vm_is_refused(&d, &args, &disk.display().to_string()).await;
    vm.stop().await;
    assert!(d.kernel_locks_on(&disk).is_empty());
    assert!(disk.exists(), "a direct lease never removes the disk");
}

#[tokio::test]
async fn file_leases_are_named_by_the_sha256_of_the_path() {
    let d = Daemon::start();
    let disk = d.base().join("images/vm1.qcow2");
    let conf = sample_conf("file.conf", &d.base());
    let lease = d.base().join("var/lockd/files").join(sha256_hex(&disk));
    let args = [
        "--conf",
        conf.to_str().expect("utf-8"),
        disk.to_str().expect("utf-8"),
    ];

    let vm = Vm::start(&d, &args).await;
    assert_eq!(d.kernel_locks_on(&lease), ["POSIX WRITE 0-0"]);
    second_vm_is_refused(&d, &args, &sha256_hex(&disk)).await;
    vm.stop().await;
    assert!(!lease.exists(), "AUTOCREATE lease file removed on release");
}

#[tokio::test]
async fn lvm_and_scsi_config_falls_back_to_file_leases_for_images() {
    let d = Daemon::start();
    let disk = d.base().join("images/vm1.raw");
    let conf = sample_conf("lvm-scsi.conf", &d.base());
    let args = [
        "--conf",
        conf.to_str().expect("utf-8"),
        disk.to_str().expect("utf-8"),
    ];

    let vm = Vm::start(&d, &args).await;
    // The plugin creates all three lockspaces at start-up, 0700.
    for dir in ["files", "lvmvolumes", "scsivolumes"] {
        let meta = std::fs::metadata(d.base().join("var/lockd").join(dir)).expect(dir);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o700, "{dir}");
    }
    let lease = d.base().join("var/lockd/files").join(sha256_hex(&disk));
    assert_eq!(d.kernel_locks_on(&lease), ["POSIX WRITE 0-0"]);
    vm.stop().await;
}

#[tokio::test]
async fn shared_disks_and_custom_leases() {
    let d = Daemon::start();
    let disk = d.base().join("shared.img");
    std::fs::write(&disk, b"").expect("disk");
    let target = d.base().join("leases");
    let element = format!("cluster:vm-key:{}", target.display());
    let (disk_s, element_s) = (disk.to_str().expect("utf-8"), element.as_str());

    // Two VMs share a <shareable/> disk; the first also holds a <lease>.
    let first = Vm::start(
        &d,
        &["--shared", "--create-leases", "--lease", element_s, disk_s],
    )
    .await;
    let second = Vm::start(&d, &["--shared", disk_s]).await;
    assert_eq!(d.kernel_locks_on(&disk), ["POSIX READ 0-0"]);
    let lease_file = target.join("cluster/vm-key");
    assert_eq!(d.kernel_locks_on(&lease_file), ["POSIX WRITE 0-0"]);
    // The <lease> is exclusive.
    second_vm_is_refused(&d, &["--lease", element_s], "vm-key").await;
    second.stop().await;
    first.stop().await;
    assert!(d.kernel_locks_on(&disk).is_empty());
    assert!(d.kernel_locks_on(&lease_file).is_empty());
    assert!(lease_file.exists(), "a <lease> file is the administrator's");
}
