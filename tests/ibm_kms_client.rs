//! keyorch's IBM KMS API v2 client (`keyorch::targets::ibm_kms::client`) against the loopback
//! fake of IBM Key Protect / Hyper Protect Crypto Services and IAM (tests/ibm_kms/fake.py,
//! proven with IBM's SDK in tests/ibm_kms_fake.rs), started the same way: the venv of
//! scripts/ibm-clients.sh, https with a CA made here, `LISTENING <port>`.
//!
//! The key material is wrapped for the import by a small Python helper in that venv
//! (`cryptography`: RSA-OAEP to the import token's key, the nonce under the material with
//! AES-GCM for Key Protect and AES-CBC-PAD for HPCS), which gives back only the wrapped
//! values and the material's SHA-256; the fake-only `/__fake__/keys/{id}/check` proves that
//! the fake unwrapped the same material. Every error is checked for its class
//! (`TargetError`'s variant), and messages and `Debug` output for the API key, payloads and
//! nonces, which must never appear.

mod common;

use common::ibm::{python, Fake};
use common::tls;

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use der::Decode as _;
use keyorch::targets::ibm_kms::client::{IamService, IbmKmsClient, IbmKmsSettings, KmsKey};
use keyorch::targets::TargetError;
use secrecy::SecretString;
use serde_json::Value;

/// The one service-ID API key the fake's IAM accepts, and the instance it serves.
const API_KEY: &str = "keyorch-client-test-apikey-5c1e9a77";
const INSTANCE: &str = "2f8c7a52-4b1e-4d0a-9c3e-5a6b7c8d9e0f";
const NIL_KEY: &str = "00000000-0000-0000-0000-000000000000";

/// The requests `fake` logged with `method path -> status`.
fn count(fake: &Fake, request: &str) -> usize {
    fake.logged()
        .lines()
        .filter(|l| l.ends_with(request))
        .count()
}

/// A folder with a CA and a server certificate for 127.0.0.1 it signed.
struct Certs {
    dir: tempfile::TempDir,
    ca_pem: String,
}

fn certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::ca("keyorch test CA for the IBM KMS client");
    let (cert, key) = tls::leaf(&ca, "127.0.0.1", "keyorch-tests", true, 1);
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.path().join("server.pem"), cert).unwrap();
    std::fs::write(dir.path().join("server-key.pem"), key).unwrap();
    Certs {
        dir,
        ca_pem: ca.pem,
    }
}

fn settings(url: &str, ca: Option<&str>, ring: &str) -> IbmKmsSettings {
    IbmKmsSettings {
        api_endpoint: url.to_string(),
        iam_endpoint: url.to_string(),
        instance_id: INSTANCE.to_string(),
        key_ring_id: ring.to_string(),
        ca_cert_pem: ca.map(str::to_string),
    }
}

fn client_with(s: IbmKmsSettings, key: &str) -> IbmKmsClient {
    IbmKmsClient::new(s, SecretString::from(key.to_string())).expect("client")
}

fn client(fake: &Fake, certs: &Certs) -> IbmKmsClient {
    client_with(settings(&fake.url, Some(&certs.ca_pem), "default"), API_KEY)
}

/// Wraps fresh material for an import; the fake-only check and the bulk creation.
const HELPER: &str = r#"
import base64, hashlib, json, os, ssl, sys, urllib.parse, urllib.request
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sympadding
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_TYPE = "application/vnd.ibm.kms.key+json"

def b64(data):
    return base64.b64encode(data).decode()

def fetch(url, ca, data=None, headers=None):
    ctx = ssl.create_default_context(cafile=ca) if ca else None
    req = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
        return r.read()

cmd = sys.argv[1]
if cmd == "wrap":
    a = json.load(sys.stdin)
    public = serialization.load_der_public_key(base64.b64decode(a["public_key_der"]))
    nonce = base64.b64decode(a["nonce"])
    material = os.urandom(32)
    digest = hashes.SHA256() if a["flavor"] == "key_protect" else hashes.SHA1()
    payload = public.encrypt(material, padding.OAEP(mgf=padding.MGF1(algorithm=digest),
                                                    algorithm=digest, label=None))
    if a["flavor"] == "key_protect":
        iv = os.urandom(12)
        enc = AESGCM(material).encrypt(iv, nonce, None)
    else:
        iv = os.urandom(16)
        padder = sympadding.PKCS7(128).padder()
        padded = padder.update(nonce) + padder.finalize()
        e = Cipher(algorithms.AES(material), modes.CBC(iv)).encryptor()
        enc = e.update(padded) + e.finalize()
    print(json.dumps({"payload": b64(payload), "encryptedNonce": b64(enc), "iv": b64(iv),
                      "sha256": hashlib.sha256(material).hexdigest()}))
elif cmd == "get":
    sys.stdout.write(fetch(sys.argv[2], sys.argv[3] or None).decode())
elif cmd == "bulk":
    url, ca, apikey, instance, n, prefix = sys.argv[2:8]
    ca = ca or None
    form = urllib.parse.urlencode({"grant_type": "urn:ibm:params:oauth:grant-type:apikey",
                                   "apikey": apikey}).encode()
    token = json.loads(fetch(url + "/identity/token", ca, form))["access_token"]
    for i in range(int(n)):
        body = {"metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1},
                "resources": [{"type": KEY_TYPE, "name": f"{prefix}{i:03}", "extractable": False}]}
        fetch(url + "/api/v2/keys", ca, json.dumps(body).encode(),
              {"Authorization": "Bearer " + token, "Bluemix-Instance": instance,
               "Content-Type": KEY_TYPE})
    print(json.dumps({"created": int(n)}))
"#;

/// Runs HELPER with `args` and `stdin`; its JSON answer.
fn helper(home: &Path, args: &[&str], stdin: &str) -> Value {
    let mut child = python(home)
        .arg("-c")
        .arg(HELPER)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the python helper");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "helper {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("helper JSON")
}

/// Base64 values for an import of fresh material to `public_key_der` and `nonce`.
struct Wrapped {
    payload: Vec<u8>,
    encrypted_nonce: Vec<u8>,
    iv: Vec<u8>,
    sha256: String,
    /// The base64 texts, to look for in messages.
    texts: Vec<String>,
}

fn wrap(home: &Path, flavor: &str, public_key_der: &[u8], nonce: &[u8]) -> Wrapped {
    let v = helper(
        home,
        &["wrap"],
        &serde_json::json!({
            "flavor": flavor,
            "public_key_der": STANDARD.encode(public_key_der),
            "nonce": STANDARD.encode(nonce),
        })
        .to_string(),
    );
    let field = |n: &str| STANDARD.decode(v[n].as_str().unwrap()).unwrap();
    Wrapped {
        payload: field("payload"),
        encrypted_nonce: field("encryptedNonce"),
        iv: field("iv"),
        sha256: v["sha256"].as_str().unwrap().to_string(),
        texts: ["payload", "encryptedNonce", "iv"]
            .map(|n| v[n].as_str().unwrap().to_string())
            .to_vec(),
    }
}

fn algorithm(flavor: &str) -> &'static str {
    if flavor == "key_protect" {
        "RSAES_OAEP_SHA_256"
    } else {
        "RSAES_OAEP_SHA_1"
    }
}

/// Asserts that `text` holds none of `secrets`.
fn assert_clean(text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "{text:?} holds a secret ({s:?})");
    }
}

/// A DER SubjectPublicKeyInfo's RSA modulus size in bits.
fn rsa_bits(der_bytes: &[u8]) -> usize {
    let spki = spki::SubjectPublicKeyInfoRef::from_der(der_bytes).expect("SPKI DER");
    assert_eq!(spki.algorithm.oid.to_string(), "1.2.840.113549.1.1.1");
    let rsa = pkcs1::RsaPublicKeyRef::from_der(spki.subject_public_key.as_bytes().unwrap())
        .expect("RSAPublicKey DER");
    let n = rsa.modulus.as_bytes();
    let n = &n[n.iter().take_while(|b| **b == 0).count()..];
    n.len() * 8 - n[0].leading_zeros() as usize
}

/// The whole flow against one flavor: login, empty ring, import token, failing and
/// succeeding imports, reads, deletes.
fn round_trip(flavor: &str) {
    let certs = certs();
    let home = certs.dir.path();
    let fake = Fake::start(home, flavor, (API_KEY, INSTANCE), &[], true);

    // A wrong API key: IAM's 400 BXNIM0415E, without the key in the message.
    let wrong = "keyorch-wrong-apikey-00000000000000";
    let bad = client_with(settings(&fake.url, Some(&certs.ca_pem), "default"), wrong);
    match bad.list_keys(10, 0) {
        Err(TargetError::InvalidCredentials(m)) => {
            assert!(m.contains("BXNIM0415E"), "{m}");
            assert_clean(&m, &[wrong, API_KEY]);
        }
        other => panic!("a wrong API key gave {other:?}"),
    }

    let c = client(&fake, &certs);
    assert_clean(&format!("{c:?}"), &[API_KEY]);
    assert_eq!(c.list_keys(200, 0).unwrap(), Vec::<KmsKey>::new());
    assert_eq!(c.find_key_by_name("keyorch-nothing").unwrap(), None);
    assert_eq!(c.get_key(NIL_KEY).unwrap(), None);

    // The import token: RSA-4096 as DER SubjectPublicKeyInfo, a 12-byte nonce.
    c.create_import_token(600, 2).unwrap();
    let token = c.get_import_token().unwrap();
    assert_eq!(token.public_key_der.len(), 550, "a 4096-bit RSA key's SPKI");
    assert_eq!(rsa_bits(&token.public_key_der), 4096);
    assert_eq!(token.nonce.len(), 12);
    let debug = format!("{token:?}");
    assert!(debug.contains("12 bytes"), "{debug}");
    assert_clean(&debug, &[&STANDARD.encode(&token.nonce)]);

    let w = wrap(home, flavor, &token.public_key_der, &token.nonce);
    let mut secrets: Vec<&str> = w.texts.iter().map(String::as_str).collect();
    let nonce_b64 = STANDARD.encode(&token.nonce);
    secrets.extend([API_KEY, nonce_b64.as_str()]);
    let name = format!("keyorch-client-{flavor}");

    // Refused imports: the other flavor's wrap, and a nonce that does not decrypt.
    let other = if flavor == "key_protect" {
        "RSAES_OAEP_SHA_1"
    } else {
        "RSAES_OAEP_SHA_256"
    };
    match c.import_root_key(&name, "d", &w.payload, &w.encrypted_nonce, &w.iv, other) {
        Err(TargetError::Internal(m)) => {
            assert!(
                m.contains("400")
                    && m.contains("INVALID_FIELD_ERR")
                    && m.contains("correlation-id"),
                "{m}"
            );
            assert_clean(&m, &secrets);
        }
        r => panic!("an import with {other} gave {r:?}"),
    }
    let mut tampered = w.encrypted_nonce.clone();
    tampered[0] ^= 1;
    match c.import_root_key(&name, "d", &w.payload, &tampered, &w.iv, algorithm(flavor)) {
        Err(TargetError::Internal(m)) => {
            assert!(m.contains("INCORRECT_NONCE"), "{m}");
            assert_clean(&m, &secrets);
        }
        r => panic!("an import with a tampered nonce gave {r:?}"),
    }
    assert!(
        c.import_root_key(
            &name,
            "d",
            &w.payload,
            &w.encrypted_nonce,
            &w.iv,
            "RSA_PKCS1"
        )
        .is_err(),
        "an algorithm the API does not know is refused before sending"
    );

    // The import.
    let key = c
        .import_root_key(
            &name,
            "managed by keyorch",
            &w.payload,
            &w.encrypted_nonce,
            &w.iv,
            algorithm(flavor),
        )
        .unwrap();
    assert_eq!(
        (key.name.as_str(), key.state, key.imported, key.extractable),
        (name.as_str(), 1, true, false),
        "{key:?}"
    );
    let check = helper(
        home,
        &[
            "get",
            &format!("{}/__fake__/keys/{}/check", fake.url, key.id),
            home.join("ca.pem").to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(check["sha256"].as_str(), Some(w.sha256.as_str()));

    assert_eq!(c.find_key_by_name(&name).unwrap(), Some(key.clone()));
    assert_eq!(c.get_key(&key.id).unwrap(), Some(key.clone()));
    assert_eq!(c.list_keys(1, 0).unwrap(), vec![key.clone()]);
    assert_eq!(c.list_keys(1, 1).unwrap(), Vec::<KmsKey>::new());

    // Deleting twice (the second answers 410), then the key reads as destroyed.
    c.delete_key(&key.id).unwrap();
    c.delete_key(&key.id).unwrap();
    let deleted = c
        .get_key(&key.id)
        .unwrap()
        .expect("a deleted key still reads");
    assert_eq!((deleted.id.as_str(), deleted.state), (key.id.as_str(), 5));
    assert_eq!(c.find_key_by_name(&name).unwrap(), None);
    assert!(c.list_keys(200, 0).unwrap().is_empty());

    // One IAM login for all of this client's calls (the token is cached).
    assert_eq!(count(&fake, "POST /identity/token -> 200"), 1);
    assert_eq!(count(&fake, "POST /identity/token -> 400"), 1);
    let log = std::fs::read_to_string(&fake.log).unwrap();
    assert!(
        log.contains(&format!("DELETE /api/v2/keys/{} -> 410", key.id)),
        "{log}"
    );
}

#[test]
fn key_protect_round_trip() {
    round_trip("key_protect");
}

#[test]
fn hpcs_round_trip() {
    round_trip("hpcs");
}

/// Each call refused by IAM names the action IBM documents for it (import is
/// `secrets.create`).
#[test]
fn refused_calls_name_their_iam_action() {
    let certs = certs();
    let home = certs.dir.path();
    let denies_import = Fake::start(
        home,
        "key_protect",
        (API_KEY, INSTANCE),
        &["--deny", "import"],
        true,
    );
    let c = client(&denies_import, &certs);
    c.create_import_token(300, 1).unwrap();
    let token = c.get_import_token().unwrap();
    let w = wrap(home, "key_protect", &token.public_key_der, &token.nonce);
    let r = c.import_root_key(
        "keyorch-denied",
        "",
        &w.payload,
        &w.encrypted_nonce,
        &w.iv,
        "RSAES_OAEP_SHA_256",
    );
    assert!(
        matches!(&r, Err(TargetError::PermissionDenied(n)) if n == &["kms.secrets.create"]),
        "{r:?}"
    );
    assert!(c.list_keys(10, 0).unwrap().is_empty(), "listing is allowed");
    // The import was sent with the cached token, refused, sent again with a new one.
    assert_eq!(count(&denies_import, "POST /identity/token -> 200"), 2);
    assert_eq!(count(&denies_import, "POST /api/v2/keys -> 401"), 2);

    let denies_rest = Fake::start(
        home,
        "key_protect",
        (API_KEY, INSTANCE),
        &["--deny", "list,get,delete,import_token"],
        true,
    );
    let c = client(&denies_rest, &certs);
    let names = |r: Result<(), TargetError>| match r {
        Err(TargetError::PermissionDenied(n)) => n,
        other => panic!("not a permission error: {other:?}"),
    };
    assert_eq!(names(c.list_keys(1, 0).map(drop)), ["kms.secrets.list"]);
    assert_eq!(
        names(c.find_key_by_name("x").map(drop)),
        ["kms.secrets.list"]
    );
    assert_eq!(
        names(c.get_key(NIL_KEY).map(drop)),
        ["kms.secrets.readmetadata"]
    );
    assert_eq!(names(c.delete_key(NIL_KEY)), ["kms.secrets.delete"]);
    assert_eq!(
        names(c.create_import_token(300, 1)),
        ["kms.importtoken.create"]
    );
    assert_eq!(
        names(c.get_import_token().map(drop)),
        ["kms.importtoken.read"]
    );
    let e = c.list_keys(1, 0).unwrap_err().to_string();
    assert!(e.contains("kms.secrets.list"), "{e}");

    // HPCS's actions are hs-crypto's.
    let hpcs = Fake::start(
        home,
        "hpcs",
        (API_KEY, INSTANCE),
        &["--deny", "import"],
        true,
    );
    let c = client(&hpcs, &certs).with_iam_service(IamService::Hpcs);
    c.create_import_token(300, 1).unwrap();
    let token = c.get_import_token().unwrap();
    let w = wrap(home, "hpcs", &token.public_key_der, &token.nonce);
    let r = c.import_root_key(
        "keyorch-denied",
        "",
        &w.payload,
        &w.encrypted_nonce,
        &w.iv,
        "RSAES_OAEP_SHA_1",
    );
    assert!(
        matches!(&r, Err(TargetError::PermissionDenied(n)) if n == &["hs-crypto.secrets.create"]),
        "{r:?}"
    );
}

#[test]
fn configuration_errors_are_invalid_configuration() {
    let certs = certs();
    let fake = Fake::start(
        certs.dir.path(),
        "key_protect",
        (API_KEY, INSTANCE),
        &["--key-ring", "ring-a"],
        true,
    );
    let ca = Some(certs.ca_pem.as_str());

    let unknown = client_with(settings(&fake.url, ca, "ring-nope"), API_KEY);
    match unknown.list_keys(10, 0) {
        Err(TargetError::InvalidConfiguration(m)) => {
            assert!(
                m.contains("ring-nope") && m.contains("KEY_RING_NOT_FOUND_ERR"),
                "{m}"
            );
        }
        other => panic!("an unknown key ring gave {other:?}"),
    }
    assert!(matches!(
        unknown.get_key(NIL_KEY),
        Err(TargetError::InvalidConfiguration(_))
    ));
    assert!(matches!(
        unknown.find_key_by_name("x"),
        Err(TargetError::InvalidConfiguration(_))
    ));
    let ring = client_with(settings(&fake.url, ca, "ring-a"), API_KEY);
    assert!(ring.list_keys(10, 0).unwrap().is_empty());

    // Another instance: IBM answers 401 as for a caller without the role (so does the fake);
    // the client cannot tell the two apart.
    let mut other = settings(&fake.url, ca, "default");
    other.instance_id = "0e2a6c1d-0000-4000-8000-000000000000".into();
    assert!(matches!(
        client_with(other, API_KEY).list_keys(1, 0),
        Err(TargetError::PermissionDenied(_))
    ));

    // A trailing / on an endpoint is taken.
    let mut s = settings(&fake.url, ca, "default");
    s.api_endpoint = format!("{}/", fake.url);
    let c = client_with(s, API_KEY);
    assert!(c.list_keys(1, 0).unwrap().is_empty());

    // Settings refused before any request.
    let refused = |s: IbmKmsSettings, key: &str| {
        IbmKmsClient::new(s, SecretString::from(key.to_string())).unwrap_err()
    };
    let mut s = settings(&fake.url, ca, "default");
    s.instance_id = String::new();
    assert!(matches!(
        refused(s, API_KEY),
        TargetError::InvalidConfiguration(_)
    ));
    let mut s = settings(&fake.url, ca, "default");
    s.key_ring_id = "a ring".into();
    assert!(matches!(
        refused(s, API_KEY),
        TargetError::InvalidConfiguration(_)
    ));
    let mut s = settings("http://kms.example.com", ca, "default");
    s.iam_endpoint = fake.url.clone();
    assert!(matches!(
        refused(s, API_KEY),
        TargetError::InvalidConfiguration(m) if m.contains("loopback")
    ));
    assert!(matches!(
        refused(settings(&fake.url, Some("not a PEM"), "default"), API_KEY),
        TargetError::InvalidConfiguration(m) if m.contains("ca_cert_pem")
    ));
    assert!(matches!(
        refused(settings(&fake.url, ca, "default"), ""),
        TargetError::InvalidCredentials(_)
    ));
}

/// A listener that accepts connections and never answers.
fn silent_listener() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let mut held = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until && held.len() < 4 {
            match listener.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        std::thread::sleep(Duration::from_secs(3));
    });
    (port, t)
}

#[test]
fn tls_network_and_timeout_failures() {
    let certs = certs();
    let fake = Fake::start(
        certs.dir.path(),
        "key_protect",
        (API_KEY, INSTANCE),
        &[],
        true,
    );

    // A CA that did not sign the fake's certificate, and the system's roots.
    let other_ca = tls::ca("some other CA");
    for ca in [Some(other_ca.pem.as_str()), None] {
        match client_with(settings(&fake.url, ca, "default"), API_KEY).list_keys(1, 0) {
            Err(TargetError::Network(m)) => {
                assert!(m.contains("TLS") && m.contains("certificate"), "{m}");
                assert_clean(&m, &[API_KEY]);
            }
            other => panic!("a wrong CA gave {other:?}"),
        }
    }

    // Nothing listening.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = format!("https://127.0.0.1:{port}");
    match client_with(settings(&refused, Some(&certs.ca_pem), "default"), API_KEY).list_keys(1, 0) {
        Err(TargetError::Network(m)) => assert!(m.contains("connecting to"), "{m}"),
        other => panic!("a refused connection gave {other:?}"),
    }
    // A name that does not resolve (RFC 6761's .invalid).
    match client_with(
        settings("https://keyorch-test.invalid", None, "default"),
        API_KEY,
    )
    .list_keys(1, 0)
    {
        Err(TargetError::Network(m)) => assert!(m.contains("resolving"), "{m}"),
        other => panic!("an unknown host gave {other:?}"),
    }

    // A server that accepts and never answers: the TLS handshake's limit, then the
    // request's deadline over plain http to loopback.
    let (port, t) = silent_listener();
    let short = |url: String| {
        client_with(settings(&url, Some(&certs.ca_pem), "default"), API_KEY)
            .with_timeouts(Duration::from_millis(300), Duration::from_secs(2))
    };
    let started = Instant::now();
    match short(format!("https://127.0.0.1:{port}")).list_keys(1, 0) {
        Err(TargetError::TimedOut(m)) => {
            assert!(m.contains("TLS handshake") && m.contains("300 ms"), "{m}")
        }
        other => panic!("a silent TLS server gave {other:?}"),
    }
    match short(format!("http://127.0.0.1:{port}")).list_keys(1, 0) {
        Err(TargetError::TimedOut(m)) => assert!(m.contains("within 2 s"), "{m}"),
        other => panic!("a silent http server gave {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    t.join().unwrap();
}

/// Over http to loopback (as the configuration allows): find_key_by_name pages past the
/// first page of 200.
#[test]
fn find_key_by_name_pages_through_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::start(dir.path(), "key_protect", (API_KEY, INSTANCE), &[], false);
    assert!(fake.url.starts_with("http://"));
    let out = helper(
        dir.path(),
        &[
            "bulk",
            &fake.url,
            "",
            API_KEY,
            INSTANCE,
            "205",
            "keyorch-page-",
        ],
        "",
    );
    assert_eq!(out["created"], 205);
    let c = client_with(settings(&fake.url, None, "default"), API_KEY);
    assert_eq!(c.list_keys(5000, 0).unwrap().len(), 205);
    let first = c.list_keys(200, 0).unwrap();
    let second = c.list_keys(200, 200).unwrap();
    assert_eq!((first.len(), second.len()), (200, 5));
    let last = &second[4];
    assert_eq!(c.find_key_by_name(&last.name).unwrap().as_ref(), Some(last));
    assert_eq!(c.find_key_by_name("keyorch-page-none").unwrap(), None);
    assert!(matches!(c.list_keys(0, 0), Err(TargetError::Internal(_))));
    // Several threads share one client (its runtime and its token) at once.
    let c = std::sync::Arc::new(c);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || {
                (0..5)
                    .map(|_| c.list_keys(10, 0).unwrap().len())
                    .sum::<usize>()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 50);
    }
    assert_eq!(
        count(&fake, "POST /identity/token -> 200"),
        2,
        "the helper's and the client's"
    );
    assert!(matches!(
        c.list_keys(5001, 0),
        Err(TargetError::Internal(_))
    ));
}
