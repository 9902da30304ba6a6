//! Where the daemon's files live: libvirt's defaults for root and for a user
//! (spec §1.1), or everything under one `--runtime-dir`.

use std::path::{Path, PathBuf};

/// The runtime files of one daemon instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub lock_socket: PathBuf,
    pub admin_socket: PathBuf,
    pub pid_file: PathBuf,
    /// libvirt's restart state (JSON), read from and written for libvirt's daemon.
    pub restart_state: PathBuf,
    pub config_file: PathBuf,
    /// Directory made sure to exist at start-up.
    pub run_dir: PathBuf,
    /// umask while creating `run_dir`: 022 for root, 077 for a user.
    pub run_dir_umask: u32,
}

impl Paths {
    /// libvirt's defaults for the current privilege level.
    pub fn defaults(privileged: bool) -> Self {
        if privileged {
            Self {
                lock_socket: "/run/libvirt/virtlockd-sock".into(),
                admin_socket: "/run/libvirt/virtlockd-admin-sock".into(),
                pid_file: "/run/virtlockd.pid".into(),
                restart_state: "/run/virtlockd-restart-exec.json".into(),
                config_file: "/etc/libvirt/virtlockd.conf".into(),
                run_dir: "/run/libvirt".into(),
                run_dir_umask: 0o022,
            }
        } else {
            let runtime = user_runtime_dir();
            Self {
                lock_socket: runtime.join("virtlockd-sock"),
                admin_socket: runtime.join("virtlockd-admin-sock"),
                pid_file: runtime.join("virtlockd.pid"),
                restart_state: runtime.join("virtlockd-restart-exec.json"),
                config_file: user_config_dir().join("virtlockd.conf"),
                run_dir: runtime,
                run_dir_umask: 0o077,
            }
        }
    }

    /// Every runtime file under `dir` (sockets, pid file, restart state); the
    /// config file keeps its default. Lets tests and several daemons run side by side.
    pub fn under(dir: &Path, privileged: bool) -> Self {
        Self {
            lock_socket: dir.join("virtlockd-sock"),
            admin_socket: dir.join("virtlockd-admin-sock"),
            pid_file: dir.join("virtlockd.pid"),
            restart_state: dir.join("virtlockd-restart-exec.json"),
            run_dir: dir.to_path_buf(),
            run_dir_umask: 0o077,
            ..Self::defaults(privileged)
        }
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// `$XDG_RUNTIME_DIR/libvirt`, else `$XDG_CACHE_HOME/libvirt`, else `~/.cache/libvirt`
/// (GLib's `g_get_user_runtime_dir` fallback, as libvirt uses it).
fn user_runtime_dir() -> PathBuf {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .or_else(|| std::env::var_os("XDG_CACHE_HOME"))
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache"));
    base.join("libvirt")
}

/// `$XDG_CONFIG_HOME/libvirt`, else `~/.config/libvirt`.
fn user_config_dir() -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".config"))
        .join("libvirt")
}

impl Paths {
    /// Our own restart snapshot (MessagePack), beside libvirt's JSON.
    pub fn restart_snapshot(&self) -> PathBuf {
        self.restart_state.with_extension("msgpack")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_defaults_match_libvirt() {
        let p = Paths::defaults(true);
        assert_eq!(p.lock_socket, Path::new("/run/libvirt/virtlockd-sock"));
        assert_eq!(
            p.admin_socket,
            Path::new("/run/libvirt/virtlockd-admin-sock")
        );
        assert_eq!(p.pid_file, Path::new("/run/virtlockd.pid"));
        assert_eq!(
            p.restart_state,
            Path::new("/run/virtlockd-restart-exec.json")
        );
    }

    #[test]
    fn runtime_dir_moves_every_runtime_file() {
        let p = Paths::under(Path::new("/tmp/x"), true);
        for f in [
            &p.lock_socket,
            &p.admin_socket,
            &p.pid_file,
            &p.restart_state,
        ] {
            assert!(f.starts_with("/tmp/x"));
        }
        assert_eq!(p.config_file, Path::new("/etc/libvirt/virtlockd.conf"));
    }
}
