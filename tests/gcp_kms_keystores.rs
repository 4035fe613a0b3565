//! google_cloud_kms keystores through the real keyorchd binary, against the loopback fake of
//! Google Cloud KMS's REST API (tests/gcp_kms/fake.py: Google ships no Cloud KMS emulator; the
//! fake follows the published v1 REST API and is proven with Google's own Python client and the
//! Rust crate keyorch uses in tests/gcp_kms_fake.rs). The fake does the real import crypto —
//! RSA-OAEP unwrap of the transfer key with the import job's private key, then AES-KWP unwrap of
//! the key — so a wrong wrap fails, and its fake-only `/__fake__/versions/{name}/check` gives
//! the check value of the material it unwrapped, which the tests compare with keyorch's.
//!
//! The fake speaks https with a certificate signed by a CA made here. Google's client takes no
//! CA of its own (docs/keystores.md §11), so keyorchd is started with `SSL_CERT_FILE` naming
//! that CA, as an operator of a private endpoint would do.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::gcp::{Fake, ServiceAccountKey};
use common::*;
use keyorch::client::Clients;
use keyorch::proto::v1::{
    create_keystore_request, ConnectKeystoreRequest, ConnectionErrorCode, ConnectionState,
    CreateKeystoreRequest, DisconnectKeystoreRequest, GetKeystoreRequest,
    GoogleCloudKmsCredentials, GoogleCloudKmsKeystoreConfig, InstallKeyRequest, InstanceState, Key,
    KeyAlgorithm, KeyState, KeystoreType, SyncStatus, TargetKeyStatus,
    TestKeystoreConnectionRequest, TestKeystoreConnectionResponse, UpdateKeystoreRequest,
};
use tonic::Code;

const PROJECT: &str = "keyorch-test-project";
const LOCATION: &str = "europe-west1";
const RING: &str = "keyorch";
const EMAIL: &str = "keyorch-tests@keyorch-test-project.iam.gserviceaccount.com";

/// The permissions keyorch needs (src/targets/gcp_kms/mod.rs), as Cloud KMS names them.
const PERMISSIONS: [&str; 12] = [
    "cloudkms.keyRings.get",
    "cloudkms.cryptoKeys.get",
    "cloudkms.cryptoKeys.create",
    "cloudkms.cryptoKeys.update",
    "cloudkms.cryptoKeyVersions.create",
    "cloudkms.cryptoKeyVersions.get",
    "cloudkms.cryptoKeyVersions.list",
    "cloudkms.cryptoKeyVersions.destroy",
    "cloudkms.cryptoKeyVersions.viewPublicKey",
    "cloudkms.importJobs.create",
    "cloudkms.importJobs.get",
    "cloudkms.importJobs.useToImport",
];

fn key_ring() -> String {
    format!("projects/{PROJECT}/locations/{LOCATION}/keyRings/{RING}")
}

/// A folder with a CA, a server certificate for 127.0.0.1 signed by it, and a service account
/// key file; the fake runs over https with them.
struct Setup {
    dir: tempfile::TempDir,
    key: ServiceAccountKey,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let ca = tls::ca("keyorch test CA for Cloud KMS");
        let (cert, key) = tls::leaf(&ca, "127.0.0.1", "keyorch-tests", true, 1);
        std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
        std::fs::write(dir.path().join("server.pem"), cert).unwrap();
        std::fs::write(dir.path().join("server-key.pem"), key).unwrap();
        let key = ServiceAccountKey::new(dir.path(), "sa.json", PROJECT, EMAIL, None);
        Setup { dir, key }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn ca_file(&self) -> PathBuf {
        self.path().join("ca.pem")
    }

    /// A fake trusting `keys` (this setup's key file when empty), with the key ring.
    fn fake(&self, keys: &[&ServiceAccountKey], extra: &[&str]) -> Fake {
        let keys = if keys.is_empty() {
            vec![&self.key]
        } else {
            keys.to_vec()
        };
        Fake::start(self.path(), &keys, &[&key_ring()], extra, true)
    }
}

/// keyorchd trusting the setup's CA through `SSL_CERT_FILE`, plus `env` for this run.
async fn daemon(s: &Setup) -> TestDaemon {
    let mut d = TestDaemon::start().await;
    restart(&mut d, s, &[]).await;
    d
}

async fn restart(d: &mut TestDaemon, s: &Setup, env: &[(&str, &str)]) {
    let ca = s.ca_file().to_str().unwrap().to_string();
    let mut all = vec![("SSL_CERT_FILE", ca.as_str())];
    all.extend_from_slice(env);
    d.restart_with_env(&all).await;
}

fn config(fake: &Fake) -> GoogleCloudKmsKeystoreConfig {
    GoogleCloudKmsKeystoreConfig {
        location: LOCATION.into(),
        key_ring: RING.into(),
        endpoint: fake.url.clone(),
        ..Default::default()
    }
}

fn keystore_req(
    vault_id: &str,
    name: &str,
    fake: &Fake,
    key: &ServiceAccountKey,
    connect: bool,
) -> CreateKeystoreRequest {
    keystore_req_with(vault_id, name, config(fake), &key.json(), connect)
}

fn keystore_req_with(
    vault_id: &str,
    name: &str,
    config: GoogleCloudKmsKeystoreConfig,
    key_json: &str,
    connect: bool,
) -> CreateKeystoreRequest {
    CreateKeystoreRequest {
        vault_id: vault_id.into(),
        name: name.into(),
        description: String::new(),
        r#type: KeystoreType::GoogleCloudKms as i32,
        connect,
        config: Some(create_keystore_request::Config::GoogleCloudKms(config)),
        credentials: Some(
            create_keystore_request::Credentials::GoogleCloudKmsCredentials(
                GoogleCloudKmsCredentials {
                    service_account_key_json: key_json.into(),
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

/// keyorch's crypto key in the key ring for `key`.
fn crypto_key(key: &Key) -> String {
    format!("{}/cryptoKeys/keyorch-{}", key_ring(), key.id)
}

/// What the fake says of a version: (state, keyorch's check value of its material), or None
/// when the version does not exist or holds no material.
fn version(fake: &Fake, name: &str) -> Option<(String, String)> {
    let (code, body) = fake.admin(
        "GET",
        &format!("/__fake__/versions/{}/check", common::gcp::encode(name)),
        None,
    );
    match code {
        200 => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            Some((
                v["state"].as_str().unwrap().to_string(),
                v["keyorch_kcv"].as_str().unwrap().to_string(),
            ))
        }
        404 => None,
        _ => panic!("check {name}: {code} {body}"),
    }
}

/// The versions of keyorch's crypto key for `key` that hold usable material (ENABLED,
/// DISABLED or PENDING_IMPORT), as (name, check value).
fn live_versions(fake: &Fake, key: &Key) -> Vec<(String, String)> {
    (1..=6)
        .map(|n| format!("{}/cryptoKeyVersions/{n}", crypto_key(key)))
        .filter_map(|name| {
            version(fake, &name)
                .filter(|(state, _)| {
                    ["ENABLED", "DISABLED", "PENDING_IMPORT"].contains(&state.as_str())
                })
                .map(|(_, kcv)| (name, kcv))
        })
        .collect()
}

/// The base64 lines of the key file's private key: none may leave keyorchd.
fn private_lines(key: &ServiceAccountKey) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&key.json()).unwrap();
    v["private_key"]
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| l.len() > 16 && !l.starts_with("-----"))
        .map(str::to_string)
        .collect()
}

async fn assert_key_file_nowhere(d: &TestDaemon, key: &ServiceAccountKey, printed: &[&str]) {
    for line in private_lines(key) {
        assert_secret_nowhere(d, &line, printed).await;
    }
}

#[tokio::test]
async fn aes_rsa_and_ec_keys_are_imported_intact_and_follow_the_lifecycle() {
    let s = Setup::new();
    let fake = s.fake(&[], &[]);
    let d = daemon(&s).await;
    let mut c = d.clients();
    let vault = create_vault(&mut c, "v").await;
    let own = create_keystore(&mut c, &vault.id, "own", true).await;
    let ks = ok(c
        .keystores
        .create_keystore(keystore_req(&vault.id, "gcp", &fake, &s.key, true)))
    .await;
    assert_connection(&ks, ConnectionState::Connected);
    assert!(ks.has_credentials);
    // The project, key id and e-mail come from the key file and are shown read-only.
    let Some(keyorch::proto::v1::keystore::Config::GoogleCloudKms(shown)) = &ks.config else {
        panic!("{ks:?}")
    };
    assert_eq!(
        (
            shown.project_id.as_str(),
            shown.private_key_id.as_str(),
            shown.client_email.as_str(),
            shown.location.as_str(),
            shown.key_ring.as_str(),
            shown.endpoint.as_str()
        ),
        (
            PROJECT,
            s.key.key_id.as_str(),
            EMAIL,
            LOCATION,
            RING,
            fake.url.as_str()
        )
    );
    let t = test_stored(&mut c, &ks.id).await;
    assert!(t.ok && t.denied_permissions.is_empty(), "{t:?}");

    // AES-256, installed at activation: the fake unwrapped the very key keyorch holds.
    let aes = create_key(
        &mut c,
        &vault.id,
        "aes",
        KeyAlgorithm::Aes,
        256,
        &[&own.id, &ks.id],
        false,
    )
    .await;
    let aes = ok(c.keys.activate_key(key_id(&aes.id))).await;
    let inst = instance(&aes, &ks.id);
    assert_eq!(inst.state, InstanceState::Installed as i32, "{inst:?}");
    assert_eq!(
        inst.remote_id,
        format!("{}/cryptoKeyVersions/1", crypto_key(&aes))
    );
    assert_eq!(
        version(&fake, &inst.remote_id),
        Some(("ENABLED".into(), aes.key_check_value.clone()))
    );
    assert_status_is(
        &status_in(&mut c, &aes.id, &ks.id).await,
        TargetKeyStatus::Active,
        SyncStatus::Ok,
    );
    // RSA-2048 and EC P-256, as PKCS#8.
    let mut pairs = Vec::new();
    for (name, alg, bits) in [
        ("rsa", KeyAlgorithm::Rsa, 2048),
        ("ec", KeyAlgorithm::Ec, 256),
    ] {
        let k = create_key(&mut c, &vault.id, name, alg, bits, &[&ks.id], true).await;
        let i = instance(&k, &ks.id);
        assert_eq!(i.state, InstanceState::Installed as i32, "{name}: {i:?}");
        assert_eq!(
            version(&fake, &i.remote_id),
            Some(("ENABLED".into(), k.key_check_value.clone())),
            "{name}"
        );
        pairs.push(k);
    }

    // Drift: destroyed in the console behind keyorch's back, reported, repaired by SyncKey
    // with a new imported version of the same crypto key.
    let (code, body) = fake.admin(
        "POST",
        &format!(
            "/__fake__/versions/{}/destroy",
            common::gcp::encode(&inst.remote_id)
        ),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_status_is(
        &status_in(&mut c, &aes.id, &ks.id).await,
        TargetKeyStatus::NotPresent,
        SyncStatus::OutOfSync,
    );
    ok(c.keys.sync_key(key_id(&aes.id))).await;
    assert_status_is(
        &status_in(&mut c, &aes.id, &ks.id).await,
        TargetKeyStatus::Active,
        SyncStatus::Ok,
    );
    let synced = instance(&get_key(&mut c, &aes.id).await, &ks.id).remote_id;
    assert_eq!(synced, format!("{}/cryptoKeyVersions/2", crypto_key(&aes)));
    assert_eq!(
        live_versions(&fake, &aes),
        [(synced.clone(), aes.key_check_value.clone())]
    );

    // Disabled behind keyorch's back: reported as out of sync.
    let ec = &pairs[1];
    fake.set_state(&instance(ec, &ks.id).remote_id, "DISABLED");
    let st = status_in(&mut c, &ec.id, &ks.id).await;
    assert_eq!(st.sync, SyncStatus::OutOfSync as i32, "{st:?}");

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
    assert!(live_versions(&fake, &third).is_empty());
    ok(c.keystores
        .connect_keystore(ConnectKeystoreRequest { id: ks.id.clone() }))
    .await;
    let third = ok(c.keys.install_key(InstallKeyRequest {
        id: third.id.clone(),
        keystore_id: ks.id.clone(),
    }))
    .await;
    let i = instance(&third, &ks.id);
    assert_eq!(i.state, InstanceState::Installed as i32, "{i:?}");
    assert_eq!(
        live_versions(&fake, &third),
        [(i.remote_id.clone(), third.key_check_value.clone())]
    );

    // Deactivation uninstalls: Cloud KMS keeps the crypto key, its version is scheduled for
    // destruction and no usable copy is left.
    ok(c.keys.deactivate_key(key_id(&aes.id))).await;
    assert_status_is(
        &status_in(&mut c, &aes.id, &ks.id).await,
        TargetKeyStatus::NotPresent,
        SyncStatus::Ok,
    );
    assert_eq!(
        version(&fake, &synced).map(|(state, _)| state).as_deref(),
        Some("DESTROY_SCHEDULED")
    );
    assert!(live_versions(&fake, &aes).is_empty());

    let shown = format!(
        "{:?}",
        ok(c.keystores
            .get_keystore(GetKeystoreRequest { id: ks.id.clone() }))
        .await
    );
    assert_key_file_nowhere(&d, &s.key, &[&shown]).await;
    assert!(
        !fake.logged().contains(&private_lines(&s.key)[0]),
        "the fake logged the key file"
    );
}

#[tokio::test]
async fn wrong_key_files_denied_permissions_and_bad_fields_are_named() {
    let s = Setup::new();
    let fake = s.fake(&[], &[]);
    let denying = s.fake(
        &[],
        &[
            "--deny",
            "cloudkms.importJobs.create,cloudkms.cryptoKeyVersions.destroy",
        ],
    );
    let d = daemon(&s).await;
    let mut c = d.clients();
    let vault = create_vault(&mut c, "v").await;

    // A key file under a key id the service knows, signed by another private key.
    let forged =
        ServiceAccountKey::new(s.path(), "forged.json", PROJECT, EMAIL, Some(&s.key.key_id));
    let wrong = ok(c
        .keystores
        .create_keystore(keystore_req(&vault.id, "wrong", &fake, &forged, true)))
    .await;
    assert_failed_with(&wrong, ConnectionErrorCode::InvalidCredentials);

    // A key ring that does not exist.
    let mut missing = config(&fake);
    missing.key_ring = "no-such-ring".into();
    let nowhere = ok(c.keystores.create_keystore(keystore_req_with(
        &vault.id,
        "nowhere",
        missing,
        &s.key.json(),
        true,
    )))
    .await;
    assert_failed_with(&nowhere, ConnectionErrorCode::TargetNotFound);

    let denied = ok(c
        .keystores
        .create_keystore(keystore_req(&vault.id, "denied", &denying, &s.key, false)))
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
    assert_eq!(
        names,
        [
            "cloudkms.cryptoKeyVersions.destroy",
            "cloudkms.importJobs.create"
        ],
        "{t:?}"
    );
    // Each of the twelve is named when it alone is denied.
    for p in PERMISSIONS {
        denying.deny(&[p]);
        let t = test_stored(&mut c, &denied.id).await;
        assert_eq!(t.denied_permissions, [p], "{p}: {t:?}");
    }
    denying.deny(&[]);
    let t = test_stored(&mut c, &denied.id).await;
    assert!(t.ok, "{t:?}");

    // Bad configurations are refused by their field before anything is stored.
    let before = snapshot(&c).await;
    type Case = (&'static str, fn(&mut GoogleCloudKmsKeystoreConfig));
    let cases: [Case; 6] = [
        ("google_cloud_kms.location", |c| {
            c.location = "Europe West".into()
        }),
        ("google_cloud_kms.key_ring", |c| c.key_ring = "a/b".into()),
        ("google_cloud_kms.endpoint", |c| {
            c.endpoint = format!("{}/v1", c.endpoint)
        }),
        ("google_cloud_kms.endpoint", |c| {
            c.endpoint = "http://cloudkms.example".into()
        }),
        ("google_cloud_kms.project_id", |c| {
            c.project_id = "another-project".into()
        }),
        ("google_cloud_kms.client_email", |c| {
            c.client_email = "someone@example.com".into()
        }),
    ];
    for (field, change) in cases {
        let mut cfg = config(&fake);
        change(&mut cfg);
        let e = fails(c.keystores.create_keystore(keystore_req_with(
            &vault.id,
            "bad",
            cfg,
            &s.key.json(),
            false,
        )))
        .await;
        assert_invalid(&e, field);
    }
    let too_big = format!("{}{}", s.key.json(), " ".repeat(4096));
    for json in ["not json", "{}", too_big.as_str()] {
        let e = fails(c.keystores.create_keystore(keystore_req_with(
            &vault.id,
            "bad",
            config(&fake),
            json,
            false,
        )))
        .await;
        assert_invalid(&e, "google_cloud_kms_credentials.service_account_key_json");
    }
    assert_unchanged(&before, &snapshot(&c).await, "refused creates");

    // Before the first connect the key ring may change; once connected it is locked, and a
    // new key file must be of the same project.
    let update =
        |id: &str, cfg: GoogleCloudKmsKeystoreConfig, key: Option<&str>| UpdateKeystoreRequest {
            id: id.into(),
            google_cloud_kms: Some(cfg),
            google_cloud_kms_credentials: key.map(|k| GoogleCloudKmsCredentials {
                service_account_key_json: k.into(),
            }),
            ..Default::default()
        };
    let ring_only = |ring: &str| GoogleCloudKmsKeystoreConfig {
        key_ring: ring.into(),
        ..Default::default()
    };
    // A FAILED keystore is disconnected first (DESIGN §2: configuration changes while
    // DISCONNECTED).
    ok(c.keystores.disconnect_keystore(DisconnectKeystoreRequest {
        id: nowhere.id.clone(),
        uninstall_keys: false,
        force: false,
    }))
    .await;
    let ks = ok(c
        .keystores
        .update_keystore(update(&nowhere.id, ring_only(RING), None)))
    .await;
    let Some(keyorch::proto::v1::keystore::Config::GoogleCloudKms(cfg)) = &ks.config else {
        panic!("{ks:?}")
    };
    assert_eq!(cfg.key_ring, RING);
    let ks = ok(c
        .keystores
        .connect_keystore(ConnectKeystoreRequest { id: ks.id.clone() }))
    .await;
    assert_connection(&ks, ConnectionState::Connected);
    let e = fails(
        c.keystores
            .update_keystore(update(&ks.id, ring_only("another-ring"), None)),
    )
    .await;
    assert_invalid(&e, "google_cloud_kms.key_ring");
    let elsewhere = ServiceAccountKey::new(
        s.path(),
        "elsewhere.json",
        "another-project",
        "keyorch@another-project.iam.gserviceaccount.com",
        None,
    );
    let e = fails(c.keystores.update_keystore(update(
        &ks.id,
        GoogleCloudKmsKeystoreConfig::default(),
        Some(&elsewhere.json()),
    )))
    .await;
    assert_invalid(&e, "google_cloud_kms_credentials.service_account_key_json");
    assert_eq!(get_keystore(&mut c, &ks.id).await.config, ks.config);

    for key in [&s.key, &forged, &elsewhere] {
        assert_key_file_nowhere(&d, key, &[]).await;
    }
}

/// The crash matrix of DESIGN §5 for a google_cloud_kms target: keyorchd aborts at each step
/// of an activation (install) and a deactivation (uninstall) — `KEYORCH_FAILPOINT`, like
/// SIGKILL — and is started again; then no instance is left in flight, store and key ring
/// agree (an INSTALLED instance's version is the one usable version and holds keyorch's
/// material by the fake's check value; a NOT_INSTALLED one has no usable version), and the
/// call made again completes.
#[tokio::test]
async fn a_crash_at_any_step_of_an_install_or_uninstall_is_settled_at_start_up() {
    use std::os::unix::process::ExitStatusExt;
    let s = Setup::new();
    let fake = s.fake(&[], &[]);
    let mut d = daemon(&s).await;
    let mut c = d.clients();
    let vault = create_vault(&mut c, "v").await;
    let own = create_keystore(&mut c, &vault.id, "own", true).await;
    let ks = ok(c
        .keystores
        .create_keystore(keystore_req(&vault.id, "gcp", &fake, &s.key, true)))
    .await;
    assert_connection(&ks, ConnectionState::Connected);
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
        restart(&mut d, &s, &[("KEYORCH_FAILPOINT", step)]).await;
        let mut cc = d.clients();
        let r = if activate {
            cc.keys.activate_key(key_id(&key.id)).await
        } else {
            cc.keys.deactivate_key(key_id(&key.id)).await
        };
        assert!(r.is_err(), "{step}: the call succeeded");
        let status = d.wait_for_exit(Duration::from_secs(20)).await;
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{step}: {status}");
        restart(&mut d, &s, &[]).await;
        c = d.clients();

        let settled = get_key(&mut c, &key.id).await;
        let inst = instance(&settled, &ks.id);
        let live = live_versions(&fake, &key);
        if inst.state == InstanceState::Installed as i32 {
            assert_eq!(
                live,
                [(inst.remote_id.clone(), settled.key_check_value.clone())],
                "{step}"
            );
        } else {
            assert_eq!(
                inst.state,
                InstanceState::NotInstalled as i32,
                "{step}: left in flight: {inst:?}"
            );
            assert!(live.is_empty(), "{step}: a usable copy is left: {live:?}");
        }
        let st = status_in(&mut c, &key.id, &ks.id).await;
        assert_eq!(st.sync, SyncStatus::Ok as i32, "{step}: {st:?}");

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
            assert_eq!(
                live_versions(&fake, &key),
                [(inst.remote_id.clone(), done.key_check_value.clone())],
                "{step}"
            );
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
            assert!(live_versions(&fake, &key).is_empty(), "{step}");
            assert_status_is(
                &status_in(&mut c, &key.id, &ks.id).await,
                TargetKeyStatus::NotPresent,
                SyncStatus::Ok,
            );
        }
    }
    assert_key_file_nowhere(&d, &s.key, &[]).await;
}
