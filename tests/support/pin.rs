//! Checks of known-answer vectors, shared by the crates' `tests/vectors.rs` (included with
//! `#[path]`): a value is compared with the constant committed under the same name, and a
//! mismatch names the vector.

/// Checks bytes against the committed hex constant `$want`.
macro_rules! pin {
    ($want:ident, $got:expr) => {
        pin::check(stringify!($want), &hex::encode($got), $want)
    };
}

/// Checks a rendered value against the committed text constant `$want`.
macro_rules! pin_str {
    ($want:ident, $got:expr) => {
        pin::check(stringify!($want), &$got, $want)
    };
}

/// Fails with the vector's name if `got` is not `want`.
#[track_caller]
pub fn check(name: &str, got: &str, want: &str) {
    assert_eq!(got, want, "vector {name} changed");
}

/// The bytes of a committed hex constant.
pub fn unhex(text: &str) -> Vec<u8> {
    hex::decode(text).expect("a committed vector is hex")
}
