//! keyorchd as an AWS XKS proxy (aws-kms-xksproxy-api-spec v1.0.3), driven the way the
//! public test client aws-samples/aws-kms-xksproxy-test-client drives a proxy: every
//! request is signed by curl's own `--aws-sigv4 "aws:amz:REGION:kms-xks-proxy"` (Debian's
//! curl 7.88, which signs content-type, host and x-amz-date), so the signer is not ours.
//! The cases follow that client's (health, metadata, encrypt/decrypt with and without
//! AAD and CDIV, large fields, bad signatures, bad URIs, wrong key usage) and add the
//! spec's other rules: each error name and status, 405 for other methods, oversized and
//! missing fields, tampered ciphertext, tag, IV and metadata, and the kill switch.

mod common;

use std::path::Path;
use std::process::Command;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use common::aws::free_port;
use common::*;
use keyorch::proto::v1::{ConnectKeystoreRequest, DisconnectKeystoreRequest, KeyAlgorithm};
use serde_json::{json, Value};
use sha2::Digest as _;

const REGION: &str = "us-east-2";
const PATH: &str = "/keyorch/kms/xks/v1";

/// How one request is made and signed.
#[derive(Clone)]
struct Signer {
    base: String,
    id: String,
    secret: String,
    service: String,
    method: &'static str,
    extra_headers: Vec<String>,
    /// curl's TLS options (--cacert, --cert, --key) for an https base.
    tls: Vec<String>,
}

struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    #[track_caller]
    fn error(&self, status: u16, name: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.body["errorName"], name, "{}", self.body);
        assert!(
            self.body["errorMessage"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "no errorMessage: {}",
            self.body
        );
    }

    #[track_caller]
    fn ok(&self) -> &Value {
        assert_eq!(self.status, 200, "{}", self.body);
        &self.body
    }

    fn field(&self, name: &str) -> Vec<u8> {
        B64.decode(self.body[name].as_str().expect(name))
            .expect("base64")
    }
}

impl Signer {
    fn from_dev(state: &Path, port: u16) -> Signer {
        let text = std::fs::read_to_string(state.join("xks-credentials")).unwrap();
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k} = ")))
                .unwrap_or_else(|| panic!("{k} in xks-credentials"))
                .to_string()
        };
        assert_eq!(get("uri_path"), PATH);
        Signer::http(port, PATH, &get("access_key_id"), &get("secret_access_key"))
    }

    /// Plain HTTP to `127.0.0.1:port` at the URI path `path`, signed as KMS signs.
    fn http(port: u16, path: &str, id: &str, secret: &str) -> Signer {
        Signer {
            base: format!("http://127.0.0.1:{port}{path}"),
            id: id.into(),
            secret: secret.into(),
            service: "kms-xks-proxy".into(),
            method: "POST",
            extra_headers: Vec::new(),
            tls: Vec::new(),
        }
    }

    fn post(&self, target: &str, body: &Value) -> Answer {
        self.raw(target, &body.to_string())
    }

    fn raw(&self, target: &str, body: &str) -> Answer {
        self.attempt(target, body)
            .unwrap_or_else(|e| panic!("curl: {e}"))
    }

    /// The request, or curl's error when no HTTP answer came (e.g. a refused handshake).
    fn attempt(&self, target: &str, body: &str) -> Result<Answer, String> {
        let mut cmd = Command::new("curl");
        cmd.args(["--silent", "--show-error", "-X", self.method])
            .arg(format!("{}/{target}", self.base))
            .args(["-H", "Content-Type:application/json"])
            .arg("--aws-sigv4")
            .arg(format!("aws:amz:{REGION}:{}", self.service))
            .arg("--user")
            .arg(format!("{}:{}", self.id, self.secret))
            .args(["--data-binary", body])
            .args(["-w", "\n%{http_code}"]);
        for h in &self.extra_headers {
            cmd.args(["-H", h]);
        }
        cmd.args(&self.tls);
        let out = cmd.output().expect("run curl");
        if !out.status.success() {
            return Err(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, status) = text.rsplit_once('\n').unwrap();
        Ok(Answer {
            status: status.trim().parse().unwrap(),
            body: serde_json::from_str(body).unwrap_or(Value::String(body.to_string())),
        })
    }
}

fn metadata(op: &str) -> Value {
    json!({
        "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
        "kmsKeyArn": "arn:aws:kms:us-east-2:123456789012:/key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "kmsOperation": op,
        "kmsRequestId": uuid::Uuid::new_v4().to_string(),
        "kmsViaService": "ebs",
    })
}

fn encrypt_body(plaintext: &[u8], aad: Option<&[u8]>, cdiv: bool) -> Value {
    let mut b = json!({
        "requestMetadata": metadata("Encrypt"),
        "plaintext": B64.encode(plaintext),
        "encryptionAlgorithm": "AES_GCM",
    });
    if let Some(a) = aad {
        b["additionalAuthenticatedData"] = B64.encode(a).into();
    }
    if cdiv {
        b["ciphertextDataIntegrityValueAlgorithm"] = "SHA_256".into();
    }
    b
}

/// A Decrypt body from an Encrypt answer.
fn decrypt_body(enc: &Answer, aad: Option<&[u8]>) -> Value {
    let mut b = json!({
        "requestMetadata": metadata("Decrypt"),
        "ciphertext": enc.body["ciphertext"],
        "initializationVector": enc.body["initializationVector"],
        "authenticationTag": enc.body["authenticationTag"],
        "encryptionAlgorithm": "AES_GCM",
    });
    if let Some(a) = aad {
        b["additionalAuthenticatedData"] = B64.encode(a).into();
    }
    b
}

fn flip_b64(v: &Value) -> Value {
    let mut bytes = B64.decode(v.as_str().unwrap()).unwrap();
    bytes[0] ^= 1;
    B64.encode(bytes).into()
}

async fn dev_proxy() -> (TestDaemon, Signer) {
    let port = free_port();
    let d = TestDaemon::start_with_args(&["--xks-listen", &format!("127.0.0.1:{port}")]).await;
    d.wait_for_stdout_line("  xks proxy: http://127.0.0.1:")
        .await;
    let s = Signer::from_dev(&d.state_dir(), port);
    (d, s)
}

#[tokio::test]
async fn health_and_key_metadata() {
    let (d, s) = dev_proxy().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let key = fx.key(&mut c, "xks-1", KeyAlgorithm::Aes, 256, true).await;
    let health =
        json!({"requestMetadata": {"kmsOperation": "KmsHealthCheck", "kmsRequestId": "r-1"}});

    let h = s.post("health", &health);
    let v = h.ok();
    assert_eq!(v["xksProxyFleetSize"], 1);
    assert_eq!(v["xksProxyVendor"], "keyorch");
    assert!(v["xksProxyModel"]
        .as_str()
        .unwrap()
        .starts_with("keyorchd "));
    assert_eq!(v["ekmVendor"], "SoftHSM project");
    let fleet = v["ekmFleetDetails"].as_array().unwrap();
    assert_eq!(fleet.len(), 1);
    assert_eq!(fleet[0]["healthStatus"], "ACTIVE");
    assert!(fleet[0]["model"].as_str().unwrap().contains("SoftHSM"));
    s.post("health", &json!({}))
        .error(400, "ValidationException");
    s.post("health", &json!({"requestMetadata": {}}))
        .error(400, "ValidationException");
    s.raw("health", "{not json")
        .error(400, "ValidationException");

    let meta = |op: &str| json!({ "requestMetadata": metadata(op) });
    for op in ["DescribeKey", "CreateKey"] {
        let m = s.post(&format!("keys/{}/metadata", key.id), &meta(op));
        assert_eq!(
            m.ok(),
            &json!({"keySpec": "AES_256", "keyUsage": ["ENCRYPT", "DECRYPT"], "keyStatus": "ENABLED"})
        );
    }
    let m = format!("keys/{}/metadata", key.id);
    s.post(&m, &json!({})).error(400, "ValidationException");
    s.post(&m, &json!({"requestMetadata": {}}))
        .error(400, "ValidationException");
    let mut no_principal = meta("DescribeKey");
    no_principal["requestMetadata"]
        .as_object_mut()
        .unwrap()
        .remove("awsPrincipalArn");
    let e = s.post(&m, &no_principal);
    e.error(400, "ValidationException");
    assert!(e.body["errorMessage"]
        .as_str()
        .unwrap()
        .contains("awsPrincipalArn"));
    s.post("keys/non_existing_key/metadata", &meta("DescribeKey"))
        .error(404, "KeyNotFoundException");
    s.post("keys/bad~id/metadata", &meta("DescribeKey"))
        .error(400, "ValidationException");
    // Only AES-256 keys can back an XKS key: others say what they are and offer no usage.
    let small = fx
        .key(&mut c, "xks-128", KeyAlgorithm::Aes, 128, true)
        .await;
    let v = s.post(&format!("keys/{}/metadata", small.id), &meta("CreateKey"));
    assert_eq!(v.ok()["keySpec"], "AES_128");
    assert_eq!(v.body["keyUsage"], json!([]));
    // A key that is not ACTIVE is DISABLED.
    let idle = fx
        .key(&mut c, "xks-idle", KeyAlgorithm::Aes, 256, false)
        .await;
    let v = s.post(&format!("keys/{}/metadata", idle.id), &meta("DescribeKey"));
    assert_eq!(v.ok()["keyStatus"], "DISABLED");

    // Bad signatures, bad paths, other methods.
    let mut bad = s.clone();
    bad.id = format!("Invalid{}", s.id);
    bad.post("health", &health)
        .error(401, "AuthenticationFailedException");
    bad.post(&m, &meta("DescribeKey"))
        .error(401, "AuthenticationFailedException");
    let mut bad = s.clone();
    bad.secret = format!("Invalid{}", s.secret);
    bad.post("health", &health)
        .error(401, "AuthenticationFailedException");
    let mut bad = s.clone();
    bad.service = "kms".into();
    bad.post("health", &health)
        .error(401, "AuthenticationFailedException");
    let mut bad = s.clone();
    bad.extra_headers = vec!["X-Amz-Date: 20200101T000000Z".into()];
    let e = bad.post("health", &health);
    e.error(401, "AuthenticationFailedException");
    let unsigned = Command::new("curl")
        .args([
            "--silent",
            "-w",
            "\n%{http_code}",
            "-H",
            "Content-Type:application/json",
        ])
        .arg(format!("{}/health", s.base))
        .args(["--data-binary", &health.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8(unsigned.stdout).unwrap();
    assert!(
        text.ends_with("401") && text.contains("AuthenticationFailedException"),
        "{text}"
    );
    let mut bad = s.clone();
    bad.base = s
        .base
        .replace(PATH, &format!("/keyorch/invalid{}", "/kms/xks/v1"));
    bad.post("health", &health)
        .error(404, "InvalidUriPathException");
    bad.post(&m, &meta("DescribeKey"))
        .error(404, "InvalidUriPathException");
    s.post(&format!("keys/{}/sign", key.id), &meta("Sign"))
        .error(404, "InvalidUriPathException");
    s.post(&format!("keys/{}", "a".repeat(300)), &meta("Sign"))
        .error(404, "InvalidUriPathException");
    let mut get = s.clone();
    get.method = "GET";
    let e = get.post("health", &health);
    assert_eq!(e.status, 405, "{}", e.body);
    let mut put = s.clone();
    put.method = "PUT";
    assert_eq!(put.post(&m, &meta("DescribeKey")).status, 405);
}

#[tokio::test]
async fn encrypt_and_decrypt_as_the_test_client_does() {
    let (d, s) = dev_proxy().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let key = fx.key(&mut c, "xks-1", KeyAlgorithm::Aes, 256, true).await;
    let enc = format!("keys/{}/encrypt", key.id);
    let dec = format!("keys/{}/decrypt", key.id);
    let pt = b"Hello World!";
    let aad = b"project=nile,department=marketing";

    s.post(
        "keys/non_existing_key/encrypt",
        &encrypt_body(pt, None, false),
    )
    .error(404, "KeyNotFoundException");
    let mut missing = encrypt_body(pt, None, false);
    missing.as_object_mut().unwrap().remove("plaintext");
    s.post(&enc, &missing).error(400, "ValidationException");

    // With AAD, then decrypt without it or with another: InvalidCiphertextException.
    let e = s.post(&enc, &encrypt_body(pt, Some(aad), false));
    e.ok();
    assert_eq!(
        e.field("ciphertext").len(),
        pt.len(),
        "GCM keeps the length"
    );
    assert_eq!(e.field("initializationVector").len(), 12);
    assert_eq!(e.field("authenticationTag").len(), 16);
    assert!(e.body.get("ciphertextDataIntegrityValue").is_none());
    s.post(&dec, &decrypt_body(&e, None))
        .error(400, "InvalidCiphertextException");
    s.post(
        &dec,
        &decrypt_body(&e, Some(b"project=blue,department=finance")),
    )
    .error(400, "InvalidCiphertextException");
    let p = s.post(&dec, &decrypt_body(&e, Some(aad)));
    assert_eq!(p.field("plaintext"), pt);

    // Without AAD.
    let e = s.post(&enc, &encrypt_body(pt, None, false));
    assert_eq!(s.post(&dec, &decrypt_body(&e, None)).field("plaintext"), pt);
    // Empty AAD is no AAD (both lengths are in the GCM AAD).
    assert_eq!(
        s.post(&dec, &decrypt_body(&e, Some(b"")))
            .field("plaintext"),
        pt
    );

    // CDIV, with and without AAD, checked here as Appendix C says.
    for a in [Some(&aad[..]), None] {
        let e = s.post(&enc, &encrypt_body(pt, a, true));
        e.ok();
        let mut h = sha2::Sha256::new();
        h.update(a.unwrap_or_default());
        h.update(e.field("initializationVector"));
        h.update(e.field("ciphertext"));
        h.update(e.field("authenticationTag"));
        assert_eq!(
            e.field("ciphertextDataIntegrityValue"),
            h.finalize().to_vec()
        );
        assert_eq!(s.post(&dec, &decrypt_body(&e, a)).field("plaintext"), pt);
    }

    // The spec's largest fields: 4,300 bytes of plaintext, 8,192 of AAD.
    let big = vec![0x5a; 4300];
    let big_aad = vec![0xa5; 8192];
    let e = s.post(&enc, &encrypt_body(&big, Some(&big_aad), true));
    e.ok();
    assert_eq!(
        s.post(&dec, &decrypt_body(&e, Some(&big_aad)))
            .field("plaintext"),
        big
    );
    s.post(&enc, &encrypt_body(&[0; 4301], None, false))
        .error(400, "ValidationException");
    s.post(&enc, &encrypt_body(pt, Some(&[0; 8193]), false))
        .error(400, "ValidationException");
    s.post(&enc, &encrypt_body(b"", None, false))
        .error(400, "ValidationException");

    // Field rules.
    let mut b = encrypt_body(pt, None, false);
    b["encryptionAlgorithm"] = "AES_CBC".into();
    s.post(&enc, &b).error(400, "ValidationException");
    let mut b = encrypt_body(pt, None, false);
    b["ciphertextDataIntegrityValueAlgorithm"] = "MD5".into();
    s.post(&enc, &b).error(400, "ValidationException");
    let mut b = encrypt_body(pt, None, false);
    b["plaintext"] = "not base64!".into();
    s.post(&enc, &b).error(400, "ValidationException");
    let mut b = encrypt_body(pt, None, false);
    b["requestMetadata"]
        .as_object_mut()
        .unwrap()
        .remove("kmsKeyArn");
    s.post(&enc, &b).error(400, "ValidationException");

    // Tampering: ciphertext, tag, IV, metadata; sizes of the tag, IV and metadata.
    let e = s.post(&enc, &encrypt_body(pt, Some(aad), false));
    for field in ["ciphertext", "authenticationTag", "initializationVector"] {
        let mut b = decrypt_body(&e, Some(aad));
        b[field] = flip_b64(&b[field]);
        s.post(&dec, &b).error(400, "InvalidCiphertextException");
    }
    let mut b = decrypt_body(&e, Some(aad));
    b["ciphertextMetadata"] = B64.encode(b"v1").into();
    s.post(&dec, &b).error(400, "InvalidCiphertextException");
    let mut b = decrypt_body(&e, Some(aad));
    b["ciphertextMetadata"] = B64.encode([0u8; 21]).into();
    s.post(&dec, &b).error(400, "ValidationException");
    let mut b = decrypt_body(&e, Some(aad));
    b["authenticationTag"] = B64.encode([0u8; 12]).into();
    s.post(&dec, &b).error(400, "ValidationException");
    let mut b = decrypt_body(&e, Some(aad));
    b["initializationVector"] = B64.encode([0u8; 16]).into();
    s.post(&dec, &b).error(400, "InvalidCiphertextException");
    let mut b = decrypt_body(&e, Some(aad));
    b["initializationVector"] = B64.encode([0u8; 8]).into();
    s.post(&dec, &b).error(400, "ValidationException");
    for field in [
        "ciphertext",
        "initializationVector",
        "authenticationTag",
        "encryptionAlgorithm",
    ] {
        let mut b = decrypt_body(&e, Some(aad));
        b.as_object_mut().unwrap().remove(field);
        s.post(&dec, &b).error(400, "ValidationException");
    }

    // Wrong key usage: an AES-128 key and an HMAC key cannot back an XKS key.
    for (name, alg, bits) in [
        ("aes-128", KeyAlgorithm::Aes, 128),
        ("mac", KeyAlgorithm::HmacSha256, 256),
    ] {
        let other = fx.key(&mut c, name, alg, bits, true).await;
        s.post(
            &format!("keys/{}/encrypt", other.id),
            &encrypt_body(pt, None, false),
        )
        .error(400, "InvalidKeyUsageException");
        s.post(
            &format!("keys/{}/decrypt", other.id),
            &decrypt_body(&e, Some(aad)),
        )
        .error(400, "InvalidKeyUsageException");
    }

    // Neither the plaintext nor the secret access key is in keyorchd's logs.
    let logs = d.logs();
    assert!(!logs.contains(&B64.encode(pt)), "plaintext in the logs");
    assert!(!logs.contains(&s.secret), "secret access key in the logs");
}

#[tokio::test]
async fn disconnecting_the_keystore_cuts_xks_traffic_at_once() {
    let (d, s) = dev_proxy().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let key = fx.key(&mut c, "xks-1", KeyAlgorithm::Aes, 256, true).await;
    let enc = format!("keys/{}/encrypt", key.id);
    let dec = format!("keys/{}/decrypt", key.id);
    let e = s.post(&enc, &encrypt_body(b"before", None, false));
    e.ok();
    ok(c.keystores.disconnect_keystore(DisconnectKeystoreRequest {
        id: fx.keystore.id.clone(),
        uninstall_keys: false,
        force: true,
    }))
    .await;
    s.post(&enc, &encrypt_body(b"after", None, false))
        .error(400, "InvalidStateException");
    s.post(&dec, &decrypt_body(&e, None))
        .error(400, "InvalidStateException");
    ok(c.keystores.connect_keystore(ConnectKeystoreRequest {
        id: fx.keystore.id.clone(),
    }))
    .await;
    assert_eq!(
        s.post(&dec, &decrypt_body(&e, None)).field("plaintext"),
        b"before"
    );

    // A DEACTIVATED key decrypts but no longer encrypts.
    ok(c.keys.deactivate_key(key_id(&key.id))).await;
    s.post(&enc, &encrypt_body(b"late", None, false))
        .error(400, "InvalidStateException");
    assert_eq!(
        s.post(&dec, &decrypt_body(&e, None)).field("plaintext"),
        b"before"
    );
}

/// `[xks]` from a config file: two credentials on one endpoint (rotation), roles from
/// `[[access.grant]]`, an endpoint restricted to one vault, and external key ids.
#[tokio::test]
async fn configured_endpoints_credentials_roles_and_key_ids() {
    let mut d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let key = fx.key(&mut c, "xks-1", KeyAlgorithm::Aes, 256, true).await;
    let other_vault = create_vault(&mut c, "vault-2").await;
    let other_ks = create_keystore(&mut c, &other_vault.id, "internal-2", true).await;
    let other = create_key(
        &mut c,
        &other_vault.id,
        "xks-2",
        KeyAlgorithm::Aes,
        256,
        &[&other_ks.id],
        true,
    )
    .await;
    let dir = d.root().to_path_buf();
    let (a, b, auditor) = (
        "AAAAAAAAAAAAAAAAAAAAAAAAAA",
        "BBBBBBBBBBBBBBBBBBBBBBBBBB",
        "CCCCCCCCCCCCCCCCCCCCCCCCCC",
    );
    let secret = |n: &str| {
        let s = format!("{n}{}", "x".repeat(44));
        let p = dir.join(format!("xks-{n}"));
        std::fs::write(&p, format!("{s}\n")).unwrap();
        (p, s)
    };
    let (pa, sa) = secret("a");
    let (pb, sb) = secret("b");
    let (pc, sc) = secret("c");
    let port = free_port();
    d.restart_with_config(&format!(
        "[xks]\nlisten = \"127.0.0.1:{port}\"\n\
         [[xks.endpoint]]\nuri_path = \"/p1/kms/xks/v1\"\nvault = \"vault-1\"\n\
         [[xks.endpoint.credential]]\naccess_key_id = \"{a}\"\nsecret_file = {pa:?}\n\
         [[xks.endpoint.credential]]\naccess_key_id = \"{b}\"\nsecret_file = {pb:?}\n\
         [xks.endpoint.keys]\n\"ext-key-1\" = \"{kid}\"\n\
         [[xks.endpoint]]\nuri_path = \"/p2/kms/xks/v1\"\n\
         [[xks.endpoint.credential]]\naccess_key_id = \"{auditor}\"\nsecret_file = {pc:?}\n\
         [[access.grant]]\naws_access_key_id = \"{a}\"\nvault = \"*\"\nroles = [\"user\", \"auditor\"]\n\
         [[access.grant]]\naws_access_key_id = \"{b}\"\nvault = \"*\"\nroles = [\"user\", \"auditor\"]\n\
         [[access.grant]]\naws_access_key_id = \"{auditor}\"\nvault = \"*\"\nroles = [\"auditor\"]\n",
        kid = key.id,
    ))
    .await;
    let signer = |path: &str, id: &str, secret: &str| Signer::http(port, path, id, secret);
    let s1a = signer("/p1/kms/xks/v1", a, &sa);
    let s1b = signer("/p1/kms/xks/v1", b, &sb);
    // Both credentials of the endpoint work; by keyorch id and by external id.
    let e = s1a.post(
        "keys/ext-key-1/encrypt",
        &encrypt_body(b"rotated", None, false),
    );
    e.ok();
    let p = s1b.post(&format!("keys/{}/decrypt", key.id), &decrypt_body(&e, None));
    assert_eq!(p.field("plaintext"), b"rotated");
    // A credential of one endpoint is not one of another's.
    signer("/p2/kms/xks/v1", a, &sa)
        .post(
            "health",
            &json!({"requestMetadata": {"kmsOperation": "KmsHealthCheck", "kmsRequestId": "r"}}),
        )
        .error(401, "AuthenticationFailedException");
    // The endpoint serves its vault only: the other vault's key does not exist there.
    s1a.post(
        &format!("keys/{}/encrypt", other.id),
        &encrypt_body(b"x", None, false),
    )
    .error(404, "KeyNotFoundException");
    s1a.post(
        &format!("keys/{}/metadata", other.id),
        &json!({"requestMetadata": metadata("DescribeKey")}),
    )
    .error(404, "KeyNotFoundException");
    // An auditor may read metadata but not encrypt: AccessDeniedException, audited.
    let s2 = signer("/p2/kms/xks/v1", auditor, &sc);
    s2.post(
        &format!("keys/{}/metadata", other.id),
        &json!({"requestMetadata": metadata("DescribeKey")}),
    )
    .ok();
    s2.post(
        &format!("keys/{}/encrypt", other.id),
        &encrypt_body(b"x", None, false),
    )
    .error(403, "AccessDeniedException");
    let logs = d.logs();
    for secret in [&sa, &sb, &sc] {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret access key is in the logs"
        );
    }
}

/// The test client's encrypt-only, decrypt-only and impotent keys (its `-a` cases #36–#49):
/// `[xks.endpoint.keys]` names one keyorch key three more times with narrowed usages. The
/// metadata shows each name's keyUsage; a use it lacks is 400 InvalidKeyUsageException, an
/// Encrypt with a CDIV included on a name without DECRYPT (the proxy decrypts its output once
/// to compute it).
#[tokio::test]
async fn encrypt_only_decrypt_only_and_impotent_key_names() {
    let mut d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let key = fx
        .key(&mut c, "narrowed", KeyAlgorithm::Aes, 256, true)
        .await;
    let id = "DDDDDDDDDDDDDDDDDDDDDDDDDD";
    let secret = format!("d{}", "y".repeat(44));
    let secret_file = d.root().join("xks-d");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let port = free_port();
    d.restart_with_config(&format!(
        "[xks]\nlisten = \"127.0.0.1:{port}\"\n\
         [[xks.endpoint]]\nuri_path = \"/n/kms/xks/v1\"\n\
         [[xks.endpoint.credential]]\naccess_key_id = \"{id}\"\nsecret_file = {secret_file:?}\n\
         [xks.endpoint.keys]\n\
         \"enc-only\" = {{ key = \"{kid}\", usage = [\"ENCRYPT\"] }}\n\
         \"dec-only\" = {{ key = \"{kid}\", usage = [\"DECRYPT\"] }}\n\
         \"impotent\" = {{ key = \"{kid}\", usage = [] }}\n\
         [[access.grant]]\naws_access_key_id = \"{id}\"\nvault = \"*\"\nroles = [\"user\", \"auditor\"]\n",
        kid = key.id,
    ))
    .await;
    let s = Signer::http(port, "/n/kms/xks/v1", id, &secret);
    let usage = |name: &str| {
        s.post(
            &format!("keys/{name}/metadata"),
            &json!({"requestMetadata": metadata("DescribeKey")}),
        )
        .ok()["keyUsage"]
            .clone()
    };
    assert_eq!(usage("enc-only"), json!(["ENCRYPT"]));
    assert_eq!(usage("dec-only"), json!(["DECRYPT"]));
    assert_eq!(usage("impotent"), json!([]));
    assert_eq!(usage(&key.id), json!(["ENCRYPT", "DECRYPT"]));
    let aad: &[u8] = b"project=nile";
    // Encrypt-only: Encrypt with and without AAD; Decrypt of either refused; a CDIV refused.
    for a in [None, Some(aad)] {
        let e = s.post(
            "keys/enc-only/encrypt",
            &encrypt_body(b"enc only", a, false),
        );
        e.ok();
        s.post("keys/enc-only/decrypt", &decrypt_body(&e, a))
            .error(400, "InvalidKeyUsageException");
        // The same ciphertext opens under the key's own name.
        let p = s.post(&format!("keys/{}/decrypt", key.id), &decrypt_body(&e, a));
        assert_eq!(p.field("plaintext"), b"enc only");
        s.post("keys/enc-only/encrypt", &encrypt_body(b"enc only", a, true))
            .error(400, "InvalidKeyUsageException");
    }
    // Decrypt-only: every Encrypt refused; Decrypt of the key's ciphertext works.
    for (a, cdiv) in [
        (None, false),
        (Some(aad), false),
        (Some(aad), true),
        (None, true),
    ] {
        s.post("keys/dec-only/encrypt", &encrypt_body(b"x", a, cdiv))
            .error(400, "InvalidKeyUsageException");
    }
    let e = s.post(
        &format!("keys/{}/encrypt", key.id),
        &encrypt_body(b"dec only", Some(aad), true),
    );
    e.ok();
    let p = s.post("keys/dec-only/decrypt", &decrypt_body(&e, Some(aad)));
    assert_eq!(p.field("plaintext"), b"dec only");
    // Impotent: nothing.
    for (a, cdiv) in [
        (None, false),
        (Some(aad), false),
        (Some(aad), true),
        (None, true),
    ] {
        s.post("keys/impotent/encrypt", &encrypt_body(b"x", a, cdiv))
            .error(400, "InvalidKeyUsageException");
    }
    s.post("keys/impotent/decrypt", &decrypt_body(&e, Some(aad)))
        .error(400, "InvalidKeyUsageException");
}

/// Waits until keyorchd's logs hold `needle` `count` times or more.
async fn wait_log_count(d: &TestDaemon, needle: &str, count: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while d.logs().matches(needle).count() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle:?} (x{count}) in the logs:\n{}",
            d.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Credential rotation without a restart: SIGHUP puts a new `[[xks.endpoint]]` set in force
/// (new credentials, key ids) for new requests; a file whose secret cannot be read changes
/// nothing; listener settings wait for a restart and say so.
#[tokio::test]
async fn sighup_rotates_the_endpoint_credentials_and_key_ids() {
    let mut d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let key = fx
        .key(&mut c, "xks-rot", KeyAlgorithm::Aes, 256, true)
        .await;
    let dir = d.root().to_path_buf();
    let (old_id, new_id) = ("DDDDDDDDDDDDDDDDDDDDDDDDDD", "EEEEEEEEEEEEEEEEEEEEEEEEEE");
    let secret = |n: &str| {
        let s = format!("{n}{}", "r".repeat(44));
        let p = dir.join(format!("xks-rot-{n}"));
        std::fs::write(&p, format!("{s}\n")).unwrap();
        (p, s)
    };
    let (p_old, s_old) = secret("old");
    let (p_new, s_new) = secret("new");
    let port = free_port();
    let section = |listen_port: u16, id: &str, file: &Path, ext: &str| {
        format!(
            "[xks]\nlisten = \"127.0.0.1:{listen_port}\"\n\
             [[xks.endpoint]]\nuri_path = \"/rot/kms/xks/v1\"\n\
             [[xks.endpoint.credential]]\naccess_key_id = \"{id}\"\nsecret_file = {file:?}\n\
             [xks.endpoint.keys]\n\"{ext}\" = \"{kid}\"\n\
             [[access.grant]]\naws_access_key_id = \"{id}\"\nvault = \"*\"\nroles = [\"user\"]\n",
            kid = key.id,
        )
    };
    d.restart_with_config(&section(port, old_id, &p_old, "ext-old"))
        .await;
    let signer = |id: &str, secret: &str| Signer::http(port, "/rot/kms/xks/v1", id, secret);
    let (old, new) = (signer(old_id, &s_old), signer(new_id, &s_new));
    let sealed = old.post(
        "keys/ext-old/encrypt",
        &encrypt_body(b"before", None, false),
    );
    sealed.ok();
    new.post("keys/ext-old/encrypt", &encrypt_body(b"x", None, false))
        .error(401, "AuthenticationFailedException");

    // The rotated file: the new credential only, and a new external key id.
    let file = dir.join("keyorchd.toml");
    let base = std::fs::read_to_string(&file).unwrap();
    let base = base
        .split("[xks]")
        .next()
        .expect("the config has an [xks] section")
        .to_string();
    std::fs::write(
        &file,
        format!("{base}{}", section(port, new_id, &p_new, "ext-new")),
    )
    .unwrap();
    send_signal(d.pid(), libc::SIGHUP);
    wait_log_count(&d, "configuration reloaded", 1).await;
    assert!(
        d.logs().contains("XKS proxy endpoints reloaded"),
        "{}",
        d.logs()
    );
    old.post("keys/ext-old/encrypt", &encrypt_body(b"x", None, false))
        .error(401, "AuthenticationFailedException");
    new.post("keys/ext-old/encrypt", &encrypt_body(b"x", None, false))
        .error(404, "KeyNotFoundException");
    let p = new.post("keys/ext-new/decrypt", &decrypt_body(&sealed, None));
    assert_eq!(p.field("plaintext"), b"before");

    // A secret file that cannot be read fails the reload; the rotated set stays.
    let missing = dir.join("no-such-secret");
    std::fs::write(
        &file,
        format!("{base}{}", section(port, old_id, &missing, "ext-old")),
    )
    .unwrap();
    send_signal(d.pid(), libc::SIGHUP);
    wait_log_count(&d, "reload failed, the previous settings stay in force", 1).await;
    assert!(d.logs().contains("no-such-secret"), "{}", d.logs());
    new.post("keys/ext-new/encrypt", &encrypt_body(b"x", None, false))
        .ok();
    old.post("keys/ext-old/encrypt", &encrypt_body(b"x", None, false))
        .error(401, "AuthenticationFailedException");

    // A new listen address waits for the restart (and is said to); the endpoints reload.
    let other_port = free_port();
    std::fs::write(
        &file,
        format!("{base}{}", section(other_port, new_id, &p_new, "ext-new")),
    )
    .unwrap();
    send_signal(d.pid(), libc::SIGHUP);
    wait_log_count(&d, "configuration reloaded", 2).await;
    assert!(
        d.logs()
            .contains("[xks] (its presence, listen, TLS, client_common_name or max_in_flight) changed: it takes effect at the next restart"),
        "{}",
        d.logs()
    );
    new.post("keys/ext-new/encrypt", &encrypt_body(b"x", None, false))
        .ok();
    let logs = d.logs();
    for secret in [&s_old, &s_new] {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret access key is in the logs"
        );
    }
}

/// HTTPS with mutual TLS, as AWS KMS connects to a proxy: the client certificate must chain
/// to `client_ca` and carry `client_common_name`; otherwise no request is read at all.
#[tokio::test]
async fn mutual_tls_with_the_client_common_name() {
    let mut d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let key = fx.key(&mut c, "xks-1", KeyAlgorithm::Aes, 256, true).await;
    let dir = d.root().to_path_buf();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        p.display().to_string()
    };
    let server_ca = common::tls::ca("xks server ca");
    let (cert, key_pem) = common::tls::leaf(&server_ca, "localhost", "keyorch", true, 1);
    let client_ca = common::tls::ca("xks client ca");
    let kms_cn = "kms.us-east-2.amazonaws.com";
    let (kms, kms_key) = common::tls::leaf(&client_ca, kms_cn, "AWS", false, 2);
    let (other, other_key) = common::tls::leaf(&client_ca, "intruder", "AWS", false, 3);
    let stranger_ca = common::tls::ca("another ca");
    let (stranger, stranger_key) = common::tls::leaf(&stranger_ca, kms_cn, "AWS", false, 4);
    let server_ca_file = write("server-ca.pem", &server_ca.pem);
    let cert_file = write("server.pem", &cert);
    let key_file = write("server.key", &key_pem);
    let client_ca_file = write("client-ca.pem", &client_ca.pem);
    let kms = (write("kms.pem", &kms), write("kms.key", &kms_key));
    let other = (write("other.pem", &other), write("other.key", &other_key));
    let stranger = (
        write("stranger.pem", &stranger),
        write("stranger.key", &stranger_key),
    );
    let id = "MTLSMTLSMTLSMTLSMTLSMTLS";
    let secret = "VU6W2byoiBrhDqNGbx703oL0syCAmhlQgwNUT1234567";
    let secret_file = write("xks-secret", secret);
    let port = free_port();
    d.restart_with_config(&format!(
        "[xks]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = {cert_file:?}\ntls_key = {key_file:?}\n\
         client_ca = {client_ca_file:?}\nclient_common_name = \"{kms_cn}\"\n\
         [[xks.endpoint]]\nuri_path = \"/tls/kms/xks/v1\"\n\
         [[xks.endpoint.credential]]\naccess_key_id = \"{id}\"\nsecret_file = {secret_file:?}\n\
         [[access.grant]]\naws_access_key_id = \"{id}\"\nvault = \"*\"\nroles = [\"user\", \"auditor\"]\n",
    ))
    .await;
    let with = |(cert, key): &(String, String)| Signer {
        base: format!("https://127.0.0.1:{port}/tls/kms/xks/v1"),
        id: id.into(),
        secret: secret.into(),
        service: "kms-xks-proxy".into(),
        method: "POST",
        extra_headers: Vec::new(),
        tls: vec![
            "--cacert".into(),
            server_ca_file.clone(),
            "--cert".into(),
            cert.clone(),
            "--key".into(),
            key.clone(),
        ],
    };
    let health =
        json!({"requestMetadata": {"kmsOperation": "KmsHealthCheck", "kmsRequestId": "r"}});
    let s = with(&kms);
    assert_eq!(
        s.post("health", &health).ok()["ekmFleetDetails"][0]["healthStatus"],
        "ACTIVE"
    );
    let e = s.post(
        &format!("keys/{}/encrypt", key.id),
        &encrypt_body(b"over mtls", Some(b"aad"), true),
    );
    e.ok();
    let p = s.post(
        &format!("keys/{}/decrypt", key.id),
        &decrypt_body(&e, Some(b"aad")),
    );
    assert_eq!(p.field("plaintext"), b"over mtls");
    // Signatures are still checked behind mutual TLS.
    let mut bad = with(&kms);
    bad.secret = format!("Invalid{secret}");
    bad.post("health", &health)
        .error(401, "AuthenticationFailedException");

    // The wrong common name, a certificate of another CA, no certificate, plain HTTP: no
    // HTTP answer at all.
    let refused = |s: &Signer, what: &str| {
        let r = s.attempt("health", &health.to_string());
        assert!(r.is_err(), "{what}: answered {:?}", r.map(|a| a.body));
    };
    refused(&with(&other), "common name intruder");
    refused(&with(&stranger), "another CA");
    // The client CA's own certificate for the right common name, expired (as the test
    // client's bogus-mtls/expired_cert.pem, which expired 2022-11-07).
    let (expired, expired_key) = expired_client_leaf(&client_ca, kms_cn, 5);
    let expired = (
        write("expired.pem", &expired),
        write("expired.key", &expired_key),
    );
    refused(&with(&expired), "expired certificate");
    // A self-signed certificate for the right common name (the test client's
    // bogus-mtls/selfsigned_cert.pem).
    let (selfsigned, selfsigned_key) = self_signed_client_leaf(kms_cn);
    let selfsigned = (
        write("selfsigned.pem", &selfsigned),
        write("selfsigned.key", &selfsigned_key),
    );
    refused(&with(&selfsigned), "self-signed certificate");
    let mut none = with(&kms);
    none.tls.truncate(2);
    refused(&none, "no client certificate");
    let mut plain = with(&kms);
    plain.base = plain.base.replace("https://", "http://");
    plain.tls.clear();
    refused(&plain, "plain HTTP");
    let logs = d.logs();
    assert!(
        logs.contains("client certificate refused"),
        "the CN refusal is logged"
    );
    assert!(
        !logs.contains(secret),
        "the secret access key is in the logs"
    );
}

/// The test client's wrong-secret and wrong-prefix cases on the key operations, not only
/// on `/health` (its #13, #18, #19): the right access key id with a wrong secret is 401
/// on GetKeyMetadata and Encrypt, and `<prefix>/invalid/kms/xks/v1` is 404 on Encrypt.
#[tokio::test]
async fn wrong_secret_and_invalid_prefix_on_metadata_and_encrypt() {
    let (d, s) = dev_proxy().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let key = fx.key(&mut c, "xks-1", KeyAlgorithm::Aes, 256, true).await;
    let m = format!("keys/{}/metadata", key.id);
    let enc = format!("keys/{}/encrypt", key.id);
    let meta = json!({ "requestMetadata": metadata("DescribeKey") });
    let body = encrypt_body(b"Hello World!", None, false);
    // The same requests, rightly signed at the right path, are answered.
    s.post(&m, &meta).ok();
    s.post(&enc, &body).ok();

    // The client's "Invalid" + secret, with the endpoint's own access key id.
    let mut bad = s.clone();
    bad.secret = format!("Invalid{}", s.secret);
    bad.post(&m, &meta)
        .error(401, "AuthenticationFailedException");
    bad.post(&enc, &body)
        .error(401, "AuthenticationFailedException");

    // The client's `$URI_PREFIX/invalid`.
    let mut bad = s.clone();
    bad.base = s
        .base
        .replace(PATH, &format!("/keyorch/invalid{}", "/kms/xks/v1"));
    bad.post(&enc, &body).error(404, "InvalidUriPathException");
}

/// The test client's impotent-key cases (its #46–#49): a key that can neither encrypt nor
/// decrypt (AES-128, HMAC; metadata `keyUsage` `[]`) refuses Encrypt with and without AAD
/// and with and without a CDIV asked.
#[tokio::test]
async fn impotent_keys_refuse_encrypt_with_aad_and_cdiv() {
    let (d, s) = dev_proxy().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let pt = b"Hello World!";
    let aad = b"project=nile,department=marketing";
    for (name, alg, bits) in [
        ("aes-128", KeyAlgorithm::Aes, 128),
        ("mac", KeyAlgorithm::HmacSha256, 256),
    ] {
        let key = fx.key(&mut c, name, alg, bits, true).await;
        let enc = format!("keys/{}/encrypt", key.id);
        for (a, cdiv) in [
            (Some(&aad[..]), false),
            (None, false),
            (Some(&aad[..]), true),
            (None, true),
        ] {
            s.post(&enc, &encrypt_body(pt, a, cdiv))
                .error(400, "InvalidKeyUsageException");
        }
    }
}

/// (certificate PEM, key PEM): a client certificate issued by `ca` as
/// `common::tls::leaf` makes one, but valid from 2021-11-07 to 2022-11-07 only.
fn expired_client_leaf(ca: &common::tls::Ca, cn: &str, serial: u64) -> (String, String) {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SerialNumber};
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "AWS");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.serial_number = Some(SerialNumber::from(serial));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = rcgen::date_time_ymd(2021, 11, 7);
    params.not_after = rcgen::date_time_ymd(2022, 11, 7);
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A client certificate signed by its own key, for `cn`, valid now.
fn self_signed_client_leaf(cn: &str) -> (String, String) {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "AWS");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}
