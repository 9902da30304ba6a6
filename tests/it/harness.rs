//! The names tests have always imported from here; they live in
//! [`crate::support`] now.

#![allow(unused_imports)]

pub use crate::support::*;
