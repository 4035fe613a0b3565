//! The loopback fake of Azure Key Vault's keys data plane and of Microsoft Entra ID's token
//! endpoint (tests/azure_kv/fake.py), proven honest with Microsoft's official Python SDKs.
//!
//! Microsoft ships no emulator of either service, so keyorch's Azure Key Vault keystore is
//! tested against this fake. It follows Microsoft's published REST API (Key Vault keys,
//! api-version 7.4 to 2025-07-01, and Entra ID's client-credentials grant; its doc comment names
//! the documents): the 401 challenge the SDKs authenticate from, the key permissions of an
//! access policy (`--deny`, checked before anything else about a request, as Azure does, so
//! that 403 and 404 tell a denied permission from a missing key), Key Vault's KeyBundle,
//! DeletedKeyBundle and paged list bodies and its error bodies, soft delete with recover and
//! purge, backup and restore, and the real cryptography of a BYOK import: the KEK must be an
//! import-only RSA-HSM key of the vault, the transfer blob is RSA-OAEP-SHA-1 of an AES key
//! followed by AES key wrap with padding of the PKCS#8 key, so a wrong wrap, KEK or key type is
//! refused with 400 BadParameter.
//!
//! tests/azure_kv/sdk_proof.py drives the fake, one section per test, with PyPI
//! azure-keyvault-keys (KeyClient) and azure-identity (ClientSecretCredential on MSAL), pinned
//! in scripts/azure-clients-requirements.lock and installed on first use into
//! target/azure-clients-venv by scripts/azure-clients.sh (`KEYORCH_AZURE_CLIENTS_VENV` picks
//! another folder), over https with a CA made here, and checks through the fake-only
//! `/__fake__/keys/{name}/check` that imported key material arrived intact.

mod common;

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use common::azure::{self, python, repo, Fake};

/// Upper bound of one SDK proof run (a few RSA key pairs are made on the way).
const PROOF_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts a fake (with `extra` arguments), runs the proof's `section` against it (bounded by
/// PROOF_TIMEOUT) and asserts it passed, printing its output and the fake's log if not.
/// Returns the proof's stdout.
fn prove(section: &str, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    azure::write_tls(dir.path());
    let fake = Fake::start(
        dir.path(),
        (azure::TENANT_ID, azure::CLIENT_ID, azure::CLIENT_SECRET),
        extra,
        true,
    );

    let (out_path, err_path) = (
        dir.path().join("proof.stdout"),
        dir.path().join("proof.stderr"),
    );
    let t = Instant::now();
    let mut child = python(dir.path())
        .arg(repo().join("tests/azure_kv/sdk_proof.py"))
        .args(["--section", section, "--url", &fake.url])
        .arg("--ca")
        .arg(&fake.ca)
        .args([
            "--tenant-id",
            azure::TENANT_ID,
            "--client-id",
            azure::CLIENT_ID,
        ])
        .args(["--client-secret", azure::CLIENT_SECRET])
        .args([
            "--vault-name",
            azure::VAULT_NAME,
            "--location",
            azure::LOCATION,
        ])
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
    let fake_log = fake.logged();
    drop(fake);
    let summary = stdout
        .lines()
        .find(|l| l.starts_with(&format!("PROOF OK section={section} ")))
        .map(str::to_string);
    assert!(
        status.is_some_and(|s| s.success()) && summary.is_some(),
        "sdk_proof.py --section {section} {}:\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- fake\n{fake_log}",
        status.map_or(format!("did not finish within {PROOF_TIMEOUT:?}"), |s| s.to_string()),
    );
    // The fake logs method, path and status only: never the secret or a token.
    assert!(
        !fake_log.contains(azure::CLIENT_SECRET),
        "the fake logged the client secret"
    );
    assert!(
        !fake_log.contains("eyJ"),
        "the fake logged something like a JWT"
    );
    assert!(!stdout.contains(azure::CLIENT_SECRET) && !stderr.contains(azure::CLIENT_SECRET));
    eprintln!("{} in {:?}", summary.unwrap(), t.elapsed());
    stdout
}

/// Entra ID's token endpoint (its refusals with AADSTS codes, through the SDK and raw), the
/// OpenID configuration MSAL reads, Key Vault's 401 challenge and the SDK's flow through it,
/// the api-version, forged and revoked tokens.
#[test]
fn entra_id_and_the_challenge_pass_the_official_sdk() {
    prove("entra", &[]);
}

/// Creating RSA / RSA-HSM 2048-4096 and EC / EC-HSM keys on every curve: key ids, default
/// key_ops, attributes, the raw JSON shapes, versions, case-insensitive names, refusals.
#[test]
fn key_creation_passes_the_official_sdk() {
    prove("create", &[]);
}

/// The BYOK import of RSA-2048, EC P-256 and P-384 keys under the import-only RSA-HSM 3072 KEK
/// `EKMF-BYOK-KEK-FOR-IMPORT`: the public keys that come back and the fake's check values are
/// the originals'.
#[test]
fn byok_import_passes_the_official_sdk() {
    prove("byok", &[]);
}

/// Every way a BYOK import can be wrong (AES layer, OAEP hash, tampering, envelope, kty, crv,
/// PKCS#8, key size, the KEK's type, key_ops, state and vault) is a 400 that creates nothing.
#[test]
fn byok_refusals_pass_the_official_sdk() {
    prove("byok_refusals", &[]);
}

/// `--deny get` and then each of the ten permissions in turn: 403 with Azure's text on exactly
/// the operations that need it (before any 404), the others as allowed, nothing changed.
#[test]
fn denied_permissions_pass_the_official_sdk() {
    let out = prove("deny", &["--deny", "get"]);
    for perm in azure::PERMISSIONS {
        assert!(
            out.contains(&format!("deny [{perm}]: 403 on exactly its operations")),
            "no check for {perm}:\n{out}"
        );
    }
}

/// Soft delete, 409 on re-import and create, deleted keys, purge and re-import, recover, and
/// deletes and purges behind the client's back.
#[test]
fn soft_delete_recover_and_purge_pass_the_official_sdk() {
    prove("lifecycle", &[]);
}

/// maxresults and nextLink paging of keys, key versions and deleted keys.
#[test]
fn list_paging_passes_the_official_sdk() {
    prove("paging", &[]);
}

/// Updates of enabled, tags, key_ops, exp and nbf, of the latest or one version.
#[test]
fn key_updates_pass_the_official_sdk() {
    prove("update", &[]);
}

/// Backup and restore with every version; 409 while the name is in use or soft-deleted, 400
/// for a broken blob.
#[test]
fn backup_and_restore_pass_the_official_sdk() {
    prove("backup", &[]);
}

/// The helpers other tests use: `Fake::kcv`, `Fake::deny` and `Fake::call` on the fake-only
/// endpoints, and the start-up refusal of an unknown permission.
#[test]
fn fake_only_endpoints_work_from_rust() {
    let dir = tempfile::tempdir().unwrap();
    azure::write_tls(dir.path());
    let creds = (azure::TENANT_ID, azure::CLIENT_ID, azure::CLIENT_SECRET);
    let fake = Fake::start(dir.path(), creds, &[], true);
    assert_eq!(
        fake.call("GET", "/__fake__/keys/nope/check", None).0,
        404,
        "{}",
        fake.logged()
    );
    fake.deny(&azure::PERMISSIONS);
    let (code, body) = fake.call("POST", "/__fake__/deny", Some(r#"{"deny": ["sign"]}"#));
    assert_eq!(code, 400, "{body}");
    let (code, body) = fake.kv("GET", "/keys/nope/", None);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("does not have keys get permission"), "{body}");
    fake.deny(&[]);
    let (code, body) = fake.kv("GET", "/keys/nope/", None);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains(r#""code": "KeyNotFound""#), "{body}");
    let (code, body) = fake.kv(
        "POST",
        "/keys/from-rust/create",
        Some(r#"{"kty": "EC-HSM", "crv": "P-256"}"#),
    );
    assert_eq!(code, 200, "{body}");
    let key: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(key["key"]["kty"], "EC-HSM", "{body}");
    assert_eq!(fake.kcv("from-rust").len(), 16);
    let (code, body) = fake.call("GET", "/keys?api-version=7.5", None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("AKV10000"), "{body}");
    let (code, body) = fake.call("GET", "/__fake__/requests", None);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains(r#""path": "/keys/from-rust/create", "status": 200"#),
        "{body}"
    );
    assert!(
        fake.logged().contains("fake azure_kv: GET /keys -> 401"),
        "{}",
        fake.logged()
    );

    let out = python(dir.path())
        .arg(repo().join("tests/azure_kv/fake.py"))
        .args(["--port", "0", "--tenant-id", "t", "--client-id", "c"])
        .args(["--client-secret", "s", "--deny", "get,sign"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown permission(s) sign"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
