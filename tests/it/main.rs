//! Integration tests: the real daemon binary, driven over its Unix socket.

mod support;

mod admin;
mod admin_safety;
mod blocking;
mod conformance;
mod differential;
mod docs;
mod e2e;
mod fencing;
mod framing;
mod gluster;
mod handover;
mod lifecycle;
mod multihost;
mod package;
mod plugin_layouts;
mod signals;
mod smoke;
mod systemd;
mod upgrade;
mod virtlockctl;
