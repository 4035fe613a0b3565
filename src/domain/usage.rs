//! Which cryptographic operation a key may serve, in which state, with which keystores
//! connected (DESIGN §2–§3), and payload size rules.

use std::collections::HashMap;
use std::fmt;

use super::key::Family;
use super::{ConnectionState, DomainError, InstanceState, Key, KeyState};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CryptoOp {
    Encrypt,
    Decrypt,
    GenerateDataKey,
    Sign,
    Verify,
    GenerateMac,
    VerifyMac,
    GetPublicKey,
}

impl CryptoOp {
    pub const ALL: [CryptoOp; 8] = [
        CryptoOp::Encrypt,
        CryptoOp::Decrypt,
        CryptoOp::GenerateDataKey,
        CryptoOp::Sign,
        CryptoOp::Verify,
        CryptoOp::GenerateMac,
        CryptoOp::VerifyMac,
        CryptoOp::GetPublicKey,
    ];

    /// Operations that create protected data: only an ACTIVE key may do them.
    pub fn protects(self) -> bool {
        matches!(
            self,
            CryptoOp::Encrypt | CryptoOp::GenerateDataKey | CryptoOp::Sign | CryptoOp::GenerateMac
        )
    }

    fn fits(self, family: Family) -> bool {
        match self {
            CryptoOp::Encrypt | CryptoOp::Decrypt | CryptoOp::GenerateDataKey => {
                family == Family::Aes
            }
            CryptoOp::Sign | CryptoOp::Verify | CryptoOp::GetPublicKey => {
                matches!(family, Family::Rsa | Family::Ec)
            }
            CryptoOp::GenerateMac | CryptoOp::VerifyMac => family == Family::HmacSha256,
        }
    }

    /// States in which the key may serve this operation.
    pub fn allowed_states(self) -> &'static [KeyState] {
        if self.protects() {
            &[KeyState::Active]
        } else {
            // Processing already-protected data stays possible after deactivation and
            // after compromise (NIST SP 800-57 §5.3.6); destroyed keys do nothing.
            &[
                KeyState::Active,
                KeyState::Deactivated,
                KeyState::Compromised,
            ]
        }
    }
}

impl fmt::Display for CryptoOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CryptoOp::Encrypt => "Encrypt",
            CryptoOp::Decrypt => "Decrypt",
            CryptoOp::GenerateDataKey => "GenerateDataKey",
            CryptoOp::Sign => "Sign",
            CryptoOp::Verify => "Verify",
            CryptoOp::GenerateMac => "GenerateMac",
            CryptoOp::VerifyMac => "VerifyMac",
            CryptoOp::GetPublicKey => "GetPublicKey",
        })
    }
}

/// Checks that `key` may serve `op` now. `states` gives the connection state of each
/// of the key's target keystores. Order of checks: usage, lifecycle state, keystores.
///
/// An ACTIVE key needs an INSTALLED instance in a CONNECTED keystore; a DEACTIVATED or
/// COMPROMISED key (installed nowhere) needs one of its target keystores CONNECTED.
/// Disconnecting every keystore of a key therefore cuts every use of it.
pub fn check_use(
    key: &Key,
    op: CryptoOp,
    states: &HashMap<String, ConnectionState>,
) -> Result<(), DomainError> {
    if !op.fits(key.spec.family()) {
        return Err(DomainError::KeyUsage {
            id: key.id.clone(),
            spec: key.spec,
            op,
        });
    }
    if !op.allowed_states().contains(&key.state) {
        return Err(DomainError::KeyUnavailableState {
            id: key.id.clone(),
            state: key.state,
            op,
        });
    }
    let connected = |ks: &str| states.get(ks) == Some(&ConnectionState::Connected);
    let usable = if key.state == KeyState::Active {
        key.instances
            .iter()
            .any(|i| i.state == InstanceState::Installed && connected(&i.keystore_id))
    } else {
        key.targets.iter().any(|t| connected(t))
    };
    if usable {
        return Ok(());
    }
    let detail: Vec<String> = key
        .targets
        .iter()
        .map(|t| match states.get(t) {
            Some(s) => format!("{t} is {s}"),
            None => format!("{t} is gone"),
        })
        .collect();
    let reason = if key.targets.is_empty() {
        "it has no target keystore".to_string()
    } else {
        format!(
            "no target keystore is CONNECTED with the key installed ({})",
            detail.join(", ")
        )
    };
    Err(DomainError::KeyUnavailable {
        id: key.id.clone(),
        reason,
    })
}

/// What a payload is, for its size rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// Encrypt plaintext: 1 byte to 64 KiB.
    Plaintext,
    /// Decrypt input: IV + tag + 1..64 KiB.
    Ciphertext,
    /// Additional authenticated data: at most 8 KiB.
    Aad,
    /// Sign/Verify/MAC message: 1 byte to 64 KiB.
    Message,
    /// Signature or MAC to verify: 1 byte to 1 KiB.
    Signature,
}

pub const MAX_PAYLOAD: usize = 64 * 1024;
pub const MAX_AAD: usize = 8 * 1024;
const GCM_OVERHEAD: usize = 12 + 16;

pub fn check_payload(field: &str, kind: PayloadKind, bytes: &[u8]) -> Result<(), DomainError> {
    let (min, max) = match kind {
        PayloadKind::Plaintext | PayloadKind::Message => (1, MAX_PAYLOAD),
        PayloadKind::Ciphertext => (GCM_OVERHEAD + 1, GCM_OVERHEAD + MAX_PAYLOAD),
        PayloadKind::Aad => (0, MAX_AAD),
        PayloadKind::Signature => (1, 1024),
    };
    if bytes.len() < min {
        return Err(DomainError::invalid(
            field,
            if min == 1 {
                "must not be empty".to_string()
            } else {
                format!("must be at least {min} bytes (got {})", bytes.len())
            },
        ));
    }
    if bytes.len() > max {
        return Err(DomainError::invalid(
            field,
            format!("must be at most {max} bytes (got {})", bytes.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::{KeySpec, Material, NewKey};
    use proptest::prelude::*;

    fn key(spec: KeySpec, state: KeyState, installed: bool) -> Key {
        let mut k = Key::new(
            NewKey {
                id: "key_1".into(),
                vault_id: "v".into(),
                name: "k".into(),
                description: String::new(),
                spec,
                targets: vec!["ks_1".into()],
                tags: BTreeMap::new(),
            },
            Material {
                wrapped: vec![0; 40],
                spki_der: None,
            },
            String::new(),
            0,
        )
        .unwrap();
        k.state = state;
        if installed {
            k.set_instance("ks_1", InstanceState::Installed, String::new(), 0);
        }
        k
    }

    fn states(s: ConnectionState) -> HashMap<String, ConnectionState> {
        HashMap::from([("ks_1".to_string(), s)])
    }

    #[test]
    fn the_three_rules_of_issue_3() {
        let connected = states(ConnectionState::Connected);
        let active = key(KeySpec::Aes256, KeyState::Active, true);
        assert!(check_use(&active, CryptoOp::Encrypt, &connected).is_ok());
        // Disconnected keystore → unavailable.
        let err = check_use(
            &active,
            CryptoOp::Encrypt,
            &states(ConnectionState::Disconnected),
        );
        assert!(matches!(err, Err(DomainError::KeyUnavailable { .. })));
        // Deactivated: decrypts, does not encrypt.
        let deact = key(KeySpec::Aes256, KeyState::Deactivated, false);
        assert!(check_use(&deact, CryptoOp::Decrypt, &connected).is_ok());
        assert!(check_use(&deact, CryptoOp::Encrypt, &connected).is_err());
        let rsa = key(KeySpec::Rsa2048, KeyState::Deactivated, false);
        assert!(check_use(&rsa, CryptoOp::Verify, &connected).is_ok());
        assert!(check_use(&rsa, CryptoOp::Sign, &connected).is_err());
        // Destroyed: nothing.
        for op in CryptoOp::ALL {
            for spec in KeySpec::ALL {
                assert!(check_use(&key(spec, KeyState::Destroyed, false), op, &connected).is_err());
            }
        }
    }

    #[test]
    fn usage_mismatch_is_reported_first() {
        let rsa = key(KeySpec::Rsa2048, KeyState::Destroyed, false);
        let err = check_use(&rsa, CryptoOp::Encrypt, &HashMap::new()).unwrap_err();
        assert!(matches!(err, DomainError::KeyUsage { .. }));
    }

    #[test]
    fn payload_sizes() {
        assert!(check_payload("plaintext", PayloadKind::Plaintext, b"").is_err());
        assert!(check_payload("plaintext", PayloadKind::Plaintext, &[0; MAX_PAYLOAD]).is_ok());
        assert!(check_payload("plaintext", PayloadKind::Plaintext, &[0; MAX_PAYLOAD + 1]).is_err());
        assert!(check_payload("aad", PayloadKind::Aad, b"").is_ok());
        assert!(check_payload("ciphertext", PayloadKind::Ciphertext, &[0; 28]).is_err());
    }

    fn any_state() -> impl Strategy<Value = KeyState> {
        proptest::sample::select(KeyState::ALL.to_vec())
    }
    fn any_conn() -> impl Strategy<Value = ConnectionState> {
        proptest::sample::select(ConnectionState::ALL.to_vec())
    }
    fn any_op() -> impl Strategy<Value = CryptoOp> {
        proptest::sample::select(CryptoOp::ALL.to_vec())
    }
    fn any_spec() -> impl Strategy<Value = KeySpec> {
        proptest::sample::select(KeySpec::ALL.to_vec())
    }

    proptest! {
        /// A key is usable exactly when its usage fits, its state allows the operation
        /// and a keystore is CONNECTED; in particular never when destroyed or pre-active,
        /// never with every keystore disconnected, and protecting operations only when ACTIVE.
        #[test]
        fn use_is_allowed_only_when_every_rule_holds(
            spec in any_spec(), state in any_state(), conn in any_conn(),
            installed in any::<bool>(), op in any_op()
        ) {
            let k = key(spec, state, installed);
            let r = check_use(&k, op, &states(conn));
            if r.is_ok() {
                prop_assert!(!state.is_destroyed());
                prop_assert!(state != KeyState::PreActive);
                prop_assert_eq!(conn, ConnectionState::Connected);
                if op.protects() { prop_assert_eq!(state, KeyState::Active); }
                if state == KeyState::Active { prop_assert!(installed); }
            }
            let expected_ok = op.fits(spec.family())
                && op.allowed_states().contains(&state)
                && conn == ConnectionState::Connected
                && (state != KeyState::Active || installed);
            prop_assert_eq!(r.is_ok(), expected_ok);
        }
    }
}
