//! Per-connection session rules of the lock program (spec §3.2-§3.3): the owner a
//! client registered, the restricted flag, and the check order every handler runs
//! before it touches a lockspace. Pure: the connection actor applies it.

use std::fmt;
use std::sync::Arc;

use crate::lockspace::OwnerPid;
use crate::names::{lossy_utf8, uuid_string};
use crate::protocol::error::{code, domain};
use crate::protocol::lock::{LockCall, Owner};
use crate::protocol::RemoteError;

/// What a lock client has told us about itself.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// Shared with the client table and with each lockspace the owner holds
    /// a lease in (one copy per registration, not one per holder).
    owner: Option<Arc<Owner>>,
    restricted: bool,
}

fn not_registered() -> RemoteError {
    RemoteError::new(
        code::OPERATION_INVALID,
        domain::RPC,
        "lock owner details have not been registered",
    )
}

impl Session {
    /// Restores a session (live upgrade).
    pub fn restored(owner: Option<Owner>, restricted: bool) -> Self {
        Self {
            owner: owner.map(Arc::new),
            restricted,
        }
    }

    /// Checks (a) flags, (b) restricted, (c) registered, in libvirt's order.
    /// REGISTER and CREATE_LOCKSPACE need no registration.
    pub fn admit(&self, call: &LockCall) -> Result<(), RemoteError> {
        call.check_flags()?;
        if self.restricted {
            return Err(RemoteError::new(
                code::OPERATION_DENIED,
                domain::RPC,
                "lock manager connection has been restricted",
            ));
        }
        let needs_owner = !matches!(
            call,
            LockCall::Register { .. } | LockCall::CreateLockspace { .. }
        );
        if needs_owner && self.owner.is_none() {
            return Err(not_registered());
        }
        Ok(())
    }

    /// REGISTER: id 0 is refused (with libvirt's misleading text); anything else
    /// replaces the previous registration.
    pub fn register(&mut self, owner: Owner) -> Result<(), RemoteError> {
        if owner.id == 0 {
            return Err(not_registered());
        }
        self.owner = Some(Arc::new(owner));
        Ok(())
    }

    /// RESTRICT: from now on every call on this connection is refused.
    pub fn restrict(&mut self) {
        self.restricted = true;
    }

    pub fn is_restricted(&self) -> bool {
        self.restricted
    }

    pub fn owner(&self) -> Option<&Owner> {
        self.owner.as_deref()
    }

    /// The registered owner, to share (see [`Session::owner`]).
    pub fn shared_owner(&self) -> Option<&Arc<Owner>> {
        self.owner.as_ref()
    }

    /// The registered owner pid as libvirt stores it (`pid_t` from the wire's u32).
    pub fn owner_pid(&self) -> Option<OwnerPid> {
        self.owner.as_ref().map(|o| o.pid as OwnerPid)
    }
}

/// How log lines name a lease owner: `NAME uuid=UUID pid=PID`, from what it
/// registered (`unknown` where that is not known, e.g. a lease restored from
/// libvirt's state). One format for disconnects, fencing and lease losses.
pub fn owner_label(pid: OwnerPid, owner: Option<&Owner>) -> String {
    OwnerLabel { pid, owner }.to_string()
}

/// [`owner_label`], written only where it is shown: a log line that is
/// filtered out formats nothing, and nobody keeps the text.
#[derive(Clone, Copy)]
pub struct OwnerLabel<'a> {
    pub pid: OwnerPid,
    pub owner: Option<&'a Owner>,
}

impl fmt::Display for OwnerLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pid = self.pid;
        match self.owner {
            Some(o) => write!(
                f,
                "{} uuid={} pid={pid}",
                lossy_utf8(&o.name),
                uuid_string(&o.uuid)
            ),
            None => write!(f, "unknown uuid=unknown pid={pid}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(id: u32) -> Owner {
        Owner {
            uuid: [0; 16],
            name: b"vm".to_vec(),
            id,
            pid: 77,
        }
    }

    fn acquire(flags: u32) -> LockCall {
        LockCall::Acquire {
            path: Default::default(),
            name: b"x".to_vec().into(),
            flags,
        }
    }

    #[test]
    fn check_order_is_flags_restricted_registered() {
        let mut s = Session::default();
        assert_eq!(s.admit(&acquire(0)).unwrap_err().code, 55);
        assert_eq!(s.admit(&acquire(4)).unwrap_err().code, 8);
        assert!(s
            .admit(&LockCall::CreateLockspace {
                path: Default::default()
            })
            .is_ok());
        assert_eq!(s.register(owner(0)).unwrap_err().code, 55);
        s.register(owner(1)).unwrap();
        assert!(s.admit(&acquire(3)).is_ok());
        s.restrict();
        assert_eq!(s.admit(&acquire(0)).unwrap_err().code, 29);
        assert_eq!(s.admit(&acquire(4)).unwrap_err().code, 8);
        assert_eq!(
            s.admit(&LockCall::CreateLockspace {
                path: Default::default()
            })
            .unwrap_err()
            .code,
            29
        );
    }

    #[test]
    fn failed_register_keeps_the_previous_owner() {
        let mut s = Session::default();
        s.register(owner(5)).unwrap();
        assert!(s.register(owner(0)).is_err());
        assert_eq!(s.owner().unwrap().id, 5);
        assert_eq!(s.owner_pid(), Some(77));
    }

    #[test]
    fn owner_labels() {
        let o = Owner {
            uuid: [0xab; 16],
            name: b"vm\x01".to_vec(),
            id: 3,
            pid: 4321,
        };
        assert_eq!(
            owner_label(4321, Some(&o)),
            format!(
                "{} uuid=abababab-abab-abab-abab-abababababab pid=4321",
                crate::names::lossy_utf8(b"vm\x01")
            )
        );
        assert_eq!(owner_label(9, None), "unknown uuid=unknown pid=9");
    }
}
