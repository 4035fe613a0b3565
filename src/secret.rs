//! Plaintext bytes that are wiped when dropped.
//!
//! `zeroize::Zeroizing<Vec<u8>>` wipes a `Vec<u8>` one volatile byte store at a time
//! (zeroize 1.9's `Zeroize for Vec<Z>` goes element by element). For the 4 KiB plaintext
//! of an Encrypt that was ≈ 1.2 µs of the crypto lane's time per call (`perf annotate`,
//! docs/benchmarks.md). [`SecretBytes`] wipes the same bytes — every byte in use and the
//! spare capacity behind them — through zeroize's slice path instead: one `memset` that an
//! optimization barrier keeps the compiler from removing.

use std::fmt;
use std::ops::Deref;

use zeroize::Zeroize;

/// Bytes wiped (contents and spare capacity) when dropped. `Debug` shows the length only;
/// there is no `PartialEq` (compare secrets in constant time, with `subtle`, if ever needed).
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> SecretBytes {
        SecretBytes(bytes)
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

/// Zeroes every initialised byte of `bytes` and its spare capacity.
fn wipe(bytes: &mut Vec<u8>) {
    bytes.as_mut_slice().zeroize();
    bytes.spare_capacity_mut().zeroize();
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

impl Deref for SecretBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn wipe_zeroes_the_bytes_in_use_and_the_spare_capacity() {
        let mut v = vec![0xA5u8; 64];
        v.truncate(40); // bytes 40..64 are spare capacity that still holds 0xA5
        wipe(&mut v);
        assert_eq!(v.len(), 40);
        assert!(v.capacity() >= 64);
        // SAFETY: all 64 bytes were initialised by `vec!` above and `wipe` only wrote zeroes.
        unsafe { v.set_len(64) };
        assert_eq!(v, vec![0u8; 64]);
    }

    #[test]
    fn debug_shows_the_length_not_the_bytes() {
        let s = SecretBytes::new(b"top secret".to_vec());
        assert_eq!(format!("{s:?}"), "SecretBytes(10 bytes)");
        assert_eq!(&*s, b"top secret");
    }
}
