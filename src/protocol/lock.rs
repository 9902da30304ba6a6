//! The lock program (0x0EA7BEEF v1): procedure numbers, argument decoding and the
//! flag rules of each procedure. Pure data; the daemon decides what the calls mean.

use bytes::{Bytes, BytesMut};

use super::error::RemoteError;
use super::xdr::{XdrError, XdrReader, XdrWrite};

pub const PROGRAM: u32 = 0x0EA7_BEEF;
pub const VERSION: u32 = 1;

/// `VIR_LOCK_SPACE_PROTOCOL_STRING_MAX`.
pub const STRING_MAX: usize = 65536;

/// ACQUIRE flag: take a shared (read) lock.
pub const ACQUIRE_SHARED: u32 = 1;
/// ACQUIRE flag: create the lease file if missing and delete it on release.
pub const ACQUIRE_AUTOCREATE: u32 = 2;

/// Lock program procedure numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Procedure {
    Register = 1,
    Restrict = 2,
    New = 3,
    CreateResource = 4,
    DeleteResource = 5,
    AcquireResource = 6,
    ReleaseResource = 7,
    CreateLockspace = 8,
}

impl Procedure {
    pub fn from_wire(p: i32) -> Option<Self> {
        Some(match p {
            1 => Self::Register,
            2 => Self::Restrict,
            3 => Self::New,
            4 => Self::CreateResource,
            5 => Self::DeleteResource,
            6 => Self::AcquireResource,
            7 => Self::ReleaseResource,
            8 => Self::CreateLockspace,
            _ => return None,
        })
    }

    /// The C dispatcher named in libvirt's "unsupported flags" message.
    pub fn c_function(self) -> &'static str {
        match self {
            Self::Register => "virLockSpaceProtocolDispatchRegister",
            Self::Restrict => "virLockSpaceProtocolDispatchRestrict",
            Self::New => "virLockSpaceProtocolDispatchNew",
            Self::CreateResource => "virLockSpaceProtocolDispatchCreateResource",
            Self::DeleteResource => "virLockSpaceProtocolDispatchDeleteResource",
            Self::AcquireResource => "virLockSpaceProtocolDispatchAcquireResource",
            Self::ReleaseResource => "virLockSpaceProtocolDispatchReleaseResource",
            Self::CreateLockspace => "virLockSpaceProtocolDispatchCreateLockspace",
        }
    }

    /// Flags this procedure accepts.
    pub fn allowed_flags(self) -> u32 {
        match self {
            Self::AcquireResource => ACQUIRE_SHARED | ACQUIRE_AUTOCREATE,
            _ => 0,
        }
    }
}

/// The lock owner sent by REGISTER: the process (normally QEMU) the locks belong to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Owner {
    pub uuid: [u8; 16],
    pub name: Vec<u8>,
    pub id: u32,
    pub pid: u32,
}

/// A decoded call of the lock program. Paths and names are slices of the
/// received packet: no copy per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockCall {
    Register {
        owner: Owner,
        flags: u32,
    },
    Restrict {
        flags: u32,
    },
    New {
        path: Bytes,
        flags: u32,
    },
    CreateResource {
        path: Bytes,
        name: Bytes,
        flags: u32,
    },
    DeleteResource {
        path: Bytes,
        name: Bytes,
        flags: u32,
    },
    Acquire {
        path: Bytes,
        name: Bytes,
        flags: u32,
    },
    Release {
        path: Bytes,
        name: Bytes,
        flags: u32,
    },
    CreateLockspace {
        path: Bytes,
    },
}

impl LockCall {
    /// Decodes the arguments of `procedure`. Strings are cut at an embedded NUL, as
    /// the C daemon sees them; trailing bytes are ignored.
    pub fn decode(procedure: Procedure, payload: &Bytes) -> Result<Self, XdrError> {
        let mut r = XdrReader::new(payload);
        let string = |r: &mut XdrReader<'_>| r.c_string(STRING_MAX).map(|s| payload.slice_ref(s));
        Ok(match procedure {
            Procedure::Register => {
                let mut uuid = [0u8; 16];
                uuid.copy_from_slice(r.opaque_fixed(16)?);
                let owner = Owner {
                    uuid,
                    name: string(&mut r)?.to_vec(),
                    id: r.u32()?,
                    pid: r.u32()?,
                };
                Self::Register {
                    owner,
                    flags: r.u32()?,
                }
            }
            Procedure::Restrict => Self::Restrict { flags: r.u32()? },
            Procedure::New => Self::New {
                path: string(&mut r)?,
                flags: r.u32()?,
            },
            Procedure::CreateLockspace => Self::CreateLockspace {
                path: string(&mut r)?,
            },
            Procedure::CreateResource
            | Procedure::DeleteResource
            | Procedure::AcquireResource
            | Procedure::ReleaseResource => {
                let path = string(&mut r)?;
                let name = string(&mut r)?;
                let flags = r.u32()?;
                match procedure {
                    Procedure::CreateResource => Self::CreateResource { path, name, flags },
                    Procedure::DeleteResource => Self::DeleteResource { path, name, flags },
                    Procedure::AcquireResource => Self::Acquire { path, name, flags },
                    _ => Self::Release { path, name, flags },
                }
            }
        })
    }

    pub fn procedure(&self) -> Procedure {
        match self {
            Self::Register { .. } => Procedure::Register,
            Self::Restrict { .. } => Procedure::Restrict,
            Self::New { .. } => Procedure::New,
            Self::CreateResource { .. } => Procedure::CreateResource,
            Self::DeleteResource { .. } => Procedure::DeleteResource,
            Self::Acquire { .. } => Procedure::AcquireResource,
            Self::Release { .. } => Procedure::ReleaseResource,
            Self::CreateLockspace { .. } => Procedure::CreateLockspace,
        }
    }

    fn flags(&self) -> Option<u32> {
        match self {
            Self::Register { flags, .. }
            | Self::Restrict { flags }
            | Self::New { flags, .. }
            | Self::CreateResource { flags, .. }
            | Self::DeleteResource { flags, .. }
            | Self::Acquire { flags, .. }
            | Self::Release { flags, .. } => Some(*flags),
            Self::CreateLockspace { .. } => None,
        }
    }

    /// libvirt's first check in every handler: unknown flag bits.
    pub fn check_flags(&self) -> Result<(), RemoteError> {
        let procedure = self.procedure();
        match self.flags() {
            Some(f) if f & !procedure.allowed_flags() != 0 => Err(RemoteError::unsupported_flags(
                f & !procedure.allowed_flags(),
                procedure.c_function(),
            )),
            _ => Ok(()),
        }
    }

    /// XDR encoding of the arguments (used by the client side).
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Self::Register { owner, flags } => {
                out.put_xdr_opaque_fixed(&owner.uuid);
                out.put_xdr_string(&owner.name);
                out.put_xdr_u32(owner.id);
                out.put_xdr_u32(owner.pid);
                out.put_xdr_u32(*flags);
            }
            Self::Restrict { flags } => out.put_xdr_u32(*flags),
            Self::New { path, flags } => {
                out.put_xdr_string(path);
                out.put_xdr_u32(*flags);
            }
            Self::CreateLockspace { path } => out.put_xdr_string(path),
            Self::CreateResource { path, name, flags }
            | Self::DeleteResource { path, name, flags }
            | Self::Acquire { path, name, flags }
            | Self::Release { path, name, flags } => {
                out.put_xdr_string(path);
                out.put_xdr_string(name);
                out.put_xdr_u32(*flags);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_truncated_register_fails() {
        assert!(LockCall::decode(Procedure::Register, &Bytes::from_static(&[0; 10])).is_err());
        assert!(LockCall::decode(Procedure::Register, &Bytes::new()).is_err());
    }

    #[test]
    fn oversized_string_is_a_decode_error() {
        let mut b = BytesMut::new();
        b.put_xdr_u32(65537);
        b.extend_from_slice(&vec![b'a'; 65540]);
        assert!(LockCall::decode(Procedure::CreateLockspace, &b.freeze()).is_err());
    }

    #[test]
    fn flags_check_reports_only_unknown_bits() {
        let call = LockCall::Acquire {
            path: Default::default(),
            name: Default::default(),
            flags: 0xffff_ffff,
        };
        let e = call.check_flags().unwrap_err();
        assert!(e.message.starts_with("unsupported flags (0xfffffffc)"));
        assert!(LockCall::CreateLockspace {
            path: Default::default()
        }
        .check_flags()
        .is_ok());
    }
}
