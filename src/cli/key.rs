//! `keyorch key ...`: the KeyService RPCs (create, lifecycle transitions, install and
//! uninstall), and how a Key prints as a record, a table row and JSON.

use std::collections::HashMap;

use clap::{Subcommand, ValueEnum};
use serde_json::{json, Map, Value};

use super::output::{
    self, full_name, short_name, timestamp, timestamp_json, OutputFormat, Record, Table,
};
use super::paging::{self, PageArgs};
use super::{CliError, Context, Outcome};
use crate::proto::v1::{
    CreateKeyRequest, GetKeyRequest, InstallKeyRequest, InstanceState, Key, KeyAlgorithm,
    KeyIdRequest, KeyState, KeyStatusResponse, ListKeysRequest, SyncStatus, TargetKeyStatus,
    UpdateKeyRequest,
};

/// `--algorithm`: the key family (the size is `--size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyAlgorithmArg {
    /// AES 128, 192 or 256.
    Aes,
    /// RSA 2048, 3072 or 4096.
    Rsa,
    /// EC 256 (P-256) or 384 (P-384).
    Ec,
    /// HMAC-SHA256, 256.
    #[value(name = "hmac-sha256", alias = "hmac-sha-256")]
    HmacSha256,
}

impl From<KeyAlgorithmArg> for KeyAlgorithm {
    fn from(a: KeyAlgorithmArg) -> Self {
        match a {
            KeyAlgorithmArg::Aes => KeyAlgorithm::Aes,
            KeyAlgorithmArg::Rsa => KeyAlgorithm::Rsa,
            KeyAlgorithmArg::Ec => KeyAlgorithm::Ec,
            KeyAlgorithmArg::HmacSha256 => KeyAlgorithm::HmacSha256,
        }
    }
}

/// `--state`: a key's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyStateArg {
    PreActive,
    Active,
    Deactivated,
    Destroyed,
    Compromised,
    DestroyedCompromised,
}

impl From<KeyStateArg> for KeyState {
    fn from(s: KeyStateArg) -> Self {
        match s {
            KeyStateArg::PreActive => KeyState::PreActive,
            KeyStateArg::Active => KeyState::Active,
            KeyStateArg::Deactivated => KeyState::Deactivated,
            KeyStateArg::Destroyed => KeyState::Destroyed,
            KeyStateArg::Compromised => KeyState::Compromised,
            KeyStateArg::DestroyedCompromised => KeyState::DestroyedCompromised,
        }
    }
}

/// `--tag KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

fn parse_tag(s: &str) -> Result<Tag, String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok(Tag {
            key: k.to_string(),
            value: v.to_string(),
        }),
        _ => Err("expected KEY=VALUE with a non-empty KEY".to_string()),
    }
}

fn tag_map(tags: Vec<Tag>) -> HashMap<String, String> {
    tags.into_iter().map(|t| (t.key, t.value)).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum KeyCommand {
    /// Generate a key in the HSM (PRE_ACTIVE, or ACTIVE with --activate).
    Create {
        /// Vault id.
        #[arg(long)]
        vault: String,
        /// Key name, unique in the vault.
        #[arg(long)]
        name: String,
        /// Key family.
        #[arg(long, value_enum)]
        algorithm: KeyAlgorithmArg,
        /// Key size in bits (AES 128/192/256, RSA 2048/3072/4096, EC 256/384, HMAC 256).
        #[arg(long, value_name = "BITS")]
        size: u32,
        /// Target keystore id (repeat for several; each must be CONNECTED).
        #[arg(long = "target", value_name = "KEYSTORE", required = true)]
        targets: Vec<String>,
        /// Install into every target and make the key ACTIVE right away.
        #[arg(long)]
        activate: bool,
        /// Free text, at most 200 characters.
        #[arg(long)]
        description: Option<String>,
        /// Tag as KEY=VALUE (repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
        tags: Vec<Tag>,
        /// Reference this key of the one target, an xks keystore, instead of generating
        /// material in keyorch's HSM (needs --algorithm aes --size 256; the proxy must show it
        /// as an ENABLED AES_256 key for ENCRYPT and DECRYPT).
        #[arg(long, value_name = "ID")]
        external_key_id: Option<String>,
    },
    /// Show one key.
    Get {
        /// Key id.
        id: String,
    },
    /// List keys, optionally filtered.
    List {
        /// Only keys of this vault.
        #[arg(long)]
        vault: Option<String>,
        /// Only keys in this state.
        #[arg(long, value_enum)]
        state: Option<KeyStateArg>,
        /// Only keys of this family.
        #[arg(long, value_enum)]
        algorithm: Option<KeyAlgorithmArg>,
        /// Only keys targeting this keystore.
        #[arg(long)]
        keystore: Option<String>,
        /// Only keys with this name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Change a key's name, description or tags.
    Update {
        /// Key id.
        id: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// New description.
        #[arg(long)]
        description: Option<String>,
        /// Tag to add or change, as KEY=VALUE (repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
        tags: Vec<Tag>,
        /// Replace all tags with the given --tag values (none: remove all tags).
        #[arg(long)]
        replace_tags: bool,
    },
    /// Install into every target and make the key ACTIVE.
    Activate {
        /// Key id.
        id: String,
    },
    /// Uninstall from every target and make the key DEACTIVATED.
    Deactivate {
        /// Key id.
        id: String,
    },
    /// Destroy the key material (the record stays, DESTROYED).
    Destroy {
        /// Key id.
        id: String,
    },
    /// Delete the record of a destroyed key.
    Delete {
        /// Key id.
        id: String,
    },
    /// Mark the key COMPROMISED.
    #[command(alias = "mark-compromised")]
    Compromise {
        /// Key id.
        id: String,
    },
    /// Install an ACTIVE key into one more keystore.
    Install {
        /// Key id.
        id: String,
        /// Keystore id.
        #[arg(long)]
        keystore: String,
    },
    /// Uninstall a key from one keystore.
    Uninstall {
        /// Key id.
        id: String,
        /// Keystore id.
        #[arg(long)]
        keystore: String,
    },
    /// Ask every target what it really holds (active, not_active, not_present, wrong_key, error).
    Status {
        /// Key id.
        id: String,
    },
    /// Repair drift: re-install missing or wrong copies, remove copies that should not be there.
    Sync {
        /// Key id.
        id: String,
    },
}

fn render_status(format: OutputFormat, r: &KeyStatusResponse) -> String {
    match format {
        OutputFormat::Table => {
            let mut t = Table::new(vec![
                "KEYSTORE_ID",
                "STATUS",
                "SYNC",
                "TARGET_KCV",
                "MESSAGE",
            ]);
            for k in &r.keystores {
                t.push(vec![
                    k.keystore_id.clone(),
                    short_name::<TargetKeyStatus>(k.status),
                    short_name::<SyncStatus>(k.sync),
                    k.target_key_check_value.clone(),
                    k.message.clone(),
                ]);
            }
            output::list_text(t, "")
        }
        OutputFormat::Json => output::render_json(&json!({
            "key_id": r.key_id,
            "keystores": r.keystores.iter().map(|k| json!({
                "keystore_id": k.keystore_id,
                "status": full_name::<TargetKeyStatus>(k.status),
                "sync": full_name::<SyncStatus>(k.sync),
                "target_key_check_value": k.target_key_check_value,
                "message": k.message,
            })).collect::<Vec<_>>(),
        })),
    }
}

pub async fn run(cmd: KeyCommand, ctx: &Context) -> Result<Outcome, CliError> {
    let mut client = ctx.clients().await?.keys;
    let key = match cmd {
        KeyCommand::Create {
            vault,
            name,
            algorithm,
            size,
            targets,
            activate,
            description,
            tags,
            external_key_id,
        } => {
            client
                .create_key(CreateKeyRequest {
                    vault_id: vault,
                    name,
                    description: description.unwrap_or_default(),
                    algorithm: KeyAlgorithm::from(algorithm) as i32,
                    key_size_bits: size,
                    target_keystore_ids: targets,
                    activate,
                    tags: tag_map(tags),
                    external_key_id: external_key_id.unwrap_or_default(),
                })
                .await?
        }
        KeyCommand::Get { id } => client.get_key(GetKeyRequest { id }).await?,
        KeyCommand::Update {
            id,
            name,
            description,
            tags,
            replace_tags,
        } => {
            client
                .update_key(UpdateKeyRequest {
                    id,
                    name,
                    description,
                    replace_tags,
                    tags: tag_map(tags),
                })
                .await?
        }
        KeyCommand::Activate { id } => client.activate_key(KeyIdRequest { id }).await?,
        KeyCommand::Deactivate { id } => client.deactivate_key(KeyIdRequest { id }).await?,
        KeyCommand::Destroy { id } => client.destroy_key(KeyIdRequest { id }).await?,
        KeyCommand::Compromise { id } => client.mark_compromised(KeyIdRequest { id }).await?,
        KeyCommand::Install { id, keystore } => {
            client
                .install_key(InstallKeyRequest {
                    id,
                    keystore_id: keystore,
                })
                .await?
        }
        KeyCommand::Uninstall { id, keystore } => {
            client
                .uninstall_key(InstallKeyRequest {
                    id,
                    keystore_id: keystore,
                })
                .await?
        }
        KeyCommand::Status { id } => {
            let r = client
                .get_key_status_in_keystores(KeyIdRequest { id })
                .await?
                .into_inner();
            output::print(&render_status(ctx.output, &r))?;
            let in_sync = r.keystores.iter().all(|k| k.sync == SyncStatus::Ok as i32);
            return Ok(if in_sync {
                Outcome::Success
            } else {
                Outcome::Negative
            });
        }
        KeyCommand::Sync { id } => {
            let r = client.sync_key(KeyIdRequest { id }).await?.into_inner();
            output::print(&render_status(ctx.output, &r))?;
            let in_sync = r.keystores.iter().all(|k| k.sync == SyncStatus::Ok as i32);
            return Ok(if in_sync {
                Outcome::Success
            } else {
                Outcome::Negative
            });
        }
        KeyCommand::Delete { id } => {
            client.delete_key(KeyIdRequest { id: id.clone() }).await?;
            output::print(&output::deleted(ctx.output, &id))?;
            return Ok(Outcome::Success);
        }
        KeyCommand::List {
            vault,
            state,
            algorithm,
            keystore,
            name,
            page,
        } => {
            let filter = ListKeysRequest {
                vault_id: vault.unwrap_or_default(),
                state: state.map_or(0, |s| KeyState::from(s) as i32),
                algorithm: algorithm.map_or(0, |a| KeyAlgorithm::from(a) as i32),
                keystore_id: keystore.unwrap_or_default(),
                name: name.unwrap_or_default(),
                page: None,
            };
            let (keys, next) = paging::fetch(&page, |page| {
                let mut client = client.clone();
                let request = ListKeysRequest {
                    page: Some(page),
                    ..filter.clone()
                };
                async move {
                    let r = client.list_keys(request).await?.into_inner();
                    Ok((r.keys, r.next_page_token))
                }
            })
            .await?;
            output::print(&render_list(ctx.output, &keys, &next))?;
            return Ok(Outcome::Success);
        }
    }
    .into_inner();
    output::print(&render(ctx.output, &key))?;
    Ok(Outcome::Success)
}

fn sorted_tags(k: &Key) -> Vec<(&String, &String)> {
    let mut tags: Vec<_> = k.tags.iter().collect();
    tags.sort();
    tags
}

pub fn record(k: &Key) -> Record {
    let tags: Vec<String> = sorted_tags(k)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut r = Record::new()
        .field("id", &k.id)
        .field("vault_id", &k.vault_id)
        .field("name", &k.name)
        .field("description", &k.description)
        .field("algorithm", short_name::<KeyAlgorithm>(k.algorithm))
        .field("key_size_bits", k.key_size_bits.to_string())
        .field("state", short_name::<KeyState>(k.state))
        .field("key_check_value", &k.key_check_value)
        .optional(
            "external_key_id",
            (!k.external_key_id.is_empty()).then(|| k.external_key_id.clone()),
        )
        .field("target_keystore_ids", k.target_keystore_ids.join(", "))
        .field("tags", tags.join(", "));
    for i in &k.instances {
        let mut line = format!("{} {}", i.keystore_id, short_name::<InstanceState>(i.state));
        if !i.remote_ref.is_empty() {
            line.push_str(&format!(" remote_ref={}", i.remote_ref));
        }
        if !i.remote_id.is_empty() {
            line.push_str(&format!(" remote_id={}", i.remote_id));
        }
        if let Some(t) = timestamp(&i.updated_at) {
            line.push_str(&format!(" updated_at={t}"));
        }
        if !i.error.is_empty() {
            line.push_str(&format!(" error={:?}", i.error));
        }
        r = r.field("instance", line);
    }
    r.optional("created_at", timestamp(&k.created_at))
        .optional("updated_at", timestamp(&k.updated_at))
        .optional("activated_at", timestamp(&k.activated_at))
        .optional("deactivated_at", timestamp(&k.deactivated_at))
        .optional("compromised_at", timestamp(&k.compromised_at))
        .optional("destroyed_at", timestamp(&k.destroyed_at))
}

pub fn to_json(k: &Key) -> Value {
    let tags: Map<String, Value> = sorted_tags(k)
        .into_iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let instances: Vec<Value> = k
        .instances
        .iter()
        .map(|i| {
            json!({
                "keystore_id": i.keystore_id,
                "state": full_name::<InstanceState>(i.state),
                "remote_ref": i.remote_ref,
                "remote_id": i.remote_id,
                "error": i.error,
                "updated_at": timestamp_json(&i.updated_at),
            })
        })
        .collect();
    json!({
        "id": k.id,
        "vault_id": k.vault_id,
        "name": k.name,
        "description": k.description,
        "algorithm": full_name::<KeyAlgorithm>(k.algorithm),
        "key_size_bits": k.key_size_bits,
        "state": full_name::<KeyState>(k.state),
        "target_keystore_ids": k.target_keystore_ids,
        "instances": instances,
        "key_check_value": k.key_check_value,
        "external_key_id": k.external_key_id,
        "tags": tags,
        "created_at": timestamp_json(&k.created_at),
        "updated_at": timestamp_json(&k.updated_at),
        "activated_at": timestamp_json(&k.activated_at),
        "deactivated_at": timestamp_json(&k.deactivated_at),
        "destroyed_at": timestamp_json(&k.destroyed_at),
        "compromised_at": timestamp_json(&k.compromised_at),
    })
}

pub fn table(keys: &[Key]) -> Table {
    let mut t = Table::new(vec![
        "ID",
        "NAME",
        "ALGORITHM",
        "SIZE",
        "STATE",
        "INSTALLED",
        "VAULT_ID",
    ]);
    for k in keys {
        let installed = k
            .instances
            .iter()
            .filter(|i| i.state == InstanceState::Installed as i32)
            .count();
        t.push(vec![
            k.id.clone(),
            k.name.clone(),
            short_name::<KeyAlgorithm>(k.algorithm),
            k.key_size_bits.to_string(),
            short_name::<KeyState>(k.state),
            format!("{installed}/{}", k.target_keystore_ids.len()),
            k.vault_id.clone(),
        ]);
    }
    t
}

pub fn render(format: OutputFormat, k: &Key) -> String {
    match format {
        OutputFormat::Table => record(k).render(),
        OutputFormat::Json => output::render_json(&to_json(k)),
    }
}

pub fn render_list(format: OutputFormat, keys: &[Key], next: &str) -> String {
    match format {
        OutputFormat::Table => output::list_text(table(keys), next),
        OutputFormat::Json => output::render_json(&json!({
            "keys": keys.iter().map(to_json).collect::<Vec<_>>(),
            "next_page_token": next,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use crate::proto::v1::KeyInstance;
    use clap::Parser;

    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    fn sample() -> Key {
        Key {
            id: "k-1".into(),
            vault_id: "v-1".into(),
            name: "db-master".into(),
            description: "dek wrapper".into(),
            algorithm: KeyAlgorithm::Aes as i32,
            key_size_bits: 256,
            state: KeyState::Active as i32,
            target_keystore_ids: vec!["ks-1".into(), "ks-2".into()],
            instances: vec![
                KeyInstance {
                    keystore_id: "ks-1".into(),
                    state: InstanceState::Installed as i32,
                    remote_ref: "keyorch-k-1".into(),
                    remote_id: String::new(),
                    error: String::new(),
                    updated_at: ts(1_700_000_100),
                },
                KeyInstance {
                    keystore_id: "ks-2".into(),
                    state: InstanceState::Unavailable as i32,
                    remote_ref: String::new(),
                    remote_id: String::new(),
                    error: "keystore not connected".into(),
                    updated_at: None,
                },
            ],
            key_check_value: "0011223344556677".into(),
            external_key_id: String::new(),
            tags: HashMap::from([("team".into(), "pay".into()), ("env".into(), "prod".into())]),
            created_at: ts(1_700_000_000),
            updated_at: ts(1_700_000_100),
            activated_at: ts(1_700_000_100),
            deactivated_at: None,
            destroyed_at: None,
            compromised_at: None,
        }
    }

    fn parse(args: &[&str]) -> Result<KeyCommand, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("keyorch").chain(args.iter().copied()))?;
        match cli.command {
            crate::cli::Command::Key(cmd) => Ok(cmd),
            other => panic!("not a key command: {other:?}"),
        }
    }

    #[test]
    fn parses_create() {
        let cmd = parse(&[
            "key",
            "create",
            "--vault",
            "v",
            "--name",
            "n",
            "--algorithm",
            "hmac-sha256",
            "--size",
            "256",
            "--target",
            "a",
            "--target",
            "b",
            "--activate",
            "--tag",
            "x=1",
            "--tag",
            "y=a=b",
        ])
        .expect("ok");
        assert_eq!(
            cmd,
            KeyCommand::Create {
                vault: "v".into(),
                name: "n".into(),
                algorithm: KeyAlgorithmArg::HmacSha256,
                size: 256,
                targets: vec!["a".into(), "b".into()],
                activate: true,
                description: None,
                tags: vec![
                    Tag {
                        key: "x".into(),
                        value: "1".into()
                    },
                    Tag {
                        key: "y".into(),
                        value: "a=b".into()
                    }
                ],
                external_key_id: None,
            }
        );
        let base = [
            "key", "create", "--vault", "v", "--name", "n", "--size", "256",
        ];
        let no_target = [&base[..], &["--algorithm", "aes"]].concat();
        assert_eq!(parse(&no_target).expect_err("no target").exit_code(), 2);
        let bad_alg = [&base[..], &["--algorithm", "des", "--target", "t"]].concat();
        assert!(parse(&bad_alg).is_err());
        let bad_tag = [
            &base[..],
            &["--algorithm", "aes", "--target", "t", "--tag", "=x"],
        ]
        .concat();
        assert!(parse(&bad_tag).is_err());
    }

    #[test]
    fn parses_lifecycle_commands() {
        for cmd in [
            "get",
            "activate",
            "deactivate",
            "destroy",
            "delete",
            "compromise",
            "mark-compromised",
        ] {
            assert!(parse(&["key", cmd, "k"]).is_ok(), "{cmd}");
        }
        assert_eq!(
            parse(&["key", "install", "k", "--keystore", "ks"]).expect("ok"),
            KeyCommand::Install {
                id: "k".into(),
                keystore: "ks".into()
            }
        );
        assert!(parse(&["key", "uninstall", "k"]).is_err());
        assert_eq!(
            parse(&["key", "update", "k", "--tag", "a=b", "--replace-tags"]).expect("ok"),
            KeyCommand::Update {
                id: "k".into(),
                name: None,
                description: None,
                tags: vec![Tag {
                    key: "a".into(),
                    value: "b".into()
                }],
                replace_tags: true
            }
        );
        assert!(matches!(
            parse(&["key", "list", "--state", "pre-active", "--algorithm", "ec"]).expect("ok"),
            KeyCommand::List {
                state: Some(KeyStateArg::PreActive),
                algorithm: Some(KeyAlgorithmArg::Ec),
                ..
            }
        ));
    }

    #[test]
    fn renders_a_record() {
        assert_eq!(
            render(OutputFormat::Table, &sample()),
            "id: k-1\nvault_id: v-1\nname: db-master\ndescription: dek wrapper\n\
             algorithm: AES\nkey_size_bits: 256\nstate: ACTIVE\n\
             key_check_value: 0011223344556677\ntarget_keystore_ids: ks-1, ks-2\n\
             tags: env=prod, team=pay\n\
             instance: ks-1 INSTALLED remote_ref=keyorch-k-1 updated_at=2023-11-14T22:15:00Z\n\
             instance: ks-2 UNAVAILABLE error=\"keystore not connected\"\n\
             created_at: 2023-11-14T22:13:20Z\nupdated_at: 2023-11-14T22:15:00Z\n\
             activated_at: 2023-11-14T22:15:00Z\n"
        );
    }

    #[test]
    fn renders_json() {
        let v: Value = serde_json::from_str(&render(OutputFormat::Json, &sample())).expect("json");
        assert_eq!(v["state"], "KEY_STATE_ACTIVE");
        assert_eq!(v["algorithm"], "KEY_ALGORITHM_AES");
        assert_eq!(v["key_size_bits"], 256);
        assert_eq!(v["tags"], json!({"env": "prod", "team": "pay"}));
        assert_eq!(v["instances"][0]["state"], "INSTANCE_STATE_INSTALLED");
        assert_eq!(v["instances"][1]["updated_at"], Value::Null);
        assert_eq!(v["target_keystore_ids"], json!(["ks-1", "ks-2"]));
        assert_eq!(v["destroyed_at"], Value::Null);
    }

    #[test]
    fn renders_lists() {
        assert_eq!(
            render_list(OutputFormat::Table, &[sample()], ""),
            "ID   NAME       ALGORITHM  SIZE  STATE   INSTALLED  VAULT_ID\n\
             k-1  db-master  AES        256   ACTIVE  1/2        v-1\n"
        );
        let v: Value =
            serde_json::from_str(&render_list(OutputFormat::Json, &[sample()], "")).expect("json");
        assert_eq!(v["keys"][0]["id"], "k-1");
        assert_eq!(v["next_page_token"], "");
    }
}
