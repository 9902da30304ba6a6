//! The `remote_error` struct of libvirt's RPC, filled field for field as libvirt
//! fills it, plus the error numbers and domains the daemon uses.

use bytes::BytesMut;

use super::xdr::XdrWrite;

/// `virErrorNumber` values used by virtlockd.
pub mod code {
    pub const INTERNAL_ERROR: i32 = 1;
    pub const INVALID_ARG: i32 = 8;
    pub const OPERATION_DENIED: i32 = 29;
    pub const SYSTEM_ERROR: i32 = 38;
    pub const RPC: i32 = 39;
    pub const OPERATION_INVALID: i32 = 55;
    pub const ARGUMENT_UNSUPPORTED: i32 = 74;
    pub const RESOURCE_BUSY: i32 = 87;
    pub const NO_SERVER: i32 = 95;
    pub const NO_CLIENT: i32 = 96;
}

/// `virErrorDomain` values: which libvirt source file would have raised the error.
pub mod domain {
    pub const NONE: i32 = 0;
    pub const RPC: i32 = 7;
    pub const CONF: i32 = 9;
    pub const LOCKING: i32 = 42;
    pub const LOCKSPACE: i32 = 51;
    pub const ADMIN: i32 = 62;
}

/// `VIR_ERR_ERROR`: the only level virtlockd ever sends.
pub const LEVEL_ERROR: i32 = 2;

/// libvirt's "with info" message template for an error number.
pub fn template(code: i32) -> &'static str {
    match code {
        code::INTERNAL_ERROR => "internal error: %s",
        code::INVALID_ARG => "invalid argument: %s",
        code::OPERATION_DENIED => "operation forbidden: %s",
        code::OPERATION_INVALID => "Requested operation is not valid: %s",
        code::ARGUMENT_UNSUPPORTED => "argument unsupported: %s",
        code::RESOURCE_BUSY => "resource busy: %s",
        code::NO_SERVER => "Server not found: %s",
        code::NO_CLIENT => "Client not found: %s",
        _ => "%s",
    }
}

/// An error as sent to a client. `str3`, `dom` and `net` are always absent in
/// virtlockd's replies and so are not represented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    pub code: i32,
    pub domain: i32,
    pub message: String,
    pub str1: Option<String>,
    pub str2: Option<String>,
    pub int1: i32,
    pub int2: i32,
}

impl RemoteError {
    /// `virReportError(code, "%s", detail)`: message = template with the detail.
    pub fn new(code: i32, domain: i32, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        let template = template(code);
        Self {
            code,
            domain,
            message: template.replacen("%s", &detail, 1),
            str1: Some(template.to_owned()),
            str2: Some(detail),
            int1: -1,
            int2: -1,
        }
    }

    /// `virReportSystemError(errno, ...)`: detail gets glibc's text for errno appended
    /// and int1 carries errno.
    pub fn system(domain: i32, errno: i32, what: impl std::fmt::Display) -> Self {
        let mut e = Self::new(
            code::SYSTEM_ERROR,
            domain,
            format!("{what}: {}", strerror(errno)),
        );
        e.int1 = errno;
        e
    }

    /// An error of the RPC layer (code 39, domain 7).
    pub fn rpc(detail: impl Into<String>) -> Self {
        Self::new(code::RPC, domain::RPC, detail)
    }

    /// `virCheckFlags` failure: names the C function libvirt would have run, with the
    /// unsupported bits only, and the peculiar field layout of `virReportInvalidArg`.
    pub fn unsupported_flags(unsupported: u32, function: &str) -> Self {
        Self {
            code: code::INVALID_ARG,
            domain: domain::RPC,
            message: format!("unsupported flags (0x{unsupported:x}) in function {function}"),
            str1: Some(function.to_owned()),
            str2: Some("flags".to_owned()),
            int1: 0,
            int2: 0,
        }
    }

    /// XDR encoding of `remote_error`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_xdr_i32(self.code);
        out.put_xdr_i32(self.domain);
        out.put_xdr_opt_string(Some(self.message.as_bytes()));
        out.put_xdr_i32(LEVEL_ERROR);
        out.put_xdr_u32(0); // dom
        out.put_xdr_opt_string(self.str1.as_deref().map(str::as_bytes));
        out.put_xdr_opt_string(self.str2.as_deref().map(str::as_bytes));
        out.put_xdr_u32(0); // str3
        out.put_xdr_i32(self.int1);
        out.put_xdr_i32(self.int2);
        out.put_xdr_u32(0); // net
    }
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (code {}, domain {})",
            self.message, self.code, self.domain
        )
    }
}

impl std::error::Error for RemoteError {}

/// glibc's text for an errno value, exactly as libvirt prints it.
pub fn strerror(errno: i32) -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for writes of its length; the XSI strerror_r writes a
    // NUL-terminated string into it and touches nothing else.
    let rc = unsafe { libc::strerror_r(errno, buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return format!("Unknown error {errno}");
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl RemoteError {
    /// Decodes a `remote_error` (client side). `str3`, `dom` and `net` are skipped.
    pub fn decode(payload: &[u8]) -> Result<Self, super::xdr::XdrError> {
        use super::xdr::XdrReader;
        const MAX: usize = 4 * 1024 * 1024;
        let mut r = XdrReader::new(payload);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let code = r.i32()?;
        let domain = r.i32()?;
        let message = if r.optional()? {
            text(r.string(MAX)?)
        } else {
            String::new()
        };
        let _level = r.i32()?;
        if r.optional()? {
            r.string(MAX)?;
            r.opaque_fixed(16)?;
            r.i32()?;
        }
        let opt = |r: &mut XdrReader<'_>| -> Result<Option<String>, super::xdr::XdrError> {
            Ok(if r.optional()? {
                Some(text(r.string(MAX)?))
            } else {
                None
            })
        };
        let str1 = opt(&mut r)?;
        let str2 = opt(&mut r)?;
        let _str3 = opt(&mut r)?;
        Ok(Self {
            code,
            domain,
            message,
            str1,
            str2,
            int1: r.i32()?,
            int2: r.i32()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_error_fields() {
        let e = RemoteError::new(
            code::RESOURCE_BUSY,
            domain::LOCKSPACE,
            "Lockspace resource 'r1' is locked",
        );
        assert_eq!(
            e.message,
            "resource busy: Lockspace resource 'r1' is locked"
        );
        assert_eq!(e.str1.as_deref(), Some("resource busy: %s"));
        assert_eq!(e.str2.as_deref(), Some("Lockspace resource 'r1' is locked"));
        assert_eq!((e.int1, e.int2), (-1, -1));
    }

    #[test]
    fn system_error_fields() {
        let e = RemoteError::system(
            domain::LOCKSPACE,
            libc::ENOENT,
            "Unable to open resource /x",
        );
        assert_eq!(e.code, 38);
        assert_eq!(
            e.message,
            "Unable to open resource /x: No such file or directory"
        );
        assert_eq!(e.str1.as_deref(), Some("%s"));
        assert_eq!(e.str2.as_deref(), Some(e.message.as_str()));
        assert_eq!((e.int1, e.int2), (2, -1));
    }

    #[test]
    fn flags_error_fields() {
        let e = RemoteError::unsupported_flags(
            0xffff_fffc,
            "virLockSpaceProtocolDispatchAcquireResource",
        );
        assert_eq!(
            e.message,
            "unsupported flags (0xfffffffc) in function virLockSpaceProtocolDispatchAcquireResource"
        );
        assert_eq!(e.str2.as_deref(), Some("flags"));
        assert_eq!((e.code, e.domain, e.int1, e.int2), (8, 7, 0, 0));
    }

    /// libvirt's tests/virnetmessagetest.c error payload: 116 bytes with the header.
    #[test]
    fn libvirt_error_vector_size() {
        let mut b = BytesMut::new();
        let e = RemoteError {
            code: 1,
            domain: 7,
            message: "Hello World".into(),
            str1: Some("One".into()),
            str2: Some("Two".into()),
            int1: 1,
            int2: 2,
        };
        e.encode(&mut b);
        // Without str3 "Three" (4 + 4 + 8 bytes) the libvirt vector is 116 - 16 = 100 bytes.
        assert_eq!(28 + b.len(), 116 - 12);
    }
}
