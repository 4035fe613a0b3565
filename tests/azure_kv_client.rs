//! keyorch's Azure Key Vault client (`keyorch::targets::azure_kv::client`, Microsoft's
//! azure_identity and azure_security_keyvault_keys crates on keyorch's own reqwest/rustls
//! transport) and the `azure_key_vault` target (`keyorch::targets::azure_kv`) against the
//! loopback fake of Key Vault and Entra ID (tests/azure_kv/fake.py, proven with Microsoft's
//! Python SDK in tests/azure_kv_fake.rs), started the way tests/common/azure.rs does: the venv
//! of scripts/azure-clients.sh, https with a CA made here, `LISTENING <port>`.
//!
//! Keys are installed through the target with keyorch's own HSM on a private SoftHSM2 token:
//! the material is wrapped there (`CKM_RSA_AES_KEY_WRAP` to the vault's import KEK) and the
//! fake unwraps it for real, so the fake-only `/__fake__/keys/{name}/check` proves that the
//! vault holds the very key. Every error is checked for its class (`TargetError`'s variant),
//! and messages and `Debug` output for the client secret, which must never appear.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::azure::{self, Fake, CLIENT_ID, CLIENT_SECRET, TENANT_ID};
use common::softhsm_tokens;
use keyorch::hsm::{GeneratedKey, Hsm, HsmConfig, KeyKind, KeyRef, TokenSelector};
use keyorch::targets::azure_kv::client::{AzureKvClient, AzureKvSettings, PERMISSIONS};
use keyorch::targets::azure_kv::{
    azure_kind, AzureKvTarget, IMPORT_KEK_BITS, IMPORT_KEK_NAME, KEY_OPS, MANAGED_TAG,
};
use keyorch::targets::{InstallError, ManagedKey, ProbeMode, Target, TargetError};
use secrecy::SecretString;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN: &str = "keyorch-azure";
const PIN: &str = "azure-pin-4471";
const SO_PIN: &str = "azure-so-pin-9920";
/// The kinds installed (one RSA size per family step, both curves).
const KINDS: [KeyKind; 4] = [
    KeyKind::Rsa2048,
    KeyKind::Rsa3072,
    KeyKind::EcP256,
    KeyKind::EcP384,
];

// ----- fixtures -----------------------------------------------------------------------------

/// A fake in a folder of its own, with the CA its certificate comes from.
struct Env {
    _dir: tempfile::TempDir,
    fake: Fake,
    ca: String,
}

fn env(extra: &[&str]) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let ca = azure::write_tls(dir.path());
    let fake = Fake::start(
        dir.path(),
        (TENANT_ID, CLIENT_ID, CLIENT_SECRET),
        extra,
        true,
    );
    Env {
        _dir: dir,
        fake,
        ca,
    }
}

fn settings(vault: &str, authority: &str, ca: Option<&str>) -> AzureKvSettings {
    AzureKvSettings {
        vault_url: vault.to_string(),
        authority_host: authority.to_string(),
        tenant_id: TENANT_ID.to_string(),
        client_id: CLIENT_ID.to_string(),
        ca_cert_pem: ca.map(str::to_string),
    }
}

fn client_with(s: AzureKvSettings, secret: &str) -> AzureKvClient {
    AzureKvClient::new(s, SecretString::from(secret.to_string()))
        .expect("client")
        .with_conflict_retries(10, Duration::from_millis(100))
}

fn client(e: &Env) -> AzureKvClient {
    client_with(
        settings(&e.fake.url, &e.fake.url, Some(&e.ca)),
        CLIENT_SECRET,
    )
}

fn target(e: &Env) -> AzureKvTarget {
    AzureKvTarget::with_client(client(e))
}

/// The lines of the fake's log that end with `request` (`METHOD path -> status`).
fn count(fake: &Fake, request: &str) -> usize {
    fake.logged()
        .lines()
        .filter(|l| l.ends_with(request))
        .count()
}

/// No message and no `Debug` of `e` holds the client secret.
#[track_caller]
fn no_secret(e: &TargetError) {
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains(CLIENT_SECRET), "the secret in {text}");
    }
}

/// keyorch's own HSM with its master KEK, and one key of each kind in [`KINDS`] (and two
/// extra RSA-2048 keys and an AES key).
struct Own {
    hsm: Hsm,
    keys: HashMap<KeyKind, GeneratedKey>,
    other_rsa: GeneratedKey,
    aes: GeneratedKey,
}

fn own() -> &'static Own {
    static OWN: OnceLock<Own> = OnceLock::new();
    OWN.get_or_init(|| {
        softhsm_tokens("keyorch-azure-", &[TOKEN], SO_PIN, PIN);
        let hsm = Hsm::open(HsmConfig::new(
            MODULE,
            TokenSelector::Label(TOKEN.to_string()),
            SecretString::from(PIN),
        ))
        .unwrap();
        hsm.master_kek(true).unwrap();
        let keys = KINDS
            .iter()
            .map(|kind| (*kind, hsm.generate(*kind).unwrap()))
            .collect();
        let other_rsa = hsm.generate(KeyKind::Rsa2048).unwrap();
        let aes = hsm.generate(KeyKind::Aes256).unwrap();
        Own {
            hsm,
            keys,
            other_rsa,
            aes,
        }
    })
}

fn key_ref<'a>(id: &'a str, kind: KeyKind, key: &'a GeneratedKey) -> KeyRef<'a> {
    KeyRef {
        id,
        kind,
        wrapped: &key.wrapped,
        spki_der: key.spki_der.as_deref(),
    }
}

fn managed<'a>(kind: KeyKind, key: &'a GeneratedKey) -> ManagedKey<'a> {
    ManagedKey {
        kind,
        kcv: &key.kcv,
        recorded_remote_id: "",
    }
}

fn install(t: &AzureKvTarget, label: &str, kind: KeyKind, key: &GeneratedKey) -> String {
    t.install(&own().hsm, &key_ref(label, kind, key), label)
        .unwrap_or_else(|e| panic!("install {kind:?} under {label}: {e}"))
}

/// A key the vault holds that keyorch did not import (an EC key made by "someone else").
fn foreign_key(fake: &Fake, name: &str) {
    let (code, body) = fake.kv(
        "POST",
        &format!("/keys/{name}/create"),
        Some(r#"{"kty":"EC","crv":"P-256","tags":{"owner":"someone"}}"#),
    );
    assert_eq!(code, 200, "{body}");
}

// ----- tests --------------------------------------------------------------------------------

/// The client meets the vault's challenge (401 with WWW-Authenticate, on the loopback vault
/// without the resource check), logs in to Entra ID once and keeps the token; the import KEK
/// is created as Azure's BYOK wants it and read back; listing reads one page.
#[test]
fn the_challenge_the_import_kek_and_a_listing() {
    let e = env(&[]);
    let c = client(&e);
    assert!(!format!("{c:?}").contains(CLIENT_SECRET));
    assert_eq!(c.get_key(IMPORT_KEK_NAME).unwrap(), None);
    let log = e.fake.logged();
    let first: Vec<&str> = log.lines().take(3).collect();
    assert!(
        first[0].ends_with(&format!("GET /keys/{IMPORT_KEK_NAME}/ -> 401"))
            && first[1].ends_with(&format!("POST /{TENANT_ID}/oauth2/v2.0/token -> 200"))
            && first[2].ends_with(&format!("GET /keys/{IMPORT_KEK_NAME}/ -> 404")),
        "{log}"
    );

    let kek = c.create_import_kek(IMPORT_KEK_NAME).unwrap();
    assert_eq!(kek.kty, "RSA-HSM");
    assert_eq!(kek.rsa_bits(), IMPORT_KEK_BITS);
    assert_eq!(kek.key_ops, ["import"]);
    assert_eq!(kek.tag("keyorch"), Some("import-kek"));
    assert!(kek.enabled && !kek.managed);
    assert_eq!(kek.name, IMPORT_KEK_NAME);
    assert!(
        kek.kid
            .starts_with(&format!("{}/keys/{IMPORT_KEK_NAME}/", e.fake.url))
            && kek.version.len() == 32,
        "{}",
        kek.kid
    );
    // The body went through the challenge intact: the fake made what was asked.
    assert_eq!(
        count(
            &e.fake,
            &format!("POST /keys/{IMPORT_KEK_NAME}/create -> 200")
        ),
        1
    );
    let again = c.get_key(IMPORT_KEK_NAME).unwrap().unwrap();
    assert_eq!(again, kek);
    assert_eq!(e.fake.kcv(IMPORT_KEK_NAME), kek.check_value().unwrap());

    let tokens = |f: &Fake| count(f, &format!("POST /{TENANT_ID}/oauth2/v2.0/token -> 200"));
    assert_eq!(tokens(&e.fake), 1, "one token for every call");
    foreign_key(&e.fake, "another-key");
    foreign_key(&e.fake, "a-third-key");
    let one = c.list_keys(1).unwrap();
    assert_eq!(one.len(), 1, "{one:?}");
    let two = c.list_keys(2).unwrap();
    assert_eq!(two.len(), 2);
    let all = c.list_keys(25).unwrap();
    let names: Vec<&str> = all.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["a-third-key", "another-key", IMPORT_KEK_NAME]);
    let item = all.iter().find(|k| k.name == IMPORT_KEK_NAME).unwrap();
    assert_eq!(item.kid, format!("{}/keys/{IMPORT_KEK_NAME}", e.fake.url));
    assert!(item.enabled);
    assert_eq!(
        item.tags.get("keyorch").map(String::as_str),
        Some("import-kek")
    );
    for bad in [0, 26] {
        assert!(matches!(c.list_keys(bad), Err(TargetError::Internal(_))));
    }
    // Still that one token (the raw requests of foreign_key took two of their own).
    assert_eq!(tokens(&e.fake), 3);
    assert!(!e.fake.logged().contains(CLIENT_SECRET));
}

/// Connect makes the KEK; RSA and EC keys of every kind the vault takes are wrapped in
/// keyorch's HSM, imported as BYOK, confirmed by their check values, reported as the same
/// key, left alone by a second install, and uninstalled (deleted and purged) idempotently.
#[test]
fn keys_are_installed_confirmed_and_uninstalled() {
    let e = env(&[]);
    let t = target(&e);
    assert_eq!(t.probe("ks", ProbeMode::Connect, false).unwrap(), None);
    let kek = t.client().get_key(IMPORT_KEK_NAME).unwrap().unwrap();
    assert_eq!(
        (kek.kty.as_str(), kek.rsa_bits(), kek.key_ops.clone()),
        ("RSA-HSM", IMPORT_KEK_BITS, vec!["import".to_string()])
    );
    // Connecting again keeps the same KEK.
    t.probe("ks", ProbeMode::Connect, true).unwrap();
    assert_eq!(t.client().get_key(IMPORT_KEK_NAME).unwrap().unwrap(), kek);
    t.probe("ks", ProbeMode::Check, true).unwrap();
    t.probe("ks", ProbeMode::Heartbeat, true).unwrap();

    for kind in KINDS {
        let key = &own().keys[&kind];
        let label = format!("keyorch-{kind:?}").to_lowercase();
        let kid = install(&t, &label, kind, key);
        assert!(
            kid.starts_with(&format!("{}/keys/{label}/", e.fake.url)),
            "{kid}"
        );
        assert_eq!(
            e.fake.kcv(&label),
            key.kcv,
            "{kind:?}: the vault holds the very key"
        );
        t.confirm_install(&managed(kind, key), &label, &kid)
            .unwrap_or_else(|e| panic!("confirm {kind:?}: {e}"));

        let k = t.client().get_key(&label).unwrap().unwrap();
        let (kty, crv) = azure_kind(kind).unwrap();
        assert_eq!(k.kty, kty);
        assert_eq!(k.crv.as_deref(), crv);
        assert_eq!(k.key_ops, KEY_OPS);
        assert_eq!(k.tag(MANAGED_TAG.0), Some(MANAGED_TAG.1));
        assert_eq!(k.check_value().unwrap(), key.kcv);
        assert!(k.enabled);

        let copy = t.copy(&managed(kind, key), &label).unwrap().unwrap();
        assert!(copy.same && copy.enabled, "{copy:?}");
        assert_eq!(
            (copy.kcv.as_str(), copy.remote_id.as_str()),
            (key.kcv.as_str(), kid.as_str())
        );
        assert!(copy.detail.is_empty());

        // Idempotent: the key there is left for the confirmation, no new version.
        assert_eq!(install(&t, &label, kind, key), kid);
        assert_eq!(count(&e.fake, &format!("PUT /keys/{label} -> 200")), 1);

        assert!(t.uninstall(&label).unwrap());
        assert_eq!(t.client().get_key(&label).unwrap(), None);
        assert_eq!(t.client().get_deleted_key(&label).unwrap(), None, "purged");
        assert!(t.copy(&managed(kind, key), &label).unwrap().is_none());
        assert!(!t.uninstall(&label).unwrap());
    }
    // AES and HMAC keys need a Managed HSM.
    let label = "keyorch-aes";
    let err = t
        .install(
            &own().hsm,
            &key_ref(label, KeyKind::Aes256, &own().aes),
            label,
        )
        .unwrap_err();
    assert!(
        matches!(&err, InstallError::Target(TargetError::NotSupported(m)) if m.contains("Managed HSM")),
        "{err}"
    );
    assert!(matches!(
        azure_kind(KeyKind::HmacSha256),
        Err(TargetError::NotSupported(_))
    ));
    assert_eq!(azure_kind(KeyKind::Rsa4096).unwrap(), ("RSA-HSM", None));
    assert_eq!(t.client().get_key(label).unwrap(), None);
}

/// Other material under the label is a mismatch, for the confirmation and for the status;
/// a disabled copy is reported and enabled again by the confirmation.
#[test]
fn other_material_and_disabled_copies() {
    let e = env(&[]);
    let t = target(&e);
    t.probe("ks", ProbeMode::Connect, false).unwrap();
    let key = &own().keys[&KeyKind::Rsa2048];
    let other = &own().other_rsa;
    let label = "keyorch-mismatch";
    let kid = install(&t, label, KeyKind::Rsa2048, key);

    let err = t
        .confirm_install(&managed(KeyKind::Rsa2048, other), label, &kid)
        .unwrap_err();
    assert!(
        matches!(&err, InstallError::Mismatch(m) if m.contains(&key.kcv) && m.contains(&other.kcv)),
        "{err}"
    );
    let copy = t
        .copy(&managed(KeyKind::Rsa2048, other), label)
        .unwrap()
        .unwrap();
    assert!(
        !copy.same && copy.kcv == key.kcv && copy.detail == "check value differs",
        "{copy:?}"
    );

    let off = t.client().set_enabled(label, false).unwrap().unwrap();
    assert!(!off.enabled);
    let copy = t
        .copy(&managed(KeyKind::Rsa2048, key), label)
        .unwrap()
        .unwrap();
    assert!(copy.same && !copy.enabled, "{copy:?}");
    t.confirm_install(&managed(KeyKind::Rsa2048, key), label, &kid)
        .unwrap();
    assert!(t.client().get_key(label).unwrap().unwrap().enabled);
    assert_eq!(t.client().set_enabled("keyorch-none", true).unwrap(), None);

    // After the import, nothing there: a mismatch too.
    let err = t
        .confirm_install(&managed(KeyKind::Rsa2048, key), "keyorch-never", "")
        .unwrap_err();
    assert!(matches!(err, InstallError::Mismatch(_)), "{err}");
}

/// A key under a label that keyorch did not import is never deleted, purged or recovered,
/// live or soft-deleted; an uninstall cut short between delete and purge is finished by the
/// next one; a key soft-deleted under keyorch's label is purged before a new import.
#[test]
fn foreign_keys_and_cut_short_uninstalls() {
    let e = env(&[]);
    let t = target(&e);
    t.probe("ks", ProbeMode::Connect, false).unwrap();
    let key = &own().keys[&KeyKind::EcP256];

    let label = "keyorch-foreign";
    foreign_key(&e.fake, label);
    let err = t.uninstall(label).unwrap_err();
    assert!(
        matches!(&err, TargetError::Internal(m) if m.contains("did not import") && m.contains(label)),
        "{err}"
    );
    assert!(t.client().get_key(label).unwrap().is_some(), "left alone");
    // An install leaves it for the confirmation, which refuses it.
    let kid = install(&t, label, KeyKind::EcP256, key);
    let err = t
        .confirm_install(&managed(KeyKind::EcP256, key), label, &kid)
        .unwrap_err();
    assert!(
        matches!(&err, InstallError::Mismatch(m) if m.contains("did not import")),
        "{err}"
    );
    let copy = t
        .copy(&managed(KeyKind::EcP256, key), label)
        .unwrap()
        .unwrap();
    assert!(
        !copy.same && copy.detail.contains("did not import"),
        "{copy:?}"
    );
    // Soft-deleted by its owner: uninstall has nothing of keyorch's, install refuses.
    let (code, _) = e
        .fake
        .call("POST", &format!("/__fake__/keys/{label}/delete"), None);
    assert_eq!(code, 204);
    assert!(!t.uninstall(label).unwrap());
    let err = t
        .install(&own().hsm, &key_ref(label, KeyKind::EcP256, key), label)
        .unwrap_err();
    assert!(
        matches!(&err, InstallError::Target(TargetError::Internal(m)) if m.contains("soft-deleted")),
        "{err}"
    );
    assert!(
        t.client().get_deleted_key(label).unwrap().is_some(),
        "not purged"
    );

    // Cut short after the delete: the next uninstall purges.
    let label = "keyorch-cut-short";
    install(&t, label, KeyKind::EcP256, key);
    let deleted = t.client().delete_key(label).unwrap().unwrap();
    assert!(deleted.purgeable(), "{deleted:?}");
    assert_eq!(
        deleted.recovery_id.as_deref(),
        Some(format!("{}/deletedkeys/{label}", e.fake.url).as_str())
    );
    assert_eq!(deleted.recovery_level, "Recoverable+Purgeable");
    assert_eq!(deleted.key.tag(MANAGED_TAG.0), Some(MANAGED_TAG.1));
    assert_eq!(t.client().get_key(label).unwrap(), None);
    assert!(t.uninstall(label).unwrap());
    assert_eq!(t.client().get_deleted_key(label).unwrap(), None);
    assert!(!t.uninstall(label).unwrap());

    // Soft-deleted under keyorch's label (a portal delete): purged, then imported again.
    let label = "keyorch-again";
    install(&t, label, KeyKind::EcP256, key);
    let (code, _) = e
        .fake
        .call("POST", &format!("/__fake__/keys/{label}/delete"), None);
    assert_eq!(code, 204);
    let kid = install(&t, label, KeyKind::EcP256, key);
    t.confirm_install(&managed(KeyKind::EcP256, key), label, &kid)
        .unwrap();
    assert_eq!(
        count(&e.fake, &format!("DELETE /deletedkeys/{label} -> 204")),
        1
    );
    assert_eq!(e.fake.kcv(label), key.kcv);

    // Recover puts a soft-deleted key back.
    t.client().delete_key(label).unwrap().unwrap();
    let back = t.client().recover_deleted_key(label).unwrap().unwrap();
    assert_eq!(back.kid, kid);
    assert_eq!(t.client().wait_for_key(label).unwrap().unwrap().kid, kid);
    assert_eq!(
        t.client().recover_deleted_key("keyorch-none").unwrap(),
        None
    );
    assert!(!t.client().purge_deleted_key("keyorch-none").unwrap());
    assert_eq!(t.client().delete_key("keyorch-none").unwrap(), None);
}

/// The import KEK: missing while connected is ImportKekMissing (check, heartbeat, install);
/// soft-deleted, Connect recovers it; one that is not keyorch's is refused by name.
#[test]
fn the_import_kek_missing_recovered_and_wrong() {
    let e = env(&[]);
    let t = target(&e);
    // Not connected: nothing is missing yet.
    t.probe("ks", ProbeMode::Heartbeat, false).unwrap();
    t.probe("ks", ProbeMode::Check, false).unwrap();
    let key = &own().keys[&KeyKind::Rsa2048];
    let err = t
        .install(
            &own().hsm,
            &key_ref("keyorch-x", KeyKind::Rsa2048, key),
            "keyorch-x",
        )
        .unwrap_err();
    assert!(
        matches!(err, InstallError::Target(TargetError::ImportKekMissing)),
        "{err}"
    );

    t.probe("ks", ProbeMode::Connect, false).unwrap();
    let kek = t.client().get_key(IMPORT_KEK_NAME).unwrap().unwrap();
    let (code, _) = e.fake.call(
        "POST",
        &format!("/__fake__/keys/{IMPORT_KEK_NAME}/delete"),
        None,
    );
    assert_eq!(code, 204);
    for mode in [ProbeMode::Check, ProbeMode::Heartbeat] {
        assert!(
            matches!(
                t.probe("ks", mode, true),
                Err(TargetError::ImportKekMissing)
            ),
            "{mode:?}"
        );
        t.probe("ks", mode, false).unwrap();
    }
    t.probe("ks", ProbeMode::Connect, true).unwrap();
    assert_eq!(
        t.client().get_key(IMPORT_KEK_NAME).unwrap().unwrap().kid,
        kek.kid,
        "recovered, not made anew"
    );
    assert_eq!(
        count(
            &e.fake,
            &format!("POST /keys/{IMPORT_KEK_NAME}/create -> 200")
        ),
        1
    );

    // A key of that name that is not keyorch's KEK.
    let (code, _) = e.fake.call(
        "POST",
        &format!("/__fake__/keys/{IMPORT_KEK_NAME}/purge"),
        None,
    );
    assert_eq!(code, 204);
    let (code, body) = e.fake.kv(
        "POST",
        &format!("/keys/{IMPORT_KEK_NAME}/create"),
        Some(r#"{"kty":"RSA-HSM","key_size":3072,"key_ops":["sign","verify"]}"#),
    );
    assert_eq!(code, 200, "{body}");
    for mode in [ProbeMode::Connect, ProbeMode::Check] {
        let err = t.probe("ks", mode, true).unwrap_err();
        assert!(
            matches!(&err, TargetError::InvalidConfiguration(m) if m.contains(IMPORT_KEK_NAME) && m.contains("sign, verify")),
            "{mode:?}: {err}"
        );
    }
    let err = t
        .install(
            &own().hsm,
            &key_ref("keyorch-x", KeyKind::Rsa2048, key),
            "keyorch-x",
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            InstallError::Target(TargetError::InvalidConfiguration(_))
        ),
        "{err}"
    );
}

/// Each of the ten key permissions, denied alone, is the one named; all, none; the probes
/// change nothing; a denied call names its permission, and an uninstall denied the purge
/// is finished once the purge is allowed.
#[test]
fn denied_permissions_are_named() {
    let e = env(&[]);
    let t = target(&e);
    let c = t.client();
    assert_eq!(c.denied_permissions().unwrap(), Vec::<String>::new());
    for p in PERMISSIONS {
        e.fake.deny(&[p]);
        assert_eq!(c.denied_permissions().unwrap(), [p], "denied {p}");
    }
    e.fake.deny(&PERMISSIONS);
    assert_eq!(c.denied_permissions().unwrap(), PERMISSIONS);
    let err = t.probe("ks", ProbeMode::Check, false).unwrap_err();
    assert!(
        matches!(&err, TargetError::PermissionDenied(n) if n == &PERMISSIONS),
        "{err}"
    );
    let err = t.probe("ks", ProbeMode::Connect, false).unwrap_err();
    assert!(
        matches!(&err, TargetError::PermissionDenied(n) if n.len() == 10),
        "{err}"
    );
    e.fake.deny(&[]);
    // Nothing was made, changed or deleted by the probes.
    assert!(c.list_keys(25).unwrap().is_empty());
    let (code, _) = e
        .fake
        .call("GET", "/__fake__/keys/keyorch-permission-probe/check", None);
    assert_eq!(code, 404);

    e.fake.deny(&["get"]);
    let err = c.get_key(IMPORT_KEK_NAME).unwrap_err();
    assert!(
        matches!(&err, TargetError::PermissionDenied(n) if n == &["get"]),
        "{err}"
    );
    e.fake.deny(&["create"]);
    let err = t.probe("ks", ProbeMode::Connect, false).unwrap_err();
    assert!(
        matches!(&err, TargetError::PermissionDenied(n) if n == &["create"]),
        "{err}"
    );
    e.fake.deny(&[]);
    t.probe("ks", ProbeMode::Connect, false).unwrap();

    let key = &own().keys[&KeyKind::Rsa2048];
    e.fake.deny(&["import"]);
    let err = t
        .install(
            &own().hsm,
            &key_ref("keyorch-d", KeyKind::Rsa2048, key),
            "keyorch-d",
        )
        .unwrap_err();
    assert!(
        matches!(&err, InstallError::Target(TargetError::PermissionDenied(n)) if n == &["import"]),
        "{err}"
    );
    e.fake.deny(&[]);
    install(&t, "keyorch-d", KeyKind::Rsa2048, key);
    e.fake.deny(&["purge"]);
    let err = t.uninstall("keyorch-d").unwrap_err();
    assert!(
        matches!(&err, TargetError::PermissionDenied(n) if n == &["purge"]),
        "{err}"
    );
    assert_eq!(
        c.get_key("keyorch-d").unwrap(),
        None,
        "deleted before the purge"
    );
    e.fake.deny(&[]);
    assert!(t.uninstall("keyorch-d").unwrap(), "finished");
    assert_eq!(c.get_deleted_key("keyorch-d").unwrap(), None);
}

/// Entra ID refusing the secret, the application or the tenant is InvalidCredentials with
/// its AADSTS code, never the secret; a revoked token is renewed through the challenge.
#[test]
fn entra_refusals_are_invalid_credentials() {
    let e = env(&[]);
    let wrong = "not-the-secret~0123456789abcdefghijklmnopq";
    let cases = [
        (
            settings(&e.fake.url, &e.fake.url, Some(&e.ca)),
            wrong,
            "AADSTS7000215",
        ),
        (
            AzureKvSettings {
                client_id: "0e0e0e0e-1111-2222-3333-444444444444".into(),
                ..settings(&e.fake.url, &e.fake.url, Some(&e.ca))
            },
            CLIENT_SECRET,
            "AADSTS700016",
        ),
        (
            AzureKvSettings {
                tenant_id: "9f9f9f9f-1111-2222-3333-444444444444".into(),
                ..settings(&e.fake.url, &e.fake.url, Some(&e.ca))
            },
            CLIENT_SECRET,
            "AADSTS90002",
        ),
    ];
    for (s, secret, code) in cases {
        let c = client_with(s, secret);
        let err = c.get_key(IMPORT_KEK_NAME).unwrap_err();
        assert!(
            matches!(&err, TargetError::InvalidCredentials(m) if m.contains(code) && m.contains("Microsoft Entra ID")),
            "{code}: {err}"
        );
        no_secret(&err);
        assert!(!err.to_string().contains(secret) && !format!("{c:?}").contains(secret));
        // The target says the same.
        let t = AzureKvTarget::with_client(c);
        assert!(matches!(
            t.probe("ks", ProbeMode::Heartbeat, false),
            Err(TargetError::InvalidCredentials(_))
        ));
    }
    // A token the vault no longer takes: the SDK gets a new one and goes on.
    let c = client(&e);
    c.get_key(IMPORT_KEK_NAME).unwrap();
    let (code, _) = e.fake.call("POST", "/__fake__/tokens/revoke", None);
    assert_eq!(code, 204);
    assert_eq!(c.get_key(IMPORT_KEK_NAME).unwrap(), None);
    assert!(
        count(
            &e.fake,
            &format!("POST /{TENANT_ID}/oauth2/v2.0/token -> 200")
        ) >= 2
    );
}

/// The wrong CA (for the vault, or for Entra ID) is a Network error that says TLS and
/// certificate; an unreachable vault or Entra ID is a Network error, fast.
#[test]
fn tls_failures_and_unreachable_endpoints_are_network_errors() {
    let e = env(&[]);
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca = azure::write_tls(other_dir.path());

    let c = client_with(
        settings(&e.fake.url, &e.fake.url, Some(&other_ca)),
        CLIENT_SECRET,
    );
    let err = c.get_key(IMPORT_KEK_NAME).unwrap_err();
    assert!(
        matches!(&err, TargetError::Network(m) if m.contains("TLS with the vault failed") && m.contains("certificate")),
        "{err}"
    );
    // The system's roots do not know the test CA either.
    let c = client_with(settings(&e.fake.url, &e.fake.url, None), CLIENT_SECRET);
    let err = c.get_key(IMPORT_KEK_NAME).unwrap_err();
    assert!(
        matches!(&err, TargetError::Network(m) if m.contains("TLS")),
        "{err}"
    );

    // Entra ID behind a certificate of another CA.
    let entra = Fake::start(
        other_dir.path(),
        (TENANT_ID, CLIENT_ID, CLIENT_SECRET),
        &[],
        true,
    );
    let c = client_with(
        settings(&e.fake.url, &entra.url, Some(&e.ca)),
        CLIENT_SECRET,
    );
    let err = c.get_key(IMPORT_KEK_NAME).unwrap_err();
    assert!(
        matches!(&err, TargetError::Network(m) if m.contains("TLS with Microsoft Entra ID") && m.contains("certificate")),
        "{err}"
    );
    no_secret(&err);

    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("https://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let c = client_with(settings(&e.fake.url, &closed, Some(&e.ca)), CLIENT_SECRET);
    let err = c.get_key(IMPORT_KEK_NAME).unwrap_err();
    assert!(
        matches!(&err, TargetError::Network(m) if m.contains("cannot reach Microsoft Entra ID")),
        "{err}"
    );
    let c = client_with(settings(&closed, &e.fake.url, Some(&e.ca)), CLIENT_SECRET);
    let t0 = Instant::now();
    let err = c.get_key(IMPORT_KEK_NAME).unwrap_err();
    let took = t0.elapsed();
    assert!(matches!(err, TargetError::Network(_)), "{err}");
    assert!(took < Duration::from_secs(5), "unreachable took {took:?}");
    // The target's probes say the same.
    let t = AzureKvTarget::with_client(c);
    assert!(matches!(
        t.probe("ks", ProbeMode::Check, false),
        Err(TargetError::Network(_))
    ));
}

/// A vault that accepts connections and never answers: the call deadline (or the connect
/// timeout, for the TLS handshake) ends the call with TimedOut.
#[test]
fn a_silent_vault_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let ca = common::tls::ca("unused CA").pem;
    let c = AzureKvClient::new(
        settings(&url, &url, Some(&ca)),
        SecretString::from(CLIENT_SECRET),
    )
    .unwrap()
    .with_timeouts(Duration::from_secs(20), Duration::from_millis(800))
    .unwrap();
    let t0 = Instant::now();
    let err = c.get_key(IMPORT_KEK_NAME).unwrap_err();
    let took = t0.elapsed();
    assert!(
        matches!(&err, TargetError::TimedOut(m) if m.contains("800 ms") && m.contains("getKey")),
        "{err}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");

    let c = c
        .with_timeouts(Duration::from_millis(300), Duration::from_secs(20))
        .unwrap();
    let t0 = Instant::now();
    let err = c.get_key(IMPORT_KEK_NAME).unwrap_err();
    let took = t0.elapsed();
    assert!(matches!(err, TargetError::TimedOut(_)), "{err}");
    assert!(took < Duration::from_secs(6), "took {took:?}");
}

/// Azure answers 409 while a soft-deleted name is not free yet: the call is retried, a
/// bounded number of times.
#[test]
fn conflicts_are_retried_a_bounded_number_of_times() {
    let e = env(&[]);
    let name = "keyorch-conflict";
    let c = client(&e).with_conflict_retries(30, Duration::from_millis(100));
    c.create_import_kek(name).unwrap();
    c.delete_key(name).unwrap().unwrap();

    // Bounded: three tries, then the vault's 409 as an error.
    let short = client(&e).with_conflict_retries(3, Duration::from_millis(50));
    let err = short.create_import_kek(name).unwrap_err();
    assert!(
        matches!(&err, TargetError::Internal(m) if m.contains("409") && m.contains("ObjectIsDeletedButRecoverable")),
        "{err}"
    );
    assert_eq!(
        count(&e.fake, &format!("POST /keys/{name}/create -> 409")),
        3
    );

    // The name comes free while the client retries.
    let url = e.fake.url.clone();
    let purge = std::thread::spawn({
        let ca = e.fake.ca.clone();
        move || {
            std::thread::sleep(Duration::from_millis(700));
            let out = std::process::Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-X",
                    "POST",
                    "--cacert",
                ])
                .arg(&ca)
                .arg(format!("{url}/__fake__/keys/{name}/purge"))
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    });
    let t0 = Instant::now();
    let made = c.create_import_kek(name).unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(600));
    assert_eq!(purge.join().unwrap(), "204");
    assert_eq!(made.key_ops, ["import"]);
    assert!(count(&e.fake, &format!("POST /keys/{name}/create -> 409")) > 3);
    assert_eq!(
        count(&e.fake, &format!("POST /keys/{name}/create -> 200")),
        2
    );
}
