//! The daemon under real systemd: a clone of this host booted with systemd as
//! PID 1 in a container, with our unit files and with Debian's.

mod activation;
pub mod container;
mod crash;
mod journal;
mod reload;
mod restart;
pub mod setup;
mod stop;

use container::Container;

/// Boots a container for `test`, or reports why it cannot (SKIPPED, a
/// failure under CI=true) and returns `None`.
pub fn boot_or_skip(test: &str) -> Option<Container> {
    match Container::boot(test) {
        Ok(c) => Some(c),
        Err(reason) => {
            crate::support::skip(test, &reason);
            None
        }
    }
}

/// The container module itself: it boots, runs commands inside, copies files
/// in, and leaves nothing behind on the host, also when the test panics.
#[test]
fn container_boots_runs_commands_and_leaves_nothing_behind() {
    let test = "container_boots_runs_commands_and_leaves_nothing_behind";
    let started = std::time::Instant::now();
    let Some(c) = boot_or_skip(test) else {
        return;
    };
    eprintln!("{test}: booted in {:?}", started.elapsed());
    let init = c.init_pid();
    // A cgroup of its own: containers side by side do not share units.
    let cgroup = std::fs::read_to_string(format!("/proc/{init}/cgroup")).expect("cgroup");
    assert!(
        cgroup
            .lines()
            .any(|l| l.starts_with("0::") && l.contains(&format!("/vltest-{}/", c.name()))),
        "PID 1 of {} is not in a cgroup of its own:\n{cgroup}",
        c.name()
    );
    assert_eq!(
        c.exec_ok("echo $$ >/dev/null; cat /proc/1/comm").trim(),
        "systemd"
    );
    let state = c.exec_ok("systemctl is-system-running || true");
    assert!(
        matches!(state.trim(), "running" | "degraded"),
        "system state {state}"
    );
    // Written inside: visible through root(), absent on the host.
    let marker = format!("/etc/vltest-marker-{}", c.name());
    c.exec_ok(&format!("echo inside >{marker}"));
    assert_eq!(
        std::fs::read_to_string(c.path(&marker)).expect("marker through /proc/PID1/root"),
        "inside\n"
    );
    assert!(
        !std::path::Path::new(&marker).exists(),
        "{marker} leaked to the host"
    );
    // Copied in: runs inside, and the host's file stays untouched.
    c.copy_in(
        std::path::Path::new("/bin/true"),
        "/usr/local/bin/vltest-true",
    );
    c.exec_ok("/usr/local/bin/vltest-true");
    assert!(!std::path::Path::new("/usr/local/bin/vltest-true").exists());
    let failed = c.exec("echo out; echo err >&2; exit 3");
    assert_eq!(failed.status.code(), Some(3));
    assert_eq!(failed.stdout, b"out\n");
    assert_eq!(failed.stderr, b"err\n");
    let name = c.name().to_owned();

    // A panicking test: the container goes down on unwinding.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _c = c;
        panic!("deliberate panic: the container must go down while this unwinds");
    }));
    assert!(panicked.is_err());
    assert!(
        !std::path::Path::new(&format!("/proc/{init}")).exists()
            || std::fs::read_to_string(format!("/proc/{init}/comm"))
                .is_ok_and(|c| c.trim() != "systemd"),
        "the container's PID 1 ({init}) still runs"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(&name), "overlay still mounted:\n{mounts}");
    assert!(!std::env::temp_dir()
        .join(format!("vltest-ct-{name}"))
        .exists());
    assert!(!std::path::Path::new("/run/systemd/nspawn/propagate")
        .join(&name)
        .exists());
    assert!(!cgroup_exists(&name), "cgroup of {name} left behind");
    eprintln!("{test}: done in {:?}", started.elapsed());
}

/// A prepared layer carries what its container wrote (and removed) into
/// every container booted on it, and stays out of the host.
#[test]
fn prepared_layer_carries_changes_into_later_containers() {
    let test = "prepared_layer_carries_changes_into_later_containers";
    let removed = "/etc/debian_version";
    assert!(
        std::path::Path::new(removed).exists(),
        "{removed} missing on the host"
    );
    let layer = container::prepared_layer("marker-test", |c| {
        c.exec_ok(&format!("echo prepared >/etc/vltest-layer && rm {removed}"));
        Ok(())
    });
    let layer = match layer {
        Ok(l) => l,
        Err(reason) => return crate::support::skip(test, &reason),
    };
    let c = Container::boot_on(test, &[&layer])
        .unwrap_or_else(|e| panic!("a container booted, but not on its own layer: {e}"));
    assert_eq!(c.exec_ok("cat /etc/vltest-layer"), "prepared\n");
    assert!(!c.exec(&format!("test -e {removed}")).status.success());
    assert!(std::path::Path::new(removed).exists());
    assert!(!std::path::Path::new("/etc/vltest-layer").exists());
    // Asked again, the same layer, not a second preparation.
    let again = container::prepared_layer("marker-test", |_| panic!("prepared twice"));
    assert_eq!(again.as_deref(), Ok(layer.as_path()));
}

/// Whether a cgroup named for container `name` exists in any hierarchy.
fn cgroup_exists(name: &str) -> bool {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return false;
    };
    let target = format!("vltest-{name}");
    let own = std::path::Path::new("/sys/fs/cgroup").join(&target);
    own.exists()
        || hierarchies
            .flatten()
            .any(|h| h.path().join(&target).exists())
}
