//! `virtlockctl`: lock inspection over the admin socket. The binary
//! (`src/bin/virtlockctl.rs`) parses the command line defined in [`cli`]; this module asks the
//! daemon ([`query`]), matches disk paths to leases ([`who`]), looks at
//! filesystems ([`fscheck`]) and renders tables and JSON ([`render`]).

pub mod cli;
pub mod fscheck;
pub mod query;
pub mod render;
pub mod who;
