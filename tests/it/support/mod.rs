//! What the integration tests share: daemons to start ([`daemon`], [`holder`],
//! [`namespaced`]), raw packets ([`wire`]), the usual client set-up
//! ([`fixtures`]), bounded waits on an observable condition ([`wait`]), admin
//! and `virtlockctl` calls ([`admin`], [`ctl`]), finished commands
//! ([`process`]) and the one way to skip ([`skip`]). Test modules hold tests and the helpers only they use.
//!
//! Every path in here is relative (`super::`), so that another test binary
//! (tests/stress.rs) can include this directory with `#[path]`.

pub mod admin;
pub mod ctl;
pub mod daemon;
pub mod executable;
pub mod fixtures;
pub mod guest;
pub mod holder;
pub mod namespaced;
pub mod process;
pub mod skip;
pub mod wait;
pub mod wire;

pub use daemon::{bytes, copy_daemon, describe, Daemon};
pub use executable::copy_executable;
pub use fixtures::{assert_err, holding, lockspace, next_frame, registered};
pub use holder::{example, Holder};
pub use skip::skip;
pub use wait::{until, wait_logged, UNSTALLED};
