//! The loopback fake of IBM Key Protect and of Hyper Protect Crypto Services' KMS API
//! (tests/ibm_kms/fake.py, issue 14), proven honest with IBM's official Python SDK.
//!
//! IBM ships no emulator of either service, so keyorch's `ibm_key_protect` and `ibm_hpcs`
//! keystores are tested against this fake. It follows IBM's published API (Key Protect API v2
//! and IBM Cloud IAM's token endpoint; its doc comment names the documents and files): IAM's
//! API-key grant with RS256 JWT access tokens, the Bluemix-Instance, X-Kms-Key-Ring, Prefer and
//! Correlation-Id headers, Key Protect's collection and error bodies, import tokens with a
//! 4096-bit RSA key and a 12-byte nonce, and the real crypto of an import with the token: it
//! RSA-OAEP-unwraps the payload (SHA-256 for Key Protect, SHA-1 for HPCS) and decrypts the
//! encrypted nonce under the unwrapped material (AES-GCM with a 12-byte IV and the tag
//! appended for Key Protect, AES-CBC with PKCS#7 for HPCS), so a wrong wrap, nonce, IV or
//! algorithm, an expired token or a missing IAM permission (`--deny`) is refused with the
//! API's status and reason code.
//!
//! tests/ibm_kms/sdk_proof.py drives the fake, per flavor, with PyPI `keyprotect`
//! (IBM/keyprotect-python-client) on ibm-cloud-sdk-core, pinned in
//! scripts/ibm-clients-requirements.lock and installed on first use into
//! target/ibm-clients-venv by scripts/ibm-clients.sh (`KEYORCH_IBM_CLIENTS_VENV` picks another
//! folder), over https with a CA made here, and checks through the fake-only
//! `/__fake__/keys/{id}/check` that imported material arrived intact.

mod common;

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use common::ibm::{python, repo, Fake};
use common::tls;

/// Upper bound of one SDK proof run (a few 4096-bit RSA key pairs are made on the way).
const PROOF_TIMEOUT: Duration = Duration::from_secs(180);
/// The one service-ID API key the fake's IAM accepts, and the instance it serves.
const API_KEY: &str = "keyorch-test-serviceid-apikey-7d41f0c2";
const INSTANCE: &str = "2f8c7a52-4b1e-4d0a-9c3e-5a6b7c8d9e0f";

/// Starts a fake of `flavor` and one with `--deny import`, runs sdk_proof.py against them
/// (bounded by PROOF_TIMEOUT) and asserts it passed, printing its output if not.
fn prove(flavor: &str) {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::ca("keyorch test CA for the IBM KMS fake");
    let (cert, key) = tls::leaf(&ca, "127.0.0.1", "keyorch-tests", true, 1);
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.path().join("server.pem"), cert).unwrap();
    std::fs::write(dir.path().join("server-key.pem"), key).unwrap();

    let fake = Fake::start(dir.path(), flavor, (API_KEY, INSTANCE), &[], true);
    let denying = Fake::start(
        dir.path(),
        flavor,
        (API_KEY, INSTANCE),
        &["--deny", "import"],
        true,
    );

    let (out_path, err_path) = (
        dir.path().join("proof.stdout"),
        dir.path().join("proof.stderr"),
    );
    let t = Instant::now();
    let mut child = python(dir.path())
        .arg(repo().join("tests/ibm_kms/sdk_proof.py"))
        .args([
            "--flavor",
            flavor,
            "--url",
            &fake.url,
            "--deny-url",
            &denying.url,
        ])
        .args(["--api-key", API_KEY, "--instance-id", INSTANCE])
        .arg("--ca")
        .arg(dir.path().join("ca.pem"))
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
    drop((fake, denying));
    let fakes_log = ["", "--denyimport"]
        .map(|s| read(&dir.path().join(format!("fake-{flavor}{s}.stderr"))))
        .join("");
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("PROOF OK "))
        .map(str::to_string);
    assert!(
        status.is_some_and(|s| s.success()) && summary.is_some(),
        "sdk_proof.py for {flavor} {}:\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- fakes\n{fakes_log}",
        status.map_or(format!("did not finish within {PROOF_TIMEOUT:?}"), |s| s.to_string()),
    );
    eprintln!("{} in {:?}", summary.unwrap(), t.elapsed());
}

#[test]
fn key_protect_fake_passes_the_official_sdk() {
    prove("key_protect");
}

#[test]
fn hpcs_fake_passes_the_official_sdk() {
    prove("hpcs");
}
