//! A stand-in for QEMU in the examples: a process whose pid owns leases.

/// `sleep`, playing the guest whose pid owns the leases. It dies with us even
/// when we are killed (PDEATHSIG), so no stand-in outlives the example.
pub fn qemu() -> std::io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new("sleep");
    cmd.arg("3600")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn()
}
