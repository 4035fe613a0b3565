//! Public keys between PKCS#11 attributes and DER SubjectPublicKeyInfo: RSA from modulus and
//! exponent, EC from the named-curve OID and the uncompressed point.

use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, OctetString, OctetStringRef, UintRef};
use der::{Decode, Encode};
use pkcs1::RsaPublicKeyRef;
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};

use super::error::HsmError;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// The NIST curves keyorch generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Curve {
    P256,
    P384,
}

impl Curve {
    fn oid(self) -> ObjectIdentifier {
        match self {
            Curve::P256 => SECP256R1,
            Curve::P384 => SECP384R1,
        }
    }

    fn from_oid(oid: ObjectIdentifier) -> Option<Curve> {
        match oid {
            SECP256R1 => Some(Curve::P256),
            SECP384R1 => Some(Curve::P384),
            _ => None,
        }
    }

    /// Bytes in a field element (and in each of r and s of a raw ECDSA signature).
    pub(crate) fn field_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }

    /// `CKA_EC_PARAMS`: the DER named-curve OID.
    pub(crate) fn ec_params(self) -> Result<Vec<u8>, HsmError> {
        self.oid().to_der().map_err(|_| encoding_error())
    }

    /// The curve named by a `CKA_EC_PARAMS` value.
    pub(crate) fn from_ec_params(params: &[u8]) -> Option<Curve> {
        ObjectIdentifier::from_der(params)
            .ok()
            .and_then(Curve::from_oid)
    }
}

/// A public key as PKCS#11 describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PublicKey {
    /// Big-endian modulus and public exponent, without leading zero bytes.
    Rsa { modulus: Vec<u8>, exponent: Vec<u8> },
    /// The uncompressed SEC1 point `04 || X || Y`.
    Ec { curve: Curve, point: Vec<u8> },
}

impl PublicKey {
    /// An RSA key from `CKA_MODULUS` and `CKA_PUBLIC_EXPONENT`.
    pub(crate) fn rsa(modulus: &[u8], exponent: &[u8]) -> PublicKey {
        PublicKey::Rsa {
            modulus: strip_zeros(modulus).to_vec(),
            exponent: strip_zeros(exponent).to_vec(),
        }
    }

    /// An EC key from `CKA_EC_PARAMS` and `CKA_EC_POINT`. The point may come DER-wrapped in an
    /// OCTET STRING (SoftHSM2, and what PKCS#11 specifies) or raw (some other modules).
    pub(crate) fn ec(params: &[u8], point_attr: &[u8]) -> Result<PublicKey, HsmError> {
        let curve = Curve::from_ec_params(params).ok_or_else(encoding_error)?;
        let point = match OctetString::from_der(point_attr) {
            Ok(inner) if is_uncompressed_point(curve, inner.as_bytes()) => {
                inner.as_bytes().to_vec()
            }
            _ if is_uncompressed_point(curve, point_attr) => point_attr.to_vec(),
            _ => return Err(encoding_error()),
        };
        Ok(PublicKey::Ec { curve, point })
    }

    /// `CKA_EC_POINT` for a public-key object: the point in a DER OCTET STRING.
    pub(crate) fn ec_point_attr(point: &[u8]) -> Result<Vec<u8>, HsmError> {
        OctetStringRef::new(point)
            .and_then(|o| o.to_der())
            .map_err(|_| encoding_error())
    }

    /// The DER SubjectPublicKeyInfo.
    pub(crate) fn to_spki_der(&self) -> Result<Vec<u8>, HsmError> {
        let encode = || -> der::Result<Vec<u8>> {
            match self {
                PublicKey::Rsa { modulus, exponent } => {
                    let rsa = RsaPublicKeyRef {
                        modulus: UintRef::new(modulus)?,
                        public_exponent: UintRef::new(exponent)?,
                    }
                    .to_der()?;
                    SubjectPublicKeyInfoRef {
                        algorithm: AlgorithmIdentifierRef {
                            oid: RSA_ENCRYPTION,
                            parameters: Some(AnyRef::NULL),
                        },
                        subject_public_key: BitStringRef::from_bytes(&rsa)?,
                    }
                    .to_der()
                }
                PublicKey::Ec { curve, point } => {
                    let oid = curve.oid();
                    SubjectPublicKeyInfoRef {
                        algorithm: AlgorithmIdentifierRef {
                            oid: EC_PUBLIC_KEY,
                            parameters: Some(AnyRef::from(&oid)),
                        },
                        subject_public_key: BitStringRef::from_bytes(point)?,
                    }
                    .to_der()
                }
            }
        };
        encode().map_err(|_| encoding_error())
    }

    /// Parses a DER SubjectPublicKeyInfo holding an RSA or a P-256/P-384 EC key.
    pub(crate) fn from_spki_der(der_bytes: &[u8]) -> Result<PublicKey, HsmError> {
        let invalid = || HsmError::KeyBlobInvalid("the public key (SPKI) does not parse");
        let spki = SubjectPublicKeyInfoRef::from_der(der_bytes).map_err(|_| invalid())?;
        let key_bytes = spki.subject_public_key.as_bytes().ok_or_else(invalid)?;
        match spki.algorithm.oid {
            RSA_ENCRYPTION => {
                let rsa = RsaPublicKeyRef::from_der(key_bytes).map_err(|_| invalid())?;
                Ok(PublicKey::rsa(
                    rsa.modulus.as_bytes(),
                    rsa.public_exponent.as_bytes(),
                ))
            }
            EC_PUBLIC_KEY => {
                let oid = spki.algorithm.parameters_oid().map_err(|_| invalid())?;
                let curve = Curve::from_oid(oid).ok_or(HsmError::KeyBlobInvalid(
                    "the public key is on an unsupported curve",
                ))?;
                if !is_uncompressed_point(curve, key_bytes) {
                    return Err(invalid());
                }
                Ok(PublicKey::Ec {
                    curve,
                    point: key_bytes.to_vec(),
                })
            }
            _ => Err(HsmError::KeyBlobInvalid(
                "the public key algorithm is neither RSA nor EC",
            )),
        }
    }

    /// RSA modulus size in bits, or the EC field size in bits.
    pub(crate) fn bits(&self) -> usize {
        match self {
            PublicKey::Rsa { modulus, .. } => modulus_bits(modulus),
            PublicKey::Ec { curve, .. } => curve.field_len() * 8,
        }
    }
}

/// Bits in a big-endian RSA modulus, leading zero bytes or not.
pub(crate) fn modulus_bits(modulus: &[u8]) -> usize {
    let n = strip_zeros(modulus);
    let lead = n.first().copied().unwrap_or(0);
    n.len() * 8 - lead.leading_zeros() as usize
}

fn is_uncompressed_point(curve: Curve, point: &[u8]) -> bool {
    point.len() == 1 + 2 * curve.field_len() && point.first() == Some(&0x04)
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn encoding_error() -> HsmError {
    HsmError::Pkcs11 {
        op: "C_GetAttributeValue",
        rv: "the token returned a public key keyorch cannot encode".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_spki_round_trips_and_has_null_parameters() {
        let modulus = [0xC3u8; 256];
        let pk = PublicKey::rsa(&modulus, &[0, 1, 0, 1]);
        let der_bytes = pk.to_spki_der().unwrap();
        // SEQUENCE { SEQUENCE { rsaEncryption, NULL }, BIT STRING }
        let alg = [
            0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05,
            0x00,
        ];
        assert!(der_bytes.windows(alg.len()).any(|w| w == alg));
        assert_eq!(PublicKey::from_spki_der(&der_bytes).unwrap(), pk);
        assert_eq!(pk.bits(), 2048);
    }

    #[test]
    fn ec_point_is_unwrapped_from_its_octet_string() {
        let mut point = vec![0x04];
        point.extend_from_slice(&[7u8; 64]);
        let attr = PublicKey::ec_point_attr(&point).unwrap();
        assert_eq!(&attr[..2], &[0x04, 0x41]);
        let params = Curve::P256.ec_params().unwrap();
        let pk = PublicKey::ec(&params, &attr).unwrap();
        assert_eq!(PublicKey::ec(&params, &point).unwrap(), pk);
        let der_bytes = pk.to_spki_der().unwrap();
        assert_eq!(PublicKey::from_spki_der(&der_bytes).unwrap(), pk);
        assert!(PublicKey::ec(&params, &point[..40]).is_err());
    }

    #[test]
    fn garbage_is_not_a_public_key() {
        assert!(matches!(
            PublicKey::from_spki_der(b"\x30\x03\x02\x01\x01"),
            Err(HsmError::KeyBlobInvalid(_))
        ));
    }
}
