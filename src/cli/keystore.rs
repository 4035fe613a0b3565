//! `keyorch keystore ...`: the KeystoreService RPCs (create, describe, update, connect,
//! disconnect, test), and how a Keystore prints as a record, a table row and JSON.

use clap::{Subcommand, ValueEnum};
use serde_json::{json, Value};

use super::output::{
    self, full_name, short_name, timestamp, timestamp_json, OutputFormat, Record, Table,
};
use super::paging::{self, PageArgs};
use super::{CliError, Context, Outcome};
use crate::proto::v1::{
    create_keystore_request, keystore, test_keystore_connection_request, AwsKmsCredentials,
    AwsKmsKeystoreConfig, AzureKeyVaultCredentials, AzureKeyVaultKeystoreConfig,
    ConnectKeystoreRequest, ConnectionErrorCode, ConnectionState, CreateKeystoreRequest,
    DeleteKeystoreRequest, DescribeKeystoresRequest, DisconnectKeystoreRequest, GetKeystoreRequest,
    HealthStatus, IbmKmsCredentials, IbmKmsKeystoreConfig, InternalKeystoreConfig, Keystore,
    KeystoreType, Pkcs11Credentials, Pkcs11KeystoreConfig, TestKeystoreConnectionRequest,
    TestKeystoreConnectionResponse, UpdateKeystoreRequest, XksCredentials, XksKeystoreConfig,
};

/// `--type`: the keystore kinds of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeystoreTypeArg {
    /// keyorchd's own HSM token.
    Internal,
    /// Another HSM reached through a PKCS#11 module.
    Pkcs11,
    AwsKms,
    AzureKeyVault,
    GoogleCloudKms,
    IbmKeyProtect,
    Kmip,
    Xks,
    /// IBM Cloud Hyper Protect Crypto Services' KMS API.
    IbmHpcs,
}

impl From<KeystoreTypeArg> for KeystoreType {
    fn from(t: KeystoreTypeArg) -> Self {
        match t {
            KeystoreTypeArg::Internal => KeystoreType::Internal,
            KeystoreTypeArg::Pkcs11 => KeystoreType::Pkcs11,
            KeystoreTypeArg::AwsKms => KeystoreType::AwsKms,
            KeystoreTypeArg::AzureKeyVault => KeystoreType::AzureKeyVault,
            KeystoreTypeArg::GoogleCloudKms => KeystoreType::GoogleCloudKms,
            KeystoreTypeArg::IbmKeyProtect => KeystoreType::IbmKeyProtect,
            KeystoreTypeArg::Kmip => KeystoreType::Kmip,
            KeystoreTypeArg::Xks => KeystoreType::Xks,
            KeystoreTypeArg::IbmHpcs => KeystoreType::IbmHpcs,
        }
    }
}

/// `--state`: a keystore's connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConnectionStateArg {
    Connected,
    Connecting,
    Disconnecting,
    Disconnected,
    Failed,
}

impl From<ConnectionStateArg> for ConnectionState {
    fn from(s: ConnectionStateArg) -> Self {
        match s {
            ConnectionStateArg::Connected => ConnectionState::Connected,
            ConnectionStateArg::Connecting => ConnectionState::Connecting,
            ConnectionStateArg::Disconnecting => ConnectionState::Disconnecting,
            ConnectionStateArg::Disconnected => ConnectionState::Disconnected,
            ConnectionStateArg::Failed => ConnectionState::Failed,
        }
    }
}

/// Settings of a pkcs11 keystore (another HSM through its PKCS#11 module).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct Pkcs11Args {
    /// pkcs11: absolute path of the PKCS#11 module.
    #[arg(long, value_name = "PATH")]
    pub module: Option<String>,
    /// pkcs11: the token's label (or give --token-serial).
    #[arg(long, value_name = "LABEL")]
    pub token_label: Option<String>,
    /// pkcs11: the token's serial number.
    #[arg(long, value_name = "SERIAL")]
    pub token_serial: Option<String>,
    /// pkcs11: file holding the token's user PIN ("-" reads standard input). Never on the command line.
    #[arg(long, value_name = "FILE")]
    pub pin_file: Option<std::path::PathBuf>,
}

/// A secret from a file ("-": standard input), without its line end.
pub(super) fn read_secret(path: &std::path::Path, what: &str) -> Result<String, CliError> {
    let text = if path.as_os_str() == "-" {
        let mut t = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut t).map_err(|source| {
            CliError::Io {
                what: format!("reading the {what} from standard input"),
                source,
            }
        })?;
        t
    } else {
        std::fs::read_to_string(path).map_err(|source| CliError::Io {
            what: format!("reading {}", path.display()),
            source,
        })?
    };
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

/// Settings of an aws_kms keystore (an AWS KMS account and region).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct AwsKmsArgs {
    /// aws_kms: the AWS region, e.g. eu-central-1 (locked after the first connect).
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// aws_kms: another endpoint than AWS's public one (VPC endpoint, emulator; http:// only to loopback).
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// aws_kms, xks: the access key id (changes only together with --secret-access-key-file).
    #[arg(long, value_name = "ID")]
    pub access_key_id: Option<String>,
    /// aws_kms, xks: file holding the secret access key ("-" reads standard input). Never on the command line.
    #[arg(long, value_name = "FILE")]
    pub secret_access_key_file: Option<std::path::PathBuf>,
}

/// Settings of an xks keystore (an AWS KMS external key store proxy); its SigV4
/// credential is --access-key-id with --secret-access-key-file.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct XksArgs {
    /// xks: the proxy's https://host[:port] (http:// only to loopback; locked after the first connect).
    #[arg(long, value_name = "URL")]
    pub uri_endpoint: Option<String>,
    /// xks: the proxy's path, [/prefix]/kms/xks/v1 (locked after the first connect).
    #[arg(long, value_name = "PATH")]
    pub uri_path: Option<String>,
    /// xks, ibm_key_protect, ibm_hpcs, azure_key_vault: PEM file of the CA(s) to trust for the proxy's or endpoints' certificates [default: the system's roots].
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// xks: PEM file of the client certificate (chain) for mutual TLS; needs --client-key-file.
    #[arg(long, value_name = "FILE", requires = "client_key_file")]
    pub client_cert: Option<std::path::PathBuf>,
    /// xks: PEM file of the client certificate's private key ("-" reads standard input); sent as a credential.
    #[arg(long, value_name = "FILE")]
    pub client_key_file: Option<std::path::PathBuf>,
    /// xks: the AWS region requests are signed for, as the proxy expects it (AWS KMS signs with its own region) [default: us-east-1].
    #[arg(long, value_name = "REGION")]
    pub signing_region: Option<String>,
}

/// Settings of an ibm_key_protect or ibm_hpcs keystore (an IBM Cloud KMS instance and key
/// ring; the CA, for private endpoints, is --ca-cert).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct IbmKmsArgs {
    /// ibm_key_protect, ibm_hpcs: the service instance ID (locked after the first connect).
    #[arg(long, value_name = "GUID")]
    pub instance_id: Option<String>,
    /// ibm_key_protect, ibm_hpcs: the key ring ID (locked after the first connect) [default: default].
    #[arg(long, value_name = "ID")]
    pub key_ring_id: Option<String>,
    /// ibm_key_protect, ibm_hpcs: the KMS API endpoint, https://<region>.kms.cloud.ibm.com or https://api.<region>.hs-crypto.cloud.ibm.com:<port>.
    #[arg(long, value_name = "URL")]
    pub api_endpoint: Option<String>,
    /// ibm_key_protect, ibm_hpcs: the IAM endpoint [default: https://iam.cloud.ibm.com].
    #[arg(long, value_name = "URL")]
    pub iam_endpoint: Option<String>,
    /// ibm_key_protect, ibm_hpcs: file holding the service ID API key ("-" reads standard input). Never on the command line.
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<std::path::PathBuf>,
}

impl IbmKmsArgs {
    /// Whether a configuration flag (not the API key) is given.
    fn given(&self) -> bool {
        self.instance_id.is_some()
            || self.key_ring_id.is_some()
            || self.api_endpoint.is_some()
            || self.iam_endpoint.is_some()
    }

    fn config(&self, ca_cert: Option<&std::path::Path>) -> Result<IbmKmsKeystoreConfig, CliError> {
        Ok(IbmKmsKeystoreConfig {
            instance_id: self.instance_id.clone().unwrap_or_default(),
            key_ring_id: self.key_ring_id.clone().unwrap_or_default(),
            api_endpoint: self.api_endpoint.clone().unwrap_or_default(),
            iam_endpoint: self.iam_endpoint.clone().unwrap_or_default(),
            ca_cert_pem: ca_cert.map(read_pem).transpose()?.unwrap_or_default(),
        })
    }

    fn credentials(&self) -> Result<Option<IbmKmsCredentials>, CliError> {
        self.api_key_file
            .as_deref()
            .map(|path| {
                Ok(IbmKmsCredentials {
                    api_key: read_secret(path, "API key")?,
                })
            })
            .transpose()
    }
}

/// Settings of an azure_key_vault keystore (an Azure key vault and the Microsoft Entra ID
/// service principal keyorch signs in as; the CA, for private endpoints, is --ca-cert).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct AzureKeyVaultArgs {
    /// azure_key_vault: the key vault's name, 3 to 24 of a-z A-Z 0-9 - (locked after the first connect).
    #[arg(long, value_name = "NAME")]
    pub vault_name: Option<String>,
    /// azure_key_vault: the vault's resource group (locked after the first connect).
    #[arg(long, value_name = "NAME")]
    pub resource_group: Option<String>,
    /// azure_key_vault: the vault's Azure region, e.g. westeurope (locked after the first connect).
    #[arg(long, value_name = "REGION")]
    pub location: Option<String>,
    /// azure_key_vault: the Azure cloud of the vault and the service principal (locked after the first connect) [default: AzureCloud].
    #[arg(long, value_name = "CLOUD", value_parser = ["AzureCloud", "AzureChinaCloud", "AzureUSGovernment"])]
    pub environment: Option<String>,
    /// azure_key_vault: the vault's subscription, a GUID (locked after the first connect).
    #[arg(long, value_name = "GUID")]
    pub subscription_id: Option<String>,
    /// azure_key_vault: the service principal's Microsoft Entra ID tenant, a GUID.
    #[arg(long, value_name = "GUID")]
    pub tenant_id: Option<String>,
    /// azure_key_vault: the service principal's application (client) ID, a GUID.
    #[arg(long, value_name = "GUID")]
    pub client_id: Option<String>,
    /// azure_key_vault: the vault's https://host[:port], for a private endpoint (http:// only to loopback) [default: https://<vault name>.vault.azure.net, or the environment's domain].
    #[arg(long, value_name = "URL")]
    pub vault_url: Option<String>,
    /// azure_key_vault: the Entra ID login endpoint, https://host[:port] (http:// only to loopback) [default: the environment's, e.g. https://login.microsoftonline.com].
    #[arg(long, value_name = "URL")]
    pub authority_host: Option<String>,
    /// azure_key_vault: file holding the service principal's client secret ("-" reads standard input). Never on the command line.
    #[arg(long, value_name = "FILE")]
    pub client_secret_file: Option<std::path::PathBuf>,
}

impl AzureKeyVaultArgs {
    /// Whether a configuration flag (not the client secret) is given.
    fn given(&self) -> bool {
        self.vault_name.is_some()
            || self.resource_group.is_some()
            || self.location.is_some()
            || self.environment.is_some()
            || self.subscription_id.is_some()
            || self.tenant_id.is_some()
            || self.client_id.is_some()
            || self.vault_url.is_some()
            || self.authority_host.is_some()
    }

    fn config(
        &self,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<AzureKeyVaultKeystoreConfig, CliError> {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        Ok(AzureKeyVaultKeystoreConfig {
            vault_name: text(&self.vault_name),
            resource_group: text(&self.resource_group),
            location: text(&self.location),
            environment: text(&self.environment),
            tenant_id: text(&self.tenant_id),
            client_id: text(&self.client_id),
            subscription_id: text(&self.subscription_id),
            vault_url: text(&self.vault_url),
            authority_host: text(&self.authority_host),
            ca_cert_pem: ca_cert.map(read_pem).transpose()?.unwrap_or_default(),
        })
    }

    fn credentials(&self) -> Result<Option<AzureKeyVaultCredentials>, CliError> {
        self.client_secret_file
            .as_deref()
            .map(|path| {
                Ok(AzureKeyVaultCredentials {
                    client_secret: read_secret(path, "client secret")?,
                })
            })
            .transpose()
    }
}

/// The type-specific flags of a `keystore create` or `keystore update` (the clear flags:
/// update only), to check each against the keystore's type and build the request from.
struct TypeFlags<'a> {
    pkcs11: &'a Pkcs11Args,
    aws_kms: &'a AwsKmsArgs,
    xks: &'a XksArgs,
    ibm_kms: &'a IbmKmsArgs,
    azure_key_vault: &'a AzureKeyVaultArgs,
    clear_endpoint_url: bool,
    clear_ca_cert: bool,
    clear_client_cert: bool,
    clear_endpoints: bool,
}

impl TypeFlags<'_> {
    /// Every type-specific flag: its name, whether it is given, whether it is update's only,
    /// and the keystore types it is for.
    fn all(&self) -> Vec<(&'static str, bool, bool, &'static [KeystoreType])> {
        use KeystoreType::{AwsKms, AzureKeyVault, IbmHpcs, IbmKeyProtect, Pkcs11, Xks};
        const PKCS11: &[KeystoreType] = &[Pkcs11];
        const AWS_KMS: &[KeystoreType] = &[AwsKms];
        const AWS_CREDENTIAL: &[KeystoreType] = &[AwsKms, Xks];
        const XKS: &[KeystoreType] = &[Xks];
        const CA: &[KeystoreType] = &[Xks, IbmKeyProtect, IbmHpcs, AzureKeyVault];
        const IBM: &[KeystoreType] = &[IbmKeyProtect, IbmHpcs];
        const AZURE: &[KeystoreType] = &[AzureKeyVault];
        let (p, a, x, i, z) = (
            self.pkcs11,
            self.aws_kms,
            self.xks,
            self.ibm_kms,
            self.azure_key_vault,
        );
        vec![
            ("--module", p.module.is_some(), false, PKCS11),
            ("--token-label", p.token_label.is_some(), false, PKCS11),
            ("--token-serial", p.token_serial.is_some(), false, PKCS11),
            ("--pin-file", p.pin_file.is_some(), false, PKCS11),
            ("--region", a.region.is_some(), false, AWS_KMS),
            ("--endpoint-url", a.endpoint_url.is_some(), false, AWS_KMS),
            (
                "--clear-endpoint-url",
                self.clear_endpoint_url,
                true,
                AWS_KMS,
            ),
            (
                "--access-key-id",
                a.access_key_id.is_some(),
                false,
                AWS_CREDENTIAL,
            ),
            (
                "--secret-access-key-file",
                a.secret_access_key_file.is_some(),
                false,
                AWS_CREDENTIAL,
            ),
            ("--uri-endpoint", x.uri_endpoint.is_some(), false, XKS),
            ("--uri-path", x.uri_path.is_some(), false, XKS),
            ("--client-cert", x.client_cert.is_some(), false, XKS),
            ("--client-key-file", x.client_key_file.is_some(), false, XKS),
            ("--signing-region", x.signing_region.is_some(), false, XKS),
            ("--clear-client-cert", self.clear_client_cert, true, XKS),
            ("--instance-id", i.instance_id.is_some(), false, IBM),
            ("--key-ring-id", i.key_ring_id.is_some(), false, IBM),
            ("--api-endpoint", i.api_endpoint.is_some(), false, IBM),
            ("--iam-endpoint", i.iam_endpoint.is_some(), false, IBM),
            ("--api-key-file", i.api_key_file.is_some(), false, IBM),
            ("--vault-name", z.vault_name.is_some(), false, AZURE),
            ("--resource-group", z.resource_group.is_some(), false, AZURE),
            ("--location", z.location.is_some(), false, AZURE),
            ("--environment", z.environment.is_some(), false, AZURE),
            (
                "--subscription-id",
                z.subscription_id.is_some(),
                false,
                AZURE,
            ),
            ("--tenant-id", z.tenant_id.is_some(), false, AZURE),
            ("--client-id", z.client_id.is_some(), false, AZURE),
            ("--vault-url", z.vault_url.is_some(), false, AZURE),
            ("--authority-host", z.authority_host.is_some(), false, AZURE),
            (
                "--client-secret-file",
                z.client_secret_file.is_some(),
                false,
                AZURE,
            ),
            ("--clear-endpoints", self.clear_endpoints, true, AZURE),
            // Shared: listed last, after each type's own.
            ("--ca-cert", x.ca_cert.is_some(), false, CA),
            ("--clear-ca-cert", self.clear_ca_cert, true, CA),
        ]
    }

    /// Whether any type-specific flag is given.
    fn any(&self) -> bool {
        self.all().iter().any(|(_, given, _, _)| *given)
    }

    /// Refuses the first given flag that is not for a keystore of type `t`, naming the flags
    /// that are (`update`: with the clear flags).
    fn check(&self, t: KeystoreType, update: bool) -> Result<(), CliError> {
        let all = self.all();
        let Some((flag, _, _, types)) = all
            .iter()
            .find(|(_, given, _, types)| *given && !types.contains(&t))
        else {
            return Ok(());
        };
        let name = type_name(t);
        let own: Vec<&str> = all
            .iter()
            .filter(|(_, _, update_only, types)| types.contains(&t) && (update || !update_only))
            .map(|(flag, ..)| *flag)
            .collect();
        let takes = if own.is_empty() {
            "no settings of its own".to_string()
        } else {
            own.join(", ")
        };
        let others: Vec<String> = types.iter().map(|t| type_name(*t)).collect();
        Err(CliError::Usage(format!(
            "{flag} is for {} keystores, not {name}; {} {name} keystore takes {takes}",
            others.join(", "),
            article(&name)
        )))
    }
}

impl KeystoreCommand {
    /// The type-specific flags of a create or an update (None for the other commands).
    fn type_flags(&self) -> Option<TypeFlags<'_>> {
        match self {
            KeystoreCommand::Create {
                pkcs11,
                aws_kms,
                xks,
                ibm_kms,
                azure_key_vault,
                ..
            } => Some(TypeFlags {
                pkcs11,
                aws_kms,
                xks,
                ibm_kms,
                azure_key_vault,
                clear_endpoint_url: false,
                clear_ca_cert: false,
                clear_client_cert: false,
                clear_endpoints: false,
            }),
            KeystoreCommand::Update {
                pkcs11,
                aws_kms,
                clear_endpoint_url,
                xks,
                clear_ca_cert,
                clear_client_cert,
                ibm_kms,
                azure_key_vault,
                clear_endpoints,
                ..
            } => Some(TypeFlags {
                pkcs11,
                aws_kms,
                xks,
                ibm_kms,
                azure_key_vault,
                clear_endpoint_url: *clear_endpoint_url,
                clear_ca_cert: *clear_ca_cert,
                clear_client_cert: *clear_client_cert,
                clear_endpoints: *clear_endpoints,
            }),
            _ => None,
        }
    }
}

/// A keystore type as the API's lowercase name (`ibm_hpcs`).
fn type_name(t: KeystoreType) -> String {
    short_name::<KeystoreType>(t as i32).to_lowercase()
}

fn article(name: &str) -> &'static str {
    if name.starts_with(['a', 'e', 'i', 'o', 'u', 'x']) {
        "an"
    } else {
        "a"
    }
}

/// A PEM file (certificates: not secret).
pub(super) fn read_pem(path: &std::path::Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::Io {
        what: format!("reading {}", path.display()),
        source,
    })
}

impl XksArgs {
    fn given(&self) -> bool {
        self.uri_endpoint.is_some()
            || self.uri_path.is_some()
            || self.ca_cert.is_some()
            || self.client_cert.is_some()
            || self.signing_region.is_some()
    }

    fn config(&self) -> Result<XksKeystoreConfig, CliError> {
        Ok(XksKeystoreConfig {
            uri_endpoint: self.uri_endpoint.clone().unwrap_or_default(),
            uri_path: self.uri_path.clone().unwrap_or_default(),
            signing_region: self.signing_region.clone().unwrap_or_default(),
            ca_cert_pem: self
                .ca_cert
                .as_deref()
                .map(read_pem)
                .transpose()?
                .unwrap_or_default(),
            client_cert_pem: self
                .client_cert
                .as_deref()
                .map(read_pem)
                .transpose()?
                .unwrap_or_default(),
            access_key_id: String::new(),
        })
    }

    /// The credentials: --access-key-id, --secret-access-key-file and --client-key-file
    /// (None when none of them is given).
    fn credentials(&self, aws: &AwsKmsArgs) -> Result<Option<XksCredentials>, CliError> {
        if aws.access_key_id.is_none()
            && aws.secret_access_key_file.is_none()
            && self.client_key_file.is_none()
        {
            return Ok(None);
        }
        Ok(Some(XksCredentials {
            access_key_id: aws.access_key_id.clone().unwrap_or_default(),
            secret_access_key: aws
                .secret_access_key_file
                .as_deref()
                .map(|p| read_secret(p, "secret access key"))
                .transpose()?
                .unwrap_or_default(),
            client_key_pem: self
                .client_key_file
                .as_deref()
                .map(|p| read_secret(p, "client key"))
                .transpose()?
                .unwrap_or_default(),
        }))
    }
}

impl AwsKmsArgs {
    fn given(&self) -> bool {
        self.region.is_some() || self.endpoint_url.is_some() || self.access_key_id.is_some()
    }

    fn config(&self) -> AwsKmsKeystoreConfig {
        AwsKmsKeystoreConfig {
            region: self.region.clone().unwrap_or_default(),
            endpoint_url: self.endpoint_url.clone().unwrap_or_default(),
            access_key_id: self.access_key_id.clone().unwrap_or_default(),
            account_id: String::new(),
        }
    }

    fn credentials(&self) -> Result<Option<AwsKmsCredentials>, CliError> {
        self.secret_access_key_file
            .as_deref()
            .map(|path| {
                Ok(AwsKmsCredentials {
                    secret_access_key: read_secret(path, "secret access key")?,
                })
            })
            .transpose()
    }
}

impl Pkcs11Args {
    fn pin(&self) -> Result<Option<Pkcs11Credentials>, CliError> {
        self.pin_file
            .as_deref()
            .map(|path| {
                Ok(Pkcs11Credentials {
                    pin: read_secret(path, "PIN")?,
                })
            })
            .transpose()
    }

    fn config(&self, stored: Option<&Pkcs11KeystoreConfig>) -> Option<Pkcs11KeystoreConfig> {
        if self.module.is_none() && self.token_label.is_none() && self.token_serial.is_none() {
            return None;
        }
        let base = stored.cloned().unwrap_or_default();
        let token_given = self.token_label.is_some() || self.token_serial.is_some();
        Some(Pkcs11KeystoreConfig {
            module_path: self.module.clone().unwrap_or(base.module_path),
            token_label: if token_given {
                self.token_label.clone().unwrap_or_default()
            } else {
                base.token_label
            },
            token_serial: if token_given {
                self.token_serial.clone().unwrap_or_default()
            } else {
                base.token_serial
            },
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum KeystoreCommand {
    /// Create a keystore in a vault (DISCONNECTED unless --connect).
    Create {
        /// Vault id.
        #[arg(long)]
        vault: String,
        /// Keystore name, unique in the vault.
        #[arg(long)]
        name: String,
        /// Free text, at most 200 characters.
        #[arg(long)]
        description: Option<String>,
        /// Keystore type (only internal needs no configuration).
        #[arg(long = "type", value_enum, default_value_t = KeystoreTypeArg::Internal)]
        kind: KeystoreTypeArg,
        /// Connect right after creating.
        #[arg(long)]
        connect: bool,
        #[command(flatten)]
        pkcs11: Pkcs11Args,
        #[command(flatten)]
        aws_kms: AwsKmsArgs,
        #[command(flatten)]
        xks: XksArgs,
        #[command(flatten)]
        ibm_kms: Box<IbmKmsArgs>,
        #[command(flatten)]
        azure_key_vault: Box<AzureKeyVaultArgs>,
    },
    /// Show one keystore.
    Get {
        /// Keystore id.
        id: String,
    },
    /// List keystores, optionally filtered.
    List {
        /// Only keystores of this vault.
        #[arg(long)]
        vault: Option<String>,
        /// Only keystores with this name.
        #[arg(long)]
        name: Option<String>,
        /// Only keystores of this type.
        #[arg(long = "type", value_enum)]
        kind: Option<KeystoreTypeArg>,
        /// Only keystores in this connection state.
        #[arg(long, value_enum)]
        state: Option<ConnectionStateArg>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Rename a keystore, change its description, credentials (any state), module path,
    /// endpoints, CA or client certificate, or an azure_key_vault tenant or client ID (only
    /// while DISCONNECTED), or where its keys live: an aws_kms region, xks URI endpoint and
    /// path, ibm_key_protect or ibm_hpcs instance and key ring, azure_key_vault vault name,
    /// resource group, location, environment and subscription (only until the first
    /// connect). A pkcs11 token never changes. Flags of another type than the keystore's
    /// are refused.
    Update {
        /// Keystore id.
        id: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// New description.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        pkcs11: Pkcs11Args,
        #[command(flatten)]
        aws_kms: AwsKmsArgs,
        /// aws_kms: go back to AWS's public endpoint for the region.
        #[arg(long, conflicts_with = "endpoint_url")]
        clear_endpoint_url: bool,
        #[command(flatten)]
        xks: XksArgs,
        /// xks, ibm_key_protect, ibm_hpcs, azure_key_vault: trust the system's roots again instead of the keystore's CA.
        #[arg(long, conflicts_with = "ca_cert")]
        clear_ca_cert: bool,
        /// xks: stop presenting a client certificate (give the credentials again with it).
        #[arg(long, conflicts_with_all = ["client_cert", "client_key_file"])]
        clear_client_cert: bool,
        #[command(flatten)]
        ibm_kms: Box<IbmKmsArgs>,
        #[command(flatten)]
        azure_key_vault: Box<AzureKeyVaultArgs>,
        /// azure_key_vault: go back to the environment's vault URL and login endpoint.
        #[arg(long, conflicts_with_all = ["vault_url", "authority_host"])]
        clear_endpoints: bool,
    },
    /// Delete a DISCONNECTED keystore that holds no keys.
    Delete {
        /// Keystore id.
        id: String,
    },
    /// Connect a keystore (CONNECTED, or FAILED with an error code).
    Connect {
        /// Keystore id.
        id: String,
    },
    /// Disconnect a keystore; its keys become unusable until it is connected again.
    Disconnect {
        /// Keystore id.
        id: String,
        /// First uninstall every installed key (permanent: they leave their target lists).
        #[arg(long)]
        uninstall_keys: bool,
        /// Disconnect even if ACTIVE keys would be left with no connected target.
        #[arg(long)]
        force: bool,
    },
    /// Test a keystore's connection without changing it (exit 1 when the test fails).
    Test {
        /// Keystore id.
        id: String,
    },
}

pub async fn run(cmd: KeystoreCommand, ctx: &Context) -> Result<Outcome, CliError> {
    let mut client = ctx.clients().await?.keystores;
    let keystore = match cmd {
        cmd @ KeystoreCommand::Create { .. } => {
            let request = create_request(&cmd)?;
            client.create_keystore(request).await?.into_inner()
        }
        KeystoreCommand::Get { id } => client
            .get_keystore(GetKeystoreRequest { id })
            .await?
            .into_inner(),
        cmd @ KeystoreCommand::Update { .. } => {
            // The stored keystore's type says which settings the flags are (--ca-cert,
            // --access-key-id and --secret-access-key-file serve several types).
            let stored = match &cmd {
                KeystoreCommand::Update { id, .. } if cmd.type_flags().is_some_and(|f| f.any()) => {
                    Some(
                        client
                            .get_keystore(GetKeystoreRequest { id: id.clone() })
                            .await?
                            .into_inner(),
                    )
                }
                _ => None,
            };
            let request = update_request(&cmd, stored.as_ref())?;
            client.update_keystore(request).await?.into_inner()
        }
        KeystoreCommand::Connect { id } => client
            .connect_keystore(ConnectKeystoreRequest { id })
            .await?
            .into_inner(),
        KeystoreCommand::Disconnect {
            id,
            uninstall_keys,
            force,
        } => client
            .disconnect_keystore(DisconnectKeystoreRequest {
                id,
                uninstall_keys,
                force,
            })
            .await?
            .into_inner(),
        KeystoreCommand::Delete { id } => {
            client
                .delete_keystore(DeleteKeystoreRequest { id: id.clone() })
                .await?;
            output::print(&output::deleted(ctx.output, &id))?;
            return Ok(Outcome::Success);
        }
        KeystoreCommand::Test { id } => {
            let result = client
                .test_keystore_connection(TestKeystoreConnectionRequest {
                    subject: Some(test_keystore_connection_request::Subject::Id(id)),
                })
                .await?
                .into_inner();
            output::print(&render_test(ctx.output, &result))?;
            return Ok(if result.ok {
                Outcome::Success
            } else {
                Outcome::Negative
            });
        }
        KeystoreCommand::List {
            vault,
            name,
            kind,
            state,
            page,
        } => {
            let filter = DescribeKeystoresRequest {
                vault_id: vault.unwrap_or_default(),
                name: name.unwrap_or_default(),
                r#type: kind.map_or(0, |k| KeystoreType::from(k) as i32),
                connection_state: state.map_or(0, |s| ConnectionState::from(s) as i32),
                page: None,
            };
            let (keystores, next) = paging::fetch(&page, |page| {
                let mut client = client.clone();
                let request = DescribeKeystoresRequest {
                    page: Some(page),
                    ..filter.clone()
                };
                async move {
                    let r = client.describe_keystores(request).await?.into_inner();
                    Ok((r.keystores, r.next_page_token))
                }
            })
            .await?;
            output::print(&render_list(ctx.output, &keystores, &next))?;
            return Ok(Outcome::Success);
        }
    };
    output::print(&render(ctx.output, &keystore))?;
    Ok(Outcome::Success)
}

/// `keystore create`'s request: the configuration and credentials of `--type` from its
/// flags (files read here); a flag of another type is refused.
fn create_request(cmd: &KeystoreCommand) -> Result<CreateKeystoreRequest, CliError> {
    use create_keystore_request::{Config, Credentials};
    let (
        KeystoreCommand::Create {
            vault,
            name,
            description,
            kind,
            connect,
            ..
        },
        Some(flags),
    ) = (cmd, cmd.type_flags())
    else {
        return Err(CliError::Local("not a keystore create command".into()));
    };
    let (kind, flags) = (*kind, &flags);
    let t = KeystoreType::from(kind);
    flags.check(t, false)?;
    let ca_cert = flags.xks.ca_cert.as_deref();
    let (config, credentials) = match kind {
        KeystoreTypeArg::Internal => (Some(Config::Internal(InternalKeystoreConfig {})), None),
        KeystoreTypeArg::Pkcs11 => (
            flags.pkcs11.config(None).map(Config::Pkcs11),
            flags.pkcs11.pin()?.map(Credentials::Pkcs11Credentials),
        ),
        KeystoreTypeArg::AwsKms => (
            Some(Config::AwsKms(flags.aws_kms.config())),
            flags
                .aws_kms
                .credentials()?
                .map(Credentials::AwsKmsCredentials),
        ),
        KeystoreTypeArg::Xks => (
            Some(Config::Xks(flags.xks.config()?)),
            flags
                .xks
                .credentials(flags.aws_kms)?
                .map(Credentials::XksCredentials),
        ),
        KeystoreTypeArg::IbmKeyProtect | KeystoreTypeArg::IbmHpcs => (
            Some(Config::IbmKms(flags.ibm_kms.config(ca_cert)?)),
            flags
                .ibm_kms
                .credentials()?
                .map(Credentials::IbmKmsCredentials),
        ),
        KeystoreTypeArg::AzureKeyVault => (
            Some(Config::AzureKeyVault(
                flags.azure_key_vault.config(ca_cert)?,
            )),
            flags
                .azure_key_vault
                .credentials()?
                .map(Credentials::AzureKeyVaultCredentials),
        ),
        KeystoreTypeArg::GoogleCloudKms | KeystoreTypeArg::Kmip => (None, None),
    };
    Ok(CreateKeystoreRequest {
        vault_id: vault.clone(),
        name: name.clone(),
        description: description.clone().unwrap_or_default(),
        r#type: t as i32,
        connect: *connect,
        config,
        credentials,
    })
}

/// `keystore update`'s request. `stored` is the keystore as it is, fetched when a
/// type-specific flag is given: its type says which settings the flags are (a flag of
/// another type is refused), and its configuration fills what a pkcs11 token or an xks
/// access key id keeps.
fn update_request(
    cmd: &KeystoreCommand,
    stored: Option<&Keystore>,
) -> Result<UpdateKeystoreRequest, CliError> {
    let (
        KeystoreCommand::Update {
            id,
            name,
            description,
            ..
        },
        Some(flags),
    ) = (cmd, cmd.type_flags())
    else {
        return Err(CliError::Local("not a keystore update command".into()));
    };
    let flags = &flags;
    let mut request = UpdateKeystoreRequest {
        id: id.clone(),
        name: name.clone(),
        description: description.clone(),
        ..UpdateKeystoreRequest::default()
    };
    let Some(stored) = stored else {
        if flags.any() {
            return Err(CliError::Local(
                "the keystore's type is needed to update its settings".into(),
            ));
        }
        return Ok(request);
    };
    let t = KeystoreType::try_from(stored.r#type).unwrap_or(KeystoreType::Unspecified);
    flags.check(t, true)?;
    let ca_cert = flags.xks.ca_cert.as_deref();
    match t {
        KeystoreType::Pkcs11 => {
            let base = match &stored.config {
                Some(keystore::Config::Pkcs11(c)) => Some(c),
                _ => None,
            };
            request.pkcs11 = flags.pkcs11.config(base);
            request.pkcs11_credentials = flags.pkcs11.pin()?;
        }
        KeystoreType::AwsKms => {
            let aws = flags.aws_kms;
            request.aws_kms = aws.given().then(|| aws.config());
            request.aws_kms_credentials = aws.credentials()?;
            request.aws_kms_clear_endpoint_url = flags.clear_endpoint_url;
        }
        KeystoreType::Xks => {
            // A new secret alone keeps the stored access key id.
            let mut aws = flags.aws_kms.clone();
            if let (None, Some(_), Some(keystore::Config::Xks(c))) = (
                &aws.access_key_id,
                &aws.secret_access_key_file,
                &stored.config,
            ) {
                aws.access_key_id = Some(c.access_key_id.clone());
            }
            request.xks = flags.xks.given().then(|| flags.xks.config()).transpose()?;
            request.xks_credentials = flags.xks.credentials(&aws)?;
            request.xks_clear_ca_cert = flags.clear_ca_cert;
            request.xks_clear_client_cert = flags.clear_client_cert;
        }
        KeystoreType::IbmKeyProtect | KeystoreType::IbmHpcs => {
            let ibm = flags.ibm_kms;
            request.ibm_kms = (ibm.given() || ca_cert.is_some())
                .then(|| ibm.config(ca_cert))
                .transpose()?;
            request.ibm_kms_credentials = ibm.credentials()?;
            request.ibm_kms_clear_ca_cert = flags.clear_ca_cert;
        }
        KeystoreType::AzureKeyVault => {
            let azure = flags.azure_key_vault;
            request.azure_key_vault = (azure.given() || ca_cert.is_some())
                .then(|| azure.config(ca_cert))
                .transpose()?;
            request.azure_key_vault_credentials = azure.credentials()?;
            request.azure_key_vault_clear_ca_cert = flags.clear_ca_cert;
            request.azure_key_vault_clear_endpoints = flags.clear_endpoints;
        }
        // No type-specific settings (`check` refused every flag).
        KeystoreType::Unspecified
        | KeystoreType::Internal
        | KeystoreType::GoogleCloudKms
        | KeystoreType::Kmip => {}
    }
    Ok(request)
}

pub fn record(k: &Keystore) -> Record {
    let mut r = Record::new()
        .field("id", &k.id)
        .field("vault_id", &k.vault_id)
        .field("name", &k.name)
        .field("description", &k.description)
        .field("type", short_name::<KeystoreType>(k.r#type))
        .field(
            "connection_state",
            short_name::<ConnectionState>(k.connection_state),
        );
    if k.connection_error_code != 0 {
        r = r.field(
            "connection_error_code",
            short_name::<ConnectionErrorCode>(k.connection_error_code),
        );
    }
    if !k.connection_error_message.is_empty() {
        r = r.field("connection_error_message", &k.connection_error_message);
    }
    if let Some(keystore::Config::Pkcs11(c)) = &k.config {
        r = r
            .field("pkcs11.module_path", &c.module_path)
            .optional(
                "pkcs11.token_label",
                Some(c.token_label.clone()).filter(|v| !v.is_empty()),
            )
            .optional(
                "pkcs11.token_serial",
                Some(c.token_serial.clone()).filter(|v| !v.is_empty()),
            )
            .field("has_credentials", k.has_credentials.to_string());
    }
    if let Some(keystore::Config::AwsKms(c)) = &k.config {
        r = r
            .field("aws_kms.region", &c.region)
            .optional(
                "aws_kms.endpoint_url",
                Some(c.endpoint_url.clone()).filter(|v| !v.is_empty()),
            )
            .field("aws_kms.access_key_id", &c.access_key_id)
            .optional(
                "aws_kms.account_id",
                Some(c.account_id.clone()).filter(|v| !v.is_empty()),
            )
            .field("has_credentials", k.has_credentials.to_string());
    }
    if let Some(keystore::Config::IbmKms(c)) = &k.config {
        r = r
            .field("ibm_kms.instance_id", &c.instance_id)
            .field("ibm_kms.key_ring_id", &c.key_ring_id)
            .field("ibm_kms.api_endpoint", &c.api_endpoint)
            .field("ibm_kms.iam_endpoint", &c.iam_endpoint)
            .optional(
                "ibm_kms.ca_cert_pem",
                (!c.ca_cert_pem.is_empty()).then(|| {
                    let n = c.ca_cert_pem.matches("-----BEGIN CERTIFICATE-----").count();
                    format!("{n} certificate(s)")
                }),
            )
            .field("has_credentials", k.has_credentials.to_string());
    }
    if let Some(keystore::Config::AzureKeyVault(c)) = &k.config {
        let set = |v: &str| Some(v.to_string()).filter(|v| !v.is_empty());
        r = r
            .field("azure_key_vault.vault_name", &c.vault_name)
            .field("azure_key_vault.resource_group", &c.resource_group)
            .field("azure_key_vault.location", &c.location)
            .field(
                "azure_key_vault.environment",
                if c.environment.is_empty() {
                    "AzureCloud (default)"
                } else {
                    &c.environment
                },
            )
            .field("azure_key_vault.subscription_id", &c.subscription_id)
            .field("azure_key_vault.tenant_id", &c.tenant_id)
            .field("azure_key_vault.client_id", &c.client_id)
            .optional("azure_key_vault.vault_url", set(&c.vault_url))
            .optional("azure_key_vault.authority_host", set(&c.authority_host))
            .optional(
                "azure_key_vault.ca_cert_pem",
                (!c.ca_cert_pem.is_empty()).then(|| {
                    let n = c.ca_cert_pem.matches("-----BEGIN CERTIFICATE-----").count();
                    format!("{n} certificate(s)")
                }),
            )
            .field("has_credentials", k.has_credentials.to_string());
    }
    if let Some(keystore::Config::Xks(c)) = &k.config {
        let pem = |p: &str| {
            (!p.is_empty()).then(|| {
                let n = p.matches("-----BEGIN CERTIFICATE-----").count();
                format!("{n} certificate(s)")
            })
        };
        r = r
            .field("xks.uri_endpoint", &c.uri_endpoint)
            .field("xks.uri_path", &c.uri_path)
            .optional("xks.ca_cert_pem", pem(&c.ca_cert_pem))
            .optional("xks.client_cert_pem", pem(&c.client_cert_pem))
            .field("xks.access_key_id", &c.access_key_id)
            .field(
                "xks.signing_region",
                if c.signing_region.is_empty() {
                    "us-east-1 (default)"
                } else {
                    &c.signing_region
                },
            )
            .field("has_credentials", k.has_credentials.to_string());
    }
    if let Some(h) = &k.health {
        r = r
            .field("health.status", short_name::<HealthStatus>(h.status))
            .optional(
                "health.message",
                Some(h.message.clone()).filter(|m| !m.is_empty()),
            )
            .optional("health.last_heartbeat", timestamp(&h.last_heartbeat));
    }
    r.optional("created_at", timestamp(&k.created_at))
        .optional("updated_at", timestamp(&k.updated_at))
}

pub fn to_json(k: &Keystore) -> Value {
    let health = k.health.as_ref().map_or(Value::Null, |h| {
        json!({
            "status": full_name::<HealthStatus>(h.status),
            "message": h.message,
            "last_heartbeat": timestamp_json(&h.last_heartbeat),
        })
    });
    let config = match &k.config {
        Some(keystore::Config::Internal(_)) => json!({ "internal": {} }),
        Some(keystore::Config::Pkcs11(c)) => json!({ "pkcs11": {
            "module_path": c.module_path,
            "token_label": c.token_label,
            "token_serial": c.token_serial,
        } }),
        Some(keystore::Config::AwsKms(c)) => json!({ "aws_kms": {
            "region": c.region,
            "endpoint_url": c.endpoint_url,
            "access_key_id": c.access_key_id,
            "account_id": c.account_id,
        } }),
        Some(keystore::Config::Xks(c)) => json!({ "xks": {
            "uri_endpoint": c.uri_endpoint,
            "uri_path": c.uri_path,
            "ca_cert_pem": c.ca_cert_pem,
            "client_cert_pem": c.client_cert_pem,
            "access_key_id": c.access_key_id,
            "signing_region": c.signing_region,
        } }),
        Some(keystore::Config::IbmKms(c)) => json!({ "ibm_kms": {
            "instance_id": c.instance_id,
            "key_ring_id": c.key_ring_id,
            "api_endpoint": c.api_endpoint,
            "iam_endpoint": c.iam_endpoint,
            "ca_cert_pem": c.ca_cert_pem,
        } }),
        Some(keystore::Config::GoogleCloudKms(c)) => json!({ "google_cloud_kms": {
            "project_id": c.project_id,
            "location": c.location,
            "key_ring": c.key_ring,
            "endpoint": c.endpoint,
            "private_key_id": c.private_key_id,
            "client_email": c.client_email,
        } }),
        Some(keystore::Config::AzureKeyVault(c)) => json!({ "azure_key_vault": {
            "vault_name": c.vault_name,
            "resource_group": c.resource_group,
            "location": c.location,
            "environment": c.environment,
            "tenant_id": c.tenant_id,
            "client_id": c.client_id,
            "subscription_id": c.subscription_id,
            "vault_url": c.vault_url,
            "authority_host": c.authority_host,
            "ca_cert_pem": c.ca_cert_pem,
        } }),
        None => Value::Null,
    };
    json!({
        "id": k.id,
        "vault_id": k.vault_id,
        "name": k.name,
        "description": k.description,
        "type": full_name::<KeystoreType>(k.r#type),
        "connection_state": full_name::<ConnectionState>(k.connection_state),
        "connection_error_code": full_name::<ConnectionErrorCode>(k.connection_error_code),
        "connection_error_message": k.connection_error_message,
        "created_at": timestamp_json(&k.created_at),
        "updated_at": timestamp_json(&k.updated_at),
        "health": health,
        "has_credentials": k.has_credentials,
        "config": config,
    })
}

pub fn table(keystores: &[Keystore]) -> Table {
    let mut t = Table::new(vec!["ID", "NAME", "TYPE", "STATE", "HEALTH", "VAULT_ID"]);
    for k in keystores {
        t.push(vec![
            k.id.clone(),
            k.name.clone(),
            short_name::<KeystoreType>(k.r#type),
            short_name::<ConnectionState>(k.connection_state),
            k.health
                .as_ref()
                .map_or_else(|| "-".to_string(), |h| short_name::<HealthStatus>(h.status)),
            k.vault_id.clone(),
        ]);
    }
    t
}

pub fn render(format: OutputFormat, k: &Keystore) -> String {
    match format {
        OutputFormat::Table => record(k).render(),
        OutputFormat::Json => output::render_json(&to_json(k)),
    }
}

pub fn render_list(format: OutputFormat, keystores: &[Keystore], next: &str) -> String {
    match format {
        OutputFormat::Table => output::list_text(table(keystores), next),
        OutputFormat::Json => output::render_json(&json!({
            "keystores": keystores.iter().map(to_json).collect::<Vec<_>>(),
            "next_page_token": next,
        })),
    }
}

pub fn render_test(format: OutputFormat, r: &TestKeystoreConnectionResponse) -> String {
    match format {
        OutputFormat::Table => {
            let mut rec = Record::new().field("ok", r.ok.to_string());
            if r.error_code != 0 {
                rec = rec.field(
                    "error_code",
                    short_name::<ConnectionErrorCode>(r.error_code),
                );
            }
            rec.optional("message", Some(r.message.clone()).filter(|m| !m.is_empty()))
                .optional(
                    "denied_permissions",
                    Some(r.denied_permissions.join(",")).filter(|m| !m.is_empty()),
                )
                .render()
        }
        OutputFormat::Json => output::render_json(&json!({
            "ok": r.ok,
            "error_code": full_name::<ConnectionErrorCode>(r.error_code),
            "message": r.message,
            "denied_permissions": r.denied_permissions,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use crate::proto::v1::KeystoreHealth;
    use clap::Parser;

    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    fn sample() -> Keystore {
        Keystore {
            id: "ks-1".into(),
            vault_id: "v-1".into(),
            name: "hsm".into(),
            description: String::new(),
            r#type: KeystoreType::Internal as i32,
            connection_state: ConnectionState::Failed as i32,
            connection_error_code: ConnectionErrorCode::TimedOut as i32,
            connection_error_message: "no answer in 5 s".into(),
            created_at: ts(1_700_000_000),
            updated_at: ts(1_700_000_060),
            health: Some(KeystoreHealth {
                status: HealthStatus::NotResponding as i32,
                message: String::new(),
                last_heartbeat: ts(1_700_000_030),
            }),
            has_credentials: false,
            config: Some(keystore::Config::Internal(InternalKeystoreConfig {})),
        }
    }

    fn parse(args: &[&str]) -> Result<KeystoreCommand, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("keyorch").chain(args.iter().copied()))?;
        match cli.command {
            crate::cli::Command::Keystore(cmd) => Ok(cmd),
            other => panic!("not a keystore command: {other:?}"),
        }
    }

    #[test]
    fn parses_create_with_defaults() {
        assert_eq!(
            parse(&["keystore", "create", "--vault", "v", "--name", "n"]).expect("ok"),
            KeystoreCommand::Create {
                vault: "v".into(),
                name: "n".into(),
                description: None,
                kind: KeystoreTypeArg::Internal,
                connect: false,
                pkcs11: Pkcs11Args::default(),
                aws_kms: AwsKmsArgs::default(),
                xks: XksArgs::default(),
                ibm_kms: Box::default(),
                azure_key_vault: Box::default(),
            }
        );
        assert_eq!(
            parse(&[
                "keystore",
                "create",
                "--vault",
                "v",
                "--name",
                "n",
                "--type",
                "pkcs11",
                "--module",
                "/m.so",
                "--token-label",
                "t",
                "--pin-file",
                "/p"
            ])
            .expect("ok"),
            KeystoreCommand::Create {
                vault: "v".into(),
                name: "n".into(),
                description: None,
                kind: KeystoreTypeArg::Pkcs11,
                connect: false,
                pkcs11: Pkcs11Args {
                    module: Some("/m.so".into()),
                    token_label: Some("t".into()),
                    token_serial: None,
                    pin_file: Some("/p".into()),
                },
                aws_kms: AwsKmsArgs::default(),
                xks: XksArgs::default(),
                ibm_kms: Box::default(),
                azure_key_vault: Box::default(),
            }
        );
        assert_eq!(
            parse(&[
                "keystore",
                "create",
                "--vault",
                "v",
                "--name",
                "n",
                "--type",
                "aws-kms",
                "--region",
                "eu-central-1",
                "--access-key-id",
                "AKIAEXAMPLE",
                "--secret-access-key-file",
                "/s"
            ])
            .expect("ok"),
            KeystoreCommand::Create {
                vault: "v".into(),
                name: "n".into(),
                description: None,
                kind: KeystoreTypeArg::AwsKms,
                connect: false,
                pkcs11: Pkcs11Args::default(),
                aws_kms: AwsKmsArgs {
                    region: Some("eu-central-1".into()),
                    endpoint_url: None,
                    access_key_id: Some("AKIAEXAMPLE".into()),
                    secret_access_key_file: Some("/s".into()),
                },
                xks: XksArgs::default(),
                ibm_kms: Box::default(),
                azure_key_vault: Box::default(),
            }
        );
        assert_eq!(
            parse(&[
                "keystore",
                "create",
                "--vault",
                "v",
                "--name",
                "n",
                "--type",
                "xks",
                "--uri-endpoint",
                "https://xks.example.com",
                "--uri-path",
                "/keyorch/kms/xks/v1",
                "--access-key-id",
                "AAAAAAAAAAAAAAAAAAAA",
                "--secret-access-key-file",
                "/s",
                "--ca-cert",
                "/ca.pem",
                "--client-cert",
                "/c.pem",
                "--client-key-file",
                "/c.key",
            ])
            .expect("ok"),
            KeystoreCommand::Create {
                vault: "v".into(),
                name: "n".into(),
                description: None,
                kind: KeystoreTypeArg::Xks,
                connect: false,
                pkcs11: Pkcs11Args::default(),
                aws_kms: AwsKmsArgs {
                    region: None,
                    endpoint_url: None,
                    access_key_id: Some("AAAAAAAAAAAAAAAAAAAA".into()),
                    secret_access_key_file: Some("/s".into()),
                },
                xks: XksArgs {
                    uri_endpoint: Some("https://xks.example.com".into()),
                    uri_path: Some("/keyorch/kms/xks/v1".into()),
                    ca_cert: Some("/ca.pem".into()),
                    client_cert: Some("/c.pem".into()),
                    client_key_file: Some("/c.key".into()),
                    signing_region: None,
                },
                ibm_kms: Box::default(),
                azure_key_vault: Box::default(),
            }
        );
        // A client certificate needs its key.
        assert!(parse(&[
            "keystore",
            "create",
            "--vault",
            "v",
            "--name",
            "n",
            "--type",
            "xks",
            "--client-cert",
            "/c.pem"
        ])
        .is_err());
        assert!(
            parse(&["keystore", "create", "--vault", "v", "--name", "n", "--type", "x"]).is_err()
        );
    }

    #[test]
    fn parses_list_filters_and_lifecycle_commands() {
        assert_eq!(
            parse(&[
                "keystore", "list", "--vault", "v", "--type", "aws-kms", "--state", "failed",
                "--all"
            ])
            .expect("ok"),
            KeystoreCommand::List {
                vault: Some("v".into()),
                name: None,
                kind: Some(KeystoreTypeArg::AwsKms),
                state: Some(ConnectionStateArg::Failed),
                page: PageArgs {
                    all: true,
                    ..PageArgs::default()
                }
            }
        );
        assert_eq!(
            parse(&[
                "keystore",
                "disconnect",
                "ks",
                "--uninstall-keys",
                "--force"
            ])
            .expect("ok"),
            KeystoreCommand::Disconnect {
                id: "ks".into(),
                uninstall_keys: true,
                force: true
            }
        );
        for cmd in ["get", "delete", "connect", "test"] {
            assert!(parse(&["keystore", cmd, "ks"]).is_ok(), "{cmd}");
            assert!(parse(&["keystore", cmd]).is_err(), "{cmd} without id");
        }
    }

    #[test]
    fn renders_a_record_with_short_enum_names() {
        assert_eq!(
            render(OutputFormat::Table, &sample()),
            "id: ks-1\nvault_id: v-1\nname: hsm\ndescription:\ntype: INTERNAL\n\
             connection_state: FAILED\nconnection_error_code: TIMED_OUT\n\
             connection_error_message: no answer in 5 s\nhealth.status: NOT_RESPONDING\n\
             health.last_heartbeat: 2023-11-14T22:13:50Z\n\
             created_at: 2023-11-14T22:13:20Z\nupdated_at: 2023-11-14T22:14:20Z\n"
        );
    }

    #[test]
    fn renders_json_with_proto_enum_names() {
        let v: Value = serde_json::from_str(&render(OutputFormat::Json, &sample())).expect("json");
        assert_eq!(v["type"], "KEYSTORE_TYPE_INTERNAL");
        assert_eq!(v["connection_state"], "CONNECTION_STATE_FAILED");
        assert_eq!(
            v["connection_error_code"],
            "CONNECTION_ERROR_CODE_TIMED_OUT"
        );
        assert_eq!(v["health"]["status"], "HEALTH_STATUS_NOT_RESPONDING");
        assert_eq!(v["config"], json!({"internal": {}}));
        assert_eq!(v["created_at"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn renders_lists() {
        assert_eq!(
            render_list(OutputFormat::Table, &[sample()], ""),
            "ID    NAME  TYPE      STATE   HEALTH          VAULT_ID\n\
             ks-1  hsm   INTERNAL  FAILED  NOT_RESPONDING  v-1\n"
        );
        let v: Value =
            serde_json::from_str(&render_list(OutputFormat::Json, &[sample()], "n")).expect("json");
        assert_eq!(v["keystores"][0]["id"], "ks-1");
        assert_eq!(v["next_page_token"], "n");
    }

    #[test]
    fn renders_a_test_result() {
        let r = TestKeystoreConnectionResponse {
            ok: false,
            error_code: ConnectionErrorCode::InvalidCredentials as i32,
            message: "bad PIN".into(),
            denied_permissions: Vec::new(),
        };
        assert_eq!(
            render_test(OutputFormat::Table, &r),
            "ok: false\nerror_code: INVALID_CREDENTIALS\nmessage: bad PIN\n"
        );
        let r = TestKeystoreConnectionResponse {
            ok: false,
            error_code: ConnectionErrorCode::InsufficientPermissions as i32,
            message: "denied".into(),
            denied_permissions: vec!["CreateAlias".into(), "TagResource".into()],
        };
        assert_eq!(
            render_test(OutputFormat::Table, &r),
            "ok: false\nerror_code: INSUFFICIENT_PERMISSIONS\nmessage: denied\ndenied_permissions: CreateAlias,TagResource\n"
        );
    }

    /// A keystore of `t` with `config`, as GetKeystore answers before an update.
    fn stored(t: KeystoreType, config: keystore::Config) -> Keystore {
        Keystore {
            r#type: t as i32,
            connection_state: ConnectionState::Disconnected as i32,
            has_credentials: true,
            config: Some(config),
            ..sample()
        }
    }

    fn ibm_stored() -> Keystore {
        stored(
            KeystoreType::IbmHpcs,
            keystore::Config::IbmKms(IbmKmsKeystoreConfig {
                instance_id: "2f8c7a52-4b1e-4d0a-9c3e-5a6b7c8d9e0f".into(),
                key_ring_id: "default".into(),
                api_endpoint: "https://api.us-south.hs-crypto.cloud.ibm.com:9730".into(),
                iam_endpoint: "https://iam.cloud.ibm.com".into(),
                ca_cert_pem: String::new(),
            }),
        )
    }

    fn azure_stored() -> Keystore {
        stored(
            KeystoreType::AzureKeyVault,
            keystore::Config::AzureKeyVault(AzureKeyVaultKeystoreConfig {
                vault_name: "payments-kv".into(),
                resource_group: "rg-keys".into(),
                location: "westeurope".into(),
                environment: "AzureCloud".into(),
                tenant_id: "11111111-2222-3333-4444-555555555555".into(),
                client_id: "66666666-7777-8888-9999-000000000000".into(),
                subscription_id: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".into(),
                vault_url: "https://kv.privatelink.example:8443".into(),
                authority_host: String::new(),
                ca_cert_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n\
                              -----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"
                    .into(),
            }),
        )
    }

    /// Files for the flags that read one: a CA and a secret (with the line end a shell
    /// `echo` leaves, which is dropped).
    fn files() -> (tempfile::TempDir, String, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "Secret-Value-0123456789\n").expect("write");
        let (ca, secret) = (
            ca.to_str().expect("utf-8").to_string(),
            secret.to_str().expect("utf-8").to_string(),
        );
        (dir, ca, secret)
    }

    fn update(args: &[&str], stored: Option<&Keystore>) -> Result<UpdateKeystoreRequest, CliError> {
        let cmd = parse(&[&["keystore", "update", "ks-1"][..], args].concat()).expect("parses");
        update_request(&cmd, stored)
    }

    fn create(args: &[&str]) -> Result<CreateKeystoreRequest, CliError> {
        let base = ["keystore", "create", "--vault", "v", "--name", "n"];
        create_request(&parse(&[&base[..], args].concat()).expect("parses"))
    }

    #[track_caller]
    fn usage(result: Result<impl std::fmt::Debug, CliError>) -> String {
        match result {
            Err(CliError::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn parses_azure_key_vault_flags_on_create_and_update() {
        let azure = AzureKeyVaultArgs {
            vault_name: Some("payments-kv".into()),
            resource_group: Some("rg-keys".into()),
            location: Some("westeurope".into()),
            environment: Some("AzureChinaCloud".into()),
            subscription_id: Some("s".into()),
            tenant_id: Some("t".into()),
            client_id: Some("c".into()),
            vault_url: Some("https://kv.example".into()),
            authority_host: Some("https://login.example".into()),
            client_secret_file: Some("/secret".into()),
        };
        let flags = [
            "--vault-name",
            "payments-kv",
            "--resource-group",
            "rg-keys",
            "--location",
            "westeurope",
            "--environment",
            "AzureChinaCloud",
            "--subscription-id",
            "s",
            "--tenant-id",
            "t",
            "--client-id",
            "c",
            "--vault-url",
            "https://kv.example",
            "--authority-host",
            "https://login.example",
            "--client-secret-file",
            "/secret",
        ];
        let base = [
            "keystore",
            "create",
            "--vault",
            "v",
            "--name",
            "n",
            "--type",
            "azure-key-vault",
        ];
        assert_eq!(
            parse(&[&base[..], &flags[..]].concat()).expect("ok"),
            KeystoreCommand::Create {
                vault: "v".into(),
                name: "n".into(),
                description: None,
                kind: KeystoreTypeArg::AzureKeyVault,
                connect: false,
                pkcs11: Pkcs11Args::default(),
                aws_kms: AwsKmsArgs::default(),
                xks: XksArgs::default(),
                ibm_kms: Box::default(),
                azure_key_vault: Box::new(azure.clone()),
            }
        );
        let KeystoreCommand::Update {
            azure_key_vault,
            clear_endpoints,
            ..
        } = parse(&[&["keystore", "update", "ks"][..], &flags[..]].concat()).expect("ok")
        else {
            panic!("not an update")
        };
        assert_eq!((*azure_key_vault, clear_endpoints), (azure, false));
        // Only the three clouds; --clear-endpoints is update's and excludes new endpoints.
        assert!(parse(&[&base[..], &["--environment", "AzureGermanCloud"]].concat()).is_err());
        assert!(parse(&[&base[..], &["--clear-endpoints"]].concat()).is_err());
        for endpoint in ["--vault-url", "--authority-host"] {
            assert!(parse(&[
                "keystore",
                "update",
                "ks",
                "--clear-endpoints",
                endpoint,
                "u"
            ])
            .is_err());
        }
        assert!(parse(&[
            "keystore",
            "update",
            "ks",
            "--clear-ca-cert",
            "--ca-cert",
            "/c"
        ])
        .is_err());
    }

    #[test]
    fn creates_ibm_and_azure_keystores_with_their_settings_and_secrets() {
        let (_dir, ca, secret) = files();
        let r = create(&[
            "--type",
            "azure-key-vault",
            "--vault-name",
            "payments-kv",
            "--resource-group",
            "rg-keys",
            "--location",
            "westeurope",
            "--subscription-id",
            "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
            "--tenant-id",
            "11111111-2222-3333-4444-555555555555",
            "--client-id",
            "66666666-7777-8888-9999-000000000000",
            "--vault-url",
            "http://127.0.0.1:8443",
            "--ca-cert",
            &ca,
            "--client-secret-file",
            &secret,
        ])
        .expect("request");
        assert_eq!(r.r#type, KeystoreType::AzureKeyVault as i32);
        assert_eq!(
            r.config,
            Some(create_keystore_request::Config::AzureKeyVault(
                AzureKeyVaultKeystoreConfig {
                    vault_name: "payments-kv".into(),
                    resource_group: "rg-keys".into(),
                    location: "westeurope".into(),
                    environment: String::new(),
                    tenant_id: "11111111-2222-3333-4444-555555555555".into(),
                    client_id: "66666666-7777-8888-9999-000000000000".into(),
                    subscription_id: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".into(),
                    vault_url: "http://127.0.0.1:8443".into(),
                    authority_host: String::new(),
                    ca_cert_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
                        .into(),
                }
            ))
        );
        assert_eq!(
            r.credentials,
            Some(
                create_keystore_request::Credentials::AzureKeyVaultCredentials(
                    AzureKeyVaultCredentials {
                        client_secret: "Secret-Value-0123456789".into()
                    }
                )
            )
        );
        // Without flags the configuration is still sent (the server names what is missing).
        let bare = create(&["--type", "azure-key-vault"]).expect("request");
        assert_eq!(
            bare.config,
            Some(create_keystore_request::Config::AzureKeyVault(
                AzureKeyVaultKeystoreConfig::default()
            ))
        );
        assert_eq!(bare.credentials, None);

        let r = create(&[
            "--type",
            "ibm-hpcs",
            "--instance-id",
            "i",
            "--api-endpoint",
            "http://127.0.0.1:1",
            "--api-key-file",
            &secret,
        ])
        .expect("request");
        assert_eq!(r.r#type, KeystoreType::IbmHpcs as i32);
        assert_eq!(
            r.config,
            Some(create_keystore_request::Config::IbmKms(
                IbmKmsKeystoreConfig {
                    instance_id: "i".into(),
                    api_endpoint: "http://127.0.0.1:1".into(),
                    ..IbmKmsKeystoreConfig::default()
                }
            ))
        );
        assert_eq!(
            r.credentials,
            Some(create_keystore_request::Credentials::IbmKmsCredentials(
                IbmKmsCredentials {
                    api_key: "Secret-Value-0123456789".into()
                }
            ))
        );
        // A missing secret file is an error naming it, and nothing is sent.
        let missing = create(&[
            "--type",
            "ibm-key-protect",
            "--api-key-file",
            "/no/such/file",
        ]);
        assert!(
            matches!(&missing, Err(CliError::Io { what, .. }) if what.contains("/no/such/file")),
            "{missing:?}"
        );
    }

    #[test]
    fn create_refuses_flags_of_another_type() {
        assert_eq!(
            usage(create(&["--type", "ibm-hpcs", "--pin-file", "/p"])),
            "--pin-file is for pkcs11 keystores, not ibm_hpcs; an ibm_hpcs keystore takes \
             --instance-id, --key-ring-id, --api-endpoint, --iam-endpoint, --api-key-file, --ca-cert"
        );
        assert_eq!(
            usage(create(&[
                "--type",
                "azure-key-vault",
                "--api-key-file",
                "/k"
            ])),
            "--api-key-file is for ibm_key_protect, ibm_hpcs keystores, not azure_key_vault; an \
             azure_key_vault keystore takes --vault-name, --resource-group, --location, \
             --environment, --subscription-id, --tenant-id, --client-id, --vault-url, \
             --authority-host, --client-secret-file, --ca-cert"
        );
        assert_eq!(
            usage(create(&["--type", "xks", "--tenant-id", "t"])),
            "--tenant-id is for azure_key_vault keystores, not xks; an xks keystore takes \
             --access-key-id, --secret-access-key-file, --uri-endpoint, --uri-path, \
             --client-cert, --client-key-file, --signing-region, --ca-cert"
        );
        assert_eq!(
            usage(create(&["--ca-cert", "/c"])),
            "--ca-cert is for xks, ibm_key_protect, ibm_hpcs, azure_key_vault keystores, not \
             internal; an internal keystore takes no settings of its own"
        );
        assert!(
            usage(create(&["--type", "pkcs11", "--region", "r"])).starts_with(
                "--region is for aws_kms keystores, not pkcs11; a pkcs11 keystore takes --module,"
            )
        );
    }

    #[test]
    fn update_sends_ibm_settings_for_an_ibm_keystore() {
        let (_dir, ca, secret) = files();
        let ibm = ibm_stored();
        let r = update(
            &[
                "--api-endpoint",
                "https://api.eu-de.hs-crypto.cloud.ibm.com:9730",
                "--ca-cert",
                &ca,
                "--api-key-file",
                &secret,
            ],
            Some(&ibm),
        )
        .expect("request");
        assert_eq!(
            r,
            UpdateKeystoreRequest {
                id: "ks-1".into(),
                ibm_kms: Some(IbmKmsKeystoreConfig {
                    api_endpoint: "https://api.eu-de.hs-crypto.cloud.ibm.com:9730".into(),
                    ca_cert_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
                        .into(),
                    ..IbmKmsKeystoreConfig::default()
                }),
                ibm_kms_credentials: Some(IbmKmsCredentials {
                    api_key: "Secret-Value-0123456789".into()
                }),
                ..UpdateKeystoreRequest::default()
            }
        );
        // The identifying settings and the IAM endpoint, with a new name.
        let r = update(
            &[
                "--name",
                "hpcs-2",
                "--instance-id",
                "i2",
                "--key-ring-id",
                "ring",
                "--iam-endpoint",
                "https://private.iam.cloud.ibm.com",
            ],
            Some(&ibm),
        )
        .expect("request");
        assert_eq!(r.name.as_deref(), Some("hpcs-2"));
        assert_eq!(
            r.ibm_kms,
            Some(IbmKmsKeystoreConfig {
                instance_id: "i2".into(),
                key_ring_id: "ring".into(),
                iam_endpoint: "https://private.iam.cloud.ibm.com".into(),
                ..IbmKmsKeystoreConfig::default()
            })
        );
        assert_eq!(r.ibm_kms_credentials, None);
        // --clear-ca-cert alone: the flag, no configuration; nothing for xks.
        let r = update(&["--clear-ca-cert"], Some(&ibm)).expect("request");
        assert!(r.ibm_kms_clear_ca_cert && !r.xks_clear_ca_cert);
        assert_eq!((r.ibm_kms, r.ibm_kms_credentials), (None, None));
        // A new API key alone.
        let r = update(&["--api-key-file", &secret], Some(&ibm)).expect("request");
        assert_eq!(r.ibm_kms, None);
        assert!(r.ibm_kms_credentials.is_some());
        // The same --clear-ca-cert on an xks keystore is xks's.
        let xks = stored(
            KeystoreType::Xks,
            keystore::Config::Xks(XksKeystoreConfig::default()),
        );
        let r = update(&["--clear-ca-cert"], Some(&xks)).expect("request");
        assert!(r.xks_clear_ca_cert && !r.ibm_kms_clear_ca_cert);
    }

    #[test]
    fn update_sends_azure_settings_for_an_azure_keystore() {
        let (_dir, ca, secret) = files();
        let azure = azure_stored();
        let r = update(
            &[
                "--tenant-id",
                "99999999-2222-3333-4444-555555555555",
                "--authority-host",
                "http://127.0.0.1:9",
                "--ca-cert",
                &ca,
                "--client-secret-file",
                &secret,
            ],
            Some(&azure),
        )
        .expect("request");
        assert_eq!(
            r,
            UpdateKeystoreRequest {
                id: "ks-1".into(),
                azure_key_vault: Some(AzureKeyVaultKeystoreConfig {
                    tenant_id: "99999999-2222-3333-4444-555555555555".into(),
                    authority_host: "http://127.0.0.1:9".into(),
                    ca_cert_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
                        .into(),
                    ..AzureKeyVaultKeystoreConfig::default()
                }),
                azure_key_vault_credentials: Some(AzureKeyVaultCredentials {
                    client_secret: "Secret-Value-0123456789".into()
                }),
                ..UpdateKeystoreRequest::default()
            }
        );
        let r = update(&["--clear-endpoints", "--clear-ca-cert"], Some(&azure)).expect("request");
        assert_eq!(
            r,
            UpdateKeystoreRequest {
                id: "ks-1".into(),
                azure_key_vault_clear_ca_cert: true,
                azure_key_vault_clear_endpoints: true,
                ..UpdateKeystoreRequest::default()
            }
        );
        let r = update(
            &[
                "--vault-name",
                "kv2",
                "--resource-group",
                "rg2",
                "--location",
                "northeurope",
                "--environment",
                "AzureUSGovernment",
                "--subscription-id",
                "s2",
                "--client-id",
                "c2",
                "--vault-url",
                "https://kv2.example",
            ],
            Some(&azure),
        )
        .expect("request");
        assert_eq!(
            r.azure_key_vault,
            Some(AzureKeyVaultKeystoreConfig {
                vault_name: "kv2".into(),
                resource_group: "rg2".into(),
                location: "northeurope".into(),
                environment: "AzureUSGovernment".into(),
                subscription_id: "s2".into(),
                client_id: "c2".into(),
                vault_url: "https://kv2.example".into(),
                ..AzureKeyVaultKeystoreConfig::default()
            })
        );
        assert_eq!(r.azure_key_vault_credentials, None);
    }

    #[test]
    fn update_refuses_flags_of_another_type_than_the_stored_one() {
        let ibm = ibm_stored();
        assert_eq!(
            usage(update(&["--region", "eu-de"], Some(&ibm))),
            "--region is for aws_kms keystores, not ibm_hpcs; an ibm_hpcs keystore takes \
             --instance-id, --key-ring-id, --api-endpoint, --iam-endpoint, --api-key-file, \
             --ca-cert, --clear-ca-cert"
        );
        assert!(usage(update(&["--clear-endpoints"], Some(&ibm)))
            .starts_with("--clear-endpoints is for azure_key_vault keystores, not ibm_hpcs;"));
        assert!(
            usage(update(&["--secret-access-key-file", "/s"], Some(&ibm))).starts_with(
                "--secret-access-key-file is for aws_kms, xks keystores, not ibm_hpcs;"
            )
        );
        let azure = azure_stored();
        assert!(
            usage(update(&["--instance-id", "i"], Some(&azure))).starts_with(
                "--instance-id is for ibm_key_protect, ibm_hpcs keystores, not azure_key_vault;"
            )
        );
        assert!(usage(update(&["--clear-client-cert"], Some(&azure)))
            .ends_with("--client-secret-file, --clear-endpoints, --ca-cert, --clear-ca-cert"));
        let pkcs11 = stored(
            KeystoreType::Pkcs11,
            keystore::Config::Pkcs11(Pkcs11KeystoreConfig::default()),
        );
        assert!(usage(update(&["--client-secret-file", "/s"], Some(&pkcs11))).starts_with(
            "--client-secret-file is for azure_key_vault keystores, not pkcs11; a pkcs11 keystore takes --module,"
        ));
        // Name and description alone need no stored keystore.
        let r = update(&["--name", "x", "--description", "d"], None).expect("request");
        assert_eq!(
            r,
            UpdateKeystoreRequest {
                id: "ks-1".into(),
                name: Some("x".into()),
                description: Some("d".into()),
                ..UpdateKeystoreRequest::default()
            }
        );
        let cmd = parse(&["keystore", "update", "ks", "--name", "x"]).expect("ok");
        assert!(!cmd.type_flags().expect("an update").any());
        let cmd = parse(&["keystore", "update", "ks", "--clear-ca-cert"]).expect("ok");
        assert!(cmd.type_flags().expect("an update").any());
    }

    #[test]
    fn renders_azure_key_vault_records() {
        let text = render(OutputFormat::Table, &azure_stored());
        for line in [
            "type: AZURE_KEY_VAULT\n",
            "azure_key_vault.vault_name: payments-kv\n",
            "azure_key_vault.resource_group: rg-keys\n",
            "azure_key_vault.location: westeurope\n",
            "azure_key_vault.environment: AzureCloud\n",
            "azure_key_vault.subscription_id: aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee\n",
            "azure_key_vault.tenant_id: 11111111-2222-3333-4444-555555555555\n",
            "azure_key_vault.client_id: 66666666-7777-8888-9999-000000000000\n",
            "azure_key_vault.vault_url: https://kv.privatelink.example:8443\n",
            "azure_key_vault.ca_cert_pem: 2 certificate(s)\n",
            "has_credentials: true\n",
        ] {
            assert!(text.contains(line), "{line:?} not in:\n{text}");
        }
        // Overrides left empty are not shown.
        assert!(!text.contains("authority_host"), "{text}");
        let v: Value =
            serde_json::from_str(&render(OutputFormat::Json, &azure_stored())).expect("json");
        assert_eq!(v["config"]["azure_key_vault"]["vault_name"], "payments-kv");
    }
}
