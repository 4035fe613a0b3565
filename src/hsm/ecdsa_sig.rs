//! ECDSA signature formats: PKCS#11's raw `r || s` and the DER `Ecdsa-Sig-Value` that X.509,
//! JOSE-to-DER converters and the cloud KMS APIs use.

use der::asn1::UintRef;
use der::{Decode, Encode, Sequence};

/// `Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` (RFC 3279).
#[derive(Sequence)]
struct EcdsaSigValue<'a> {
    r: UintRef<'a>,
    s: UintRef<'a>,
}

/// DER from a raw `r || s` signature of two equal halves; None if `raw` has an odd length.
pub(crate) fn raw_to_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    EcdsaSigValue {
        r: UintRef::new(r).ok()?,
        s: UintRef::new(s).ok()?,
    }
    .to_der()
    .ok()
}

/// Raw `r || s`, each left-padded to `field_len`, from strict DER; None if it does not parse,
/// has trailing bytes, or an integer is longer than the field.
pub(crate) fn der_to_raw(der_bytes: &[u8], field_len: usize) -> Option<Vec<u8>> {
    let sig = EcdsaSigValue::from_der(der_bytes).ok()?;
    let mut raw = vec![0u8; 2 * field_len];
    for (i, int) in [sig.r, sig.s].iter().enumerate() {
        let bytes = int.as_bytes();
        if bytes.len() > field_len {
            return None;
        }
        let end = (i + 1) * field_len;
        raw[end - bytes.len()..end].copy_from_slice(bytes);
    }
    Some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_der_round_trip_with_leading_zeros_and_high_bits() {
        let mut raw = vec![0u8; 64];
        raw[1] = 0x05; // r has a leading zero byte
        raw[31] = 0x01;
        raw[32] = 0xff; // s needs a 0x00 pad in DER
        raw[63] = 0x02;
        let der_bytes = raw_to_der(&raw).unwrap();
        assert_eq!(der_bytes[0], 0x30);
        assert_eq!(der_to_raw(&der_bytes, 32).unwrap(), raw);
    }

    #[test]
    fn malformed_der_is_rejected() {
        let raw = [1u8; 64];
        let mut der_bytes = raw_to_der(&raw).unwrap();
        assert!(
            der_to_raw(&der_bytes, 16).is_none(),
            "integer longer than the field"
        );
        der_bytes.push(0);
        assert!(der_to_raw(&der_bytes, 32).is_none(), "trailing byte");
        assert!(der_to_raw(b"", 32).is_none());
        assert!(der_to_raw(&raw, 32).is_none(), "raw is not DER");
        assert!(raw_to_der(&raw[..63]).is_none());
    }
}
