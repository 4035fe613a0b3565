//! keyorch's Cloud KMS client and target (`keyorch::targets::gcp_kms`) against the loopback
//! fake of Cloud KMS (tests/gcp_kms/fake.py, proven with Google's Python client in
//! tests/gcp_kms_fake.rs), started the same way: the venv of scripts/gcp-clients.sh, https
//! with a CA made here, `LISTENING <port>`.
//!
//! TLS trust: Google's Rust client builds its own reqwest client, which takes no CA of ours
//! and trusts the roots of `rustls-native-certs`; with `SSL_CERT_FILE` set, only the PEM file
//! it names. This test process sets `SSL_CERT_FILE` once, to the CA that signs every fake's
//! certificate here, before the first client is built (as the daemon tests do for keyorchd).
//!
//! Key material comes from a SoftHSM2 token through keyorch's `Hsm`: the target wraps it for
//! the fake's import job inside the token (RSA-OAEP-SHA-1 of an ephemeral AES-256 key and
//! AES-KWP: SoftHSM2 has no OAEP SHA-256), and the fake-only
//! `/__fake__/versions/{name}/check` proves that the fake unwrapped the very key (keyorch's
//! check value of the material it holds). Errors are checked for their class (`TargetError`'s
//! variant); messages and `Debug` output for the key file's private key, which must never
//! appear.

mod common;

use common::gcp::{Fake, ServiceAccountKey};
use common::softhsm_tokens;
use common::tls;

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use keyorch::domain::GoogleCloudKmsConfig;
use keyorch::hsm::{GeneratedKey, Hsm, HsmConfig, KeyKind, KeyRef, TokenSelector};
use keyorch::targets::gcp_kms::client::{
    Algorithm, GcpKmsClient, GcpKmsSettings, ImportMethod, JobState, VersionState,
};
use keyorch::targets::gcp_kms::{GcpKmsTarget, REQUIRED_PERMISSIONS};
use keyorch::targets::{InstallError, ManagedKey, ProbeMode, Target, TargetError};
use secrecy::SecretString;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "user-pin-6113";
const SO_PIN: &str = "so-pin-2087";
const PROJECT: &str = "keyorch-test-project";
const LOCATION: &str = "europe-west1";
const RING: &str = "keyorch";
const EMAIL: &str = "keyorch-tests@keyorch-test-project.iam.gserviceaccount.com";

fn key_ring() -> String {
    format!("projects/{PROJECT}/locations/{LOCATION}/keyRings/{RING}")
}

/// The process's token, HSM and CA: SSL_CERT_FILE and SOFTHSM2_CONF are set here, once,
/// before any test builds a client or opens the module.
struct Fixture {
    hsm: Hsm,
    ca: tls::Ca,
    _dir: PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = softhsm_tokens("keyorch-gcp-", &["gcp"], SO_PIN, PIN);
        let ca = tls::ca("keyorch test CA for the Cloud KMS client");
        let ca_file = dir.join("trusted-ca.pem");
        std::fs::write(&ca_file, &ca.pem).unwrap();
        // Edition 2021: set_var is safe; every test comes here first.
        std::env::set_var("SSL_CERT_FILE", &ca_file);
        std::env::remove_var("SSL_CERT_DIR");
        let hsm = Hsm::open(HsmConfig::new(
            MODULE,
            TokenSelector::Label("gcp".into()),
            SecretString::from(PIN),
        ))
        .unwrap();
        hsm.master_kek(true).unwrap();
        Fixture { hsm, ca, _dir: dir }
    })
}

fn hsm() -> &'static Hsm {
    &fixture().hsm
}

/// A folder with a server certificate for 127.0.0.1 (signed by the trusted CA, or by one of
/// its own) and a service account key file.
struct Setup {
    dir: tempfile::TempDir,
    key: ServiceAccountKey,
}

fn setup_with(trusted: bool) -> Setup {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let other;
    let ca = if trusted {
        &f.ca
    } else {
        other = tls::ca("a CA keyorch does not trust");
        &other
    };
    let (cert, key) = tls::leaf(ca, "127.0.0.1", "keyorch-tests", true, 1);
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.path().join("server.pem"), cert).unwrap();
    std::fs::write(dir.path().join("server-key.pem"), key).unwrap();
    let key = ServiceAccountKey::new(dir.path(), "sa.json", PROJECT, EMAIL, None);
    Setup { dir, key }
}

fn setup() -> Setup {
    setup_with(true)
}

fn fake(s: &Setup, extra: &[&str]) -> Fake {
    Fake::start(s.dir.path(), &[&s.key], &[&key_ring()], extra, true)
}

fn config(url: &str, key: &ServiceAccountKey, ring: &str) -> GoogleCloudKmsConfig {
    GoogleCloudKmsConfig {
        project_id: PROJECT.into(),
        private_key_id: key.key_id.clone(),
        client_email: EMAIL.into(),
        location: LOCATION.into(),
        key_ring: ring.into(),
        endpoint: Some(url.to_string()),
    }
}

fn secret(key: &ServiceAccountKey) -> SecretString {
    SecretString::from(key.json())
}

fn target(fake: &Fake, key: &ServiceAccountKey) -> GcpKmsTarget {
    GcpKmsTarget::open(&config(&fake.url, key, RING), secret(key)).expect("open")
}

fn client(fake: &Fake, key: &ServiceAccountKey) -> GcpKmsClient {
    GcpKmsClient::new(GcpKmsSettings::new(&fake.url, key_ring()), &secret(key)).expect("client")
}

/// The lines of the key file's private key, none of which may appear anywhere.
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

fn assert_no_secret(text: &str, key: &ServiceAccountKey) {
    for l in private_lines(key) {
        assert!(!text.contains(&l), "the private key is in {text:?}");
    }
    assert!(!text.contains("eyJ"), "a JWT is in {text:?}");
}

fn label() -> String {
    format!("keyorch-{}", uuid::Uuid::new_v4())
}

fn generate(kind: KeyKind) -> GeneratedKey {
    hsm().generate(kind).unwrap()
}

fn key_ref<'a>(kind: KeyKind, key: &'a GeneratedKey) -> KeyRef<'a> {
    KeyRef {
        id: "test-key",
        kind,
        wrapped: &key.wrapped,
        spki_der: key.spki_der.as_deref(),
    }
}

fn managed<'a>(kind: KeyKind, key: &'a GeneratedKey, recorded: &'a str) -> ManagedKey<'a> {
    ManagedKey {
        kind,
        kcv: &key.kcv,
        recorded_remote_id: recorded,
    }
}

fn version_state(c: &GcpKmsClient, name: &str) -> VersionState {
    c.get_version(name).unwrap().expect("the version").state
}

#[test]
fn probe_checks_the_key_ring_and_names_denied_permissions() {
    let s = setup();
    let fake = fake(&s, &[]);
    let t = target(&fake, &s.key);
    assert_eq!(t.probe("ks", ProbeMode::Heartbeat, true).unwrap(), None);
    assert_eq!(t.probe("ks", ProbeMode::Check, true).unwrap(), None);
    assert_eq!(t.probe("ks", ProbeMode::Connect, false).unwrap(), None);
    assert!(t.denied_permissions().unwrap().is_empty());
    // Every required permission is one the API knows (testIamPermissions refuses others).
    let granted = t
        .client()
        .test_iam_permissions(&REQUIRED_PERMISSIONS)
        .unwrap();
    assert_eq!(granted.len(), REQUIRED_PERMISSIONS.len(), "{granted:?}");

    fake.deny(&[
        "cloudkms.importJobs.useToImport",
        "cloudkms.cryptoKeyVersions.viewPublicKey",
        "cloudkms.keyRings.list",
    ]);
    let want = vec![
        "cloudkms.cryptoKeyVersions.viewPublicKey".to_string(),
        "cloudkms.importJobs.useToImport".to_string(),
    ];
    match t.probe("ks", ProbeMode::Check, true) {
        Err(TargetError::PermissionDenied(names)) => assert_eq!(names, want),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.denied_permissions().unwrap(), want);
    // The heartbeat does not probe permissions.
    assert!(t.probe("ks", ProbeMode::Heartbeat, true).is_ok());

    // A refusal names the permission Cloud KMS says it lacked.
    fake.deny(&["cloudkms.keyRings.get"]);
    match t.probe("ks", ProbeMode::Heartbeat, true) {
        Err(TargetError::PermissionDenied(names)) => {
            assert_eq!(names, ["cloudkms.keyRings.get"])
        }
        other => panic!("{other:?}"),
    }
    fake.deny(&["cloudkms.cryptoKeys.get"]);
    match t.client().get_crypto_key("keyorch-x") {
        Err(TargetError::PermissionDenied(names)) => {
            assert_eq!(names, ["cloudkms.cryptoKeys.get"])
        }
        other => panic!("{other:?}"),
    }
    assert!(fake.logged().contains("POST /v1/"), "{}", fake.logged());
}

#[test]
fn a_missing_key_ring_is_target_not_found() {
    let s = setup();
    let fake = fake(&s, &[]);
    let t = GcpKmsTarget::open(&config(&fake.url, &s.key, "no-such-ring"), secret(&s.key)).unwrap();
    match t.probe("ks", ProbeMode::Connect, false) {
        Err(TargetError::TargetNotFound(m)) => {
            assert!(
                m.contains("keyRings/no-such-ring") && m.contains("does not exist"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    // Creating a key in it says so too.
    match t
        .client()
        .create_crypto_key("keyorch-x", Algorithm::HmacSha256)
    {
        Err(TargetError::TargetNotFound(m)) => assert!(m.contains("no-such-ring"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn import_jobs_are_polled_until_active() {
    let s = setup();
    let fake = fake(&s, &["--import-job-delay", "1"]);
    let c = client(&fake, &s.key);
    let job = c
        .create_import_job("job-a", ImportMethod::RsaOaep3072Sha1Aes256)
        .unwrap();
    assert_eq!(job.name, format!("{}/importJobs/job-a", key_ring()));
    assert_eq!(job.state, JobState::PendingGeneration);
    assert_eq!(job.method, Some(ImportMethod::RsaOaep3072Sha1Aes256));
    assert!(job.hsm);
    assert!(job.public_key_der().is_err());
    let expires = job.expire_time.expect("an expire time");
    let now = keyorch::targets::gcp_kms::client::unix_now();
    assert!((expires - now - 3 * 86_400).abs() < 120, "{expires} {now}");

    let t = Instant::now();
    let active = c
        .wait_import_job_active(&job.name, Duration::from_secs(20))
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(active.state, JobState::Active);
    let der = active.public_key_der().unwrap();
    // A 3072-bit RSA key: SPKI of some 420 bytes.
    assert!((400..460).contains(&der.len()), "{}", der.len());

    // The same id again: the job that is there.
    let again = c
        .create_import_job("job-a", ImportMethod::RsaOaep3072Sha1Aes256)
        .unwrap();
    assert_eq!(again.name, job.name);
    assert_eq!(again.state, JobState::Active);
    assert!(c
        .get_import_job(&format!("{}/importJobs/nope", key_ring()))
        .unwrap()
        .is_none());

    // Still generating past the deadline: TimedOut.
    let slow = c
        .create_import_job("job-b", ImportMethod::RsaOaep3072Sha256Aes256)
        .unwrap();
    match c.wait_import_job_active(&slow.name, Duration::from_millis(300)) {
        Err(TargetError::TimedOut(m)) => assert!(m.contains("PENDING_GENERATION"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Expired: an error, no wait.
    let (code, body) = fake.admin(
        "POST",
        &format!(
            "/__fake__/importJobs/{}/expire",
            common::gcp::encode(&job.name)
        ),
        None,
    );
    assert_eq!(code, 200, "{body}");
    match c.wait_import_job_active(&job.name, Duration::from_secs(5)) {
        Err(TargetError::Internal(m)) => assert!(m.contains("EXPIRED"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Bad ids are refused before a request.
    assert!(c
        .create_import_job("a/b", ImportMethod::RsaOaep3072Sha1Aes256)
        .is_err());
}

#[test]
fn aes_key_is_imported_uninstalled_and_imported_again() {
    let s = setup();
    let fake = fake(&s, &[]);
    let t = target(&fake, &s.key);
    let c = client(&fake, &s.key);
    let kind = KeyKind::Aes256;
    let key = generate(kind);
    let material = key_ref(kind, &key);
    let label = label();
    assert!(t.copy(&managed(kind, &key, ""), &label).unwrap().is_none());
    assert!(!t.uninstall(&label).unwrap());

    let remote = t.install(hsm(), &material, &label).unwrap();
    let crypto_key = format!("{}/cryptoKeys/{label}", key_ring());
    assert_eq!(remote, format!("{crypto_key}/cryptoKeyVersions/1"));
    t.confirm_install(&managed(kind, &key, ""), &label, &remote)
        .unwrap();
    assert_eq!(fake.kcv(&remote), key.kcv, "the fake holds other material");
    let k = c.get_crypto_key(&label).unwrap().unwrap();
    assert!(k.managed_by_keyorch() && k.import_only);
    assert_eq!(
        (
            k.purpose.as_str(),
            k.algorithm.as_str(),
            k.protection_level.as_str()
        ),
        ("ENCRYPT_DECRYPT", "GOOGLE_SYMMETRIC_ENCRYPTION", "HSM")
    );
    assert_eq!(k.primary.as_deref(), Some(remote.as_str()), "not primary");
    // SoftHSM2 wraps with OAEP SHA-1 only: the day's SHA-1 job.
    let v = c.get_version(&remote).unwrap().unwrap();
    assert!(
        v.import_job.starts_with(&format!(
            "{}/importJobs/keyorch-rsa-oaep-3072-sha1-aes-256-",
            key_ring()
        )),
        "{}",
        v.import_job
    );

    let copy = t
        .copy(&managed(kind, &key, &remote), &label)
        .unwrap()
        .unwrap();
    assert!(copy.same && copy.enabled, "{copy:?}");
    assert_eq!(copy.remote_id, remote);
    // Recorded as another version: not the copy.
    let other = format!("{crypto_key}/cryptoKeyVersions/7");
    let copy = t
        .copy(&managed(kind, &key, &other), &label)
        .unwrap()
        .unwrap();
    assert!(!copy.same && copy.detail.contains(&other), "{copy:?}");

    // Idempotent: the live version is the copy, no second import, one import job.
    assert_eq!(t.install(hsm(), &material, &label).unwrap(), remote);
    assert_eq!(c.list_versions(&crypto_key).unwrap().len(), 1);
    let jobs = fake
        .logged()
        .lines()
        .filter(|l| l.contains("POST /v1/") && l.ends_with("/importJobs -> 200"))
        .count();
    assert_eq!(jobs, 1, "{}", fake.logged());

    // Disabled behind keyorch's back: the copy is there but not usable.
    fake.set_state(&remote, "DISABLED");
    let copy = t
        .copy(&managed(kind, &key, &remote), &label)
        .unwrap()
        .unwrap();
    assert!(copy.same && !copy.enabled, "{copy:?}");

    assert!(t.uninstall(&label).unwrap());
    assert_eq!(version_state(&c, &remote), VersionState::DestroyScheduled);
    assert!(t
        .copy(&managed(kind, &key, &remote), &label)
        .unwrap()
        .is_none());
    assert!(!t.uninstall(&label).unwrap());

    // A later install imports a new version into the same key.
    let again = t.install(hsm(), &material, &label).unwrap();
    assert_eq!(again, format!("{crypto_key}/cryptoKeyVersions/2"));
    t.confirm_install(&managed(kind, &key, &again), &label, &again)
        .unwrap();
    assert_eq!(fake.kcv(&again), key.kcv);
    assert_eq!(
        c.get_crypto_key(&label)
            .unwrap()
            .unwrap()
            .primary
            .as_deref(),
        Some(again.as_str())
    );
    assert!(!t.disables_on_deactivation());
    assert!(matches!(
        t.set_enabled(&label, false),
        Err(TargetError::NotSupported(_))
    ));
    assert_no_secret(&format!("{t:?} {c:?}", t = t.client()), &s.key);
}

#[test]
fn key_pairs_and_hmac_keys_are_imported_and_compared_by_public_key() {
    let s = setup();
    let fake = fake(&s, &[]);
    let t = target(&fake, &s.key);
    let c = client(&fake, &s.key);
    for (kind, algorithm) in [
        // SoftHSM2 zero-pads a private key's PKCS#8 to 8 bytes inside CKM_AES_KEY_WRAP_PAD
        // and counts the padding in RFC 5649's length (P-256: 67 -> 72 bytes, RSA-2048:
        // ~1217 -> 1224; P-384's 80 need none); the fake strips up to 7 such zeros, as its
        // doc says (whether Cloud KMS does is not documented).
        (KeyKind::EcP256, "EC_SIGN_P256_SHA256"),
        (KeyKind::Rsa2048, "RSA_SIGN_PKCS1_2048_SHA256"),
        (KeyKind::EcP384, "EC_SIGN_P384_SHA384"),
        (KeyKind::HmacSha256, "HMAC_SHA256"),
    ] {
        let key = generate(kind);
        let label = label();
        let remote = t.install(hsm(), &key_ref(kind, &key), &label).unwrap();
        t.confirm_install(&managed(kind, &key, ""), &label, &remote)
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(fake.kcv(&remote), key.kcv, "{kind:?}");
        let k = c.get_crypto_key(&label).unwrap().unwrap();
        assert_eq!(k.algorithm, algorithm);
        let copy = t.copy(&managed(kind, &key, ""), &label).unwrap().unwrap();
        assert!(copy.same && copy.enabled, "{kind:?}: {copy:?}");
        if kind.is_symmetric() {
            assert_eq!(copy.kcv, "");
        } else {
            // The public key's check value is keyorch's.
            assert_eq!(copy.kcv, key.kcv);
            // Another key's check value: a mismatch, in the confirmation and in the status.
            let other = GeneratedKey {
                kcv: "0011223344556677".into(),
                ..key.clone()
            };
            match t.confirm_install(&managed(kind, &other, ""), &label, &remote) {
                Err(InstallError::Mismatch(m)) => assert!(m.contains(&key.kcv), "{m}"),
                other => panic!("{other:?}"),
            }
            let copy = t
                .copy(&managed(kind, &other, &remote), &label)
                .unwrap()
                .unwrap();
            assert!(
                !copy.same && copy.detail.contains("check value"),
                "{copy:?}"
            );
        }
        // A key of another kind under the label is not this key's copy.
        let wrong_kind = if kind == KeyKind::HmacSha256 {
            KeyKind::Aes256
        } else {
            KeyKind::HmacSha256
        };
        let copy = t
            .copy(&managed(wrong_kind, &key, ""), &label)
            .unwrap()
            .unwrap();
        assert!(!copy.same, "{copy:?}");
        assert!(t.uninstall(&label).unwrap());
    }
    // Keys Cloud KMS cannot take as keyorch makes them.
    let aes128 = generate(KeyKind::Aes128);
    match t.install(hsm(), &key_ref(KeyKind::Aes128, &aes128), &label()) {
        Err(InstallError::Target(TargetError::NotSupported(m))) => {
            assert!(m.contains("256"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failed_import_is_a_mismatch_with_googles_reason() {
    let s = setup();
    let fake = fake(&s, &[]);
    let t = target(&fake, &s.key);
    let c = client(&fake, &s.key);
    let kind = KeyKind::Aes256;
    let key = generate(kind);
    let label = label();
    let k = c
        .create_crypto_key(&label, Algorithm::GoogleSymmetricEncryption)
        .unwrap();
    let job = c
        .create_import_job("job-garbage", ImportMethod::RsaOaep3072Sha1Aes256)
        .unwrap();
    c.wait_import_job_active(&job.name, Duration::from_secs(20))
        .unwrap();
    // Of the right length (RSA-3072 block and a KWP of 32 bytes) but not a wrap.
    let garbage = vec![0x5a; 384 + 40];
    let v = c
        .import_version(
            &k.name,
            Algorithm::GoogleSymmetricEncryption,
            &job.name,
            &garbage,
        )
        .unwrap();
    assert_eq!(v.state, VersionState::PendingImport);
    match t.confirm_install(&managed(kind, &key, ""), &label, &v.name) {
        Err(InstallError::Mismatch(m)) => assert!(m.contains("unwrapped"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(version_state(&c, &v.name), VersionState::ImportFailed);
    // A failed version is no copy; an install imports a good one.
    assert!(t.copy(&managed(kind, &key, ""), &label).unwrap().is_none());
    let remote = t.install(hsm(), &key_ref(kind, &key), &label).unwrap();
    assert_ne!(remote, v.name);
    t.confirm_install(&managed(kind, &key, ""), &label, &remote)
        .unwrap();
    assert_eq!(fake.kcv(&remote), key.kcv);
    // A remote id of another key is refused.
    match t.confirm_install(
        &managed(kind, &key, ""),
        &label,
        &format!("{}/cryptoKeys/x/cryptoKeyVersions/1", key_ring()),
    ) {
        Err(InstallError::Mismatch(m)) => assert!(m.contains("not a version"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_key_keyorch_did_not_make_is_left_alone() {
    let s = setup();
    let fake = fake(&s, &[]);
    let t = target(&fake, &s.key);
    let label = label();
    // Someone else's key under keyorch's label: no managed-by=keyorch label.
    let json: serde_json::Value = serde_json::from_str(&s.key.json()).unwrap();
    let url = fake.url.clone();
    let ring = key_ring();
    let id = label.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let version = rt.block_on(async move {
        use google_cloud_kms_v1::client::KeyManagementService;
        use google_cloud_kms_v1::model::{
            crypto_key::CryptoKeyPurpose, crypto_key_version::CryptoKeyVersionAlgorithm, CryptoKey,
            CryptoKeyVersionTemplate,
        };
        let credentials = google_cloud_auth::credentials::service_account::Builder::new(json)
            .build()
            .unwrap();
        let kms = KeyManagementService::builder()
            .with_endpoint(url)
            .with_credentials(credentials)
            .build()
            .await
            .unwrap();
        kms.create_crypto_key()
            .set_parent(ring.clone())
            .set_crypto_key_id(id.clone())
            .set_crypto_key(
                CryptoKey::new()
                    .set_purpose(CryptoKeyPurpose::EncryptDecrypt)
                    .set_version_template(
                        CryptoKeyVersionTemplate::new()
                            .set_algorithm(CryptoKeyVersionAlgorithm::GoogleSymmetricEncryption),
                    ),
            )
            .send()
            .await
            .unwrap();
        format!("{ring}/cryptoKeys/{id}/cryptoKeyVersions/1")
    });
    let kind = KeyKind::Aes256;
    let key = generate(kind);
    match t.install(hsm(), &key_ref(kind, &key), &label) {
        Err(InstallError::Target(TargetError::Internal(m))) => {
            assert!(m.contains(&label) && m.contains("managed-by"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    match t.uninstall(&label) {
        Err(TargetError::Internal(m)) => assert!(m.contains("left alone"), "{m}"),
        other => panic!("{other:?}"),
    }
    let copy = t.copy(&managed(kind, &key, ""), &label).unwrap().unwrap();
    assert!(!copy.same && copy.detail.contains("managed-by"), "{copy:?}");
    // Its generated version is untouched.
    let c = client(&fake, &s.key);
    assert_eq!(version_state(&c, &version), VersionState::Enabled);
    assert!(!fake.logged().contains(":destroy"), "{}", fake.logged());
}

#[test]
fn a_key_file_the_service_does_not_know_is_invalid_credentials() {
    let s = setup();
    let fake = fake(&s, &[]);
    // The same key id and e-mail, another private key.
    let forged = ServiceAccountKey::new(
        s.dir.path(),
        "forged.json",
        PROJECT,
        EMAIL,
        Some(&s.key.key_id),
    );
    let t = target(&fake, &forged);
    let e = t.probe("ks", ProbeMode::Check, false).unwrap_err();
    let text = format!("{e} {e:?} {:?}", t.client());
    assert!(matches!(e, TargetError::InvalidCredentials(_)), "{text}");
    assert!(text.contains("UNAUTHENTICATED"), "{text}");
    assert_no_secret(&text, &forged);
    // Not a service account key at all: refused at open, naming no value.
    let bad = SecretString::from(
        r#"{"type":"authorized_user","client_secret":"s3cr3t-v4lue"}"#.to_string(),
    );
    match GcpKmsTarget::open(&config(&fake.url, &s.key, RING), bad) {
        Err(TargetError::InvalidCredentials(m)) => assert!(!m.contains("s3cr3t"), "{m}"),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("opened"),
    }
}

#[test]
fn an_unreachable_endpoint_is_a_fast_network_error() {
    let s = setup();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let t = GcpKmsTarget::open(
        &config(&format!("http://127.0.0.1:{port}"), &s.key, RING),
        secret(&s.key),
    )
    .unwrap();
    let start = Instant::now();
    let e = t.probe("ks", ProbeMode::Heartbeat, true).unwrap_err();
    assert!(matches!(e, TargetError::Network(_)), "{e:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(e.to_string().contains(&port.to_string()), "{e}");
    assert!(e.to_string().contains("Connection refused"), "{e}");
}

#[test]
fn a_listener_that_never_answers_times_out() {
    let s = setup();
    // Accepted by the kernel's backlog, never read, never answered.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", silent.local_addr().unwrap().port());
    let t = GcpKmsTarget::with_settings(
        GcpKmsSettings::new(&url, key_ring())
            .with_timeouts(Duration::from_millis(800), Duration::from_secs(2)),
        secret(&s.key),
    )
    .unwrap();
    let start = Instant::now();
    let e = t.probe("ks", ProbeMode::Heartbeat, true).unwrap_err();
    assert!(matches!(e, TargetError::TimedOut(_)), "{e:?}");
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    drop(silent);
}

#[test]
fn a_certificate_of_an_untrusted_ca_is_a_tls_network_error() {
    let s = setup_with(false);
    let fake = fake(&s, &[]);
    let t = target(&fake, &s.key);
    let e = t.probe("ks", ProbeMode::Heartbeat, true).unwrap_err();
    match &e {
        TargetError::Network(m) => {
            assert!(m.contains("TLS") && m.contains("UnknownIssuer"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!fake.logged().contains("GET /v1/"), "{}", fake.logged());
}

/// The target is called from several blocking threads at once; its one runtime serves them.
#[test]
fn several_threads_call_one_target_at_once() {
    let s = setup();
    let fake = fake(&s, &[]);
    let t = target(&fake, &s.key);
    std::thread::scope(|scope| {
        let calls: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    for _ in 0..5 {
                        t.probe("ks", ProbeMode::Check, true).unwrap();
                    }
                })
            })
            .collect();
        for c in calls {
            c.join().unwrap();
        }
    });
    let gets = fake
        .logged()
        .lines()
        .filter(|l| l.contains("GET /v1/") && l.ends_with(&format!("keyRings/{RING} -> 200")))
        .count();
    assert_eq!(gets, 20, "{}", fake.logged());
}
