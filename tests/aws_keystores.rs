//! aws_kms keystores through the real keyorchd binary: BYOK install into a real AWS KMS
//! emulator (LocalStack's KMS on a loopback port, started and stopped here), the keystore
//! rules of DESIGN §2 for this type, deactivation as DisableKey, drift and repair, the
//! reconciler after a crash, faults, and the secret access key never leaking.
//!
//! LocalStack accepts any credentials and enforces no permissions, so the tests of a wrong
//! secret, of denied permissions and of a server that never answers point the keystore at
//! `Canned` (tests/common/aws.rs): a loopback fake that answers every KMS request with the
//! exception bodies and HTTP statuses AWS KMS documents for those cases (JSON 1.1 protocol,
//! `__type` + `message`), nothing else.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeyState as AwsKeyState, MacAlgorithmSpec, OriginType};
use common::aws::{read_only, silent, wrong_secret, Canned, LocalStack, REGION};
use common::*;
use keyorch::client::Clients;
use keyorch::proto::v1::{
    create_keystore_request, AwsKmsCredentials, AwsKmsKeystoreConfig, ConnectKeystoreRequest,
    ConnectionErrorCode, ConnectionState, CreateKeystoreRequest, DisconnectKeystoreRequest,
    GenerateMacRequest, HealthStatus, InstallKeyRequest, InstanceState, Key, KeyAlgorithm,
    KeyState, Keystore, KeystoreType, ListEventsRequest, SyncStatus, TargetKeyStatus,
    TestKeystoreConnectionRequest, TestKeystoreConnectionResponse, UpdateKeystoreRequest, Vault,
};
use tonic::Code;

/// The secret access key of every keystore here: a canary that must never come back.
const SECRET: &str = "Canary-AWS-secret-7Hq2Xv9LmP4kR8sT1wZ5";
const ACCESS_KEY_ID: &str = "AKIAKEYORCHTEST00001";
/// LocalStack's account.
const ACCOUNT: &str = "000000000000";

fn aws_keystore_req(
    vault_id: &str,
    name: &str,
    endpoint: &str,
    secret: &str,
    connect: bool,
) -> CreateKeystoreRequest {
    CreateKeystoreRequest {
        vault_id: vault_id.into(),
        name: name.into(),
        description: String::new(),
        r#type: KeystoreType::AwsKms as i32,
        connect,
        config: Some(create_keystore_request::Config::AwsKms(
            AwsKmsKeystoreConfig {
                region: REGION.into(),
                endpoint_url: endpoint.into(),
                access_key_id: ACCESS_KEY_ID.into(),
                account_id: String::new(),
            },
        )),
        credentials: Some(create_keystore_request::Credentials::AwsKmsCredentials(
            AwsKmsCredentials {
                secret_access_key: secret.into(),
            },
        )),
    }
}

fn aws_config(ks: &Keystore) -> AwsKmsKeystoreConfig {
    match &ks.config {
        Some(keyorch::proto::v1::keystore::Config::AwsKms(c)) => c.clone(),
        other => panic!("not an aws_kms keystore: {other:?}"),
    }
}

async fn test_stored(c: &mut Clients, id: &str) -> TestKeystoreConnectionResponse {
    ok(c.keystores
        .test_keystore_connection(TestKeystoreConnectionRequest {
            subject: Some(
                keyorch::proto::v1::test_keystore_connection_request::Subject::Id(id.into()),
            ),
        }))
    .await
}

async fn connect(c: &mut Clients, id: &str) -> Keystore {
    ok(c.keystores
        .connect_keystore(ConnectKeystoreRequest { id: id.into() }))
    .await
}

async fn disconnect(c: &mut Clients, id: &str) -> Keystore {
    ok(c.keystores.disconnect_keystore(DisconnectKeystoreRequest {
        id: id.into(),
        uninstall_keys: false,
        force: true,
    }))
    .await
}

/// The KMS key under keyorch's alias for `key_id`, as LocalStack describes it.
async fn aws_key(
    kms: &aws_sdk_kms::Client,
    key_id_: &str,
) -> Option<aws_sdk_kms::types::KeyMetadata> {
    kms.describe_key()
        .key_id(format!("alias/{}", target_label(key_id_)))
        .send()
        .await
        .ok()
        .and_then(|o| o.key_metadata)
}

async fn aws_state(kms: &aws_sdk_kms::Client, arn: &str) -> AwsKeyState {
    kms.describe_key()
        .key_id(arn)
        .send()
        .await
        .expect("DescribeKey")
        .key_metadata
        .and_then(|m| m.key_state)
        .expect("a key state")
}

/// A daemon, a vault, an internal keystore and an aws_kms keystore on a fresh LocalStack.
struct World {
    d: TestDaemon,
    c: Clients,
    ls: LocalStack,
    kms: aws_sdk_kms::Client,
    vault_id: String,
    internal_id: String,
    aws: Keystore,
}

async fn world() -> World {
    let ls = LocalStack::start();
    let kms = ls.client();
    // A key of someone else's, so that the account shows in ARNs from the first connect.
    kms.create_key()
        .description("not keyorch's")
        .send()
        .await
        .expect("CreateKey in LocalStack");
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let vault = create_vault(&mut c, "v").await;
    let internal = create_keystore(&mut c, &vault.id, "own", true).await;
    let aws = ok(c.keystores.create_keystore(aws_keystore_req(
        &vault.id,
        "aws",
        &ls.endpoint(),
        SECRET,
        true,
    )))
    .await;
    World {
        d,
        c,
        ls,
        kms,
        vault_id: vault.id,
        internal_id: internal.id,
        aws,
    }
}

impl World {
    async fn key(&mut self, name: &str, alg: KeyAlgorithm, bits: u32, targets: &[&str]) -> Key {
        create_key(&mut self.c, &self.vault_id, name, alg, bits, targets, false).await
    }
}

#[tokio::test]
async fn keys_are_imported_into_aws_kms_intact_and_follow_the_lifecycle() {
    let mut w = world().await;
    let mut c = w.c.clone();
    let aid = w.aws.id.clone();
    let iid = w.internal_id.clone();

    // The keystore: CONNECTED, bound to LocalStack's account, the secret never shown.
    assert_connection(&w.aws, ConnectionState::Connected);
    let cfg = aws_config(&w.aws);
    assert_eq!(cfg.region, REGION);
    assert_eq!(cfg.account_id, ACCOUNT, "{cfg:?}");
    assert_eq!(cfg.access_key_id, ACCESS_KEY_ID);
    assert!(w.aws.has_credentials);
    let t = test_stored(&mut c, &aid).await;
    assert!(t.ok && t.denied_permissions.is_empty(), "{t:?}");

    // HMAC-SHA256: the MAC AWS KMS computes equals the one keyorch's HSM computes.
    let hmac = w
        .key("mac", KeyAlgorithm::HmacSha256, 256, &[&iid, &aid])
        .await;
    let hmac = ok(c.keys.activate_key(key_id(&hmac.id))).await;
    let inst = instance(&hmac, &aid);
    assert_eq!(inst.state, InstanceState::Installed as i32, "{inst:?}");
    let arn = inst.remote_id.clone();
    assert!(
        arn.starts_with(&format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/")),
        "{inst:?}"
    );
    let msg = b"keyorch to AWS KMS, HMAC check".to_vec();
    let ours = ok(c.crypto.generate_mac(GenerateMacRequest {
        key_id: hmac.id.clone(),
        message: msg.clone(),
    }))
    .await
    .mac;
    let theirs = w
        .kms
        .generate_mac()
        .key_id(&arn)
        .message(Blob::new(msg))
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .send()
        .await
        .expect("GenerateMac in AWS KMS")
        .mac
        .expect("a MAC")
        .into_inner();
    assert_eq!(ours, theirs, "AWS KMS holds other HMAC material");

    // AES-256: imported, EXTERNAL, Enabled, and usable in AWS KMS.
    let aes = w.key("aes", KeyAlgorithm::Aes, 256, &[&aid]).await;
    let aes = ok(c.keys.activate_key(key_id(&aes.id))).await;
    let aes_arn = instance(&aes, &aid).remote_id;
    let meta = aws_key(&w.kms, &aes.id)
        .await
        .expect("a key under the alias");
    assert_eq!(meta.arn(), Some(aes_arn.as_str()));
    assert_eq!(meta.origin(), Some(&OriginType::External));
    assert_eq!(meta.key_state(), Some(&AwsKeyState::Enabled));
    let ct = w
        .kms
        .encrypt()
        .key_id(&aes_arn)
        .plaintext(Blob::new(b"secret payload".to_vec()))
        .send()
        .await
        .expect("Encrypt in AWS KMS")
        .ciphertext_blob
        .expect("a ciphertext");
    let pt = w
        .kms
        .decrypt()
        .ciphertext_blob(ct.clone())
        .send()
        .await
        .expect("Decrypt in AWS KMS")
        .plaintext
        .expect("a plaintext")
        .into_inner();
    assert_eq!(pt, b"secret payload");
    let tags = w
        .kms
        .list_resource_tags()
        .key_id(&aes_arn)
        .send()
        .await
        .expect("ListResourceTags");
    assert!(
        tags.tags()
            .iter()
            .any(|t| t.tag_key() == "keyorch:key-id" && t.tag_value() == aes.id),
        "{tags:?}"
    );
    assert_status_is(
        &status_in(&mut c, &aes.id, &aid).await,
        TargetKeyStatus::Active,
        SyncStatus::Ok,
    );

    // Deactivate → DisableKey (material kept); reactivate → the same AWS key, enabled.
    let off = ok(c.keys.deactivate_key(key_id(&aes.id))).await;
    assert_key_state(&off, KeyState::Deactivated);
    assert_eq!(instance(&off, &aid).state, InstanceState::Disabled as i32);
    assert_eq!(aws_state(&w.kms, &aes_arn).await, AwsKeyState::Disabled);
    assert!(w
        .kms
        .decrypt()
        .ciphertext_blob(ct.clone())
        .send()
        .await
        .is_err());
    assert_status_is(
        &status_in(&mut c, &aes.id, &aid).await,
        TargetKeyStatus::NotActive,
        SyncStatus::Ok,
    );
    let on = ok(c.keys.activate_key(key_id(&aes.id))).await;
    assert_eq!(instance(&on, &aid).state, InstanceState::Installed as i32);
    assert_eq!(
        instance(&on, &aid).remote_id,
        aes_arn,
        "reactivation kept the ARN"
    );
    assert_eq!(aws_state(&w.kms, &aes_arn).await, AwsKeyState::Enabled);
    w.kms
        .decrypt()
        .ciphertext_blob(ct.clone())
        .send()
        .await
        .expect("old ciphertexts decrypt again after reactivation");

    // Drift: disabled behind keyorch's back → out of sync; SyncKey enables it again.
    w.kms.disable_key().key_id(&aes_arn).send().await.unwrap();
    let s = status_in(&mut c, &aes.id, &aid).await;
    assert_status_is(&s, TargetKeyStatus::NotActive, SyncStatus::OutOfSync);
    assert!(s.message.contains("disabled"), "{s:?}");
    ok(c.keys.sync_key(key_id(&aes.id))).await;
    assert_eq!(aws_state(&w.kms, &aes_arn).await, AwsKeyState::Enabled);
    // Drift: the alias deleted → not_present; SyncKey installs a new copy.
    w.kms
        .delete_alias()
        .alias_name(format!("alias/{}", target_label(&aes.id)))
        .send()
        .await
        .unwrap();
    assert_status_is(
        &status_in(&mut c, &aes.id, &aid).await,
        TargetKeyStatus::NotPresent,
        SyncStatus::OutOfSync,
    );
    ok(c.keys.sync_key(key_id(&aes.id))).await;
    let synced = get_key(&mut c, &aes.id).await;
    let new_arn = instance(&synced, &aid).remote_id;
    assert!(!new_arn.is_empty() && new_arn != aes_arn, "{synced:?}");
    assert_status_is(
        &status_in(&mut c, &aes.id, &aid).await,
        TargetKeyStatus::Active,
        SyncStatus::Ok,
    );
    // Drift: the alias re-pointed at a key keyorch did not make → wrong_key, left alone.
    let foreign = w
        .kms
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    w.kms
        .update_alias()
        .alias_name(format!("alias/{}", target_label(&aes.id)))
        .target_key_id(foreign.key_id())
        .send()
        .await
        .unwrap();
    let s = status_in(&mut c, &aes.id, &aid).await;
    assert_status_is(&s, TargetKeyStatus::WrongKey, SyncStatus::OutOfSync);
    assert!(s.message.contains(foreign.key_id()), "{s:?}");
    let e = fails(c.keys.sync_key(key_id(&aes.id))).await;
    assert!(e.message().contains("did not make"), "{}", describe(&e));
    assert_eq!(
        aws_state(&w.kms, foreign.key_id()).await,
        AwsKeyState::Enabled,
        "a foreign key is never touched"
    );
    w.kms
        .delete_alias()
        .alias_name(format!("alias/{}", target_label(&aes.id)))
        .send()
        .await
        .unwrap();
    w.kms
        .create_alias()
        .alias_name(format!("alias/{}", target_label(&aes.id)))
        .target_key_id(&new_arn)
        .send()
        .await
        .unwrap();
    assert_status_is(
        &status_in(&mut c, &aes.id, &aid).await,
        TargetKeyStatus::Active,
        SyncStatus::Ok,
    );

    // UninstallKey: DeleteImportedKeyMaterial + ScheduleKeyDeletion, alias gone.
    let u = ok(c.keys.uninstall_key(InstallKeyRequest {
        id: hmac.id.clone(),
        keystore_id: aid.clone(),
    }))
    .await;
    assert!(u.instances.iter().all(|i| i.keystore_id != aid), "{u:?}");
    assert_eq!(aws_state(&w.kms, &arn).await, AwsKeyState::PendingDeletion);
    assert!(aws_key(&w.kms, &hmac.id).await.is_none());

    // Destroy: the copy left in AWS KMS goes too.
    ok(c.keys.deactivate_key(key_id(&aes.id))).await;
    let gone = ok(c.keys.destroy_key(key_id(&aes.id))).await;
    assert_key_state(&gone, KeyState::Destroyed);
    assert_eq!(
        aws_state(&w.kms, &new_arn).await,
        AwsKeyState::PendingDeletion
    );

    // The secret access key never appears in a response, an audit event, the logs (trace)
    // or the store's files.
    let ks = get_keystore(&mut c, &aid).await;
    assert!(!format!("{ks:?}").contains(SECRET));
    let events = ok(c.audit.list_events(ListEventsRequest::default())).await;
    assert!(!events.events.is_empty());
    assert!(!format!("{events:?}").contains(SECRET));
    assert!(!w.d.logs().contains(SECRET), "the secret is in the logs");
    for file in walk_files(&w.d.state_dir()) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !contains_bytes(&bytes, SECRET.as_bytes()),
            "the secret is in {}",
            file.display()
        );
    }
    drop(w.ls);
}

#[tokio::test]
async fn keys_aws_cannot_import_are_refused_before_anything_is_sent() {
    let w = world().await;
    let mut c = w.c.clone();
    let aid = w.aws.id.clone();
    let iid = w.internal_id.clone();
    let count = |kms: aws_sdk_kms::Client| async move {
        kms.list_keys().send().await.unwrap().keys().len()
    };
    let before = count(w.kms.clone()).await;
    for (alg, bits) in [
        (KeyAlgorithm::Aes, 128),
        (KeyAlgorithm::Aes, 192),
        (KeyAlgorithm::Rsa, 2048),
        (KeyAlgorithm::Ec, 256),
    ] {
        let s = fails(
            c.keys
                .create_key(key_req(&w.vault_id, "nope", alg, bits, &[&aid], true)),
        )
        .await;
        let info = assert_invalid(&s, "target_keystore_ids");
        assert!(s.message().contains("AWS KMS"), "{}", describe(&s));
        drop(info);
    }
    // An RSA key active in the internal keystore cannot be installed there either.
    let rsa = create_key(
        &mut c,
        &w.vault_id,
        "rsa",
        KeyAlgorithm::Rsa,
        2048,
        &[&iid],
        true,
    )
    .await;
    let s = fails(c.keys.install_key(InstallKeyRequest {
        id: rsa.id.clone(),
        keystore_id: aid.clone(),
    }))
    .await;
    assert_invalid(&s, "keystore_id");
    assert!(s.message().contains("RSA-2048"), "{}", describe(&s));
    assert_eq!(
        count(w.kms.clone()).await,
        before,
        "nothing was sent to AWS KMS"
    );
    let rsa = get_key(&mut c, &rsa.id).await;
    assert!(rsa.instances.iter().all(|i| i.keystore_id != aid));
}

#[tokio::test]
async fn keystore_rules_for_region_account_endpoint_and_credentials() {
    let w = world().await;
    let mut c = w.c.clone();
    let aid = w.aws.id.clone();
    let update = |patch: AwsKmsKeystoreConfig| UpdateKeystoreRequest {
        id: aid.clone(),
        aws_kms: Some(patch),
        ..Default::default()
    };
    let region = |r: &str| AwsKmsKeystoreConfig {
        region: r.into(),
        ..Default::default()
    };

    // Bad input on create: each field named, nothing stored.
    let before = snapshot(&c).await;
    let base = || aws_keystore_req(&w.vault_id, "bad", "http://127.0.0.1:9", SECRET, false);
    let with = |edit: fn(&mut AwsKmsKeystoreConfig)| {
        let mut r = base();
        if let Some(create_keystore_request::Config::AwsKms(cfg)) = &mut r.config {
            edit(cfg);
        }
        r
    };
    let mut bad = vec![
        (with(|c| c.region = "Mars-1".into()), "aws_kms.region"),
        (
            with(|c| c.endpoint_url = "http://kms.example.com".into()),
            "aws_kms.endpoint_url",
        ),
        (
            with(|c| c.access_key_id = "has space".into()),
            "aws_kms.access_key_id",
        ),
        (
            with(|c| c.account_id = "123456789012".into()),
            "aws_kms.account_id",
        ),
    ];
    let mut r = base();
    r.credentials = None;
    bad.push((r, "aws_kms_credentials.secret_access_key"));
    let mut r = base();
    r.credentials = Some(create_keystore_request::Credentials::AwsKmsCredentials(
        AwsKmsCredentials {
            secret_access_key: format!("{SECRET} with spaces"),
        },
    ));
    bad.push((r, "aws_kms_credentials.secret_access_key"));
    let mut r = base();
    r.credentials = Some(create_keystore_request::Credentials::Pkcs11Credentials(
        keyorch::proto::v1::Pkcs11Credentials {
            pin: "1234-abcd".into(),
        },
    ));
    bad.push((r, "pkcs11_credentials.pin"));
    for (req, field) in bad {
        let s = fails(c.keystores.create_keystore(req)).await;
        assert_invalid(&s, field);
        assert!(!s.message().contains(SECRET), "{}", describe(&s));
    }
    assert_unchanged(&before, &snapshot(&c).await, "bad aws_kms creates");

    // Region and account are locked after the first connect.
    let s = fails(c.keystores.update_keystore(update(region("eu-west-1")))).await;
    assert_invalid(&s, "aws_kms.region");
    let s = fails(c.keystores.update_keystore(update(AwsKmsKeystoreConfig {
        account_id: "123456789012".into(),
        ..Default::default()
    })))
    .await;
    assert_invalid(&s, "aws_kms.account_id");
    // The endpoint is connection configuration: only while DISCONNECTED.
    let s = fails(c.keystores.update_keystore(update(AwsKmsKeystoreConfig {
        endpoint_url: w.ls.endpoint() + "/",
        ..Default::default()
    })))
    .await;
    assert_status(&s, Code::FailedPrecondition, KEYSTORE_INVALID_STATE);
    // Both halves of the credential pair travel together.
    let s = fails(c.keystores.update_keystore(update(AwsKmsKeystoreConfig {
        access_key_id: "AKIAOTHER".into(),
        ..Default::default()
    })))
    .await;
    assert_invalid(&s, "aws_kms.access_key_id");
    assert_unchanged(&before, &snapshot(&c).await, "refused aws_kms updates");
    let ks = ok(c.keystores.update_keystore(UpdateKeystoreRequest {
        id: aid.clone(),
        aws_kms: Some(AwsKmsKeystoreConfig {
            access_key_id: "AKIAOTHER".into(),
            ..Default::default()
        }),
        aws_kms_credentials: Some(AwsKmsCredentials {
            secret_access_key: format!("{SECRET}2"),
        }),
        ..Default::default()
    }))
    .await;
    assert_eq!(aws_config(&ks).access_key_id, "AKIAOTHER");
    assert!(!format!("{ks:?}").contains(SECRET));

    // A keystore that never connected may still move region; DISCONNECTED takes a new endpoint.
    let fresh = ok(c.keystores.create_keystore(aws_keystore_req(
        &w.vault_id,
        "fresh",
        &w.ls.endpoint(),
        SECRET,
        false,
    )))
    .await;
    let moved = ok(c.keystores.update_keystore(UpdateKeystoreRequest {
        id: fresh.id.clone(),
        aws_kms: Some(region("eu-west-1")),
        ..Default::default()
    }))
    .await;
    assert_eq!(aws_config(&moved).region, "eu-west-1");
    assert_eq!(aws_config(&moved).account_id, "");
    let cleared = ok(c.keystores.update_keystore(UpdateKeystoreRequest {
        id: fresh.id.clone(),
        aws_kms_clear_endpoint_url: true,
        ..Default::default()
    }))
    .await;
    assert_eq!(aws_config(&cleared).endpoint_url, "");

    // Disconnect cuts use of its keys; connect restores it.
    let aes = create_key(
        &mut c,
        &w.vault_id,
        "aes",
        KeyAlgorithm::Aes,
        256,
        &[&aid],
        true,
    )
    .await;
    disconnect(&mut c, &aid).await;
    let s = fails(c.crypto.encrypt(encrypt_req(&aes.id, b"x", b""))).await;
    assert_eq!(s.code(), Code::FailedPrecondition, "{}", describe(&s));
    let seen = get_key(&mut c, &aes.id).await;
    assert_eq!(
        instance(&seen, &aid).state,
        InstanceState::Unavailable as i32
    );
    assert_connection(&connect(&mut c, &aid).await, ConnectionState::Connected);
    encrypt(&mut c, &aes.id, b"x", b"").await;

    // The CLI: the secret from a file, the record without it.
    let secret_file = w.d.root().join("aws-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let out = run_ok(
        std::process::Command::new(TestDaemon::cli_binary())
            .arg("--socket")
            .arg(w.d.socket())
            .args(["-o", "json", "keystore", "create", "--vault", &w.vault_id])
            .args(["--name", "from-cli", "--type", "aws-kms", "--connect"])
            .args(["--region", REGION, "--endpoint-url", &w.ls.endpoint()])
            .args(["--access-key-id", ACCESS_KEY_ID, "--secret-access-key-file"])
            .arg(&secret_file),
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect(&out);
    assert_eq!(v["connection_state"], "CONNECTION_STATE_CONNECTED", "{out}");
    assert_eq!(v["config"]["aws_kms"]["account_id"], ACCOUNT, "{out}");
    assert_eq!(v["has_credentials"], true, "{out}");
    assert!(!out.contains(SECRET), "{out}");
}

#[tokio::test]
async fn credential_permission_and_network_faults_are_classified_and_recoverable() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let vault = create_vault(&mut c, "v").await;

    // A wrong secret: AWS answers InvalidSignatureException.
    let bad = Canned::start(wrong_secret);
    let ks = ok(c.keystores.create_keystore(aws_keystore_req(
        &vault.id,
        "wrong-secret",
        &bad.endpoint(),
        SECRET,
        true,
    )))
    .await;
    assert_failed_with(&ks, ConnectionErrorCode::InvalidCredentials);
    assert!(!ks.connection_error_message.contains(SECRET));

    // Read-only credentials: FAILED with the missing permissions named; the test lists them.
    let ro = Canned::start(read_only);
    let ks = ok(c.keystores.create_keystore(aws_keystore_req(
        &vault.id,
        "read-only",
        &ro.endpoint(),
        SECRET,
        true,
    )))
    .await;
    assert_failed_with(&ks, ConnectionErrorCode::InsufficientPermissions);
    assert!(
        ks.connection_error_message.contains("ImportKeyMaterial"),
        "{ks:?}"
    );
    let t = test_stored(&mut c, &ks.id).await;
    assert!(!t.ok);
    assert_eq!(
        t.error_code,
        ConnectionErrorCode::InsufficientPermissions as i32
    );
    for p in [
        "GetParametersForImport",
        "ImportKeyMaterial",
        "CreateAlias",
        "ScheduleKeyDeletion",
    ] {
        assert!(t.denied_permissions.iter().any(|d| d == p), "{p}: {t:?}");
    }
    for p in ["ListKeys", "ListAliases", "DescribeKey"] {
        assert!(!t.denied_permissions.iter().any(|d| d == p), "{p}: {t:?}");
    }

    // A server that never answers: TIMED_OUT, within the call deadline.
    let mute = Canned::start(silent);
    let started = Instant::now();
    let ks = ok(c.keystores.create_keystore(aws_keystore_req(
        &vault.id,
        "silent",
        &mute.endpoint(),
        SECRET,
        true,
    )))
    .await;
    assert_failed_with(&ks, ConnectionErrorCode::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    // The emulator stopped: NETWORK_ERRORS at once; back again, Disconnect + Connect recovers.
    let ls = LocalStack::start();
    let ks = ok(c.keystores.create_keystore(aws_keystore_req(
        &vault.id,
        "emulator",
        &ls.endpoint(),
        SECRET,
        true,
    )))
    .await;
    assert_connection(&ks, ConnectionState::Connected);
    ls.stop();
    let started = Instant::now();
    let t = test_stored(&mut c, &ks.id).await;
    assert_eq!(
        t.error_code,
        ConnectionErrorCode::NetworkErrors as i32,
        "{t:?}"
    );
    disconnect(&mut c, &ks.id).await;
    let failed = connect(&mut c, &ks.id).await;
    assert_failed_with(&failed, ConnectionErrorCode::NetworkErrors);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    ls.run_start();
    disconnect(&mut c, &ks.id).await;
    assert_connection(&connect(&mut c, &ks.id).await, ConnectionState::Connected);
    assert!(bad.requests() > 0 && ro.requests() > 0 && mute.requests() > 0);
}

#[tokio::test]
async fn a_crash_in_the_middle_of_an_aws_install_is_settled_at_start_up() {
    let mut w = world().await;
    let aid = w.aws.id.clone();
    let iid = w.internal_id.clone();
    let active = create_key(
        &mut w.c,
        &w.vault_id,
        "active",
        KeyAlgorithm::HmacSha256,
        256,
        &[&iid],
        true,
    )
    .await;
    let pending = w.key("pending", KeyAlgorithm::Aes, 256, &[&aid]).await;

    // InstallKey of an ACTIVE key dies after AWS KMS holds the material: rolled forward.
    w.d.restart_with_env(&[("KEYORCH_FAILPOINT", "install.target_done")])
        .await;
    let mut c = w.d.clients();
    fails(c.keys.install_key(InstallKeyRequest {
        id: active.id.clone(),
        keystore_id: aid.clone(),
    }))
    .await;
    let status = w.d.wait_for_exit(Duration::from_secs(20)).await;
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status}");
    // ActivateKey dies at the same step: the activation never committed, so rolled back.
    w.d.restart_with_env(&[("KEYORCH_FAILPOINT", "install.target_done")])
        .await;
    let mut c2 = w.d.clients();
    fails(c2.keys.activate_key(key_id(&pending.id))).await;
    let status = w.d.wait_for_exit(Duration::from_secs(20)).await;
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status}");
    let half_done = aws_key(&w.kms, &pending.id)
        .await
        .expect("the crash left a key in AWS KMS");
    w.d.restart_with_env(&[]).await;
    let mut c = w.d.clients();

    let k = get_key(&mut c, &active.id).await;
    let inst = instance(&k, &aid);
    assert_eq!(inst.state, InstanceState::Installed as i32, "{k:?}");
    let meta = aws_key(&w.kms, &active.id).await.expect("kept in AWS KMS");
    assert_eq!(meta.arn(), Some(inst.remote_id.as_str()));
    assert_status_is(
        &status_in(&mut c, &active.id, &aid).await,
        TargetKeyStatus::Active,
        SyncStatus::Ok,
    );

    let k = get_key(&mut c, &pending.id).await;
    assert_key_state(&k, KeyState::PreActive);
    assert_eq!(instance(&k, &aid).state, InstanceState::NotInstalled as i32);
    assert!(
        aws_key(&w.kms, &pending.id).await.is_none(),
        "alias removed"
    );
    assert_eq!(
        aws_state(&w.kms, half_done.key_id()).await,
        AwsKeyState::PendingDeletion
    );
    // And the interrupted activation, made again, completes.
    let k = ok(c.keys.activate_key(key_id(&pending.id))).await;
    assert_eq!(instance(&k, &aid).state, InstanceState::Installed as i32);
}

/// Issue 16's faults between keyorchd and AWS: a loopback proxy (tests/common/fault_proxy.rs)
/// in front of LocalStack drops connections, answers 503 or 500 itself, or holds every
/// request longer than the 10 s call deadline. For each: TestKeystoreConnection names the
/// documented code, an InstallKey fails with it within the deadline and leaves the instance
/// neither INSTALLED nor pending, a reconnect is FAILED with the code, and nothing already
/// installed is lost; once the fault is gone, disconnect + connect recovers and the same
/// install completes, with the material intact in AWS.
#[tokio::test]
async fn faults_between_keyorchd_and_aws_are_classified_bounded_and_recovered() {
    use common::fault_proxy::Fault;
    // The SDK's own deadline (10 s, retries included) plus keyorchd's and the test's work.
    const BOUND: Duration = Duration::from_secs(16);
    let FaultWorld {
        _ls,
        proxy,
        d,
        mut c,
        vault,
        internal,
        aws,
    } = fault_world(None).await;
    let first = create_key(
        &mut c,
        &vault.id,
        "installed-before",
        KeyAlgorithm::Aes,
        256,
        &[&internal.id, &aws.id],
        true,
    )
    .await;
    assert_eq!(
        instance(&first, &aws.id).state,
        InstanceState::Installed as i32
    );

    let cases = [
        (Fault::Drop, ConnectionErrorCode::NetworkErrors),
        (Fault::Status(503), ConnectionErrorCode::InternalError),
        (Fault::Status(500), ConnectionErrorCode::InternalError),
        (
            Fault::Delay(Duration::from_secs(12)),
            ConnectionErrorCode::TimedOut,
        ),
    ];
    for (i, (fault, code)) in cases.into_iter().enumerate() {
        let key = create_key(
            &mut c,
            &vault.id,
            &format!("k{i}"),
            KeyAlgorithm::Aes,
            256,
            &[&internal.id],
            true,
        )
        .await;
        let faulted = proxy.faulted();
        proxy.set(fault);

        let started = Instant::now();
        let t = test_stored(&mut c, &aws.id).await;
        assert!(!t.ok, "{fault:?}: {t:?}");
        assert_eq!(t.error_code, code as i32, "{fault:?}: {t:?}");
        assert!(
            started.elapsed() < BOUND,
            "{fault:?}: test took {:?}",
            started.elapsed()
        );
        assert!(!t.message.contains(SECRET));

        // An install that fails makes one more call, to remove what it may have left in
        // AWS: against an endpoint that never answers, that is two call deadlines.
        let bound = match fault {
            Fault::Delay(_) => BOUND + Duration::from_secs(10),
            _ => BOUND,
        };
        let started = Instant::now();
        let s = fails(c.keys.install_key(InstallKeyRequest {
            id: key.id.clone(),
            keystore_id: aws.id.clone(),
        }))
        .await;
        assert!(
            started.elapsed() < bound,
            "{fault:?}: install took {:?}",
            started.elapsed()
        );
        assert!(!s.message().contains(SECRET), "{s:?}");
        eprintln!("{fault:?}: InstallKey: {}", describe(&s));
        let after = get_key(&mut c, &key.id).await;
        let state = after
            .instances
            .iter()
            .find(|i| i.keystore_id == aws.id)
            .map(|i| i.state);
        assert!(
            !matches!(
                state.and_then(|s| InstanceState::try_from(s).ok()),
                Some(
                    InstanceState::Installed
                        | InstanceState::Installing
                        | InstanceState::Uninstalling
                )
            ),
            "{fault:?}: the failed install left {state:?}: {after:?}"
        );
        // The key installed before is still recorded as installed.
        assert_eq!(
            instance(&get_key(&mut c, &first.id).await, &aws.id).state,
            InstanceState::Installed as i32,
            "{fault:?}"
        );

        disconnect(&mut c, &aws.id).await;
        let started = Instant::now();
        let failed = connect(&mut c, &aws.id).await;
        assert_failed_with(&failed, code);
        assert!(
            started.elapsed() < BOUND,
            "{fault:?}: connect took {:?}",
            started.elapsed()
        );
        assert!(proxy.faulted() > faulted, "{fault:?} was never applied");

        // The fault gone: disconnect + connect, and the same install completes.
        proxy.set(Fault::None);
        disconnect(&mut c, &aws.id).await;
        assert_connection(&connect(&mut c, &aws.id).await, ConnectionState::Connected);
        let done = ok(c.keys.install_key(InstallKeyRequest {
            id: key.id.clone(),
            keystore_id: aws.id.clone(),
        }))
        .await;
        assert_eq!(
            instance(&done, &aws.id).state,
            InstanceState::Installed as i32,
            "{fault:?}: {done:?}"
        );
        let s = status_in(&mut c, &key.id, &aws.id).await;
        assert_status_is(&s, TargetKeyStatus::Active, SyncStatus::Ok);
    }
    let logs = d.logs();
    assert!(
        !logs.contains(SECRET),
        "the secret access key is in the logs"
    );
}

/// LocalStack behind the fault-injecting proxy (tests/common/fault_proxy.rs), keyorchd (with
/// `config` added, when given), a vault, a CONNECTED internal keystore and a CONNECTED
/// aws_kms keystore reaching LocalStack through the proxy.
struct FaultWorld {
    _ls: LocalStack,
    proxy: common::fault_proxy::FaultProxy,
    d: TestDaemon,
    c: Clients,
    vault: Vault,
    internal: Keystore,
    aws: Keystore,
}

async fn fault_world(config: Option<&str>) -> FaultWorld {
    let ls = LocalStack::start();
    let upstream: std::net::SocketAddr =
        ls.endpoint().trim_start_matches("http://").parse().unwrap();
    let proxy = common::fault_proxy::FaultProxy::start(upstream);
    let mut d = TestDaemon::start().await;
    if let Some(config) = config {
        d.restart_with_config(config).await;
    }
    let mut c = d.clients();
    let vault = create_vault(&mut c, "v").await;
    let internal = create_keystore(&mut c, &vault.id, "own", true).await;
    let aws = ok(c.keystores.create_keystore(aws_keystore_req(
        &vault.id,
        "aws",
        &proxy.endpoint(),
        SECRET,
        true,
    )))
    .await;
    assert_connection(&aws, ConnectionState::Connected);
    FaultWorld {
        _ls: ls,
        proxy,
        d,
        c,
        vault,
        internal,
        aws,
    }
}

/// Issue 16: an aws_kms keystore that was CONNECTED goes FAILED once its endpoint has failed
/// `[health] failed_after` health checks in a row (here 2, every second), with the checks'
/// code; with `failed_after = 0` it never does, and the health alone reports the fault. The
/// faults come from the fault-injecting proxy in front of LocalStack (tests/common/fault_proxy.rs).
#[tokio::test]
async fn a_connected_aws_keystore_goes_failed_when_its_endpoint_keeps_failing() {
    use common::fault_proxy::Fault;
    let FaultWorld {
        _ls,
        proxy,
        mut d,
        mut c,
        vault,
        internal,
        aws,
    } = fault_world(Some("[health]\ninterval_secs = 1\nfailed_after = 2\n")).await;
    let key = create_key(
        &mut c,
        &vault.id,
        "k",
        KeyAlgorithm::Aes,
        256,
        &[&internal.id, &aws.id],
        true,
    )
    .await;

    proxy.set(Fault::Status(503));
    let failed = wait_keystore(&mut c, &aws.id, Duration::from_secs(60), "FAILED", |k| {
        k.connection_state == ConnectionState::Failed as i32
    })
    .await;
    assert_failed_with(&failed, ConnectionErrorCode::InternalError);
    assert!(
        !failed.connection_error_message.contains(SECRET),
        "{failed:?}"
    );
    // Its copies read UNAVAILABLE and no call reaches it, as when disconnected.
    let k = get_key(&mut c, &key.id).await;
    assert_eq!(
        instance(&k, &aws.id).state,
        InstanceState::Unavailable as i32,
        "{k:?}"
    );
    let s = fails(c.keys.install_key(InstallKeyRequest {
        id: key.id.clone(),
        keystore_id: aws.id.clone(),
    }))
    .await;
    assert_status(
        &s,
        Code::FailedPrecondition,
        "CustomKeyStoreInvalidStateException",
    );

    // The fault gone: disconnect + connect, and the copy is in sync.
    proxy.set(Fault::None);
    disconnect(&mut c, &aws.id).await;
    assert_connection(&connect(&mut c, &aws.id).await, ConnectionState::Connected);
    let st = status_in(&mut c, &key.id, &aws.id).await;
    assert_status_is(&st, TargetKeyStatus::Active, SyncStatus::Ok);

    // failed_after = 0: checks keep failing and the keystore stays CONNECTED.
    d.restart_with_config("[health]\ninterval_secs = 1\nfailed_after = 0\n")
        .await;
    c = d.clients();
    proxy.set(Fault::Drop);
    let first = wait_keystore(
        &mut c,
        &aws.id,
        Duration::from_secs(30),
        "NOT_RESPONDING",
        |k| {
            k.health
                .as_ref()
                .is_some_and(|h| h.status == HealthStatus::NotResponding as i32)
        },
    )
    .await;
    let first_beat = first.health.unwrap().last_heartbeat.unwrap();
    let later = wait_keystore(
        &mut c,
        &aws.id,
        Duration::from_secs(30),
        "checked 3 s later",
        |k| {
            k.health
                .as_ref()
                .and_then(|h| h.last_heartbeat.as_ref())
                .is_some_and(|t| t.seconds >= first_beat.seconds + 3)
        },
    )
    .await;
    assert_connection(&later, ConnectionState::Connected);
    assert_eq!(
        later.health.as_ref().map(|h| h.status),
        Some(HealthStatus::NotResponding as i32),
        "{later:?}"
    );
    proxy.set(Fault::None);
}
