//! How libvirt reads each JSON value, as serde `deserialize_with` functions, and the
//! few values written in a form of libvirt's own (UUIDs, pids).
//!
//! A refused value yields the text `must be WANT, not VALUE`; the reader puts the
//! key and its place in front (`read::locate`).
//!
//! Hand-written on purpose: libvirt keeps JSON numbers as text and converts them with
//! strtol-style routines on use, so integers only (a fraction or exponent leaves
//! unparsed characters), and its unsigned variants accept a minus sign and wrap.
//! serde_json parses anything with a fraction, an exponent or beyond 64 bits as f64,
//! which `as_i64`/`as_u64` refuse, so those are refused here too. `virUUIDParse`
//! accepts forms no UUID crate does (blanks and '-' or ' ' before any pair).

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Serializer;
use serde_json::Value;

const INT: &str = "a 32-bit integer";
const UINT: &str = "an unsigned 32-bit integer";
const LONG: &str = "a 64-bit integer";
const ULONG: &str = "an unsigned 64-bit integer";
const BOOL: &str = "true or false";
const STRING: &str = "a string";
const UUID: &str = "a UUID string";
const OBJECT: &str = "an object";
const ARRAY: &str = "an array";

/// The text of a refused value; `read::locate` recognises `must be an object`.
pub(super) fn refusal(want: &str, v: &Value) -> String {
    format!("must be {want}, not {}", shown(v))
}

/// A short rendering of a value for error messages (documents can be megabytes).
pub(super) fn shown(v: &Value) -> String {
    match v {
        Value::Array(_) => ARRAY.into(),
        Value::Object(_) => OBJECT.into(),
        other => {
            let mut text = other.to_string();
            if text.len() > 40 {
                let mut end = 40;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
                text.push_str("...");
            }
            text
        }
    }
}

/// `virJSONValueGetNumberInt`: a signed 32-bit integer.
fn int_of(v: &Value) -> Option<i32> {
    v.as_i64().and_then(|i| i32::try_from(i).ok())
}

/// `virJSONValueGetNumberUint`: 0..=u32::MAX, or -u32::MAX..=-1 wrapped (so -1
/// is u32::MAX, which is how `keepaliveInterval` -1 reads back).
fn uint_of(v: &Value) -> Option<u32> {
    if let Some(u) = v.as_u64() {
        return u32::try_from(u).ok();
    }
    // Negative here: the truncating cast is the two's complement wrap.
    v.as_i64()
        .filter(|&i| i >= -i64::from(u32::MAX))
        .map(|i| i as u32)
}

/// `virJSONValueGetNumberUlong`: any u64, negative numbers wrapped.
fn ulong_of(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_i64().map(|i| i as u64))
}

/// A value converted with `conv`; anything else is refused as not `want`, as in
/// libvirt (its getters fail on any type mismatch).
fn leaf<'de, D, T>(d: D, want: &str, conv: impl FnOnce(&Value) -> Option<T>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let v = Value::deserialize(d)?;
    conv(&v).ok_or_else(|| de::Error::custom(refusal(want, &v)))
}

pub(super) fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    leaf(d, INT, int_of)
}

pub(super) fn uint<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    leaf(d, UINT, uint_of)
}

/// `virJSONValueGetNumberLong`: a signed 64-bit integer.
pub(super) fn long<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    leaf(d, LONG, Value::as_i64)
}

pub(super) fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    leaf(d, BOOL, Value::as_bool)
}

pub(super) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    leaf(d, STRING, |v| v.as_str().map(str::to_string))
}

pub(super) fn uuid<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
    leaf(d, UUID, |v| v.as_str().and_then(parse_uuid))
}

// Optional keys: absent is `None` (through `#[serde(default)]`), present but
// ill-typed is refused; libvirt checks presence with `virJSONValueObjectHasKey`
// first, so `null` is ill-typed.

pub(super) fn opt_uint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    uint(d).map(Some)
}

pub(super) fn opt_ulong<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    leaf(d, ULONG, ulong_of).map(Some)
}

pub(super) fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    boolean(d).map(Some)
}

/// A key libvirt reads but falls back on when it is malformed.
pub(super) fn lenient_ulong<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Value::deserialize(d).map(|v| ulong_of(&v))
}

/// A key libvirt reads but falls back on when it is malformed.
pub(super) fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Value::deserialize(d).map(|v| v.as_bool())
}

/// A key whose presence matters, whatever its value (`null` included).
pub(super) fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// An object read as `T`; anything else is refused with the object's own path.
pub(super) fn object<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Object::<T>::deserialize(d).map(|o| o.0)
}

/// An array of objects, each read as `T`.
pub(super) fn objects<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let items: Vec<Object<T>> = d.deserialize_any(ArrayOf(PhantomData))?;
    Ok(items.into_iter().map(|o| o.0).collect())
}

/// Lock owners' pids: libvirt reads each as an unsigned long and keeps the low 32
/// bits (`(pid_t)owner`), so both 4294967295 (our writer) and 18446744073709551615
/// (libvirt's) read back as -1.
pub(super) fn pids<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i32>, D::Error> {
    let pids: Vec<Pid> = d.deserialize_any(ArrayOf(PhantomData))?;
    Ok(pids.into_iter().map(|p| p.0).collect())
}

/// Pids are written unsigned, as libvirt reads them.
pub(super) fn write_pids<S: Serializer>(pids: &[i32], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(pids.iter().map(|&p| p as u32))
}

struct Pid(i32);

impl<'de> Deserialize<'de> for Pid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        leaf(d, "an unsigned integer", ulong_of).map(|owner| Self(owner as i32))
    }
}

/// Refuses every value but the one a visitor is for, saying what it was.
macro_rules! refuse_other_values {
    ($want:expr) => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Err(E::custom(refusal($want, &Value::from(v))))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Err(E::custom(refusal($want, &Value::from(v))))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Err(E::custom(refusal($want, &Value::from(v))))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Err(E::custom(refusal($want, &Value::from(v))))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Err(E::custom(refusal($want, &Value::from(v))))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(E::custom(refusal($want, &Value::Null)))
        }
    };
}

struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjectOf(PhantomData))
    }
}

struct ObjectOf<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectOf<T> {
    type Value = Object<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(OBJECT)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Object)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom(refusal(
            OBJECT,
            &Value::Array(Vec::new()),
        )))
    }

    refuse_other_values!(OBJECT);
}

struct ArrayOf<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ArrayOf<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(ARRAY)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(items)
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom(refusal(
            ARRAY,
            &Value::Object(Default::default()),
        )))
    }

    refuse_other_values!(ARRAY);
}

/// C's `isspace` in the C locale (includes vertical tab, unlike Rust's ASCII
/// whitespace).
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// `virUUIDParse`: 32 hex digits (either case), with '-' or ' ' allowed before
/// any pair and blanks around, so the canonical 36-character form and the bare
/// 32-digit form both parse.
fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    fn nibble(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let bytes = text.as_bytes();
    let mut pos = bytes.iter().take_while(|&&b| is_c_space(b)).count();
    let mut uuid = [0u8; 16];
    for byte in &mut uuid {
        while matches!(bytes.get(pos), Some(b'-' | b' ')) {
            pos += 1;
        }
        let hi = nibble(*bytes.get(pos)?)?;
        let lo = nibble(*bytes.get(pos + 1)?)?;
        *byte = (hi << 4) | lo;
        pos += 2;
    }
    let rest = bytes.get(pos..).unwrap_or_default();
    rest.iter().all(|&b| is_c_space(b)).then_some(uuid)
}

/// `virUUIDFormat`: canonical lowercase 8-4-4-4-12.
pub(super) fn write_uuid<S: Serializer>(uuid: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
    let mut out = String::with_capacity(36);
    for (i, b) in uuid.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push_str(&format!("{b:02x}"));
    }
    s.serialize_str(&out)
}
