//! ibm_key_protect and ibm_hpcs keystores through the real keyorchd binary, against the
//! loopback fake of IBM's KMS API v2 and IAM (tests/ibm_kms/fake.py: IBM publishes no
//! emulator; the fake follows the published API and is proven with IBM's own Python SDK in
//! tests/ibm_kms_fake.rs). The fake does the real import crypto — RSA-OAEP unwrap of the
//! payload, the nonce decrypted under the unwrapped key (AES-GCM for Key Protect, AES-CBC-PAD
//! for HPCS) — so a wrong wrap fails, and its fake-only `/__fake__/keys/{id}/check` gives the
//! imported key's check value computed from the unwrapped material, which the tests compare
//! with keyorch's. Served over https with a CA made here, given in the keystore's
//! `ca_cert_pem`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::ibm;
use common::tls as tls_certs;
use common::*;
use keyorch::client::Clients;
use keyorch::proto::v1::{
    create_keystore_request, ConnectKeystoreRequest, ConnectionErrorCode, ConnectionState,
    CreateKeystoreRequest, DisconnectKeystoreRequest, IbmKmsCredentials, IbmKmsKeystoreConfig,
    InstallKeyRequest, InstanceState, KeyAlgorithm, KeyState, KeystoreType, SyncStatus,
    TargetKeyStatus, TestKeystoreConnectionRequest, TestKeystoreConnectionResponse,
};
use tonic::Code;

/// The one service ID API key the fake's IAM accepts: a canary that must never come back.
const API_KEY: &str = "Canary-IBM-apikey-Zr7Qm2Lx9Vt4Nc8Wp1Hs6";
const INSTANCE: &str = "2f8c7a52-4b1e-4d0a-9c3e-5a6b7c8d9e0f";

/// A running fake.py over https with a CA of its own.
struct Fake {
    fake: ibm::Fake,
    url: String,
    ca_pem: String,
    dir: tempfile::TempDir,
}

impl Fake {
    fn start(flavor: &str, extra: &[&str]) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let ca = tls_certs::ca("keyorch test CA for the IBM KMS fake");
        let (cert, key) = tls_certs::leaf(&ca, "127.0.0.1", "keyorch-tests", true, 1);
        std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
        std::fs::write(dir.path().join("server.pem"), cert).unwrap();
        std::fs::write(dir.path().join("server-key.pem"), key).unwrap();
        let fake = ibm::Fake::start(dir.path(), flavor, (API_KEY, INSTANCE), extra, true);
        Fake {
            url: fake.url.clone(),
            fake,
            ca_pem: ca.pem,
            dir,
        }
    }

    /// A fake-only endpoint, through curl with the fake's CA.
    fn call(&self, method: &str, path: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
            .arg("--cacert")
            .arg(self.dir.path().join("ca.pem"))
            .arg(format!("{}{path}", self.url))
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// keyorch's check value of the key `id` holds, from the material the fake unwrapped.
    fn kcv(&self, id: &str) -> String {
        let (code, body) = self.call("GET", &format!("/__fake__/keys/{id}/check"));
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["keyorch_kcv"].as_str().expect("an AES key").to_string()
    }

    fn log(&self) -> String {
        self.fake.logged()
    }
}

fn keystore_req(
    vault_id: &str,
    name: &str,
    t: KeystoreType,
    fake: &Fake,
    api_key: &str,
    connect: bool,
) -> CreateKeystoreRequest {
    CreateKeystoreRequest {
        vault_id: vault_id.into(),
        name: name.into(),
        description: String::new(),
        r#type: t as i32,
        connect,
        config: Some(create_keystore_request::Config::IbmKms(
            IbmKmsKeystoreConfig {
                instance_id: INSTANCE.into(),
                key_ring_id: String::new(),
                api_endpoint: fake.url.clone(),
                iam_endpoint: fake.url.clone(),
                ca_cert_pem: fake.ca_pem.clone(),
            },
        )),
        credentials: Some(create_keystore_request::Credentials::IbmKmsCredentials(
            IbmKmsCredentials {
                api_key: api_key.into(),
            },
        )),
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

#[tokio::test]
async fn hpcs_keys_are_imported_intact_and_follow_the_lifecycle() {
    let fake = Fake::start("hpcs", &[]);
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let vault = create_vault(&mut c, "v").await;
    let own = create_keystore(&mut c, &vault.id, "own", true).await;
    let ks = ok(c.keystores.create_keystore(keystore_req(
        &vault.id,
        "hpcs",
        KeystoreType::IbmHpcs,
        &fake,
        API_KEY,
        true,
    )))
    .await;
    assert_connection(&ks, ConnectionState::Connected);
    assert!(ks.has_credentials);
    let t = test_stored(&mut c, &ks.id).await;
    assert!(t.ok && t.denied_permissions.is_empty(), "{t:?}");

    // Installed at activation: the fake unwrapped the very key keyorch holds.
    let key = create_key(
        &mut c,
        &vault.id,
        "aes",
        KeyAlgorithm::Aes,
        256,
        &[&own.id, &ks.id],
        false,
    )
    .await;
    let key = ok(c.keys.activate_key(key_id(&key.id))).await;
    let inst = instance(&key, &ks.id);
    assert_eq!(inst.state, InstanceState::Installed as i32, "{inst:?}");
    assert!(!inst.remote_id.is_empty(), "{inst:?}");
    assert_eq!(
        fake.kcv(&inst.remote_id),
        key.key_check_value,
        "other material"
    );
    assert_status_is(
        &status_in(&mut c, &key.id, &ks.id).await,
        TargetKeyStatus::Active,
        SyncStatus::Ok,
    );
    // AES-128 too (root keys are 16, 24 or 32 bytes); HMAC is refused before anything is sent.
    let small = create_key(
        &mut c,
        &vault.id,
        "aes128",
        KeyAlgorithm::Aes,
        128,
        &[&ks.id],
        true,
    )
    .await;
    let small_inst = instance(&small, &ks.id);
    assert_eq!(small_inst.state, InstanceState::Installed as i32);
    assert_eq!(fake.kcv(&small_inst.remote_id), small.key_check_value);
    let e = fails(c.keys.create_key(keyorch::proto::v1::CreateKeyRequest {
        vault_id: vault.id.clone(),
        name: "mac".into(),
        algorithm: KeyAlgorithm::HmacSha256 as i32,
        key_size_bits: 256,
        target_keystore_ids: vec![ks.id.clone()],
        ..Default::default()
    }))
    .await;
    assert!(e.message().contains("AES"), "{e:?}");

    // Drift: deleted behind keyorch's back, reported, repaired by SyncKey.
    let (code, body) = fake.call("POST", &format!("/__fake__/keys/{}/delete", inst.remote_id));
    assert_eq!(code, 204, "{body}");
    assert_status_is(
        &status_in(&mut c, &key.id, &ks.id).await,
        TargetKeyStatus::NotPresent,
        SyncStatus::OutOfSync,
    );
    let synced = ok(c.keys.sync_key(key_id(&key.id))).await;
    assert_status_is(
        &status_in(&mut c, &key.id, &ks.id).await,
        TargetKeyStatus::Active,
        SyncStatus::Ok,
    );
    let again = status_in(&mut c, &key.id, &ks.id).await;
    let new_id = instance(&get_key(&mut c, &key.id).await, &ks.id).remote_id;
    assert_ne!(new_id, inst.remote_id, "a new copy: {again:?} {synced:?}");
    assert_eq!(fake.kcv(&new_id), key.key_check_value);

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
        KeyAlgorithm::Aes,
        256,
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
    ok(c.keystores
        .connect_keystore(ConnectKeystoreRequest { id: ks.id.clone() }))
    .await;
    let third = ok(c.keys.install_key(InstallKeyRequest {
        id: third.id.clone(),
        keystore_id: ks.id.clone(),
    }))
    .await;
    let third_inst = instance(&third, &ks.id);
    assert_eq!(third_inst.state, InstanceState::Installed as i32);
    assert_eq!(fake.kcv(&third_inst.remote_id), third.key_check_value);

    // Deactivation uninstalls: the copy is deleted in the service.
    ok(c.keys.deactivate_key(key_id(&key.id))).await;
    assert_status_is(
        &status_in(&mut c, &key.id, &ks.id).await,
        TargetKeyStatus::NotPresent,
        SyncStatus::Ok,
    );

    let shown = format!(
        "{:?}",
        ok(c.keystores
            .get_keystore(keyorch::proto::v1::GetKeystoreRequest { id: ks.id.clone() }))
        .await
    );
    assert_secret_nowhere(&d, API_KEY, &[&shown]).await;
    assert!(!fake.log().contains(API_KEY), "the fake logged the API key");
}

#[tokio::test]
async fn key_protect_installs_need_oaep_sha256_which_softhsm2_lacks() {
    let fake = Fake::start("key_protect", &[]);
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let vault = create_vault(&mut c, "v").await;
    let ks = ok(c.keystores.create_keystore(keystore_req(
        &vault.id,
        "kp",
        KeystoreType::IbmKeyProtect,
        &fake,
        API_KEY,
        true,
    )))
    .await;
    assert_connection(&ks, ConnectionState::Connected);
    let own = create_keystore(&mut c, &vault.id, "own", true).await;
    let key = create_key(
        &mut c,
        &vault.id,
        "aes",
        KeyAlgorithm::Aes,
        256,
        &[&own.id],
        true,
    )
    .await;
    let e = fails(c.keys.install_key(InstallKeyRequest {
        id: key.id.clone(),
        keystore_id: ks.id.clone(),
    }))
    .await;
    assert!(
        e.message().contains("RSAES_OAEP_SHA_256") && e.message().contains("ibm_hpcs"),
        "{e:?}"
    );
    let key = get_key(&mut c, &key.id).await;
    assert!(
        key.instances
            .iter()
            .all(|i| i.keystore_id != ks.id || i.state != InstanceState::Installed as i32),
        "{key:?}"
    );
}

#[tokio::test]
async fn wrong_keys_and_denied_permissions_are_named() {
    let fake = Fake::start("hpcs", &[]);
    let denying = Fake::start("hpcs", &["--deny", "list"]);
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let vault = create_vault(&mut c, "v").await;

    let wrong = ok(c.keystores.create_keystore(keystore_req(
        &vault.id,
        "wrong",
        KeystoreType::IbmHpcs,
        &fake,
        "Not-the-right-apikey-0123456789abcdef",
        true,
    )))
    .await;
    assert_failed_with(&wrong, ConnectionErrorCode::InvalidCredentials);

    let denied = ok(c.keystores.create_keystore(keystore_req(
        &vault.id,
        "denied",
        KeystoreType::IbmHpcs,
        &denying,
        API_KEY,
        false,
    )))
    .await;
    let t = test_stored(&mut c, &denied.id).await;
    assert!(!t.ok, "{t:?}");
    assert!(
        t.denied_permissions.iter().any(|p| p.contains("list")),
        "{t:?}"
    );

    // A bad configuration is refused by its field before anything is stored.
    let mut bad = keystore_req(
        &vault.id,
        "bad",
        KeystoreType::IbmHpcs,
        &fake,
        API_KEY,
        false,
    );
    if let Some(create_keystore_request::Config::IbmKms(cfg)) = &mut bad.config {
        cfg.api_endpoint = "ftp://example".into();
    }
    let e = fails(c.keystores.create_keystore(bad)).await;
    assert_invalid(&e, "ibm_kms.api_endpoint");
    let mut slash = keystore_req(
        &vault.id,
        "slash",
        KeystoreType::IbmHpcs,
        &fake,
        API_KEY,
        false,
    );
    if let Some(create_keystore_request::Config::IbmKms(cfg)) = &mut slash.config {
        cfg.iam_endpoint = format!("{}/", fake.url);
    }
    let e = fails(c.keystores.create_keystore(slash)).await;
    assert_invalid(&e, "ibm_kms.iam_endpoint");
    let mut short = keystore_req(&vault.id, "short", KeystoreType::IbmHpcs, &fake, "x", false);
    short.name = "short".into();
    let e = fails(c.keystores.create_keystore(short)).await;
    assert_invalid(&e, "ibm_kms_credentials.api_key");
    assert_secret_nowhere(&d, API_KEY, &[]).await;
}

/// The crash matrix of DESIGN §5 for an ibm_hpcs target: keyorchd aborts at each step of an
/// activation (install) and a deactivation (uninstall) — `KEYORCH_FAILPOINT`, like SIGKILL —
/// and is started again; then no instance is left in flight, store and service agree (an
/// INSTALLED instance's recorded key holds keyorch's material by the fake's check value,
/// and status shows nothing out of sync), and the call made again completes.
#[tokio::test]
async fn a_crash_at_any_step_of_an_install_or_uninstall_is_settled_at_start_up() {
    use std::os::unix::process::ExitStatusExt;
    let fake = Fake::start("hpcs", &[]);
    let mut d = TestDaemon::start().await;
    let mut c = d.clients();
    let vault = create_vault(&mut c, "v").await;
    let own = create_keystore(&mut c, &vault.id, "own", true).await;
    let ks = ok(c.keystores.create_keystore(keystore_req(
        &vault.id,
        "hpcs",
        KeystoreType::IbmHpcs,
        &fake,
        API_KEY,
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
            KeyAlgorithm::Aes,
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
            assert_eq!(fake.kcv(&inst.remote_id), settled.key_check_value, "{step}");
        }
        // Made again (unless start-up finished it), the call completes and everything agrees.
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
            assert_eq!(fake.kcv(&inst.remote_id), done.key_check_value, "{step}");
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
            assert_status_is(
                &status_in(&mut c, &key.id, &ks.id).await,
                TargetKeyStatus::NotPresent,
                SyncStatus::Ok,
            );
        }
    }
}
