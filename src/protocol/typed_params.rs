//! libvirt's checks of typed parameters received from a client
//! (`virTypedParamsValidate`), with its exact order and texts (domain 0).

use super::admin::{TypedParam, Value};
use super::error::{code, domain};
use super::RemoteError;

/// `VIR_TYPED_PARAM_FIELD_LENGTH`: a field name must be shorter than this many
/// bytes (libvirt keeps it in a fixed `char[80]` with its terminating NUL).
pub const FIELD_LENGTH: usize = 80;

/// `virTypedParamsDeserialize`'s check of received parameters, done right after
/// the server lookup and before flags or names are checked: the first field name
/// too long for libvirt's fixed buffer is an internal error (domain 0).
pub fn check_field_lengths(params: &[TypedParam]) -> Result<(), RemoteError> {
    match params.iter().find(|p| p.field.len() >= FIELD_LENGTH) {
        Some(p) => Err(RemoteError::new(
            code::INTERNAL_ERROR,
            domain::NONE,
            format!("parameter {} too big for destination", p.field),
        )),
        None => Ok(()),
    }
}

/// Checks `params` against the allowed `(field, type name)` keys the way libvirt
/// does: both sorted by name, walked together; the first duplicate or wrong
/// type found on the way is reported, then a field left over (not supported).
pub fn validate(params: &[TypedParam], keys: &[(&str, &str)]) -> Result<(), RemoteError> {
    let mut sorted: Vec<&TypedParam> = params.iter().collect();
    sorted.sort_by(|a, b| a.field.as_bytes().cmp(b.field.as_bytes()));
    let mut keys = keys.to_vec();
    keys.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let (mut i, mut j) = (0, 0);
    while i < sorted.len() && j < keys.len() {
        if sorted[i].field != keys[j].0 {
            j += 1;
            continue;
        }
        if i > 0 && sorted[i].field == sorted[i - 1].field {
            return Err(RemoteError::new(
                code::INVALID_ARG,
                domain::NONE,
                format!("parameter '{}' occurs multiple times", sorted[i].field),
            ));
        }
        if sorted[i].value.type_name() != keys[j].1 {
            return Err(RemoteError::new(
                code::INVALID_ARG,
                domain::NONE,
                format!(
                    "invalid type '{}' for parameter '{}', expected '{}'",
                    sorted[i].value.type_name(),
                    sorted[i].field,
                    keys[j].1
                ),
            ));
        }
        i += 1;
    }
    if j == keys.len() && i != sorted.len() {
        return Err(RemoteError::new(
            code::ARGUMENT_UNSUPPORTED,
            domain::NONE,
            format!("parameter '{}' not supported", sorted[i].field),
        ));
    }
    Ok(())
}

/// The value of the UINT parameter `field`, if given (validated beforehand).
pub fn get_uint(params: &[TypedParam], field: &str) -> Option<u32> {
    params
        .iter()
        .find_map(|p| match (&p.value, p.field == field) {
            (Value::UInt(v), true) => Some(*v),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[(&str, &str)] = &[("minWorkers", "uint"), ("maxWorkers", "uint")];

    fn p(field: &str, value: Value) -> TypedParam {
        TypedParam::new(field, value)
    }

    #[test]
    fn accepts_known_fields() {
        let ps = [
            p("maxWorkers", Value::UInt(0)),
            p("minWorkers", Value::UInt(0)),
        ];
        assert!(validate(&ps, KEYS).is_ok());
        assert_eq!(get_uint(&ps, "minWorkers"), Some(0));
        assert_eq!(get_uint(&ps, "prioWorkers"), None);
    }

    #[test]
    fn field_names_must_fit_libvirts_buffer() {
        let fits = "f".repeat(FIELD_LENGTH - 1);
        let long = "g".repeat(FIELD_LENGTH);
        assert!(check_field_lengths(&[p(&fits, Value::UInt(1))]).is_ok());
        let e = check_field_lengths(&[
            p(&fits, Value::UInt(1)),
            p(&long, Value::UInt(1)),
            p(&format!("{long}h"), Value::UInt(1)),
        ])
        .unwrap_err();
        assert_eq!(
            (e.code, e.domain, e.message),
            (
                1,
                0,
                format!("internal error: parameter {long} too big for destination")
            )
        );
    }

    #[test]
    fn reports_like_libvirt() {
        let e = validate(&[p("bogus", Value::UInt(1))], KEYS).unwrap_err();
        assert_eq!(
            (e.code, e.domain, e.message.as_str()),
            (
                74,
                0,
                "argument unsupported: parameter 'bogus' not supported"
            )
        );
        let e = validate(&[p("minWorkers", Value::Int(1))], KEYS).unwrap_err();
        assert_eq!(
            e.message,
            "invalid argument: invalid type 'int' for parameter 'minWorkers', expected 'uint'"
        );
        let twice = [
            p("minWorkers", Value::UInt(1)),
            p("minWorkers", Value::UInt(2)),
        ];
        assert_eq!(
            validate(&twice, KEYS).unwrap_err().message,
            "invalid argument: parameter 'minWorkers' occurs multiple times"
        );
        // Sorted walk: "zzz" is found unsupported only after the keys ran out,
        // so the wrong type of "maxWorkers" is reported first.
        let both = [p("zzz", Value::UInt(1)), p("maxWorkers", Value::Int(1))];
        assert!(validate(&both, KEYS)
            .unwrap_err()
            .message
            .contains("invalid type"));
    }
}
