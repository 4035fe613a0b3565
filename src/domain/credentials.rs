//! A keystore's credentials as the API received them, changes to a stored configuration,
//! and the per-type facts the service needs about both (which API field a type's
//! configuration and credentials come in). Pure data and rules: sealing a credential is the
//! service's (the HSM's), checking it against what the target needs is the target's
//! (`crate::targets::credential_bytes`).

use secrecy::SecretString;

use secrecy::ExposeSecret;

use super::{
    parse_service_account_key, AzureEnvironment, AzureKeyVaultConfig, DomainError,
    GoogleCloudKmsConfig, IbmKmsConfig, KeystoreConfig, KeystoreType, TokenRef,
};

/// The secret half of a keystore's credentials, as the API received it.
pub enum Secret {
    Pkcs11Pin(SecretString),
    AwsSecretAccessKey(SecretString),
    /// An XKS proxy's SigV4 credential (the access key id goes into the configuration,
    /// where it is shown back) and the client certificate's key, when there is one.
    Xks {
        access_key_id: String,
        secret_access_key: SecretString,
        client_key_pem: Option<SecretString>,
    },
    /// An IBM Cloud service ID API key (ibm_key_protect and ibm_hpcs keystores).
    IbmApiKey(SecretString),
    /// An Azure service principal's password (azure_key_vault keystores).
    AzureClientSecret(SecretString),
    /// A Google service account's JSON key file (google_cloud_kms keystores).
    GoogleServiceAccountKey(SecretString),
}

impl Secret {
    /// The API field it came in.
    pub fn field(&self) -> &'static str {
        match self {
            Secret::Pkcs11Pin(_) => "pkcs11_credentials.pin",
            Secret::AwsSecretAccessKey(_) => "aws_kms_credentials.secret_access_key",
            Secret::Xks { .. } => "xks_credentials",
            Secret::IbmApiKey(_) => "ibm_kms_credentials.api_key",
            Secret::AzureClientSecret(_) => "azure_key_vault_credentials.client_secret",
            Secret::GoogleServiceAccountKey(_) => {
                "google_cloud_kms_credentials.service_account_key_json"
            }
        }
    }

    /// Whether it is a credential of keystore type `t`.
    pub fn fits(&self, t: KeystoreType) -> bool {
        match self {
            Secret::Pkcs11Pin(_) => t == KeystoreType::Pkcs11,
            Secret::AwsSecretAccessKey(_) => t == KeystoreType::AwsKms,
            Secret::Xks { .. } => t == KeystoreType::Xks,
            Secret::IbmApiKey(_) => {
                matches!(t, KeystoreType::IbmKeyProtect | KeystoreType::IbmHpcs)
            }
            Secret::AzureClientSecret(_) => t == KeystoreType::AzureKeyVault,
            Secret::GoogleServiceAccountKey(_) => t == KeystoreType::GoogleCloudKms,
        }
    }

    /// The public half it carries into the configuration (xks: the access key id).
    fn public_id(&self) -> Option<&str> {
        match self {
            Secret::Xks { access_key_id, .. } => Some(access_key_id),
            _ => None,
        }
    }

    /// Refuses a credential of another type than `t`, naming the field `t` takes.
    pub fn require_type(&self, t: KeystoreType) -> Result<(), DomainError> {
        if self.fits(t) {
            return Ok(());
        }
        Err(DomainError::invalid(
            self.field(),
            format!(
                "does not fit a {t} keystore; send {}",
                t.credential_field().unwrap_or("no credentials")
            ),
        ))
    }
}

impl KeystoreType {
    /// The API field of this type's configuration; `None` for a type that has none.
    pub fn config_field(self) -> Option<&'static str> {
        match self {
            KeystoreType::Internal => None,
            KeystoreType::Pkcs11 => Some("pkcs11"),
            KeystoreType::AwsKms => Some("aws_kms"),
            KeystoreType::Xks => Some("xks"),
            KeystoreType::AzureKeyVault => Some("azure_key_vault"),
            KeystoreType::GoogleCloudKms => Some("google_cloud_kms"),
            KeystoreType::IbmKeyProtect | KeystoreType::IbmHpcs => Some("ibm_kms"),
            KeystoreType::Kmip => Some("kmip"),
        }
    }

    /// The API field this type's credentials come in; `None` for a type that takes none.
    pub fn credential_field(self) -> Option<&'static str> {
        match self {
            KeystoreType::Internal => None,
            KeystoreType::Pkcs11 => Some("pkcs11_credentials.pin"),
            KeystoreType::AwsKms => Some("aws_kms_credentials.secret_access_key"),
            KeystoreType::Xks => Some("xks_credentials"),
            KeystoreType::AzureKeyVault => Some("azure_key_vault_credentials.client_secret"),
            KeystoreType::GoogleCloudKms => {
                Some("google_cloud_kms_credentials.service_account_key_json")
            }
            KeystoreType::IbmKeyProtect | KeystoreType::IbmHpcs => {
                Some("ibm_kms_credentials.api_key")
            }
            KeystoreType::Kmip => Some("kmip_credentials"),
        }
    }

    /// Whether TestKeystoreConnection of an unsaved configuration needs the credentials:
    /// an xks proxy answers nothing unsigned. The others report unusable credentials
    /// (INVALID_CREDENTIALS) like any other connection error.
    pub fn test_needs_credentials(self) -> bool {
        matches!(self, KeystoreType::Xks)
    }
}

impl KeystoreConfig {
    /// The configuration of a new keystore of type `t`: the one given, which must be of
    /// that type, or the type's default where it has one (internal).
    pub fn for_new(t: KeystoreType, given: Option<KeystoreConfig>) -> Result<Self, DomainError> {
        match (given, t.config_field()) {
            (Some(c), _) if c.keystore_type() == t => Ok(c),
            (None, None) => Ok(KeystoreConfig::Internal),
            (_, Some(field)) => Err(DomainError::invalid(
                field,
                format!("is required for a{} {t} keystore", article(t)),
            )),
            (Some(_), None) => Err(DomainError::invalid(
                "config",
                format!("does not match type {t}"),
            )),
        }
    }

    /// The configuration after an UpdateKeystore's `patch` (`None`: no field given) and its
    /// new credentials `secret`, which may carry a public half the configuration shows
    /// (xks: the access key id). The result is checked by `Keystore::update_config`.
    pub fn patched(
        &self,
        patch: Option<ConfigPatch>,
        secret: Option<&Secret>,
    ) -> Result<KeystoreConfig, DomainError> {
        match (self, patch) {
            (KeystoreConfig::Pkcs11 { module_path, token }, Some(ConfigPatch::Pkcs11(p))) => {
                Ok(KeystoreConfig::Pkcs11 {
                    module_path: p.module_path.unwrap_or_else(|| module_path.clone()),
                    token: p.token.unwrap_or_else(|| token.clone()),
                })
            }
            (c @ KeystoreConfig::AwsKms { .. }, Some(ConfigPatch::AwsKms(p))) => {
                merged_aws(c, p, secret.is_some())
            }
            (c @ KeystoreConfig::Xks { .. }, Some(ConfigPatch::Xks(p))) => merged_xks(c, p, secret),
            (KeystoreConfig::IbmKeyProtect(c), Some(ConfigPatch::IbmKms(p))) => {
                Ok(KeystoreConfig::IbmKeyProtect(p.merged(c)))
            }
            (KeystoreConfig::IbmHpcs(c), Some(ConfigPatch::IbmKms(p))) => {
                Ok(KeystoreConfig::IbmHpcs(p.merged(c)))
            }
            (KeystoreConfig::AzureKeyVault(c), Some(ConfigPatch::AzureKeyVault(p))) => {
                Ok(KeystoreConfig::AzureKeyVault(p.merged(c)))
            }
            (KeystoreConfig::GoogleCloudKms(c), Some(ConfigPatch::GoogleCloudKms(p))) => {
                Ok(KeystoreConfig::GoogleCloudKms(p.merged(c, secret)?))
            }
            // A new key file alone brings its project, key id and e-mail.
            (KeystoreConfig::GoogleCloudKms(c), None) if secret.is_some() => Ok(
                KeystoreConfig::GoogleCloudKms(GoogleCloudKmsPatch::default().merged(c, secret)?),
            ),
            // New xks credentials alone still bring their access key id.
            (c @ KeystoreConfig::Xks { .. }, None) if secret.is_some() => {
                merged_xks(c, XksPatch::default(), secret)
            }
            (c, None) => Ok(c.clone()),
            (_, Some(p)) => {
                let (field, what) = p.target();
                Err(DomainError::invalid(
                    field,
                    format!("this keystore is not {what} keystore"),
                ))
            }
        }
    }
}

/// The "n" of "an aws_kms keystore" and "an xks keystore", as the names are spoken.
fn article(t: KeystoreType) -> &'static str {
    match t {
        KeystoreType::Pkcs11 | KeystoreType::GoogleCloudKms | KeystoreType::Kmip => "",
        KeystoreType::Internal
        | KeystoreType::AwsKms
        | KeystoreType::AzureKeyVault
        | KeystoreType::IbmKeyProtect
        | KeystoreType::IbmHpcs
        | KeystoreType::Xks => "n",
    }
}

/// Changes to a stored configuration, one per keystore type; `None` fields keep the stored
/// value.
#[derive(Debug, Clone)]
pub enum ConfigPatch {
    Pkcs11(Pkcs11Patch),
    AwsKms(AwsKmsPatch),
    Xks(XksPatch),
    /// ibm_key_protect and ibm_hpcs keystores.
    IbmKms(IbmKmsPatch),
    AzureKeyVault(AzureKeyVaultPatch),
    GoogleCloudKms(GoogleCloudKmsPatch),
}

impl ConfigPatch {
    /// Its API field, and the keystores it fits in words ("a pkcs11").
    fn target(&self) -> (&'static str, &'static str) {
        match self {
            ConfigPatch::Pkcs11(_) => ("pkcs11", "a pkcs11"),
            ConfigPatch::AwsKms(_) => ("aws_kms", "an aws_kms"),
            ConfigPatch::Xks(_) => ("xks", "an xks"),
            ConfigPatch::IbmKms(_) => ("ibm_kms", "an ibm_key_protect or ibm_hpcs"),
            ConfigPatch::AzureKeyVault(_) => ("azure_key_vault", "an azure_key_vault"),
            ConfigPatch::GoogleCloudKms(_) => ("google_cloud_kms", "a google_cloud_kms"),
        }
    }

    /// Whether it fits a keystore of type `t`.
    pub fn fits(&self, t: KeystoreType) -> bool {
        match self {
            ConfigPatch::Pkcs11(_) => t == KeystoreType::Pkcs11,
            ConfigPatch::AwsKms(_) => t == KeystoreType::AwsKms,
            ConfigPatch::Xks(_) => t == KeystoreType::Xks,
            ConfigPatch::IbmKms(_) => {
                matches!(t, KeystoreType::IbmKeyProtect | KeystoreType::IbmHpcs)
            }
            ConfigPatch::AzureKeyVault(_) => t == KeystoreType::AzureKeyVault,
            ConfigPatch::GoogleCloudKms(_) => t == KeystoreType::GoogleCloudKms,
        }
    }
}

/// Changes to a google_cloud_kms configuration; `None` keeps the stored value. The project,
/// key id and e-mail change only with a new key file.
#[derive(Debug, Clone, Default)]
pub struct GoogleCloudKmsPatch {
    pub location: Option<String>,
    pub key_ring: Option<String>,
    /// `Some(None)` goes back to Google's public endpoint.
    pub endpoint: Option<Option<String>>,
}

impl GoogleCloudKmsPatch {
    fn merged(
        self,
        c: &GoogleCloudKmsConfig,
        secret: Option<&Secret>,
    ) -> Result<GoogleCloudKmsConfig, DomainError> {
        let mut merged = GoogleCloudKmsConfig {
            location: self.location.unwrap_or_else(|| c.location.clone()),
            key_ring: self.key_ring.unwrap_or_else(|| c.key_ring.clone()),
            endpoint: self.endpoint.unwrap_or_else(|| c.endpoint.clone()),
            ..c.clone()
        };
        if let Some(s @ Secret::GoogleServiceAccountKey(json)) = secret {
            let info = parse_service_account_key(s.field(), json.expose_secret())?;
            merged.project_id = info.project_id;
            merged.private_key_id = info.private_key_id;
            merged.client_email = info.client_email;
        }
        Ok(merged)
    }
}

/// Changes to an azure_key_vault configuration; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct AzureKeyVaultPatch {
    pub vault_name: Option<String>,
    pub resource_group: Option<String>,
    pub location: Option<String>,
    pub environment: Option<AzureEnvironment>,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub subscription_id: Option<String>,
    /// `Some(None)` goes back to the environment's vault URL.
    pub vault_url: Option<Option<String>>,
    /// `Some(None)` goes back to the environment's login endpoint.
    pub authority_host: Option<Option<String>>,
    /// `Some(None)` goes back to the system's roots.
    pub ca_cert_pem: Option<Option<String>>,
}

impl AzureKeyVaultPatch {
    fn merged(self, c: &AzureKeyVaultConfig) -> AzureKeyVaultConfig {
        AzureKeyVaultConfig {
            vault_name: self.vault_name.unwrap_or_else(|| c.vault_name.clone()),
            resource_group: self
                .resource_group
                .unwrap_or_else(|| c.resource_group.clone()),
            location: self.location.unwrap_or_else(|| c.location.clone()),
            environment: self.environment.unwrap_or(c.environment),
            tenant_id: self.tenant_id.unwrap_or_else(|| c.tenant_id.clone()),
            client_id: self.client_id.unwrap_or_else(|| c.client_id.clone()),
            subscription_id: self
                .subscription_id
                .unwrap_or_else(|| c.subscription_id.clone()),
            vault_url: self.vault_url.unwrap_or_else(|| c.vault_url.clone()),
            authority_host: self
                .authority_host
                .unwrap_or_else(|| c.authority_host.clone()),
            ca_cert_pem: self.ca_cert_pem.unwrap_or_else(|| c.ca_cert_pem.clone()),
        }
    }
}

/// Changes to an ibm_key_protect or ibm_hpcs configuration; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct IbmKmsPatch {
    pub instance_id: Option<String>,
    pub key_ring_id: Option<String>,
    pub api_endpoint: Option<String>,
    pub iam_endpoint: Option<String>,
    /// `Some(None)` goes back to the system's roots.
    pub ca_cert_pem: Option<Option<String>>,
}

impl IbmKmsPatch {
    fn merged(self, c: &IbmKmsConfig) -> IbmKmsConfig {
        IbmKmsConfig {
            instance_id: self.instance_id.unwrap_or_else(|| c.instance_id.clone()),
            key_ring_id: self.key_ring_id.unwrap_or_else(|| c.key_ring_id.clone()),
            api_endpoint: self.api_endpoint.unwrap_or_else(|| c.api_endpoint.clone()),
            iam_endpoint: self.iam_endpoint.unwrap_or_else(|| c.iam_endpoint.clone()),
            ca_cert_pem: self.ca_cert_pem.unwrap_or_else(|| c.ca_cert_pem.clone()),
        }
    }
}

/// Changes to an xks configuration; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct XksPatch {
    pub uri_endpoint: Option<String>,
    pub uri_path: Option<String>,
    /// `Some(None)` goes back to the system's roots.
    pub ca_cert_pem: Option<Option<String>>,
    /// `Some(None)` stops presenting a client certificate.
    pub client_cert_pem: Option<Option<String>>,
    pub signing_region: Option<String>,
    /// Output only: accepted when equal to the resulting value.
    pub access_key_id: Option<String>,
}

/// Changes to an aws_kms configuration; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct AwsKmsPatch {
    pub region: Option<String>,
    /// `Some(None)` goes back to AWS's public endpoint.
    pub endpoint_url: Option<Option<String>>,
    pub access_key_id: Option<String>,
    /// Output only: accepted when equal to the stored value.
    pub account_id: Option<String>,
}

/// Changes to a pkcs11 configuration; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct Pkcs11Patch {
    pub module_path: Option<String>,
    pub token: Option<TokenRef>,
}

/// Merges an aws_kms patch into the stored configuration; the access key id changes only
/// with new credentials (`with_secret`).
fn merged_aws(
    config: &KeystoreConfig,
    patch: AwsKmsPatch,
    with_secret: bool,
) -> Result<KeystoreConfig, DomainError> {
    let KeystoreConfig::AwsKms {
        region,
        endpoint_url,
        access_key_id,
        account_id,
    } = config
    else {
        return Err(DomainError::invalid(
            "aws_kms",
            "this keystore is not an aws_kms keystore",
        ));
    };
    if patch.account_id.is_some() && patch.account_id != *account_id {
        return Err(DomainError::invalid(
            "aws_kms.account_id",
            "is output only: it is learnt at connect and never changes",
        ));
    }
    let new_key_id = patch.access_key_id.unwrap_or_else(|| access_key_id.clone());
    if new_key_id != *access_key_id && !with_secret {
        return Err(DomainError::invalid(
            "aws_kms.access_key_id",
            "changes only together with aws_kms_credentials.secret_access_key (both halves of the credential pair)",
        ));
    }
    Ok(KeystoreConfig::AwsKms {
        region: patch.region.unwrap_or_else(|| region.clone()),
        endpoint_url: patch.endpoint_url.unwrap_or_else(|| endpoint_url.clone()),
        access_key_id: new_key_id,
        account_id: account_id.clone(),
    })
}

/// Merges an xks patch (and the access key id of new credentials) into the stored
/// configuration.
fn merged_xks(
    config: &KeystoreConfig,
    patch: XksPatch,
    secret: Option<&Secret>,
) -> Result<KeystoreConfig, DomainError> {
    let KeystoreConfig::Xks {
        uri_endpoint,
        uri_path,
        ca_cert_pem,
        client_cert_pem,
        access_key_id,
        signing_region,
    } = config
    else {
        return Err(DomainError::invalid(
            "xks",
            "this keystore is not an xks keystore",
        ));
    };
    let new_key_id = secret
        .and_then(Secret::public_id)
        .unwrap_or(access_key_id)
        .to_string();
    if patch
        .access_key_id
        .as_ref()
        .is_some_and(|a| *a != new_key_id)
    {
        return Err(DomainError::invalid(
            "xks.access_key_id",
            "is output only: it changes with xks_credentials.access_key_id; leave it empty",
        ));
    }
    let new_client_cert = patch
        .client_cert_pem
        .unwrap_or_else(|| client_cert_pem.clone());
    if new_client_cert != *client_cert_pem && secret.is_none() {
        return Err(DomainError::invalid(
            "xks.client_cert_pem",
            "changes only together with xks_credentials (its private key is xks_credentials.client_key_pem)",
        ));
    }
    Ok(KeystoreConfig::Xks {
        uri_endpoint: patch.uri_endpoint.unwrap_or_else(|| uri_endpoint.clone()),
        uri_path: patch.uri_path.unwrap_or_else(|| uri_path.clone()),
        ca_cert_pem: patch.ca_cert_pem.unwrap_or_else(|| ca_cert_pem.clone()),
        client_cert_pem: new_client_cert,
        access_key_id: new_key_id,
        signing_region: patch.signing_region.or_else(|| signing_region.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn opt(s: impl Strategy<Value = String>) -> impl Strategy<Value = Option<String>> {
        prop::option::of(s)
    }

    fn any_config() -> impl Strategy<Value = KeystoreConfig> {
        prop_oneof![
            Just(KeystoreConfig::Internal),
            ("/[a-z]{1,8}", "[a-z]{1,8}").prop_map(|(m, l)| KeystoreConfig::Pkcs11 {
                module_path: m,
                token: TokenRef::Label(l),
            }),
            (
                "[a-z]{2}-[a-z]{4}-[1-3]",
                opt("https://[a-z]{3}".boxed()),
                "AKIA[A-Z0-9]{16}",
                opt("[0-9]{12}".boxed())
            )
                .prop_map(|(r, e, k, a)| KeystoreConfig::AwsKms {
                    region: r,
                    endpoint_url: e,
                    access_key_id: k,
                    account_id: a,
                }),
            (
                "https://[a-z]{3}",
                "[A-Z0-9]{20}",
                opt("pem[a-z]{2}".boxed())
            )
                .prop_map(|(u, k, c)| {
                    KeystoreConfig::Xks {
                        uri_endpoint: u,
                        uri_path: "/kms/xks/v1".into(),
                        ca_cert_pem: None,
                        client_cert_pem: c,
                        access_key_id: k,
                        signing_region: None,
                    }
                }),
            (
                "[a-z]{3,8}",
                opt("https://[a-z]{3}".boxed()),
                prop::sample::select(AzureEnvironment::ALL.to_vec())
            )
                .prop_map(|(v, u, e)| KeystoreConfig::AzureKeyVault(
                    AzureKeyVaultConfig {
                        vault_name: v,
                        resource_group: "rg".into(),
                        location: "westeurope".into(),
                        environment: e,
                        tenant_id: "t".into(),
                        client_id: "c".into(),
                        subscription_id: "s".into(),
                        vault_url: u,
                        authority_host: None,
                        ca_cert_pem: None,
                    }
                )),
        ]
    }

    fn any_patch() -> impl Strategy<Value = ConfigPatch> {
        prop_oneof![
            (opt("/[a-z]{1,8}".boxed()), opt("[a-z]{1,8}".boxed())).prop_map(|(m, l)| {
                ConfigPatch::Pkcs11(Pkcs11Patch {
                    module_path: m,
                    token: l.map(TokenRef::Label),
                })
            }),
            (
                opt("[a-z]{2}-[a-z]{4}-[1-3]".boxed()),
                opt("AKIA[A-Z0-9]{16}".boxed()),
                opt("[0-9]{12}".boxed())
            )
                .prop_map(|(r, k, a)| ConfigPatch::AwsKms(AwsKmsPatch {
                    region: r,
                    endpoint_url: None,
                    access_key_id: k,
                    account_id: a,
                })),
            (
                opt("https://[a-z]{3}".boxed()),
                opt("[A-Z0-9]{20}".boxed()),
                prop::option::of(opt("pem[a-z]{2}".boxed()))
            )
                .prop_map(|(u, k, c)| ConfigPatch::Xks(XksPatch {
                    uri_endpoint: u,
                    access_key_id: k,
                    client_cert_pem: c,
                    ..XksPatch::default()
                })),
            (
                opt("[a-z]{3,8}".boxed()),
                prop::option::of(opt("https://[a-z]{3}".boxed())),
                opt("[a-f0-9]{8}".boxed())
            )
                .prop_map(|(v, u, c)| ConfigPatch::AzureKeyVault(AzureKeyVaultPatch {
                    vault_name: v,
                    vault_url: u,
                    client_id: c,
                    ..AzureKeyVaultPatch::default()
                })),
        ]
    }

    /// The public half of a credential pair, which only new credentials may change.
    fn credential_id(c: &KeystoreConfig) -> Option<&str> {
        match c {
            KeystoreConfig::AwsKms { access_key_id, .. }
            | KeystoreConfig::Xks { access_key_id, .. } => Some(access_key_id),
            _ => None,
        }
    }

    proptest! {
        /// Without new credentials a patch never changes the type, the credential's public
        /// half, the learnt AWS account or the xks client certificate; a patch of another
        /// type is always refused; no patch at all changes nothing.
        #[test]
        fn patches_keep_what_only_credentials_or_connects_change(
            config in any_config(),
            patch in any_patch(),
        ) {
            prop_assert_eq!(&config.patched(None, None).unwrap(), &config);
            let same_type = patch.fits(config.keystore_type());
            match config.patched(Some(patch), None) {
                Err(_) => {}
                Ok(merged) => {
                    prop_assert!(same_type, "a patch of another type was taken");
                    prop_assert_eq!(merged.keystore_type(), config.keystore_type());
                    prop_assert_eq!(credential_id(&merged), credential_id(&config));
                    if let (
                        KeystoreConfig::AwsKms { account_id: a, .. },
                        KeystoreConfig::AwsKms { account_id: b, .. },
                    ) = (&merged, &config)
                    {
                        prop_assert_eq!(a, b);
                    }
                    if let (
                        KeystoreConfig::Xks { client_cert_pem: a, .. },
                        KeystoreConfig::Xks { client_cert_pem: b, .. },
                    ) = (&merged, &config)
                    {
                        prop_assert_eq!(a, b);
                    }
                }
            }
        }
    }

    fn aws() -> KeystoreConfig {
        KeystoreConfig::AwsKms {
            region: "eu-west-1".into(),
            endpoint_url: None,
            access_key_id: "AKIAOLDOLDOLDOLDOLD0".into(),
            account_id: Some("111122223333".into()),
        }
    }

    fn xks() -> KeystoreConfig {
        KeystoreConfig::Xks {
            uri_endpoint: "https://xks.example".into(),
            uri_path: "/kms/xks/v1".into(),
            ca_cert_pem: None,
            client_cert_pem: None,
            access_key_id: "OLDKEYIDOLDKEYIDOLD0".into(),
            signing_region: None,
        }
    }

    fn xks_secret(id: &str) -> Secret {
        Secret::Xks {
            access_key_id: id.into(),
            secret_access_key: SecretString::from("s".repeat(43)),
            client_key_pem: None,
        }
    }

    #[test]
    fn a_new_keystore_takes_the_config_of_its_type_or_the_default_of_internal() {
        assert_eq!(
            KeystoreConfig::for_new(KeystoreType::Internal, None).unwrap(),
            KeystoreConfig::Internal
        );
        assert_eq!(
            KeystoreConfig::for_new(KeystoreType::AwsKms, Some(aws())).unwrap(),
            aws()
        );
        let e = KeystoreConfig::for_new(KeystoreType::AwsKms, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "aws_kms: is required for an aws_kms keystore"
        );
        let e = KeystoreConfig::for_new(KeystoreType::Pkcs11, Some(aws())).unwrap_err();
        assert_eq!(e.to_string(), "pkcs11: is required for a pkcs11 keystore");
        let e = KeystoreConfig::for_new(KeystoreType::Internal, Some(xks())).unwrap_err();
        assert_eq!(e.to_string(), "config: does not match type internal");
    }

    #[test]
    fn an_azure_patch_changes_only_the_fields_it_names() {
        let c = AzureKeyVaultConfig {
            vault_name: "kv-a".into(),
            resource_group: "rg".into(),
            location: "westeurope".into(),
            environment: AzureEnvironment::AzureCloud,
            tenant_id: "t".into(),
            client_id: "c".into(),
            subscription_id: "s".into(),
            vault_url: Some("https://a.example".into()),
            authority_host: Some("https://login.example".into()),
            ca_cert_pem: Some("pem".into()),
        };
        let p = ConfigPatch::AzureKeyVault(AzureKeyVaultPatch {
            client_id: Some("c2".into()),
            vault_url: Some(None),
            ..AzureKeyVaultPatch::default()
        });
        let merged = KeystoreConfig::AzureKeyVault(c.clone())
            .patched(Some(p), None)
            .unwrap();
        assert_eq!(
            merged,
            KeystoreConfig::AzureKeyVault(AzureKeyVaultConfig {
                client_id: "c2".into(),
                vault_url: None,
                ..c
            })
        );
        let e = aws()
            .patched(
                Some(ConfigPatch::AzureKeyVault(AzureKeyVaultPatch::default())),
                None,
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "azure_key_vault: this keystore is not an azure_key_vault keystore"
        );
    }

    #[test]
    fn a_patch_of_another_type_is_refused_by_its_field() {
        let p = ConfigPatch::Pkcs11(Pkcs11Patch::default());
        let e = aws().patched(Some(p), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "pkcs11: this keystore is not a pkcs11 keystore"
        );
        let e = KeystoreConfig::Internal
            .patched(Some(ConfigPatch::AwsKms(AwsKmsPatch::default())), None)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "aws_kms: this keystore is not an aws_kms keystore"
        );
    }

    #[test]
    fn an_aws_access_key_id_changes_only_with_its_secret() {
        let p = || {
            Some(ConfigPatch::AwsKms(AwsKmsPatch {
                access_key_id: Some("AKIANEWNEWNEWNEWNEW0".into()),
                ..AwsKmsPatch::default()
            }))
        };
        let e = aws().patched(p(), None).unwrap_err();
        assert!(e.to_string().starts_with("aws_kms.access_key_id:"), "{e}");
        let secret = Secret::AwsSecretAccessKey(SecretString::from("x".repeat(40)));
        let KeystoreConfig::AwsKms { access_key_id, .. } =
            aws().patched(p(), Some(&secret)).unwrap()
        else {
            panic!("not aws");
        };
        assert_eq!(access_key_id, "AKIANEWNEWNEWNEWNEW0");
    }

    #[test]
    fn new_xks_credentials_alone_bring_their_access_key_id() {
        let s = xks_secret("NEWKEYIDNEWKEYIDNEW0");
        let KeystoreConfig::Xks { access_key_id, .. } = xks().patched(None, Some(&s)).unwrap()
        else {
            panic!("not xks");
        };
        assert_eq!(access_key_id, "NEWKEYIDNEWKEYIDNEW0");
        // Without credentials nothing changes, and the id is output only.
        assert_eq!(xks().patched(None, None).unwrap(), xks());
        let p = ConfigPatch::Xks(XksPatch {
            access_key_id: Some("OTHER".into()),
            ..XksPatch::default()
        });
        assert!(xks().patched(Some(p), None).is_err());
        let p = ConfigPatch::Xks(XksPatch {
            client_cert_pem: Some(Some("pem".into())),
            ..XksPatch::default()
        });
        let e = xks().patched(Some(p), None).unwrap_err();
        assert!(e.to_string().starts_with("xks.client_cert_pem:"), "{e}");
    }

    #[test]
    fn a_credential_of_another_type_names_the_field_the_type_takes() {
        let s = Secret::Pkcs11Pin(SecretString::from("1234"));
        assert!(s.require_type(KeystoreType::Pkcs11).is_ok());
        let e = s.require_type(KeystoreType::AwsKms).unwrap_err();
        let ibm = Secret::IbmApiKey(SecretString::from("k"));
        assert!(ibm.require_type(KeystoreType::IbmHpcs).is_ok());
        assert!(ibm.require_type(KeystoreType::IbmKeyProtect).is_ok());
        assert!(ibm.require_type(KeystoreType::Xks).is_err());
        let azure = Secret::AzureClientSecret(SecretString::from("s"));
        assert!(azure.require_type(KeystoreType::AzureKeyVault).is_ok());
        let e2 = azure.require_type(KeystoreType::IbmHpcs).unwrap_err();
        assert_eq!(
            e2.to_string(),
            "azure_key_vault_credentials.client_secret: does not fit a ibm_hpcs keystore; send ibm_kms_credentials.api_key"
        );
        assert_eq!(
            e.to_string(),
            "pkcs11_credentials.pin: does not fit a aws_kms keystore; send aws_kms_credentials.secret_access_key"
        );
    }
}
