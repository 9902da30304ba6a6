//! The admin program (0x06900690 v1) that virt-admin speaks on the admin socket.

pub const PROGRAM: u32 = 0x0690_0690;
pub const VERSION: u32 = 1;
