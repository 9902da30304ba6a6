#!/bin/bash
# Runs one command of this checkout inside a throw-away virtual machine whose
# root is this machine's own filesystem (shared read-only over 9p by
# virtme-ng), as root with every capability and RLIMIT_NOFILE raised to
# $VM_NOFILE (65536). It exists for the 10,000-client figures: 10,000 clients
# with 4-5 exclusive leases need 50,000-70,000 fds in the daemon, and a host
# whose hard limit is lower and whose root lacks CAP_SYS_RESOURCE cannot give
# them.
#
#   benches/in-guest/run.sh target/release/examples/upgrade_pause \
#       --spawn target/release/virtlockd --clients 10000 --leases 4
#
# Paths are relative to the checkout, which the guest sees at the same path.
# The guest's /tmp and /dev/shm are tmpfs (writable; the host's stay as they
# are). Prints the command's output and exits with its status.
#
# Environment:
#   VM_ACCEL   auto (default), kvm or tcg. auto takes KVM when /dev/kvm can run
#              a stock kernel and says so when it falls back to TCG (emulation:
#              memory figures hold, times do not compare with the host's).
#   VM_CPUS    vCPUs (default 2)   VM_MEMORY  guest memory (default 8G)
#   VM_NOFILE  RLIMIT_NOFILE in the guest, soft and hard (default 65536)
#   VM_KERNEL  kernel image to boot (default: newest /boot/vmlinuz-* that has
#              its /lib/modules; Debian's linux-image-amd64 is installed when
#              there is none)
set -u

if [ $# -eq 0 ]; then
    echo "usage: $0 COMMAND [ARG...]   (run from anywhere; paths relative to the checkout)" >&2
    exit 2
fi

say() { echo "in-guest: $*" >&2; }
die() {
    say "$*"
    exit 2
}

checkout=$(cd "$(dirname "$0")/../.." && pwd) || die "cannot find the checkout"
cpus=${VM_CPUS:-2}
memory=${VM_MEMORY:-8G}
nofile=${VM_NOFILE:-65536}
accel=${VM_ACCEL:-auto}


# A kernel whose modules are installed (virtme-ng loads 9p and virtio from them).
find_kernel() {
    local k
    for k in $(ls -1v /boot/vmlinuz-* 2>/dev/null | tac); do
        if [ -d "/lib/modules/${k#/boot/vmlinuz-}/kernel" ]; then
            echo "$k"
            return 0
        fi
    done
    return 1
}

kernel=${VM_KERNEL:-}
if [ -z "$kernel" ]; then
    if ! kernel=$(find_kernel); then
        say "no kernel with modules in /boot; installing Debian's linux-image-amd64"
        if ! { apt-get install -y linux-image-amd64 >&2 ||
            { apt-get update >&2 && apt-get install -y linux-image-amd64 >&2; }; }; then
            die "kernel unavailable: apt-get install linux-image-amd64 failed"
        fi
        kernel=$(find_kernel) || die "kernel unavailable: no /boot/vmlinuz-* with /lib/modules after installing"
    fi
fi
[ -r "$kernel" ] || die "kernel unavailable: cannot read $kernel"

if ! command -v vng >/dev/null; then
    say "installing virtme-ng (boots a kernel with the host's root shared read-only)"
    python3 -m pip install --quiet virtme-ng >&2 || die "cannot install virtme-ng with pip"
    hash -r
    command -v vng >/dev/null || die "virtme-ng installed but vng is not on PATH"
fi
command -v qemu-system-x86_64 >/dev/null ||
    die "qemu-system-x86_64 missing (apt-get install qemu-system-x86)"

# KVM that can run Debian's kernel, or TCG. A PVM host (kvm_pvm: KVM for a
# machine that is itself a guest without hardware virtualization) runs only
# kernels built as PVM guests; Debian's does not get past its decompressor there.
kvm_usable() {
    [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] || {
        say "KVM unavailable: no usable /dev/kvm"
        return 1
    }
    if [ -d /sys/module/kvm_pvm ]; then
        say "KVM unavailable for this kernel: /dev/kvm is PVM (kvm_pvm), which boots only PVM-guest kernels, and $kernel is not one"
        return 1
    fi
}
case $accel in
auto)
    if kvm_usable; then accel=kvm; else accel=tcg; fi
    ;;
kvm | tcg) ;;
*) die "VM_ACCEL must be auto, kvm or tcg, not $accel" ;;
esac
vng_accel=()
if [ "$accel" = tcg ]; then
    say "running under TCG (emulated CPU): memory and counts hold, times are tens of times the host's"
    vng_accel=(--disable-kvm)
fi

# The guest's script: root there has CAP_SYS_RESOURCE, so the hard limit rises.
printf -v command '%q ' "$@"
guest="set -e
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
ulimit -Hn $nofile
ulimit -Sn $nofile
cd $(printf '%q' "$checkout")
echo \"in-guest: \$(uname -r), \$(nproc) vCPUs, $accel, RLIMIT_NOFILE \$(ulimit -Sn)/\$(ulimit -Hn)\" >&2
exec $command"

# QEMU opens its output chardevs (/proc/self/fd/1 and 2) with O_TRUNC, which
# would empty a log file this script's output is redirected to: it writes into
# pipes, copied out by cat.
fifos=$(mktemp -d) || die "cannot make a temporary directory"
mkfifo "$fifos/out" "$fifos/err" || die "cannot make fifos in $fifos"
cat "$fifos/out" &
copy_out=$!
cat "$fifos/err" >&2 &
copy_err=$!

say "booting $kernel ($accel, $cpus vCPUs, $memory)"
# Its own session and process group (vng -> sh -> virtme-run -> qemu), so an
# interrupted run can end all of them by that group's id.
setsid vng --run "$kernel" "${vng_accel[@]}" --cpus "$cpus" --memory "$memory" \
    --cwd "$checkout" --exec "$guest" </dev/null >"$fifos/out" 2>"$fifos/err" &
vm=$!
# After a normal end the group is empty and the kill finds nothing.
cleanup() {
    kill -- "-$vm" 2>/dev/null || true
    wait "$vm" "$copy_out" "$copy_err" 2>/dev/null || true
    rm -rf "$fifos"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Polled, not a plain `wait`: bash 5.2 sometimes dies of a TERM that arrives
# during `wait` without running its trap, and the VM would outlive it.
while kill -0 "$vm" 2>/dev/null; do
    sleep 0.5
done
status=0
wait "$vm" || status=$?
exit "$status"
