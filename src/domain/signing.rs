//! Signing algorithms and which key specs may use them (AWS KMS's pairing rules).

use std::fmt;

use super::{DomainError, KeySpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    RsaPssSha256,
    RsaPssSha384,
    RsaPssSha512,
    RsaPkcs1Sha256,
    RsaPkcs1Sha384,
    RsaPkcs1Sha512,
    EcdsaSha256,
    EcdsaSha384,
}

const RSA_ALGS: &[SigningAlgorithm] = &[
    SigningAlgorithm::RsaPssSha256,
    SigningAlgorithm::RsaPssSha384,
    SigningAlgorithm::RsaPssSha512,
    SigningAlgorithm::RsaPkcs1Sha256,
    SigningAlgorithm::RsaPkcs1Sha384,
    SigningAlgorithm::RsaPkcs1Sha512,
];

impl SigningAlgorithm {
    /// The algorithms a key spec supports: every RSA scheme for RSA keys; ECDSA with the
    /// curve's own hash for EC keys (P-256/SHA-256, P-384/SHA-384); none otherwise.
    pub fn for_spec(spec: KeySpec) -> &'static [SigningAlgorithm] {
        match spec {
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => RSA_ALGS,
            KeySpec::EcP256 => &[SigningAlgorithm::EcdsaSha256],
            KeySpec::EcP384 => &[SigningAlgorithm::EcdsaSha384],
            _ => &[],
        }
    }

    pub fn check(self, key_id: &str, spec: KeySpec) -> Result<(), DomainError> {
        let allowed = Self::for_spec(spec);
        if allowed.contains(&self) {
            return Ok(());
        }
        Err(DomainError::SigningAlgorithm {
            id: key_id.to_string(),
            spec,
            algorithm: self,
            allowed: allowed.to_vec(),
        })
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SigningAlgorithm::RsaPssSha256 => "RSASSA_PSS_SHA_256",
            SigningAlgorithm::RsaPssSha384 => "RSASSA_PSS_SHA_384",
            SigningAlgorithm::RsaPssSha512 => "RSASSA_PSS_SHA_512",
            SigningAlgorithm::RsaPkcs1Sha256 => "RSASSA_PKCS1_V1_5_SHA_256",
            SigningAlgorithm::RsaPkcs1Sha384 => "RSASSA_PKCS1_V1_5_SHA_384",
            SigningAlgorithm::RsaPkcs1Sha512 => "RSASSA_PKCS1_V1_5_SHA_512",
            SigningAlgorithm::EcdsaSha256 => "ECDSA_SHA_256",
            SigningAlgorithm::EcdsaSha384 => "ECDSA_SHA_384",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing() {
        assert!(SigningAlgorithm::EcdsaSha256
            .check("k", KeySpec::EcP256)
            .is_ok());
        assert!(SigningAlgorithm::EcdsaSha384
            .check("k", KeySpec::EcP256)
            .is_err());
        assert!(SigningAlgorithm::RsaPssSha512
            .check("k", KeySpec::Rsa2048)
            .is_ok());
        assert!(SigningAlgorithm::EcdsaSha256
            .check("k", KeySpec::Rsa2048)
            .is_err());
        assert!(SigningAlgorithm::RsaPssSha256
            .check("k", KeySpec::Aes256)
            .is_err());
    }
}
