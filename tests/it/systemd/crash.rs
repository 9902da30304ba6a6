//! Crash-safe mode under real systemd: the daemon dies (SIGKILL, SIGABRT, at
//! a chosen crash point or under load), systemd restarts it, and the new
//! daemon takes every lease and every client connection back from the fd
//! store: what it acknowledged holds, what it did not may or may not have
//! happened, and no client waits forever.

mod background;
mod daemon_close;
mod journal_loss;
mod ledger;
mod load;
mod points_connect;
mod points_lease;
mod points_lifecycle;
mod rig;
