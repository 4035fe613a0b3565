//! azure_key_vault keystores through the real keyorchd binary, against the loopback fake of
//! Azure Key Vault's keys data plane and Microsoft Entra ID (tests/azure_kv/fake.py:
//! Microsoft ships no emulator; the fake follows the published REST API and is proven with
//! Microsoft's own Python SDKs in tests/azure_kv_fake.rs). The fake does the real BYOK crypto
//! — RSA-OAEP-SHA1 unwrap of the transfer key with the vault's EKMF-BYOK-KEK-FOR-IMPORT, then
//! AES-KWP unwrap of the PKCS#8 key — so a wrong wrap fails, and its fake-only
//! `/__fake__/keys/{name}/check` gives the check value of the key it unwrapped, which the
//! tests compare with keyorch's. Served over https with a CA made here, given in the
//! keystore's `ca_cert_pem`; the fake's one port is both the vault URL and the Entra ID
//! login endpoint.

mod common;

use std::time::Duration;

use common::azure::{self, CLIENT_ID, CLIENT_SECRET, LOCATION, PERMISSIONS, TENANT_ID};
use common::*;
use keyorch::client::Clients;
use keyorch::proto::v1::{
    create_keystore_request, AzureKeyVaultCredentials, AzureKeyVaultKeystoreConfig,
    ConnectKeystoreRequest, ConnectionErrorCode, ConnectionState, CreateKeystoreRequest,
    DisconnectKeystoreRequest, InstallKeyRequest, InstanceState, Key, KeyAlgorithm, KeyState,
    KeystoreType, SyncStatus, TargetKeyStatus, TestKeystoreConnectionRequest,
    TestKeystoreConnectionResponse,
};
use tonic::Code;

const IMPORT_KEK: &str = "EKMF-BYOK-KEK-FOR-IMPORT";
const SUBSCRIPTION: &str = "3c1d9e7a-0b2f-4e5d-8a6c-7b9e0f1a2d3c";

/// A running fake over https with a CA of its own.
struct Fake {
    fake: azure::Fake,
    ca_pem: String,
    _dir: tempfile::TempDir,
}

impl Fake {
    fn start(extra: &[&str]) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let ca_pem = azure::write_tls(dir.path());
        let fake = azure::Fake::start(
            dir.path(),
            (TENANT_ID, CLIENT_ID, CLIENT_SECRET),
            extra,
            true,
        );
        Fake {
            fake,
            ca_pem,
            _dir: dir,
        }
    }

    /// The key the vault holds under `name` (latest version), as Key Vault answers a GET.
    fn key(&self, name: &str) -> Option<serde_json::Value> {
        let (code, body) = self.fake.kv("GET", &format!("/keys/{name}/"), None);
        match code {
            200 => Some(serde_json::from_str(&body).unwrap()),
            404 => None,
            _ => panic!("GET /keys/{name}: {code} {body}"),
        }
    }

    /// Whether a soft-deleted key is left under `name`.
    fn deleted(&self, name: &str) -> bool {
        let (code, body) = self.fake.kv("GET", &format!("/deletedkeys/{name}"), None);
        assert!(code == 200 || code == 404, "{code} {body}");
        code == 200
    }

    /// Deletes (soft) and, with `purge`, purges `name` behind keyorch's back.
    fn remove(&self, name: &str, purge: bool) {
        let (code, body) = self
            .fake
            .call("POST", &format!("/__fake__/keys/{name}/delete"), None);
        assert!((200..300).contains(&code), "{code} {body}");
        if purge {
            let (code, body) =
                self.fake
                    .call("POST", &format!("/__fake__/keys/{name}/purge"), None);
            assert!((200..300).contains(&code), "{code} {body}");
        }
    }
}

fn config(fake: &Fake) -> AzureKeyVaultKeystoreConfig {
    AzureKeyVaultKeystoreConfig {
        vault_name: azure::VAULT_NAME.into(),
        resource_group: "rg-keyorch".into(),
        location: LOCATION.into(),
        environment: String::new(),
        tenant_id: TENANT_ID.into(),
        client_id: CLIENT_ID.into(),
        subscription_id: SUBSCRIPTION.into(),
        vault_url: fake.fake.url.clone(),
        authority_host: fake.fake.url.clone(),
        ca_cert_pem: fake.ca_pem.clone(),
    }
}

fn keystore_req(
    vault_id: &str,
    name: &str,
    fake: &Fake,
    secret: &str,
    connect: bool,
) -> CreateKeystoreRequest {
    CreateKeystoreRequest {
        vault_id: vault_id.into(),
        name: name.into(),
        description: String::new(),
        r#type: KeystoreType::AzureKeyVault as i32,
        connect,
        config: Some(create_keystore_request::Config::AzureKeyVault(config(fake))),
        credentials: Some(
            create_keystore_request::Credentials::AzureKeyVaultCredentials(
                AzureKeyVaultCredentials {
                    client_secret: secret.into(),
                },
            ),
        ),
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

/// keyorch's name of a key in a target.
fn label(key: &Key) -> String {
    format!("keyorch-{}", key.id)
}

/// The vault holds keyorch's RSA-HSM 3072 import key, usable for imports only.
fn assert_import_kek(fake: &Fake) {
    let kek = fake
        .key(IMPORT_KEK)
        .expect("the import KEK is in the vault");
    assert_eq!(kek["key"]["kty"], "RSA-HSM", "{kek}");
    assert_eq!(
        kek["key"]["key_ops"],
        serde_json::json!(["import"]),
        "{kek}"
    );
    let n = kek["key"]["n"].as_str().unwrap();
    // base64url of 384 bytes (3072 bits), unpadded
    assert_eq!(n.len(), 512, "{kek}");
}

#[tokio::test]
async fn rsa_and_ec_keys_are_imported_intact_and_follow_the_lifecycle() {
    let fake = Fake::start(&[]);
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let vault = create_vault(&mut c, "v").await;
    let own = create_keystore(&mut c, &vault.id, "own", true).await;
    let ks = ok(c.keystores.create_keystore(keystore_req(
        &vault.id,
        "azure",
        &fake,
        CLIENT_SECRET,
        true,
    )))
    .await;
    assert_connection(&ks, ConnectionState::Connected);
    assert!(ks.has_credentials);
    // The first connect made the import KEK, as UKO does.
    assert_import_kek(&fake);
    let t = test_stored(&mut c, &ks.id).await;
    assert!(t.ok && t.denied_permissions.is_empty(), "{t:?}");

    // Installed at activation: the fake unwrapped the very key keyorch holds.
    let key = create_key(
        &mut c,
        &vault.id,
        "rsa",
        KeyAlgorithm::Rsa,
        2048,
        &[&own.id, &ks.id],
        false,
    )
    .await;
    let key = ok(c.keys.activate_key(key_id(&key.id))).await;
    let inst = instance(&key, &ks.id);
    assert_eq!(inst.state, InstanceState::Installed as i32, "{inst:?}");
    assert!(
        inst.remote_id
            .starts_with(&format!("{}/keys/{}/", fake.fake.url, label(&key))),
        "{inst:?}"
    );
    assert_eq!(fake.fake.kcv(&label(&key)), key.key_check_value);
    let copy = fake.key(&label(&key)).unwrap();
    assert_eq!(copy["key"]["kty"], "RSA-HSM", "{copy}");
    assert_eq!(copy["tags"]["managed-by"], "keyorch", "{copy}");
    assert_status_is(
        &status_in(&mut c, &key.id, &ks.id).await,
        TargetKeyStatus::Active,
        SyncStatus::Ok,
    );
    // EC P-256 too, as PKCS#8 around RFC 5915.
    let ec = create_key(
        &mut c,
        &vault.id,
        "ec",
        KeyAlgorithm::Ec,
        256,
        &[&ks.id],
        true,
    )
    .await;
    let ec_inst = instance(&ec, &ks.id);
    assert_eq!(
        ec_inst.state,
        InstanceState::Installed as i32,
        "{ec_inst:?}"
    );
    assert_eq!(fake.fake.kcv(&label(&ec)), ec.key_check_value);
    let ec_copy = fake.key(&label(&ec)).unwrap();
    assert_eq!(ec_copy["key"]["kty"], "EC-HSM", "{ec_copy}");
    assert_eq!(ec_copy["key"]["crv"], "P-256", "{ec_copy}");
    // AES is refused before anything is sent: vaults import RSA and EC keys only.
    let e = fails(c.keys.create_key(keyorch::proto::v1::CreateKeyRequest {
        vault_id: vault.id.clone(),
        name: "aes".into(),
        algorithm: KeyAlgorithm::Aes as i32,
        key_size_bits: 256,
        target_keystore_ids: vec![ks.id.clone()],
        ..Default::default()
    }))
    .await;
    assert!(e.message().contains("Managed HSM"), "{e:?}");

    // Drift: deleted in the vault behind keyorch's back (soft-deleted, as the portal does),
    // reported, repaired by SyncKey (which purges the deleted copy and imports again).
    fake.remove(&label(&key), false);
    assert_status_is(
        &status_in(&mut c, &key.id, &ks.id).await,
        TargetKeyStatus::NotPresent,
        SyncStatus::OutOfSync,
    );
    ok(c.keys.sync_key(key_id(&key.id))).await;
    assert_status_is(
        &status_in(&mut c, &key.id, &ks.id).await,
        TargetKeyStatus::Active,
        SyncStatus::Ok,
    );
    let new_id = instance(&get_key(&mut c, &key.id).await, &ks.id).remote_id;
    assert_ne!(new_id, inst.remote_id, "a new copy");
    assert_eq!(fake.fake.kcv(&label(&key)), key.key_check_value);

    // Disabled behind keyorch's back: reported as not active.
    let (code, body) = fake.fake.kv(
        "PATCH",
        &format!("/keys/{}/", label(&ec)),
        Some(r#"{"attributes":{"enabled":false}}"#),
    );
    assert_eq!(code, 200, "{body}");
    let s = status_in(&mut c, &ec.id, &ks.id).await;
    assert_eq!(s.sync, SyncStatus::OutOfSync as i32, "{s:?}");

    // Disconnect blocks use; reconnecting restores it.
    ok(c.keystores.disconnect_keystore(DisconnectKeystoreRequest {
        id: ks.id.clone(),
        uninstall_keys: false,
        force: true,
    }))
    .await;
    let third = create_key(
        &mut c,
        &vault.id,
        "third",
        KeyAlgorithm::Ec,
        384,
        &[&own.id],
        true,
    )
    .await;
    let e = fails(c.keys.install_key(InstallKeyRequest {
        id: third.id.clone(),
        keystore_id: ks.id.clone(),
    }))
    .await;
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(fake.key(&label(&third)).is_none());
    ok(c.keystores
        .connect_keystore(ConnectKeystoreRequest { id: ks.id.clone() }))
    .await;
    let third = ok(c.keys.install_key(InstallKeyRequest {
        id: third.id.clone(),
        keystore_id: ks.id.clone(),
    }))
    .await;
    assert_eq!(
        instance(&third, &ks.id).state,
        InstanceState::Installed as i32
    );
    assert_eq!(fake.fake.kcv(&label(&third)), third.key_check_value);
    assert_eq!(fake.key(&label(&third)).unwrap()["key"]["crv"], "P-384");

    // Deactivation uninstalls: deleted and purged, nothing left to recover.
    ok(c.keys.deactivate_key(key_id(&key.id))).await;
    assert_status_is(
        &status_in(&mut c, &key.id, &ks.id).await,
        TargetKeyStatus::NotPresent,
        SyncStatus::Ok,
    );
    assert!(fake.key(&label(&key)).is_none());
    assert!(
        !fake.deleted(&label(&key)),
        "the deleted copy was not purged"
    );

    let shown = format!(
        "{:?}",
        ok(c.keystores
            .get_keystore(keyorch::proto::v1::GetKeystoreRequest { id: ks.id.clone() }))
        .await
    );
    assert_secret_nowhere(&d, CLIENT_SECRET, &[&shown]).await;
    assert!(
        !fake.fake.logged().contains(CLIENT_SECRET),
        "the fake logged the secret"
    );
}

#[tokio::test]
async fn a_missing_import_kek_is_named_and_reconnecting_recreates_it() {
    let fake = Fake::start(&[]);
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let vault = create_vault(&mut c, "v").await;
    let own = create_keystore(&mut c, &vault.id, "own", true).await;
    let ks = ok(c.keystores.create_keystore(keystore_req(
        &vault.id,
        "azure",
        &fake,
        CLIENT_SECRET,
        true,
    )))
    .await;
    assert_import_kek(&fake);
    fake.remove(IMPORT_KEK, true);
    assert!(fake.key(IMPORT_KEK).is_none());

    let t = test_stored(&mut c, &ks.id).await;
    assert!(!t.ok, "{t:?}");
    assert_eq!(
        t.error_code,
        ConnectionErrorCode::ImportKekMissing as i32,
        "{t:?}"
    );
    let key = create_key(
        &mut c,
        &vault.id,
        "rsa",
        KeyAlgorithm::Rsa,
        2048,
        &[&own.id],
        true,
    )
    .await;
    let e = fails(c.keys.install_key(InstallKeyRequest {
        id: key.id.clone(),
        keystore_id: ks.id.clone(),
    }))
    .await;
    assert!(e.message().contains(IMPORT_KEK), "{e:?}");
    assert!(fake.key(&label(&key)).is_none());

    // Reconnecting creates a new import KEK; installs work again.
    ok(c.keystores.disconnect_keystore(DisconnectKeystoreRequest {
        id: ks.id.clone(),
        uninstall_keys: false,
        force: true,
    }))
    .await;
    let back = ok(c
        .keystores
        .connect_keystore(ConnectKeystoreRequest { id: ks.id.clone() }))
    .await;
    assert_connection(&back, ConnectionState::Connected);
    assert_import_kek(&fake);
    let key = ok(c.keys.install_key(InstallKeyRequest {
        id: key.id.clone(),
        keystore_id: ks.id.clone(),
    }))
    .await;
    assert_eq!(
        instance(&key, &ks.id).state,
        InstanceState::Installed as i32
    );
    assert_eq!(fake.fake.kcv(&label(&key)), key.key_check_value);
}

#[tokio::test]
async fn wrong_secrets_denied_permissions_and_bad_fields_are_named() {
    let fake = Fake::start(&[]);
    let denying = Fake::start(&["--deny", "purge,backup"]);
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let vault = create_vault(&mut c, "v").await;

    let wrong = ok(c.keystores.create_keystore(keystore_req(
        &vault.id,
        "wrong",
        &fake,
        "Not-the-right-secret~0123456789abcdef",
        true,
    )))
    .await;
    assert_failed_with(&wrong, ConnectionErrorCode::InvalidCredentials);
    assert!(
        wrong.connection_error_message.contains("AADSTS7000215"),
        "{wrong:?}"
    );

    let denied = ok(c.keystores.create_keystore(keystore_req(
        &vault.id,
        "denied",
        &denying,
        CLIENT_SECRET,
        false,
    )))
    .await;
    let t = test_stored(&mut c, &denied.id).await;
    assert!(!t.ok, "{t:?}");
    assert_eq!(
        t.error_code,
        ConnectionErrorCode::InsufficientPermissions as i32,
        "{t:?}"
    );
    let mut names = t.denied_permissions.clone();
    names.sort();
    assert_eq!(names, ["backup", "purge"], "{t:?}");
    // Each of the ten is named when it alone is denied.
    for p in PERMISSIONS {
        denying.fake.deny(&[p]);
        let t = test_stored(&mut c, &denied.id).await;
        assert_eq!(t.denied_permissions, [p], "{p}: {t:?}");
    }
    // The probes changed nothing in the vault: no key was made.
    denying.fake.deny(&[]);
    let (code, body) = denying.fake.kv("GET", "/keys", None);
    assert_eq!(code, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["value"], serde_json::json!([]), "{listed}");

    // Bad configurations are refused by their field before anything is stored.
    let bad = |f: fn(&mut AzureKeyVaultKeystoreConfig)| {
        let mut r = keystore_req(&vault.id, "bad", &fake, CLIENT_SECRET, false);
        if let Some(create_keystore_request::Config::AzureKeyVault(cfg)) = &mut r.config {
            f(cfg);
        }
        r
    };
    type Case = (&'static str, fn(&mut AzureKeyVaultKeystoreConfig));
    let cases: [Case; 6] = [
        ("azure_key_vault.vault_name", |c| c.vault_name = "a".into()),
        ("azure_key_vault.environment", |c| {
            c.environment = "AzureGermanCloud".into()
        }),
        ("azure_key_vault.tenant_id", |c| {
            c.tenant_id = "contoso.onmicrosoft.com".into()
        }),
        ("azure_key_vault.location", |c| {
            c.location = "West Europe".into()
        }),
        ("azure_key_vault.vault_url", |c| {
            c.vault_url = "http://vault.example".into()
        }),
        ("azure_key_vault.ca_cert_pem", |c| {
            c.ca_cert_pem = "not a certificate".into()
        }),
    ];
    for (field, change) in cases {
        let e = fails(c.keystores.create_keystore(bad(change))).await;
        assert_invalid(&e, field);
    }
    let mut spaced = keystore_req(&vault.id, "spaced", &fake, "has white space", false);
    spaced.name = "spaced".into();
    let e = fails(c.keystores.create_keystore(spaced)).await;
    assert_invalid(&e, "azure_key_vault_credentials.client_secret");
    assert_secret_nowhere(&d, CLIENT_SECRET, &[]).await;
}

/// The crash matrix of DESIGN §5 for an azure_key_vault target: keyorchd aborts at each step
/// of an activation (install) and a deactivation (uninstall) — `KEYORCH_FAILPOINT`, like
/// SIGKILL — and is started again; then no instance is left in flight, store and vault agree
/// (an INSTALLED instance's key holds keyorch's material by the fake's check value, and status
/// shows nothing out of sync), and the call made again completes.
#[tokio::test]
async fn a_crash_at_any_step_of_an_install_or_uninstall_is_settled_at_start_up() {
    use std::os::unix::process::ExitStatusExt;
    let fake = Fake::start(&[]);
    let mut d = TestDaemon::start().await;
    let mut c = d.clients();
    let vault = create_vault(&mut c, "v").await;
    let own = create_keystore(&mut c, &vault.id, "own", true).await;
    let ks = ok(c.keystores.create_keystore(keystore_req(
        &vault.id,
        "azure",
        &fake,
        CLIENT_SECRET,
        true,
    )))
    .await;
    let steps = [
        ("install.intent_recorded", true),
        ("install.target_done", true),
        ("install.outcome_recorded", true),
        ("uninstall.intent_recorded", false),
        ("uninstall.target_done", false),
        ("uninstall.outcome_recorded", false),
    ];
    for (n, (step, activate)) in steps.into_iter().enumerate() {
        let key = create_key(
            &mut c,
            &vault.id,
            &format!("k{n}"),
            KeyAlgorithm::Ec,
            256,
            &[&own.id, &ks.id],
            !activate,
        )
        .await;
        d.restart_with_env(&[("KEYORCH_FAILPOINT", step)]).await;
        let mut cc = d.clients();
        let r = if activate {
            cc.keys.activate_key(key_id(&key.id)).await
        } else {
            cc.keys.deactivate_key(key_id(&key.id)).await
        };
        assert!(r.is_err(), "{step}: the call succeeded");
        let status = d.wait_for_exit(Duration::from_secs(20)).await;
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{step}: {status}");
        d.restart_with_env(&[]).await;
        c = d.clients();

        let settled = get_key(&mut c, &key.id).await;
        let inst = instance(&settled, &ks.id);
        assert!(
            inst.state == InstanceState::Installed as i32
                || inst.state == InstanceState::NotInstalled as i32,
            "{step}: left in flight: {inst:?}"
        );
        let s = status_in(&mut c, &key.id, &ks.id).await;
        assert_eq!(s.sync, SyncStatus::Ok as i32, "{step}: {s:?}");
        if inst.state == InstanceState::Installed as i32 {
            assert_eq!(
                fake.fake.kcv(&label(&key)),
                settled.key_check_value,
                "{step}"
            );
        } else {
            assert!(fake.key(&label(&key)).is_none(), "{step}: a copy is left");
        }
        let before = if activate {
            KeyState::PreActive
        } else {
            KeyState::Active
        };
        let done = if settled.state != before as i32 {
            settled
        } else if activate {
            ok(c.keys.activate_key(key_id(&key.id))).await
        } else {
            ok(c.keys.deactivate_key(key_id(&key.id))).await
        };
        let inst = instance(&done, &ks.id);
        if activate {
            assert_eq!(
                inst.state,
                InstanceState::Installed as i32,
                "{step}: {inst:?}"
            );
            assert_eq!(fake.fake.kcv(&label(&key)), done.key_check_value, "{step}");
            assert_status_is(
                &status_in(&mut c, &key.id, &ks.id).await,
                TargetKeyStatus::Active,
                SyncStatus::Ok,
            );
        } else {
            assert_eq!(
                inst.state,
                InstanceState::NotInstalled as i32,
                "{step}: {inst:?}"
            );
            assert!(fake.key(&label(&key)).is_none(), "{step}");
            assert!(!fake.deleted(&label(&key)), "{step}: not purged");
            assert_status_is(
                &status_in(&mut c, &key.id, &ks.id).await,
                TargetKeyStatus::NotPresent,
                SyncStatus::Ok,
            );
        }
    }
}
