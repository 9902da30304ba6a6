//! The QEMU guests the end-to-end and package tests run under libvirtd.

/// `/etc/libvirt/qemu.conf` for libvirtd's QEMU driver with lockd as its lock
/// manager, and only what a guest needs to run in a sandbox or container: no
/// cgroups, namespaces, seccomp or security driver.
pub const QEMU_CONF: &str = r#"lock_manager = "lockd"
user = "root"
group = "root"
stdio_handler = "file"
cgroup_controllers = [ ]
namespaces = [ ]
seccomp_sandbox = 0
security_driver = "none"
dynamic_ownership = 0
remember_owner = 0
"#;

/// A TCG guest on `disk`, its serial console in `/var/log/libvirt/NAME.serial`.
/// `share-rw` keeps QEMU's own image locking from refusing a second guest on
/// the same disk before the lock daemon is asked.
pub fn tcg_guest_xml(name: &str, disk: &str) -> String {
    format!(
        r#"<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'><source path='/var/log/libvirt/{name}.serial'/></serial>
    <memballoon model='none'/>
  </devices>
  <qemu:override>
    <qemu:device alias='virtio-disk0'>
      <qemu:frontend><qemu:property name='share-rw' type='bool' value='true'/></qemu:frontend>
    </qemu:device>
  </qemu:override>
</domain>
"#
    )
}
