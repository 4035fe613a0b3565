//! Who is calling and what they may do: principals, per-vault roles, and the rule that
//! maps an action to the role it needs (issue 6). Pure: the policy comes from config.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Principal {
    /// A local process on the Unix socket (SO_PEERCRED).
    Unix { uid: u32, gid: u32 },
    /// A TLS client, by its certificate's subject (or first SAN when the subject is empty).
    Certificate { subject: String },
    /// A caller of the AWS KMS-compatible endpoint, by the access key id whose SigV4
    /// signature it proved (`[[aws.access_key]]`).
    AwsAccessKey { access_key_id: String },
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Unix { uid, gid } => write!(f, "uid:{uid}/gid:{gid}"),
            Principal::Certificate { subject } => write!(f, "cert:{subject}"),
            Principal::AwsAccessKey { access_key_id } => write!(f, "aws:{access_key_id}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Vaults, keystores, keys: create, update, delete, lifecycle.
    Admin,
    /// Activate, install, uninstall, connect, disconnect.
    Operator,
    /// Cryptographic operations.
    User,
    /// Read the audit trail.
    Auditor,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::User => "user",
            Role::Auditor => "auditor",
        })
    }
}

/// Who a role grant applies to, as written in config.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    Uid(u32),
    Gid(u32),
    Certificate(String),
    /// An AWS access key id of the KMS-compatible endpoint.
    AwsAccessKey(String),
}

impl Subject {
    fn matches(&self, p: &Principal) -> bool {
        match (self, p) {
            (Subject::Uid(u), Principal::Unix { uid, .. }) => u == uid,
            (Subject::Gid(g), Principal::Unix { gid, .. }) => g == gid,
            (Subject::Certificate(s), Principal::Certificate { subject }) => s == subject,
            (Subject::AwsAccessKey(k), Principal::AwsAccessKey { access_key_id }) => {
                k == access_key_id
            }
            _ => false,
        }
    }
}

/// The vault scope of a grant: one vault (by id) or all of them ("*").
pub const ANY_VAULT: &str = "*";

/// Role grants: (subject, vault or "*") → roles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    grants: BTreeMap<(Subject, String), BTreeSet<Role>>,
}

impl Policy {
    pub fn grant(&mut self, subject: Subject, vault: &str, role: Role) {
        self.grants
            .entry((subject, vault.to_string()))
            .or_default()
            .insert(role);
    }

    /// Roles `p` holds in `vault` (None: a call not scoped to one vault, e.g. ListVaults).
    pub fn roles(&self, p: &Principal, vault: Option<&str>) -> BTreeSet<Role> {
        self.grants
            .iter()
            .filter(|((s, v), _)| s.matches(p) && (v == ANY_VAULT || Some(v.as_str()) == vault))
            .flat_map(|(_, roles)| roles.iter().copied())
            .collect()
    }

    /// Whether `p` holds `role` in `vault` (admins hold every role but auditor's reading
    /// of the audit trail is granted to admins as well).
    pub fn allows(&self, p: &Principal, vault: Option<&str>, role: Role) -> bool {
        let held = self.roles(p, vault);
        held.contains(&role) || held.contains(&Role::Admin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_are_per_vault_and_admin_implies_all() {
        let mut pol = Policy::default();
        pol.grant(Subject::Uid(1000), "vault-a", Role::User);
        pol.grant(Subject::Gid(50), ANY_VAULT, Role::Auditor);
        pol.grant(
            Subject::Certificate("CN=ops".into()),
            "vault-b",
            Role::Admin,
        );
        let alice = Principal::Unix {
            uid: 1000,
            gid: 1000,
        };
        let aud = Principal::Unix { uid: 7, gid: 50 };
        let ops = Principal::Certificate {
            subject: "CN=ops".into(),
        };
        assert!(pol.allows(&alice, Some("vault-a"), Role::User));
        assert!(!pol.allows(&alice, Some("vault-b"), Role::User));
        assert!(!pol.allows(&alice, Some("vault-a"), Role::Admin));
        assert!(pol.allows(&aud, Some("vault-z"), Role::Auditor));
        assert!(pol.allows(&ops, Some("vault-b"), Role::Operator));
        assert!(!pol.allows(&ops, Some("vault-a"), Role::Operator));
    }

    #[test]
    fn aws_access_keys_are_their_own_subjects() {
        let mut pol = Policy::default();
        pol.grant(
            Subject::AwsAccessKey("AKIAKEYORCH1".into()),
            "vault-a",
            Role::Admin,
        );
        let key = Principal::AwsAccessKey {
            access_key_id: "AKIAKEYORCH1".into(),
        };
        let other = Principal::AwsAccessKey {
            access_key_id: "AKIAKEYORCH2".into(),
        };
        assert_eq!(key.to_string(), "aws:AKIAKEYORCH1");
        assert!(pol.allows(&key, Some("vault-a"), Role::User));
        assert!(!pol.allows(&key, Some("vault-b"), Role::User));
        assert!(!pol.allows(&other, Some("vault-a"), Role::User));
        // A certificate subject that spells the key id is not that key.
        let cert = Principal::Certificate {
            subject: "AKIAKEYORCH1".into(),
        };
        assert!(!pol.allows(&cert, Some("vault-a"), Role::User));
    }
}

/// Every API operation, for authorization and the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    CreateVault,
    GetVault,
    ListVaults,
    UpdateVault,
    DeleteVault,
    CreateKeystore,
    GetKeystore,
    DescribeKeystores,
    UpdateKeystore,
    DeleteKeystore,
    ConnectKeystore,
    DisconnectKeystore,
    TestKeystoreConnection,
    CreateKey,
    GetKey,
    ListKeys,
    UpdateKey,
    ActivateKey,
    DeactivateKey,
    DestroyKey,
    DeleteKey,
    MarkCompromised,
    InstallKey,
    UninstallKey,
    GetKeyStatusInKeystores,
    SyncKey,
    Encrypt,
    Decrypt,
    GenerateDataKey,
    Sign,
    Verify,
    GenerateMac,
    VerifyMac,
    GetPublicKey,
    ListEvents,
    VerifyChain,
}

/// What an action needs from the caller in the resource's vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// This role (admins hold every role).
    Role(Role),
    /// Any role at all in the vault: reading metadata.
    AnyRole,
}

impl Action {
    /// The role table of issue 6: admin manages vaults, keystores and keys; operator
    /// activates, installs, uninstalls, connects and disconnects; user runs crypto;
    /// auditor reads the audit trail; reading metadata needs any role in the vault.
    pub fn requirement(self) -> Requirement {
        use Action::*;
        match self {
            CreateVault | UpdateVault | DeleteVault | CreateKeystore | UpdateKeystore
            | DeleteKeystore | CreateKey | UpdateKey | DestroyKey | DeleteKey | MarkCompromised => {
                Requirement::Role(Role::Admin)
            }
            ConnectKeystore
            | DisconnectKeystore
            | TestKeystoreConnection
            | ActivateKey
            | DeactivateKey
            | InstallKey
            | UninstallKey
            | SyncKey => Requirement::Role(Role::Operator),
            Encrypt | Decrypt | GenerateDataKey | Sign | Verify | GenerateMac | VerifyMac
            | GetPublicKey => Requirement::Role(Role::User),
            ListEvents | VerifyChain => Requirement::Role(Role::Auditor),
            GetVault
            | ListVaults
            | GetKeystore
            | DescribeKeystores
            | GetKey
            | ListKeys
            | GetKeyStatusInKeystores => Requirement::AnyRole,
        }
    }

    /// Whether the action changes state (and so is always audited).
    pub fn mutates(self) -> bool {
        use Action::*;
        matches!(
            self,
            CreateVault
                | UpdateVault
                | DeleteVault
                | CreateKeystore
                | UpdateKeystore
                | DeleteKeystore
                | ConnectKeystore
                | DisconnectKeystore
                | CreateKey
                | UpdateKey
                | ActivateKey
                | DeactivateKey
                | DestroyKey
                | DeleteKey
                | MarkCompromised
                | InstallKey
                | UninstallKey
                | SyncKey
        )
    }

    pub fn name(self) -> String {
        format!("{self:?}")
    }
}

impl Policy {
    /// Whether `p` may perform `action` in `vault` (None: not scoped to one vault, which
    /// needs a grant on "*").
    pub fn permits(&self, p: &Principal, vault: Option<&str>, action: Action) -> bool {
        match action.requirement() {
            Requirement::Role(r) => self.allows(p, vault, r),
            Requirement::AnyRole => !self.roles(p, vault).is_empty(),
        }
    }
}
