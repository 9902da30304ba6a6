//! Integration tests: the real daemon binary, driven over its Unix socket.

mod harness;

mod admin;
mod blocking;
mod conformance;
mod fencing;
mod framing;
mod handover;
mod lifecycle;
mod signals;
mod smoke;
mod upgrade;
mod virtlockctl;
