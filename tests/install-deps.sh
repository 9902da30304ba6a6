#!/usr/bin/env bash
# Installs the Debian packages that the compatibility, end-to-end and multi-host
# tests drive: libvirt's own virtlockd, libvirtd with its QEMU driver and lockd
# plugin, virsh and virt-admin, QEMU (TCG is enough), GlusterFS, and
# systemd-nspawn to boot real systemd in a container.
#
# Idempotent and never fatal: without root or apt-get (or with the network
# down) it says so, and the tests that need a missing package report SKIPPED.
set -u

packages=(
  libvirt-daemon              # /usr/sbin/virtlockd 9.0: hand-over, differential, multi-host
  libvirt-daemon-driver-qemu  # libvirtd's QEMU driver and the lockd plugin: end-to-end
  libvirt-clients             # virsh and virt-admin
  qemu-system-x86             # the guests of the end-to-end test, under TCG
  glusterfs-server            # two "hosts" over a real distributed filesystem
  glusterfs-client
  iproute2                    # ss, ip
  procps
  util-linux                  # unshare, nsenter, lslocks
  systemd-container           # systemd-nspawn: the tests under real systemd (PID 1 in a container)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all test packages present"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-deps: WARNING: not root or no apt-get; missing ${missing[*]}: the tests that need them will report SKIPPED"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if apt-get update -qq -o DPkg::Lock::Timeout=300 && apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}" >/dev/null; then
  echo "install-deps: done"
else
  echo "install-deps: WARNING: apt-get failed; the tests that need ${missing[*]} will report SKIPPED"
fi
exit 0
