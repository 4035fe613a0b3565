//! The loopback fake of Google Cloud KMS (REST v1) and of Google's OAuth token endpoint
//! (tests/gcp_kms/fake.py), proven honest with Google's official Python client, and driven with
//! the Rust client keyorch uses.
//!
//! Google ships no Cloud KMS emulator, so keyorch's `google_cloud_kms` keystore is tested against
//! this fake. It follows Google's published API (its doc comment names what it checks and what
//! is its own choice): service account authentication as Google's clients do it (self-signed
//! JWTs verified with the key file's public key, and the OAuth JWT-bearer grant), the resource
//! names, methods, JSON mapping and error bodies of keyRings, cryptoKeys, cryptoKeyVersions and
//! importJobs, IAM permissions (`--deny`, testIamPermissions), the version and import-job state
//! machines, and the real crypto of an import (RSA-OAEP of an ephemeral AES-256 key, AES-KWP of
//! the key material), so a wrong wrap fails.
//!
//! tests/gcp_kms/sdk_proof.py drives the fake, one section per test, with PyPI
//! `google-cloud-kms` (REST transport) on google-auth, pinned in
//! scripts/gcp-clients-requirements.lock and installed on first use into
//! target/gcp-clients-venv by scripts/gcp-clients.sh (`KEYORCH_GCP_CLIENTS_VENV` picks another
//! folder), over https with a CA made here, and checks through the fake-only
//! `/__fake__/versions/{name}/check` that imported material arrived intact (keyorch's check
//! value of the unwrapped key). `rust_client_talks_to_the_fake` drives it with
//! google-cloud-kms-v1 and google-cloud-auth: the JWT they send, their enum numbers, their
//! error decoding.

mod common;

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use common::gcp::{python, repo, Fake, ServiceAccountKey};
use common::tls;

/// Upper bound of one SDK proof run (RSA-3072/4096 import keys are made on the way).
const PROOF_TIMEOUT: Duration = Duration::from_secs(240);
const PROJECT: &str = "keyorch-test-project";
const EMAIL: &str = "keyorch-tests@keyorch-test-project.iam.gserviceaccount.com";
const KEY_RING: &str = "projects/keyorch-test-project/locations/europe-west1/keyRings/keyorch";
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// A temporary folder with a CA, a server certificate for 127.0.0.1 and a service account key.
struct Setup {
    dir: tempfile::TempDir,
    key: ServiceAccountKey,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::ca("keyorch test CA for the Cloud KMS fake");
    let (cert, key) = tls::leaf(&ca, "127.0.0.1", "keyorch-tests", true, 1);
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.path().join("server.pem"), cert).unwrap();
    std::fs::write(dir.path().join("server-key.pem"), key).unwrap();
    let key = ServiceAccountKey::new(dir.path(), "sa.json", PROJECT, EMAIL, None);
    Setup { dir, key }
}

/// What one proof run printed, and the fake's request log.
struct Proven {
    stdout: String,
    log: String,
}

/// Starts a fake (https, `extra` arguments) and runs sdk_proof.py's `section` against it
/// (bounded by PROOF_TIMEOUT; told the fake's `--import-job-delay`, which an import job must
/// take); asserts it passed, printing its output if not.
fn prove(section: &str, extra: &[&str]) -> Proven {
    let job_delay = extra
        .iter()
        .position(|a| *a == "--import-job-delay")
        .map_or("0", |i| extra[i + 1]);
    let s = setup();
    let dir = s.dir.path();
    let fake = Fake::start(dir, &[&s.key], &[KEY_RING], extra, true);
    let untrusted =
        ServiceAccountKey::new(dir, "untrusted.json", PROJECT, EMAIL, Some(&s.key.key_id));
    untrusted.set_token_uri(&format!("{}/token", fake.url));

    let (out_path, err_path) = (dir.join("proof.stdout"), dir.join("proof.stderr"));
    let t = Instant::now();
    let mut child = python(dir)
        .arg(repo().join("tests/gcp_kms/sdk_proof.py"))
        .args([
            "--section",
            section,
            "--url",
            &fake.url,
            "--key-ring",
            KEY_RING,
        ])
        .args(["--job-delay", job_delay])
        .arg("--key-file")
        .arg(&s.key.path)
        .arg("--untrusted-key-file")
        .arg(&untrusted.path)
        .arg("--ca")
        .arg(dir.join("ca.pem"))
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("start sdk_proof.py");
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if t.elapsed() > PROOF_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    let (stdout, stderr) = (read(&out_path), read(&err_path));
    let log = fake.logged();
    drop(fake);
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("PROOF OK "))
        .map(str::to_string);
    assert!(
        status.is_some_and(|s| s.success()) && summary.is_some(),
        "sdk_proof.py --section {section} {}:\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- fake\n{log}",
        status.map_or(format!("did not finish within {PROOF_TIMEOUT:?}"), |s| s.to_string()),
    );
    eprintln!("{} in {:?}", summary.unwrap(), t.elapsed());
    Proven { stdout, log }
}

/// The `ok N <what>` line of the proof output that mentions `what`.
#[track_caller]
fn passed(p: &Proven, what: &str) {
    assert!(
        p.stdout
            .lines()
            .any(|l| l.starts_with("ok ") && l.contains(what)),
        "no passed check mentioning {what:?}:\n{}",
        p.stdout
    );
}

#[test]
fn auth_fake_passes_the_official_sdk() {
    let p = prove("auth", &[]);
    passed(&p, "the Python client's self-signed JWT");
    passed(&p, "the JWT-bearer grant at token_uri");
    passed(&p, "a wrong key file (signature) -> 401 UNAUTHENTICATED");
    passed(&p, "a wrong key file at the token endpoint");
    passed(&p, "a 2-hour JWT -> 401");
    passed(&p, "ACCESS_TOKEN_SCOPE_INSUFFICIENT");
    passed(&p, "a key ring of another project -> 403 PERMISSION_DENIED");
    assert!(p.log.contains("POST /token -> 200"), "{}", p.log);
    assert!(p.log.contains("POST /token -> 400"), "{}", p.log);
    assert!(
        p.log.contains(&format!("GET /v1/{KEY_RING} -> 401")),
        "{}",
        p.log
    );
}

#[test]
fn import_fake_passes_the_official_sdk() {
    // A long import-job delay: every job is made before any is polled, and one is used while
    // still PENDING_GENERATION.
    let p = prove("import", &["--import-job-delay", "1.5"]);
    for what in [
        "AES-256 with RSA_OAEP_3072_SHA1_AES_256: the fake unwrapped exactly",
        "AES-256 wrapped directly with RSA_OAEP_3072_SHA256: the fake unwrapped exactly",
        "HMAC-SHA256 (32 raw bytes) with RSA_OAEP_3072_SHA256_AES_256: the fake unwrapped exactly",
        "RSA-2048 PKCS#8 with RSA_OAEP_3072_SHA1_AES_256: get_public_key",
        "EC P-256 PKCS#8 with RSA_OAEP_3072_SHA256_AES_256: get_public_key",
        "a flipped bit in the RSA-OAEP part: IMPORT_FAILED",
        "OAEP with SHA-256 for a SHA-1 job: IMPORT_FAILED",
        "a flipped bit in the AES-KWP part: IMPORT_FAILED",
        "a KWP part that is not whole 64-bit blocks -> 400 INVALID_ARGUMENT",
        "create_crypto_key_version on an import-only key -> 400 FAILED_PRECONDITION",
        "a duplicate cryptoKeyId -> 409 ALREADY_EXISTS",
    ] {
        passed(&p, what);
    }
    assert!(
        p.log.contains(":import -> 200") && p.log.contains(":import -> 400"),
        "{}",
        p.log
    );
}

#[test]
fn lifecycle_fake_passes_the_official_sdk() {
    let p = prove("lifecycle", &[]);
    for what in [
        "destroy_crypto_key_version: DESTROY_SCHEDULED",
        "restore_crypto_key_version: DISABLED",
        "it is version 2",
        "re-import of version 1's own material",
        "re-import of other material: IMPORT_FAILED",
        "list_crypto_keys page_size=2",
        "enum names and proto field names in",
        "an unknown JSON field",
    ] {
        passed(&p, what);
    }
}

#[test]
fn deny_fake_passes_the_official_sdk() {
    let p = prove(
        "deny",
        &[
            "--deny",
            "cloudkms.importJobs.create,cloudkms.cryptoKeyVersions.viewPublicKey",
        ],
    );
    passed(&p, "test_iam_permissions leaves out exactly the two denied");
    for permission in [
        "cloudkms.keyRings.get",
        "cloudkms.cryptoKeys.create",
        "cloudkms.importJobs.useToImport",
        "cloudkms.cryptoKeyVersions.viewPublicKey",
    ] {
        passed(&p, &format!("deny {permission}: 403 on exactly"));
        passed(
            &p,
            &format!("deny {permission}: test_iam_permissions leaves out exactly it"),
        );
    }
    passed(&p, "deny nothing: 403 on exactly no call");
    assert!(p.log.contains("-> 403"), "{}", p.log);
}

/// google-cloud-kms-v1 on google-cloud-auth, the crates keyorch's keystore uses, against the
/// fake over http (the crates build their own reqwest client, which trusts the system's roots
/// only): the self-signed JWT they send, their enum numbers both ways, bytes, errors.
#[tokio::test]
async fn rust_client_talks_to_the_fake() {
    use google_cloud_gax::error::rpc::{Code, StatusDetails};
    use google_cloud_kms_v1::client::KeyManagementService;
    use google_cloud_kms_v1::model::{
        crypto_key::CryptoKeyPurpose,
        crypto_key_version::{CryptoKeyVersionAlgorithm, CryptoKeyVersionState},
        import_job::{ImportJobState, ImportMethod},
        CryptoKey, CryptoKeyVersionTemplate, ImportJob, ProtectionLevel,
    };

    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let s = setup();
    let fake = Fake::start(s.dir.path(), &[&s.key], &[KEY_RING], &[], false);
    let client = |key: &ServiceAccountKey| {
        let json: serde_json::Value = serde_json::from_str(&key.json()).unwrap();
        let credentials = google_cloud_auth::credentials::service_account::Builder::new(json)
            .build()
            .unwrap();
        KeyManagementService::builder()
            .with_endpoint(fake.url.clone())
            .with_credentials(credentials)
            .build()
    };
    let kms = client(&s.key).await.unwrap();

    let ring = kms.get_key_ring().set_name(KEY_RING).send().await.unwrap();
    assert_eq!(ring.name, KEY_RING);
    assert!(ring.create_time.is_some());

    // What google-cloud-auth 1.19 sent: a self-signed JWT, RS256, kid = private_key_id,
    // iss = sub = client_email, scope cloud-platform, "aud": null, iat = now - 10 s,
    // exp = now + 3610 s.
    let (code, body) = fake.admin("GET", "/__fake__/jwts", None);
    assert_eq!(code, 200, "{body}");
    let jwts: serde_json::Value = serde_json::from_str(&body).unwrap();
    let last = jwts["jwts"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["via"], "api", "{last}");
    assert_eq!(last["accepted"], true, "{last}");
    assert_eq!(
        last["header"],
        serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": s.key.key_id}),
        "{last}"
    );
    let claims = last["claims"].as_object().unwrap();
    assert_eq!(claims["iss"], EMAIL);
    assert_eq!(claims["sub"], EMAIL);
    assert_eq!(claims["scope"], CLOUD_PLATFORM);
    assert!(
        claims.contains_key("aud") && claims["aud"].is_null(),
        "{last}"
    );
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 3620, "{last}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now - 60..=now).contains(&(iat + 10)),
        "iat {iat}, now {now}"
    );

    let asked = ["cloudkms.importJobs.create", "cloudkms.cryptoKeys.create"];
    let granted = kms
        .test_iam_permissions()
        .set_resource(KEY_RING)
        .set_permissions(asked)
        .send()
        .await
        .unwrap();
    assert_eq!(granted.permissions, asked);

    // Enums go out as numbers and come back as numbers ($alt=json;enum-encoding=int).
    let job = kms
        .create_import_job()
        .set_parent(KEY_RING)
        .set_import_job_id("rust-job")
        .set_import_job(
            ImportJob::new()
                .set_import_method(ImportMethod::RsaOaep3072Sha256Aes256)
                .set_protection_level(ProtectionLevel::Hsm),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(job.state, ImportJobState::PendingGeneration);
    assert_eq!(job.import_method, ImportMethod::RsaOaep3072Sha256Aes256);
    assert!(job.public_key.is_none());
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let j = kms
            .get_import_job()
            .set_name(&job.name)
            .send()
            .await
            .unwrap();
        if j.state != ImportJobState::PendingGeneration || Instant::now() > deadline {
            break j;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(job.state, ImportJobState::Active);
    let pem = &job.public_key.as_ref().unwrap().pem;
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    assert_eq!(
        job.expire_time.as_ref().unwrap().seconds() - job.create_time.as_ref().unwrap().seconds(),
        3 * 24 * 3600
    );

    let key = kms
        .create_crypto_key()
        .set_parent(KEY_RING)
        .set_crypto_key_id("rust-key")
        .set_skip_initial_version_creation(true)
        .set_crypto_key(
            CryptoKey::new()
                .set_purpose(CryptoKeyPurpose::EncryptDecrypt)
                .set_import_only(true)
                .set_version_template(
                    CryptoKeyVersionTemplate::new()
                        .set_protection_level(ProtectionLevel::Hsm)
                        .set_algorithm(CryptoKeyVersionAlgorithm::GoogleSymmetricEncryption),
                )
                .set_labels([("managed-by", "keyorch")]),
        )
        .send()
        .await
        .unwrap();
    let got = kms
        .get_crypto_key()
        .set_name(&key.name)
        .send()
        .await
        .unwrap();
    assert_eq!(got.purpose, CryptoKeyPurpose::EncryptDecrypt);
    assert!(got.import_only);
    let template = got.version_template.as_ref().unwrap();
    assert_eq!(template.protection_level, ProtectionLevel::Hsm);
    assert_eq!(
        template.algorithm,
        CryptoKeyVersionAlgorithm::GoogleSymmetricEncryption
    );
    assert_eq!(
        got.labels.get("managed-by").map(String::as_str),
        Some("keyorch")
    );
    assert!(got.primary.is_none());

    // An import of bytes that are no wrap (the Rust side has no RSA-OAEP here): taken, then
    // IMPORT_FAILED; the bytes went out as base64 and the version came back decoded.
    let version = kms
        .import_crypto_key_version()
        .set_parent(&key.name)
        .set_algorithm(CryptoKeyVersionAlgorithm::GoogleSymmetricEncryption)
        .set_import_job(&job.name)
        .set_wrapped_key(vec![0x5a; 384 + 40])
        .send()
        .await
        .unwrap();
    assert_eq!(version.state, CryptoKeyVersionState::PendingImport);
    assert_eq!(version.import_job, job.name);
    let deadline = Instant::now() + Duration::from_secs(30);
    let version = loop {
        let v = kms
            .get_crypto_key_version()
            .set_name(&version.name)
            .send()
            .await
            .unwrap();
        if v.state != CryptoKeyVersionState::PendingImport || Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(version.state, CryptoKeyVersionState::ImportFailed);
    assert_eq!(
        version.import_failure_reason,
        "The key material in the import request couldn't be unwrapped or wasn't formatted correctly"
    );
    let listed = kms
        .list_crypto_key_versions()
        .set_parent(&key.name)
        .set_page_size(10)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.crypto_key_versions.len(), 1);
    assert_eq!(listed.total_size, 1);
    let short = kms
        .import_crypto_key_version()
        .set_parent(&key.name)
        .set_algorithm(CryptoKeyVersionAlgorithm::GoogleSymmetricEncryption)
        .set_import_job(&job.name)
        .set_wrapped_key(vec![0x5a; 384 + 20])
        .send()
        .await
        .unwrap_err();
    let status = short.status().expect("a status");
    assert_eq!(status.code, Code::InvalidArgument, "{short:?}");
    assert_eq!(
        status.message,
        "Wrapped key does not consist of 64-bit blocks"
    );
    assert_eq!(short.http_status_code(), Some(400));

    // Google's error bodies, decoded by gax.
    let missing = format!("{KEY_RING}/cryptoKeys/nope");
    let e = kms
        .get_crypto_key()
        .set_name(&missing)
        .send()
        .await
        .unwrap_err();
    let status = e.status().expect("a status");
    assert_eq!(status.code, Code::NotFound);
    assert_eq!(status.message, format!("CryptoKey {missing} not found."));

    fake.deny(&["cloudkms.importJobs.create"]);
    let e = kms
        .create_import_job()
        .set_parent(KEY_RING)
        .set_import_job_id("denied")
        .set_import_job(
            ImportJob::new()
                .set_import_method(ImportMethod::RsaOaep3072Sha1Aes256)
                .set_protection_level(ProtectionLevel::Hsm),
        )
        .send()
        .await
        .unwrap_err();
    let status = e.status().expect("a status");
    assert_eq!(status.code, Code::PermissionDenied);
    assert_eq!(
        status.message,
        format!(
            "Permission 'cloudkms.importJobs.create' denied on resource '{KEY_RING}' (or it may not exist)."
        )
    );
    let info = status
        .details
        .iter()
        .find_map(|d| match d {
            StatusDetails::ErrorInfo(i) => Some(i),
            _ => None,
        })
        .expect("an ErrorInfo");
    assert_eq!(info.reason, "IAM_PERMISSION_DENIED");
    assert_eq!(info.domain, "cloudkms.googleapis.com");
    assert_eq!(
        info.metadata.get("permission").map(String::as_str),
        Some("cloudkms.importJobs.create")
    );
    let granted = kms
        .test_iam_permissions()
        .set_resource(KEY_RING)
        .set_permissions(asked)
        .send()
        .await
        .unwrap();
    assert_eq!(granted.permissions, ["cloudkms.cryptoKeys.create"]);

    // A key file the fake does not trust: its kid, another key.
    let untrusted = ServiceAccountKey::new(
        s.dir.path(),
        "untrusted.json",
        PROJECT,
        EMAIL,
        Some(&s.key.key_id),
    );
    let e = client(&untrusted)
        .await
        .unwrap()
        .get_key_ring()
        .set_name(KEY_RING)
        .send()
        .await
        .unwrap_err();
    let status = e.status().expect("a status");
    assert_eq!(status.code, Code::Unauthenticated, "{e:?}");
    assert!(
        status
            .message
            .starts_with("Request had invalid authentication credentials."),
        "{e:?}"
    );
    assert_eq!(e.http_status_code(), Some(401));
    let log = fake.logged();
    assert!(log.contains(&format!("GET /v1/{KEY_RING} -> 401")), "{log}");
    assert!(
        !log.contains("POST /token"),
        "the Rust client used the token endpoint: {log}"
    );
}
