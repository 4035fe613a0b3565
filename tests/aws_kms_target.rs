//! Library-level tests of the `aws_kms` keystore target against a real AWS KMS emulator
//! (LocalStack 4.10.0's KMS, started here on a free loopback port) and a SoftHSM2 token.

// LocalStack is installed on first use into `target/localstack-venv` by
// `scripts/localstack.sh` (1-2 min once; `KEYORCH_LOCALSTACK_VENV` picks another folder). Each
// test that needs it starts its own instance and stops it on drop. LocalStack accepts any
// credentials and enforces no permissions, so the AWS error answers for a wrong secret, an
// unknown access key and a denied action are replayed by a small loopback server with the
// bodies AWS sends, through the same SDK client.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyState, KeyUsageType, MacAlgorithmSpec, OriginType, Tag};
use keyorch::hsm::{GeneratedKey, Hsm, HsmConfig, KeyKind, KeyRef, TokenSelector};
use keyorch::targets::aws_kms::{AwsKmsConfig, AwsKmsTarget, REQUIRED_PERMISSIONS};
use keyorch::targets::TargetError;
use secrecy::SecretString;

mod common;
use common::aws::{
    nothing_allowed, read_only, silent, unknown_access_key, wrong_secret, Answer, Canned,
    LocalStack, REGION,
};
use common::softhsm_tokens;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "aws-pin-3307";
const SO_PIN: &str = "so-pin-6142";
const TOKEN: &str = "keyorch";

// ---------------------------------------------------------------- keyorch's HSM

/// keyorch's own HSM with its master KEK, and one key of each kind the tests install.
struct Own {
    hsm: Hsm,
    keys: HashMap<KeyKind, GeneratedKey>,
}

fn own() -> &'static Own {
    static OWN: OnceLock<Own> = OnceLock::new();
    OWN.get_or_init(|| {
        softhsm_tokens("keyorch-aws-", &[TOKEN], SO_PIN, PIN);
        let hsm = Hsm::open(HsmConfig::new(
            MODULE,
            TokenSelector::Label(TOKEN.to_string()),
            SecretString::from(PIN),
        ))
        .unwrap();
        hsm.master_kek(true).unwrap();
        let keys = [
            KeyKind::Aes256,
            KeyKind::HmacSha256,
            KeyKind::Aes128,
            KeyKind::Rsa2048,
        ]
        .into_iter()
        .map(|kind| (kind, hsm.generate(kind).unwrap()))
        .collect();
        Own { hsm, keys }
    })
}

fn key_ref<'a>(id: &'a str, kind: KeyKind) -> KeyRef<'a> {
    let key = &own().keys[&kind];
    KeyRef {
        id,
        kind,
        wrapped: &key.wrapped,
        spki_der: key.spki_der.as_deref(),
    }
}

fn open_target(endpoint: &str, access_key_id: &str, secret: &str) -> AwsKmsTarget {
    AwsKmsTarget::open(AwsKmsConfig {
        region: REGION.into(),
        endpoint_url: Some(endpoint.into()),
        access_key_id: access_key_id.into(),
        secret_access_key: SecretString::from(secret),
    })
    .unwrap()
}

/// Runs the test's own SDK calls.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

// ---------------------------------------------------------------- tests against LocalStack

#[test]
fn imported_material_is_the_hsm_key_and_install_uninstall_are_idempotent() {
    let ls = LocalStack::start();
    let target = open_target(&ls.endpoint(), "test", "test");
    let hsm = &own().hsm;
    let kms = ls.client();
    let t = Instant::now();
    target.check().unwrap();
    eprintln!("first check: {:?}", t.elapsed());

    // HMAC-SHA256: AWS's MAC over a message is keyorch's HSM's MAC of it.
    let hmac_key = key_ref("hmac-1", KeyKind::HmacSha256);
    let t = Instant::now();
    let hmac_arn = target.install(hsm, &hmac_key, "keyorch-hmac-1").unwrap();
    eprintln!("install HMAC: {:?}", t.elapsed());
    assert!(hmac_arn.starts_with("arn:aws:kms:us-east-1:"), "{hmac_arn}");
    let message = b"keyorch proves the material arrived intact".to_vec();
    let mac = block_on(
        kms.generate_mac()
            .key_id("alias/keyorch-hmac-1")
            .mac_algorithm(MacAlgorithmSpec::HmacSha256)
            .message(Blob::new(message.clone()))
            .send(),
    )
    .unwrap();
    let aws_mac = mac.mac().unwrap().as_ref().to_vec();
    assert_eq!(aws_mac, hsm.hmac(&hmac_key, &message).unwrap());
    assert_eq!(mac.key_id(), Some(hmac_arn.as_str()));

    // Idempotent: the same key again, nothing new made.
    assert_eq!(
        target.install(hsm, &hmac_key, "keyorch-hmac-1").unwrap(),
        hmac_arn
    );
    let remote = target.describe("keyorch-hmac-1").unwrap().unwrap();
    assert_eq!(remote.arn, hmac_arn);
    assert!(remote.enabled && remote.origin_external, "{remote:?}");
    assert_eq!(remote.key_state, "Enabled");

    // AES-256: KMS encrypts and decrypts with the imported material.
    let aes_key = key_ref("aes-1", KeyKind::Aes256);
    let aes_arn = target.install(hsm, &aes_key, "keyorch-aes-1").unwrap();
    let plaintext = b"attack at dawn".to_vec();
    let ciphertext = block_on(
        kms.encrypt()
            .key_id(&aes_arn)
            .plaintext(Blob::new(plaintext.clone()))
            .send(),
    )
    .unwrap()
    .ciphertext_blob
    .unwrap();
    let decrypted = block_on(kms.decrypt().ciphertext_blob(ciphertext.clone()).send()).unwrap();
    assert_eq!(
        decrypted.plaintext().unwrap().as_ref(),
        plaintext.as_slice()
    );
    assert_eq!(decrypted.key_id(), Some(aes_arn.as_str()));
    let meta = block_on(kms.describe_key().key_id(&aes_arn).send())
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(meta.origin(), Some(&OriginType::External));
    assert!(meta.enabled());
    assert_eq!(meta.key_state(), Some(&KeyState::Enabled));
    assert_eq!(meta.key_spec(), Some(&KeySpec::SymmetricDefault));
    let tags = block_on(kms.list_resource_tags().key_id(&aes_arn).send()).unwrap();
    assert!(tags
        .tags()
        .iter()
        .any(|t| t.tag_key() == "keyorch:key-id" && t.tag_value() == "aes-1"));

    // Deactivate and back: the material stays, use is blocked.
    target.set_enabled("keyorch-aes-1", false).unwrap();
    let remote = target.describe("keyorch-aes-1").unwrap().unwrap();
    assert!(!remote.enabled, "{remote:?}");
    assert_eq!(remote.key_state, "Disabled");
    let refused = block_on(
        kms.encrypt()
            .key_id(&aes_arn)
            .plaintext(Blob::new(plaintext.clone()))
            .send(),
    );
    assert!(refused.is_err(), "a disabled key encrypted");
    target.set_enabled("keyorch-aes-1", true).unwrap();
    assert!(target.describe("keyorch-aes-1").unwrap().unwrap().enabled);
    assert!(matches!(
        target.set_enabled("keyorch-absent", true),
        Err(TargetError::TargetNotFound(_))
    ));

    // Uninstall: material deleted, key pending deletion, alias gone; then nothing to do.
    assert!(target.uninstall("keyorch-aes-1").unwrap());
    assert_eq!(target.describe("keyorch-aes-1").unwrap(), None);
    let meta = block_on(kms.describe_key().key_id(&aes_arn).send())
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(meta.key_state(), Some(&KeyState::PendingDeletion));
    // Deleted in 7 days (AWS's shortest window).
    let days = (meta.deletion_date().unwrap().secs() - meta.creation_date().unwrap().secs()) as f64
        / 86_400.0;
    assert!((6.9..7.1).contains(&days), "{days}");
    assert!(block_on(kms.decrypt().ciphertext_blob(ciphertext).send()).is_err());
    assert!(!target.uninstall("keyorch-aes-1").unwrap());
    assert_eq!(target.describe("keyorch-absent").unwrap(), None);
    assert!(!target.uninstall("keyorch-absent").unwrap());

    // Reinstall after uninstall: a new key under the freed alias.
    let again = target.install(hsm, &aes_key, "keyorch-aes-1").unwrap();
    assert_ne!(again, aes_arn);
    assert!(target.uninstall("keyorch-aes-1").unwrap());
    assert!(target.uninstall("keyorch-hmac-1").unwrap());
}

#[test]
fn half_done_work_is_reused_and_foreign_keys_are_left_alone() {
    let ls = LocalStack::start();
    let target = open_target(&ls.endpoint(), "test", "test");
    let hsm = &own().hsm;
    let kms = ls.client();
    let tag = |value: &str| {
        Tag::builder()
            .tag_key("keyorch:key-id")
            .tag_value(value)
            .build()
            .unwrap()
    };

    // A crash after CreateKey + CreateAlias, before the import: install finishes that key.
    let made = block_on(
        kms.create_key()
            .origin(OriginType::External)
            .key_spec(KeySpec::Hmac256)
            .key_usage(KeyUsageType::GenerateVerifyMac)
            .tags(tag("hmac-2"))
            .send(),
    )
    .unwrap()
    .key_metadata
    .unwrap();
    block_on(
        kms.create_alias()
            .alias_name("alias/keyorch-hmac-2")
            .target_key_id(made.key_id())
            .send(),
    )
    .unwrap();
    let pending = target.describe("keyorch-hmac-2").unwrap().unwrap();
    assert_eq!(pending.key_state, "PendingImport");
    assert!(!pending.enabled);
    let key = key_ref("hmac-2", KeyKind::HmacSha256);
    let arn = target.install(hsm, &key, "keyorch-hmac-2").unwrap();
    assert_eq!(Some(arn.as_str()), made.arn());
    let mac = block_on(
        kms.generate_mac()
            .key_id(&arn)
            .mac_algorithm(MacAlgorithmSpec::HmacSha256)
            .message(Blob::new(b"m".to_vec()))
            .send(),
    )
    .unwrap();
    assert_eq!(
        mac.mac().unwrap().as_ref(),
        hsm.hmac(&key, b"m").unwrap().as_slice()
    );

    // A crash after ScheduleKeyDeletion, before DeleteAlias: uninstall drops the alias.
    block_on(
        kms.schedule_key_deletion()
            .key_id(&arn)
            .pending_window_in_days(7)
            .send(),
    )
    .unwrap();
    assert_eq!(target.describe("keyorch-hmac-2").unwrap(), None);
    assert!(!target.uninstall("keyorch-hmac-2").unwrap());
    let aliases = block_on(kms.list_aliases().key_id(&arn).send()).unwrap();
    assert!(aliases.aliases().is_empty(), "{aliases:?}");

    // A key keyorch did not make, under keyorch's alias: neither used nor deleted.
    let foreign = block_on(kms.create_key().send())
        .unwrap()
        .key_metadata
        .unwrap();
    block_on(
        kms.create_alias()
            .alias_name("alias/keyorch-aes-2")
            .target_key_id(foreign.key_id())
            .send(),
    )
    .unwrap();
    let aes = key_ref("aes-2", KeyKind::Aes256);
    match target.install(hsm, &aes, "keyorch-aes-2") {
        Err(TargetError::Internal(msg)) => assert!(msg.contains("did not make"), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        target.uninstall("keyorch-aes-2"),
        Err(TargetError::Internal(_))
    ));
    let meta = block_on(kms.describe_key().key_id(foreign.key_id()).send())
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(meta.key_state(), Some(&KeyState::Enabled));

    // Permission probes change nothing (LocalStack enforces no IAM: nothing is denied).
    let keys_before = block_on(kms.list_keys().send()).unwrap().keys().len();
    assert_eq!(target.denied_permissions().unwrap(), Vec::<String>::new());
    assert_eq!(
        block_on(kms.list_keys().send()).unwrap().keys().len(),
        keys_before
    );
    let aliases = block_on(kms.list_aliases().send()).unwrap();
    assert!(
        aliases
            .aliases()
            .iter()
            .all(|a| !a.alias_name().unwrap_or_default().contains("probe")),
        "{aliases:?}"
    );
}

#[test]
fn an_unreachable_endpoint_fails_fast_as_a_network_error_and_recovers() {
    let ls = LocalStack::start();
    let target = open_target(&ls.endpoint(), "test", "test");
    target.check().unwrap();

    // LocalStack accepts any secret and any access key id (it checks no signature).
    open_target(&ls.endpoint(), "test", "not-the-secret")
        .check()
        .unwrap();
    open_target(&ls.endpoint(), "AKIAUNKNOWNKEY000000", "x")
        .check()
        .unwrap();

    ls.stop();
    let t = Instant::now();
    let e = target.check().unwrap_err();
    let elapsed = t.elapsed();
    assert!(matches!(e, TargetError::Network(_)), "{e:?}");
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
    eprintln!("check with the endpoint down: {elapsed:?}: {e}");
    let hsm = &own().hsm;
    let t = Instant::now();
    let e = target
        .install(hsm, &key_ref("aes-3", KeyKind::Aes256), "keyorch-aes-3")
        .unwrap_err();
    assert!(matches!(e, TargetError::Network(_)), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert!(matches!(
        target.denied_permissions(),
        Err(TargetError::Network(_))
    ));

    ls.run_start();
    target.check().unwrap();
    target
        .install(hsm, &key_ref("aes-3", KeyKind::Aes256), "keyorch-aes-3")
        .unwrap();
}

// ---------------------------------------------------------------- tests with canned answers

#[test]
fn unsupported_kinds_are_refused_before_anything_is_sent() {
    let server = Canned::start(nothing_allowed);
    let target = open_target(&server.endpoint(), "test", "test");
    let hsm = &own().hsm;
    for kind in [KeyKind::Aes128, KeyKind::Rsa2048] {
        match target.install(hsm, &key_ref("x", kind), "keyorch-x") {
            Err(TargetError::NotSupported(msg)) => eprintln!("{kind:?}: {msg}"),
            other => panic!("{kind:?}: {other:?}"),
        }
    }
    assert_eq!(server.requests(), 0);
}

#[test]
fn aws_credential_and_permission_answers_are_classified() {
    for answer in [wrong_secret as Answer, unknown_access_key] {
        let server = Canned::start(answer);
        let target = open_target(&server.endpoint(), "AKIAIOSFODNN7EXAMPLE", "wrong");
        let e = target.check().unwrap_err();
        assert!(matches!(e, TargetError::InvalidCredentials(_)), "{e:?}");
        assert!(!e.to_string().contains("wrong"), "{e}");
        assert!(matches!(
            target.denied_permissions(),
            Err(TargetError::InvalidCredentials(_))
        ));
    }

    let server = Canned::start(read_only);
    let target = open_target(&server.endpoint(), "test", "test");
    target.check().unwrap();
    let denied = target.denied_permissions().unwrap();
    let expected: Vec<String> = REQUIRED_PERMISSIONS
        .iter()
        .filter(|p| {
            !matches!(
                **p,
                "ListKeys" | "ListAliases" | "DescribeKey" | "ListResourceTags" | "CreateKey"
            )
        })
        .map(|p| p.to_string())
        .collect();
    assert_eq!(denied, expected);
    match target.install(
        &own().hsm,
        &key_ref("aes-4", KeyKind::Aes256),
        "keyorch-aes-4",
    ) {
        Err(TargetError::PermissionDenied(denied)) => assert_eq!(denied, ["CreateKey"]),
        other => panic!("{other:?}"),
    }

    let server = Canned::start(nothing_allowed);
    let target = open_target(&server.endpoint(), "test", "test");
    match target.check() {
        Err(TargetError::PermissionDenied(denied)) => assert_eq!(denied, ["ListKeys"]),
        other => panic!("{other:?}"),
    }
    let denied = target.denied_permissions().unwrap();
    assert_eq!(denied.len(), REQUIRED_PERMISSIONS.len() - 1);
    assert!(!denied.contains(&"CreateKey".to_string()));
}

#[test]
fn a_silent_endpoint_times_out_at_the_deadline() {
    let server = Canned::start(silent);
    let target = open_target(&server.endpoint(), "test", "test");
    let t = Instant::now();
    let e = target.check().unwrap_err();
    let elapsed = t.elapsed();
    assert!(matches!(e, TargetError::TimedOut(_)), "{e:?}");
    assert!(
        elapsed >= Duration::from_secs(9) && elapsed < Duration::from_secs(15),
        "{elapsed:?}"
    );
}

#[test]
fn the_blocking_api_runs_under_spawn_blocking_and_drops_anywhere() {
    let server = Canned::start(read_only);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let target = Arc::new(open_target(&server.endpoint(), "test", "test"));
        let t = target.clone();
        tokio::task::spawn_blocking(move || t.check())
            .await
            .unwrap()
            .unwrap();
        // Dropped on an async worker thread: must not panic.
        drop(target);
    });
}
