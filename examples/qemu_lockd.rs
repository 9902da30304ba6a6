//! What libvirt's `lockd` plugin does for a VM's disks, driven by a
//! `qemu-lockd.conf`: it picks each disk's lockspace and lease name the way the
//! plugin does, takes the leases for a stand-in QEMU, shows them, and releases.
//!
//! Resolution, per disk, in the plugin's order:
//! 1. `/dev/...` with `lvm_lockspace_dir`: the LV's UUID (`lvs -o uuid`), AUTOCREATE;
//! 2. `/dev/...` with `scsi_lockspace_dir`: the LUN's ID (`scsi_id`), AUTOCREATE;
//! 3. with `file_lockspace_dir`: the SHA-256 of the path, AUTOCREATE;
//! 4. else a direct lock on the disk itself (default lockspace `""`).
//!
//! A `--lease LOCKSPACE:KEY:TARGET` is a domain `<lease>` element: lockspace
//! `TARGET/LOCKSPACE`, name `KEY`, no AUTOCREATE, so an administrator creates the
//! lockspace and the lease file first (`--create-leases` does that here).
//!
//! Usage:
//!   qemu_lockd [--socket PATH] [--conf FILE] [--shared] [--hold]
//!              [--lease LS:KEY:TARGET]... [--create-leases] DISK...
//! With `--hold` it prints `held` once every lease is taken and waits for a line
//! on stdin before releasing. Sample configurations: `examples/qemu-lockd/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use virtlockd::client::{owner, Client};
use virtlockd::config::VirConfFormat;
use virtlockd::protocol::lock::{Owner, ACQUIRE_AUTOCREATE, ACQUIRE_SHARED};

#[path = "common/stand_in.rs"]
mod stand_in;

type Error = Box<dyn std::error::Error>;

/// The keys of `qemu-lockd.conf` that decide where leases go.
#[derive(Debug, Default)]
struct PluginConf {
    auto_disk_leases: bool,
    file_lockspace_dir: Option<PathBuf>,
    lvm_lockspace_dir: Option<PathBuf>,
    scsi_lockspace_dir: Option<PathBuf>,
}

impl PluginConf {
    /// Reads the file with the daemon's own virConf parser; the plugin's
    /// defaults apply to missing keys (auto_disk_leases = 1).
    fn load(path: Option<&Path>) -> Result<Self, Error> {
        let Some(path) = path else {
            return Ok(Self {
                auto_disk_leases: true,
                ..Self::default()
            });
        };
        let text = std::fs::read_to_string(path)?;
        let conf = config::Config::builder()
            .add_source(config::File::from_str(&text, VirConfFormat))
            .build()?;
        let dir = |key: &str| conf.get_string(key).ok().map(PathBuf::from);
        Ok(Self {
            auto_disk_leases: conf.get_int("auto_disk_leases").map_or(true, |v| v != 0),
            file_lockspace_dir: dir("file_lockspace_dir"),
            lvm_lockspace_dir: dir("lvm_lockspace_dir"),
            scsi_lockspace_dir: dir("scsi_lockspace_dir"),
        })
    }

    /// The lockspaces the plugin creates when libvirtd starts.
    fn lockspaces(&self) -> impl Iterator<Item = &PathBuf> {
        [
            &self.file_lockspace_dir,
            &self.lvm_lockspace_dir,
            &self.scsi_lockspace_dir,
        ]
        .into_iter()
        .flatten()
    }

    /// The lease the plugin asks for on behalf of one disk.
    fn disk_lease(&self, disk: &Path, shared: bool) -> Result<Lease, Error> {
        let shared_flag = if shared { ACQUIRE_SHARED } else { 0 };
        let is_dev = disk.starts_with("/dev");
        let keyed = [
            (
                self.lvm_lockspace_dir.as_ref(),
                "LVM UUID",
                lvm_key as KeyFn,
            ),
            (
                self.scsi_lockspace_dir.as_ref(),
                "SCSI ID",
                scsi_key as KeyFn,
            ),
        ];
        for (dir, what, key_of) in keyed {
            if let (Some(dir), true) = (dir, is_dev) {
                if let Some(key) = key_of(disk)? {
                    return Ok(Lease::new(what, dir, key, ACQUIRE_AUTOCREATE | shared_flag));
                }
            }
        }
        Ok(match &self.file_lockspace_dir {
            Some(dir) => {
                let hash = virtlockd::names::lease_name(&bytes(disk));
                Lease::new(
                    "SHA-256 of path",
                    dir,
                    hash,
                    ACQUIRE_AUTOCREATE | shared_flag,
                )
            }
            None => Lease {
                what: "direct",
                lockspace: Vec::new(),
                name: bytes(disk),
                flags: shared_flag,
            },
        })
    }
}

/// One ACQUIRE_RESOURCE the plugin sends.
struct Lease {
    what: &'static str,
    lockspace: Vec<u8>,
    name: Vec<u8>,
    flags: u32,
}

impl Lease {
    fn new(what: &'static str, dir: &Path, name: String, flags: u32) -> Self {
        Self {
            what,
            lockspace: bytes(dir),
            name: name.into_bytes(),
            flags,
        }
    }

    /// A `<lease>` element: `LOCKSPACE:KEY:TARGET`.
    fn from_element(spec: &str) -> Result<Self, Error> {
        let mut parts = spec.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(ls), Some(key), Some(target)) if !ls.is_empty() && !key.is_empty() => Ok(Self {
                what: "<lease>",
                lockspace: bytes(&Path::new(target).join(ls)),
                name: key.as_bytes().to_vec(),
                flags: 0,
            }),
            _ => Err(format!("--lease wants LOCKSPACE:KEY:TARGET, got `{spec}`").into()),
        }
    }
}

type KeyFn = fn(&Path) -> Result<Option<String>, Error>;

/// `lvs --noheadings --unbuffered --nosuffix --options uuid DISK`, as the
/// plugin runs it: a failing `lvs` means "not an LV" (fall through), a missing
/// one is an error.
fn lvm_key(disk: &Path) -> Result<Option<String>, Error> {
    key_from(
        Command::new("lvs")
            .args([
                "--noheadings",
                "--unbuffered",
                "--nosuffix",
                "--options",
                "uuid",
            ])
            .arg(disk),
    )
}

/// `/lib/udev/scsi_id --replace-whitespace --whitelisted --device DISK`.
fn scsi_key(disk: &Path) -> Result<Option<String>, Error> {
    key_from(
        Command::new("/lib/udev/scsi_id")
            .args(["--replace-whitespace", "--whitelisted", "--device"])
            .arg(disk),
    )
}

fn key_from(cmd: &mut Command) -> Result<Option<String>, Error> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let key = text.trim_start().lines().next().unwrap_or("").trim_end();
    Ok((out.status.success() && !key.is_empty()).then(|| key.to_owned()))
}

#[derive(Default)]
struct Args {
    socket: Option<PathBuf>,
    conf: Option<PathBuf>,
    shared: bool,
    hold: bool,
    create_leases: bool,
    leases: Vec<String>,
    disks: Vec<PathBuf>,
}

fn parse_args() -> Result<Args, Error> {
    let mut a = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--socket" => a.socket = Some(value()?.into()),
            "--conf" => a.conf = Some(value()?.into()),
            "--lease" => a.leases.push(value()?),
            "--shared" => a.shared = true,
            "--hold" => a.hold = true,
            "--create-leases" => a.create_leases = true,
            "-h" | "--help" => {
                println!("{}", USAGE);
                std::process::exit(0);
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}").into()),
            disk => a.disks.push(disk.into()),
        }
    }
    Ok(a)
}

const USAGE: &str =
    "usage: qemu_lockd [--socket PATH] [--conf qemu-lockd.conf] [--shared] [--hold] \
                     [--lease LOCKSPACE:KEY:TARGET]... [--create-leases] DISK...";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let args = parse_args()?;
    let socket = args.socket.clone().unwrap_or_else(default_socket);
    let conf = PluginConf::load(args.conf.as_deref())?;

    // libvirtd start-up: the plugin creates its lockspaces, unregistered.
    for dir in conf.lockspaces() {
        Client::connect(&socket)
            .await?
            .create_lockspace(&bytes(dir))
            .await?;
        println!("lockspace {}", dir.display());
    }
    let mut leases = Vec::new();
    for spec in &args.leases {
        leases.push(Lease::from_element(spec)?);
    }
    if conf.auto_disk_leases {
        for disk in &args.disks {
            leases.push(conf.disk_lease(disk, args.shared)?);
        }
    }

    // A stand-in QEMU: the lease owner is its pid, as with a real guest.
    let mut qemu_process = stand_in::qemu()?;
    let vm = owner("example-vm", 1, qemu_process.id());
    let result = run(&socket, &vm, &leases, &args).await;
    qemu_process.kill()?;
    qemu_process.wait()?;
    result
}

async fn run(socket: &Path, vm: &Owner, leases: &[Lease], args: &Args) -> Result<(), Error> {
    if args.create_leases {
        // What an administrator's tool does for `<lease>` elements.
        let mut admin = session(socket, vm).await?;
        for l in leases.iter().filter(|l| l.what == "<lease>") {
            admin.create_lockspace(&l.lockspace).await?;
            admin.create_resource(&l.lockspace, &l.name).await?;
        }
    }
    // QEMU's own connection: registered and restricted for the VM's life.
    let mut qemu = Client::connect(socket).await?;
    qemu.register(vm).await?;
    qemu.restrict().await?;

    // vCPUs start: libvirtd acquires every lease on a short connection.
    let mut libvirtd = session(socket, vm).await?;
    for l in leases {
        libvirtd.acquire(&l.lockspace, &l.name, l.flags).await?;
        println!(
            "acquired {:<16} lockspace '{}' name '{}'{}",
            l.what,
            String::from_utf8_lossy(&l.lockspace),
            String::from_utf8_lossy(&l.name),
            if l.flags & ACQUIRE_SHARED != 0 {
                " (shared)"
            } else {
                ""
            }
        );
    }
    drop(libvirtd);

    if args.hold {
        println!("held");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
    }

    // vCPUs stop: libvirtd releases (flags cleared, as the plugin sends them).
    let mut libvirtd = session(socket, vm).await?;
    for l in leases {
        libvirtd.release(&l.lockspace, &l.name).await?;
    }
    println!("released");
    Ok(())
}

async fn session(socket: &Path, vm: &Owner) -> Result<Client, Error> {
    let mut c = Client::connect(socket).await?;
    c.register(vm).await?;
    Ok(c)
}

/// The daemon's socket on its default paths (root: /run/libvirt).
fn default_socket() -> PathBuf {
    let privileged = nix::unistd::geteuid().is_root();
    virtlockd::paths::Paths::defaults(privileged).lock_socket
}

fn bytes(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}
