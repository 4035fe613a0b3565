//! Integration tests of the `hsm` layer against real SoftHSM2 tokens in a temporary directory.
//! All tests share one softhsm2.conf: SoftHSM reads it at the process's single C_Initialize.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use cryptoki::object::Attribute;
use cryptoki::session::Session;
use keyorch::hsm::{
    pkcs11_context, GeneratedKey, Hsm, HsmConfig, HsmError, KekStatus, KeyKind, KeyRef, SignAlg,
    TokenSelector, KEK_LABEL,
};
use secrecy::SecretString;

use common::softhsm_tokens;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "user-pin-4821";
const SO_PIN: &str = "so-pin-9375";

/// One token per test that needs its own; SoftHSM does not see tokens initialised after
/// C_Initialize, so all are made before the first `Hsm::open`.
const TOKENS: &[&str] = &[
    "kek",
    "fresh",
    "ops",
    "pin",
    "recover",
    "cache",
    "perf",
    "tamper",
    "underload",
];

struct Fixture {
    dir: PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = softhsm_tokens("keyorch-hsm-", TOKENS, SO_PIN, PIN);
        Fixture { dir }
    })
}

fn config(label: &str) -> HsmConfig {
    fixture();
    HsmConfig::new(
        MODULE,
        TokenSelector::Label(label.to_string()),
        SecretString::from(PIN),
    )
}

fn open(label: &str) -> Hsm {
    Hsm::open(config(label)).unwrap()
}

/// The hsm on token "ops" with its KEK and one key of every kind (RSA-4096 is slow: once).
struct Keys {
    hsm: Hsm,
    keys: HashMap<KeyKind, GeneratedKey>,
}

fn ops() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let hsm = open("ops");
        assert!(matches!(
            hsm.master_kek(true).unwrap(),
            KekStatus::Created { .. }
        ));
        let mut keys = HashMap::new();
        for kind in KeyKind::ALL {
            let t = Instant::now();
            let key = hsm.generate(kind).unwrap();
            eprintln!("generate {kind:?}: {:?}", t.elapsed());
            keys.insert(kind, key);
        }
        Keys { hsm, keys }
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

fn id_of(kind: KeyKind) -> String {
    format!("key-{kind:?}")
}

/// A session of this process on the token labelled `label`, logged in through the `Hsm`.
fn side_session(label: &str) -> Session {
    let ctx = pkcs11_context(Path::new(MODULE)).unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim() == label)
        .unwrap();
    ctx.open_rw_session(slot).unwrap()
}

fn session_objects(label: &str) -> usize {
    side_session(label)
        .find_objects(&[Attribute::Token(false)])
        .unwrap()
        .len()
}

fn write_pem(path: &Path, spki_der: &[u8]) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(spki_der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    std::fs::write(path, pem).unwrap();
}

#[test]
fn hsm_is_send_sync_clone() {
    fn assert_traits<T: Send + Sync + Clone + 'static>() {}
    assert_traits::<Hsm>();
}

#[test]
fn kek_is_created_once_then_found_on_reopen() {
    let hsm = open("kek");
    assert!(matches!(hsm.master_kek(false), Err(HsmError::KekMissing)));
    assert!(matches!(hsm.health(), Err(HsmError::KekMissing)));
    let created = hsm.master_kek(true).unwrap();
    let KekStatus::Created { kcv } = &created else {
        panic!("expected Created, got {created:?}");
    };
    assert_eq!(kcv.len(), 16);
    assert!(kcv
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(
        hsm.master_kek(false).unwrap(),
        KekStatus::Found { kcv: kcv.clone() }
    );
    assert_eq!(
        hsm.master_kek(true).unwrap(),
        KekStatus::Found { kcv: kcv.clone() }
    );
    hsm.health().unwrap();

    drop(hsm);
    let again = open("kek");
    assert_eq!(
        again.master_kek(false).unwrap(),
        KekStatus::Found { kcv: kcv.clone() }
    );
    let (label, serial) = again.token_info();
    assert_eq!(label, "kek");
    assert!(!serial.is_empty());
}

#[test]
fn fresh_token_reports_missing_kek() {
    let hsm = open("fresh");
    assert!(matches!(hsm.master_kek(false), Err(HsmError::KekMissing)));
    assert!(matches!(
        hsm.generate(KeyKind::Aes256),
        Err(HsmError::KekMissing)
    ));
}

#[test]
fn every_kind_generates_and_check_key_reproduces_its_kcv() {
    let k = ops();
    for kind in KeyKind::ALL {
        let key = &k.keys[&kind];
        assert_eq!(key.kcv.len(), 16, "{kind:?}");
        assert_eq!(key.spki_der.is_none(), kind.is_symmetric(), "{kind:?}");
        let expected_wrap_len = match kind {
            KeyKind::Aes128 => Some(24),
            KeyKind::Aes192 => Some(32),
            KeyKind::Aes256 | KeyKind::HmacSha256 => Some(40),
            _ => None,
        };
        if let Some(len) = expected_wrap_len {
            assert_eq!(key.wrapped.len(), len, "{kind:?}");
        } else {
            // PKCS#8 inside RFC 5649: longer than any symmetric key's blob.
            assert!(key.wrapped.len() >= 80, "{kind:?}");
        }
        let id = id_of(kind);
        let r = key_ref(&id, kind, key);
        assert_eq!(k.hsm.check_key(&r).unwrap(), key.kcv, "{kind:?}");
        // Second time from the cache.
        assert_eq!(k.hsm.check_key(&r).unwrap(), key.kcv, "{kind:?} cached");
    }
    let a = k.hsm.generate(KeyKind::Aes256).unwrap();
    assert_ne!(a.kcv, k.keys[&KeyKind::Aes256].kcv);
    assert_ne!(a.wrapped, k.keys[&KeyKind::Aes256].wrapped);
}

#[test]
fn aes_gcm_round_trips_and_rejects_tampering() {
    let k = ops();
    for kind in [KeyKind::Aes128, KeyKind::Aes192, KeyKind::Aes256] {
        let id = id_of(kind);
        let r = key_ref(&id, kind, &k.keys[&kind]);
        let plaintext = b"attack at dawn".repeat(50);
        let blob = k.hsm.encrypt(&r, &plaintext, b"context-1").unwrap();
        assert_eq!(blob.len(), 12 + plaintext.len() + 16);
        assert_ne!(blob, k.hsm.encrypt(&r, &plaintext, b"context-1").unwrap());
        let opened = k.hsm.decrypt(&r, &blob, b"context-1").unwrap();
        assert_eq!(opened.as_slice(), plaintext.as_slice());

        assert!(matches!(
            k.hsm.decrypt(&r, &blob, b"context-2"),
            Err(HsmError::InvalidCiphertext)
        ));
        for pos in [0, 11, 12, blob.len() / 2, blob.len() - 1] {
            let mut bad = blob.clone();
            bad[pos] ^= 0x01;
            assert!(
                matches!(
                    k.hsm.decrypt(&r, &bad, b"context-1"),
                    Err(HsmError::InvalidCiphertext)
                ),
                "{kind:?} flipped byte {pos}"
            );
        }
        assert!(matches!(
            k.hsm.decrypt(&r, &blob[..27], b"context-1"),
            Err(HsmError::InvalidCiphertext)
        ));
        assert!(matches!(
            k.hsm.decrypt(&r, &blob[..blob.len() - 1], b"context-1"),
            Err(HsmError::InvalidCiphertext)
        ));

        let empty = k.hsm.encrypt(&r, b"", b"").unwrap();
        assert_eq!(empty.len(), 28);
        assert!(k.hsm.decrypt(&r, &empty, b"").unwrap().is_empty());
    }
    let id = id_of(KeyKind::HmacSha256);
    let hmac = key_ref(&id, KeyKind::HmacSha256, &k.keys[&KeyKind::HmacSha256]);
    assert!(matches!(
        k.hsm.encrypt(&hmac, b"x", b""),
        Err(HsmError::KeyKindMismatch { .. })
    ));
}

#[test]
fn every_signature_algorithm_signs_and_verifies() {
    let k = ops();
    let message = b"the quick brown fox";
    for alg in SignAlg::ALL {
        for kind in KeyKind::ALL {
            let id = id_of(kind);
            let r = key_ref(&id, kind, &k.keys[&kind]);
            if !alg.fits(kind) {
                assert!(
                    matches!(
                        k.hsm.sign(&r, alg, message),
                        Err(HsmError::KeyKindMismatch { .. })
                    ),
                    "{alg:?} with {kind:?}"
                );
                continue;
            }
            let sig = k.hsm.sign(&r, alg, message).unwrap();
            assert!(
                k.hsm.verify(&r, alg, message, &sig).unwrap(),
                "{alg:?} {kind:?}"
            );
            assert!(!k.hsm.verify(&r, alg, b"the quick brown cat", &sig).unwrap());
            let mut flipped = sig.clone();
            let last = flipped.len() - 1;
            flipped[last] ^= 0x01;
            assert!(!k.hsm.verify(&r, alg, message, &flipped).unwrap());
            assert!(!k
                .hsm
                .verify(&r, alg, message, &sig[..sig.len() - 1])
                .unwrap());
            assert!(!k.hsm.verify(&r, alg, message, &[]).unwrap());
            assert!(!k
                .hsm
                .verify(&r, alg, message, &vec![0xff; sig.len()])
                .unwrap());
            if matches!(alg, SignAlg::EcdsaSha256 | SignAlg::EcdsaSha384) {
                assert_eq!(sig[0], 0x30, "DER SEQUENCE");
                assert!(!k.hsm.verify(&r, alg, message, b"\x30\x00").unwrap());
            }
        }
    }
}

#[test]
fn signatures_verify_with_openssl() {
    let k = ops();
    let dir = fixture().dir.join("openssl");
    std::fs::create_dir_all(&dir).unwrap();
    let message = b"verified by an independent implementation";
    let msg_path = dir.join("msg.bin");
    std::fs::write(&msg_path, message).unwrap();
    for alg in SignAlg::ALL {
        for kind in KeyKind::ALL.into_iter().filter(|kind| alg.fits(*kind)) {
            let key = &k.keys[&kind];
            let id = id_of(kind);
            let sig = k.hsm.sign(&key_ref(&id, kind, key), alg, message).unwrap();
            let name = format!("{alg:?}-{kind:?}");
            let pem = dir.join(format!("{name}.pem"));
            let sig_path = dir.join(format!("{name}.sig"));
            write_pem(&pem, key.spki_der.as_ref().unwrap());
            std::fs::write(&sig_path, &sig).unwrap();
            let (digest, pss_salt) = match alg {
                SignAlg::RsaPssSha256 => ("-sha256", Some("32")),
                SignAlg::RsaPssSha384 => ("-sha384", Some("48")),
                SignAlg::RsaPssSha512 => ("-sha512", Some("64")),
                SignAlg::RsaPkcs1Sha256 | SignAlg::EcdsaSha256 => ("-sha256", None),
                SignAlg::RsaPkcs1Sha384 | SignAlg::EcdsaSha384 => ("-sha384", None),
                SignAlg::RsaPkcs1Sha512 => ("-sha512", None),
            };
            let mut cmd = Command::new("openssl");
            cmd.args(["dgst", digest]);
            if let Some(salt) = pss_salt {
                cmd.args(["-sigopt", "rsa_padding_mode:pss"]);
                cmd.args(["-sigopt", &format!("rsa_pss_saltlen:{salt}")]);
            }
            cmd.arg("-verify").arg(&pem);
            cmd.arg("-signature").arg(&sig_path).arg(&msg_path);
            let out = cmd.output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("Verified OK"),
                "{name}: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn hmac_is_deterministic_and_its_kcv_is_the_mac_of_zeros() {
    let k = ops();
    let kind = KeyKind::HmacSha256;
    let key = &k.keys[&kind];
    let id = id_of(kind);
    let r = key_ref(&id, kind, key);
    let mac = k.hsm.hmac(&r, b"message").unwrap();
    assert_eq!(mac.len(), 32);
    assert_eq!(mac, k.hsm.hmac(&r, b"message").unwrap());
    assert_ne!(mac, k.hsm.hmac(&r, b"messagf").unwrap());
    assert!(k.hsm.verify_hmac(&r, b"message", &mac).unwrap());
    let mut bad = mac.clone();
    bad[0] ^= 0x80;
    assert!(!k.hsm.verify_hmac(&r, b"message", &bad).unwrap());
    assert!(!k.hsm.verify_hmac(&r, b"message", &mac[..31]).unwrap());
    assert!(!k.hsm.verify_hmac(&r, b"other", &mac).unwrap());
    let zeros = k.hsm.hmac(&r, &[0u8; 32]).unwrap();
    assert_eq!(key.kcv, hex::encode(&zeros[..8]));

    let aes = id_of(KeyKind::Aes256);
    let aes = key_ref(&aes, KeyKind::Aes256, &k.keys[&KeyKind::Aes256]);
    assert!(matches!(
        k.hsm.hmac(&aes, b"m"),
        Err(HsmError::KeyKindMismatch { .. })
    ));
}

#[test]
fn unusable_blobs_and_mismatched_public_keys_are_refused() {
    let hsm = open("tamper");
    hsm.master_kek(true).unwrap();
    let aes128 = hsm.generate(KeyKind::Aes128).unwrap();
    let ec_a = hsm.generate(KeyKind::EcP256).unwrap();
    let ec_b = hsm.generate(KeyKind::EcP256).unwrap();
    let ec_384 = hsm.generate(KeyKind::EcP384).unwrap();
    let rsa = hsm.generate(KeyKind::Rsa2048).unwrap();

    let mut flipped = aes128.wrapped.clone();
    flipped[5] ^= 0x01;
    let r = KeyRef {
        id: "flipped",
        kind: KeyKind::Aes128,
        wrapped: &flipped,
        spki_der: None,
    };
    assert!(matches!(
        hsm.check_key(&r),
        Err(HsmError::KeyBlobInvalid(_))
    ));
    assert!(matches!(
        hsm.encrypt(&r, b"x", b""),
        Err(HsmError::KeyBlobInvalid(_))
    ));

    let as_256 = KeyRef {
        id: "aes128-as-256",
        kind: KeyKind::Aes256,
        wrapped: &aes128.wrapped,
        spki_der: None,
    };
    assert!(matches!(
        hsm.check_key(&as_256),
        Err(HsmError::KeyBlobInvalid(_))
    ));

    let ec_as_rsa = KeyRef {
        id: "ec-as-rsa",
        kind: KeyKind::Rsa2048,
        wrapped: &ec_a.wrapped,
        spki_der: rsa.spki_der.as_deref(),
    };
    assert!(matches!(
        hsm.check_key(&ec_as_rsa),
        Err(HsmError::KeyBlobInvalid(_))
    ));

    let other_pub = KeyRef {
        id: "ec-a-with-b-pub",
        kind: KeyKind::EcP256,
        wrapped: &ec_a.wrapped,
        spki_der: ec_b.spki_der.as_deref(),
    };
    assert!(matches!(
        hsm.check_key(&other_pub),
        Err(HsmError::KeyBlobInvalid(_))
    ));

    let wrong_curve = KeyRef {
        id: "ec-a-with-384-pub",
        kind: KeyKind::EcP256,
        wrapped: &ec_a.wrapped,
        spki_der: ec_384.spki_der.as_deref(),
    };
    assert!(matches!(
        hsm.check_key(&wrong_curve),
        Err(HsmError::KeyBlobInvalid(_))
    ));
    assert!(matches!(
        hsm.verify(&wrong_curve, SignAlg::EcdsaSha256, b"m", b"\x30\x00"),
        Ok(false)
    ));

    let no_spki = KeyRef {
        id: "no-spki",
        kind: KeyKind::EcP256,
        wrapped: &ec_a.wrapped,
        spki_der: None,
    };
    assert!(matches!(
        hsm.check_key(&no_spki),
        Err(HsmError::KeyBlobInvalid(_))
    ));
    // Signing needs only the private half.
    assert!(hsm.sign(&no_spki, SignAlg::EcdsaSha256, b"m").is_ok());

    let good = KeyRef {
        id: "ec-a",
        kind: KeyKind::EcP256,
        wrapped: &ec_a.wrapped,
        spki_der: ec_a.spki_der.as_deref(),
    };
    assert_eq!(hsm.check_key(&good).unwrap(), ec_a.kcv);
    // Same id, different stored material: the cache must not answer with the old object.
    let replaced = KeyRef {
        id: "ec-a",
        kind: KeyKind::EcP256,
        wrapped: &ec_b.wrapped,
        spki_der: ec_b.spki_der.as_deref(),
    };
    assert_eq!(hsm.check_key(&replaced).unwrap(), ec_b.kcv);
}

#[test]
fn pin_token_and_module_errors_are_classified() {
    let mut wrong = config("pin");
    wrong.pin = SecretString::from("not-the-pin");
    let err = Hsm::open(wrong).unwrap_err();
    assert!(matches!(err, HsmError::PinIncorrect), "{err:?}");
    assert!(!err.to_string().contains("not-the-pin"));

    let hsm = open("pin");
    // The token is now logged in for the whole process; a wrong PIN must still be refused.
    let mut wrong = config("pin");
    wrong.pin = SecretString::from("not-the-pin");
    let debug = format!("{wrong:?}");
    assert!(!debug.contains("not-the-pin"), "{debug}");
    assert!(matches!(Hsm::open(wrong), Err(HsmError::PinIncorrect)));

    let (_, serial) = hsm.token_info();
    let mut by_serial = config("ignored");
    by_serial.token = TokenSelector::Serial(serial.clone());
    let same = Hsm::open(by_serial).unwrap();
    assert_eq!(same.token_info(), ("pin".to_string(), serial));

    assert!(matches!(
        Hsm::open(config("no-such-token")),
        Err(HsmError::TokenNotFound(_))
    ));

    let mut missing = config("pin");
    missing.module = PathBuf::from("/nonexistent/libpkcs11.so");
    assert!(matches!(
        Hsm::open(missing),
        Err(HsmError::ModuleLoad { .. })
    ));
    let mut not_pkcs11 = config("pin");
    not_pkcs11.module = PathBuf::from("/lib/x86_64-linux-gnu/libm.so.6");
    if not_pkcs11.module.exists() {
        let err = Hsm::open(not_pkcs11).unwrap_err();
        assert!(matches!(err, HsmError::ModuleLoad { .. }), "{err:?}");
    }
}

#[test]
fn operations_recover_after_the_login_is_lost() {
    let hsm = open("recover");
    hsm.master_kek(true).unwrap();
    let aes = hsm.generate(KeyKind::Aes256).unwrap();
    let ec = hsm.generate(KeyKind::EcP256).unwrap();
    let a = key_ref("aes", KeyKind::Aes256, &aes);
    let e = key_ref("ec", KeyKind::EcP256, &ec);
    let blob = hsm.encrypt(&a, b"before", b"").unwrap();
    let sig = hsm.sign(&e, SignAlg::EcdsaSha256, b"m").unwrap();
    assert!(hsm.verify(&e, SignAlg::EcdsaSha256, b"m", &sig).unwrap());
    assert_eq!(hsm.cached_keys(), 3);

    // Log out behind the pool's back: the login is per process, so every session drops to the
    // public state and the private session objects (the cached keys) are destroyed.
    side_session("recover").logout().unwrap();
    assert_eq!(hsm.decrypt(&a, &blob, b"").unwrap().as_slice(), b"before");
    // The stale cache was dropped (reset happened) and only this key unwrapped again.
    assert_eq!(hsm.cached_keys(), 1);
    let sig2 = hsm.sign(&e, SignAlg::EcdsaSha256, b"m").unwrap();
    assert!(hsm.verify(&e, SignAlg::EcdsaSha256, b"m", &sig2).unwrap());

    // The same while idle: the health probe notices the lost login and recovers.
    side_session("recover").logout().unwrap();
    hsm.health().unwrap();
    side_session("recover").logout().unwrap();
    assert_eq!(hsm.check_key(&a).unwrap(), aes.kcv);
    side_session("recover").logout().unwrap();
    assert!(matches!(hsm.master_kek(false), Ok(KekStatus::Found { .. })));
}

#[test]
fn cache_is_bounded_and_destroys_what_it_evicts() {
    let mut cfg = config("cache");
    cfg.key_cache = 2;
    cfg.sessions = 2;
    let hsm = Hsm::open(cfg).unwrap();
    hsm.master_kek(true).unwrap();
    let keys: Vec<GeneratedKey> = (0..5)
        .map(|_| hsm.generate(KeyKind::Aes128).unwrap())
        .collect();
    // generate() leaves no object behind.
    assert_eq!(session_objects("cache"), 0);
    let ids: Vec<String> = (0..keys.len()).map(|i| format!("k{i}")).collect();
    for round in 0..3 {
        for (id, key) in ids.iter().zip(&keys) {
            let r = key_ref(id, KeyKind::Aes128, key);
            let blob = hsm.encrypt(&r, b"data", id.as_bytes()).unwrap();
            assert_eq!(
                hsm.decrypt(&r, &blob, id.as_bytes()).unwrap().as_slice(),
                b"data",
                "round {round}"
            );
            assert!(hsm.cached_keys() <= 2);
        }
    }
    assert_eq!(hsm.cached_keys(), 2);
    hsm.forget("not-cached"); // destroys whatever eviction left pending
    assert_eq!(session_objects("cache"), 2);
    hsm.forget("k4");
    hsm.forget("k3");
    assert_eq!(hsm.cached_keys(), 0);
    assert_eq!(session_objects("cache"), 0);

    let mut cfg = config("cache");
    cfg.key_cache = 0;
    let uncached = Hsm::open(cfg).unwrap();
    let r = key_ref("k0", KeyKind::Aes128, &keys[0]);
    let blob = uncached.encrypt(&r, b"data", b"").unwrap();
    assert_eq!(
        uncached.decrypt(&r, &blob, b"").unwrap().as_slice(),
        b"data"
    );
    assert_eq!(uncached.cached_keys(), 0);
}

/// Issue 16's fault on keyorchd's own HSM: the login lost underneath the pool while four
/// threads encrypt and decrypt without pause, five times. The pool recovers without a
/// reopen: at most the calls in flight at each loss fail (four per event), every call
/// after the last one succeeds, and no ciphertext made before a loss stops decrypting.
#[test]
fn the_pool_recovers_from_lost_logins_under_load() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let hsm = open("underload");
    hsm.master_kek(true).unwrap();
    let aes = hsm.generate(KeyKind::Aes256).unwrap();
    let before = hsm
        .encrypt(&key_ref("k", KeyKind::Aes256, &aes), b"made before", b"")
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    const THREADS: u64 = 4;
    const EVENTS: u64 = 5;
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (hsm, aes) = (hsm.clone(), aes.clone());
            let (stop, calls, failures) = (stop.clone(), calls.clone(), failures.clone());
            std::thread::spawn(move || {
                let r = key_ref("k", KeyKind::Aes256, &aes);
                let mut errors = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let aad = format!("{t}");
                    let outcome = hsm
                        .encrypt(&r, b"under load", aad.as_bytes())
                        .and_then(|blob| hsm.decrypt(&r, &blob, aad.as_bytes()));
                    calls.fetch_add(1, Ordering::Relaxed);
                    match outcome {
                        Ok(p) => assert_eq!(p.as_slice(), b"under load"),
                        Err(e) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            errors.push(e.to_string());
                        }
                    }
                }
                errors
            })
        })
        .collect();
    for _ in 0..EVENTS {
        std::thread::sleep(Duration::from_millis(40));
        side_session("underload").logout().unwrap();
    }
    std::thread::sleep(Duration::from_millis(40));
    stop.store(true, Ordering::Relaxed);
    let errors: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let (calls, failed) = (
        calls.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed),
    );
    assert!(calls > 100, "only {calls} calls in 240 ms");
    assert!(
        failed <= THREADS * EVENTS,
        "{failed} of {calls} calls failed over {EVENTS} lost logins; the first: {:?}",
        &errors[..errors.len().min(8)]
    );
    // Recovered for good: every call from here on succeeds, old ciphertext included.
    let r = key_ref("k", KeyKind::Aes256, &aes);
    for _ in 0..50 {
        let blob = hsm.encrypt(&r, b"after", b"").unwrap();
        assert_eq!(hsm.decrypt(&r, &blob, b"").unwrap().as_slice(), b"after");
    }
    assert_eq!(
        hsm.decrypt(&r, &before, b"").unwrap().as_slice(),
        b"made before"
    );
    eprintln!("lost logins under load: {failed} of {calls} calls failed ({errors:?})");
}

#[test]
fn concurrent_use_of_a_small_pool() {
    let k = ops();
    let mut cfg = config("ops");
    cfg.sessions = 2;
    let hsm = Hsm::open(cfg).unwrap();
    let key = k.keys[&KeyKind::Aes256].clone();
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let hsm = hsm.clone();
            let key = key.clone();
            std::thread::spawn(move || {
                let r = key_ref("shared", KeyKind::Aes256, &key);
                let mut ivs = Vec::new();
                for i in 0..100 {
                    let aad = format!("{t}/{i}");
                    let blob = hsm.encrypt(&r, aad.as_bytes(), aad.as_bytes()).unwrap();
                    let plain = hsm.decrypt(&r, &blob, aad.as_bytes()).unwrap();
                    assert_eq!(plain.as_slice(), aad.as_bytes());
                    ivs.push(blob[..12].to_vec());
                }
                ivs
            })
        })
        .collect();
    // 600 IVs from concurrent callers span two of the HSM's 340-IV random draws: each
    // IV is handed out once, so none repeats under the shared key.
    let mut ivs = std::collections::HashSet::new();
    for t in threads {
        for iv in t.join().unwrap() {
            assert!(ivs.insert(iv.clone()), "IV {iv:02x?} was used twice");
        }
    }
    assert_eq!(ivs.len(), 600);
    assert_eq!(hsm.cached_keys(), 1);
    let random = hsm.random(48).unwrap();
    assert_eq!(random.len(), 48);
    assert_ne!(random.as_slice(), hsm.random(48).unwrap().as_slice());
    assert!(hsm.random(0).unwrap().is_empty());
}

#[test]
fn the_kek_is_the_only_token_object_and_is_locked_down() {
    let k = ops();
    // Use every kind once more so that cached objects exist while we look.
    for kind in KeyKind::ALL {
        let id = id_of(kind);
        k.hsm
            .check_key(&key_ref(&id, kind, &k.keys[&kind]))
            .unwrap();
    }
    let out = Command::new("pkcs11-tool")
        .args([
            "--module",
            MODULE,
            "--token-label",
            "ops",
            "--login",
            "--pin",
            PIN,
        ])
        .arg("--list-objects")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{listing} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objects: Vec<&str> = listing.split("Object;").skip(1).collect();
    assert_eq!(objects.len(), 1, "{listing}");
    let kek = objects[0];
    assert!(
        listing.contains("Secret Key Object; AES length 32"),
        "{listing}"
    );
    assert!(kek.contains(&format!("label:      {KEK_LABEL}")), "{kek}");
    let line = |name: &str| {
        kek.lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {kek}"))
            .to_string()
    };
    let usage = line("Usage:");
    assert!(
        usage.contains("wrap") && usage.contains("unwrap"),
        "{usage}"
    );
    assert!(
        !usage.contains("encrypt") && !usage.contains("sign"),
        "{usage}"
    );
    let access = line("Access:");
    let flags: Vec<&str> = access
        .split_once(':')
        .unwrap()
        .1
        .split(',')
        .map(str::trim)
        .collect();
    assert!(flags.contains(&"sensitive"), "{access}");
    assert!(flags.contains(&"never extractable"), "{access}");
    assert!(!flags.contains(&"extractable"), "{access}");

    // And its value cannot be read out.
    let out = Command::new("pkcs11-tool")
        .args([
            "--module",
            MODULE,
            "--token-label",
            "ops",
            "--login",
            "--pin",
            PIN,
        ])
        .args(["--read-object", "--type", "secrkey", "--label", KEK_LABEL])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "KEK value was readable");
    assert!(stderr.contains("CKR_ATTRIBUTE_SENSITIVE"), "{stderr}");
}

#[test]
fn encrypt_of_4kib_with_a_cached_key_costs_one_gcm_call() {
    let hsm = open("perf");
    hsm.master_kek(true).unwrap();
    let key = hsm.generate(KeyKind::Aes256).unwrap();
    let r = key_ref("perf", KeyKind::Aes256, &key);
    let data = vec![0x5au8; 4096];
    let time = |hsm: &Hsm, n: u32| {
        hsm.encrypt(&r, &data, b"").unwrap();
        let t = Instant::now();
        for _ in 0..n {
            hsm.encrypt(&r, &data, b"").unwrap();
        }
        t.elapsed() / n
    };
    let cached = time(&hsm, 2000);

    let mut cfg = config("perf");
    cfg.key_cache = 0;
    let uncached = time(&Hsm::open(cfg).unwrap(), 500);

    // Raw cryptoki on a session-object key, for comparison.
    let session = side_session("perf");
    let raw_key = session
        .generate_key(
            &cryptoki::mechanism::Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
            ],
        )
        .unwrap();
    let t = Instant::now();
    for _ in 0..2000 {
        let mut iv = [0u8; 12];
        session.generate_random_slice(&mut iv).unwrap();
        let params = cryptoki::mechanism::aead::GcmParams::new(&mut iv, b"", 128.into()).unwrap();
        session
            .encrypt(
                &cryptoki::mechanism::Mechanism::AesGcm(params),
                raw_key,
                &data,
            )
            .unwrap();
    }
    let raw = t.elapsed() / 2000;
    eprintln!("encrypt 4 KiB: cached {cached:?}, uncached {uncached:?}, raw cryptoki {raw:?}");
    assert!(
        cached < uncached,
        "cached {cached:?} vs uncached {uncached:?}"
    );
    assert!(cached < Duration::from_millis(1), "{cached:?}");
}

/// The IBM import flows' parts, checked by an object keyorch's code never touched: a managed
/// AES key wrapped with RSA-OAEP (SHA-1) to a managed RSA key opens in another session (under
/// that RSA key, itself unwrapped there from the master KEK) into a key that decrypts the
/// nonce keyorch encrypted under the managed key with AES-GCM (Key Protect's encryptedNonce)
/// and with AES-CBC-PAD (Hyper Protect Crypto Services').
#[test]
fn an_oaep_wrapped_key_opens_elsewhere_and_decrypts_its_gcm_and_cbc_nonces() {
    use cryptoki::mechanism::aead::GcmParams;
    use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
    use cryptoki::mechanism::{Mechanism, MechanismType};
    use cryptoki::object::{KeyType, ObjectClass};
    use keyorch::hsm::OaepHash;

    let k = ops();
    let aes_id = id_of(KeyKind::Aes256);
    let aes = key_ref(&aes_id, KeyKind::Aes256, &k.keys[&KeyKind::Aes256]);
    let rsa = &k.keys[&KeyKind::Rsa2048];
    let spki = rsa
        .spki_der
        .as_deref()
        .expect("an RSA key has a public key");
    let payload = k.hsm.wrap_oaep(&aes, spki, OaepHash::Sha1).unwrap();
    assert_eq!(payload.len(), 256, "one RSA-2048 block");

    let side = side_session("ops");
    let kek = side
        .find_objects(&[Attribute::Label(KEK_LABEL.as_bytes().to_vec())])
        .unwrap()[0];
    let private = side
        .unwrap_key(
            &Mechanism::AesKeyWrapPad,
            kek,
            &rsa.wrapped,
            &[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::RSA),
                Attribute::Token(false),
                Attribute::Unwrap(true),
            ],
        )
        .unwrap();
    let oaep = Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
        MechanismType::SHA1,
        PkcsMgfType::MGF1_SHA1,
        PkcsOaepSource::empty(),
    ));
    let opened = side
        .unwrap_key(
            &oaep,
            private,
            &payload,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Decrypt(true),
            ],
        )
        .unwrap();

    let nonce = b"8zJE9pKVdXVe";
    let gcm = k.hsm.encrypt(&aes, nonce, b"").unwrap();
    let (iv, sealed) = gcm.split_at(12);
    let mut iv = iv.to_vec();
    let params = GcmParams::new(&mut iv, &[], 128.into()).unwrap();
    let plain = side
        .decrypt(&Mechanism::AesGcm(params), opened, sealed)
        .unwrap();
    assert_eq!(plain, nonce, "AES-GCM nonce");

    let cbc = k.hsm.encrypt_cbc_pad(&aes, nonce).unwrap();
    assert_eq!(cbc.len(), 16 + 16, "IV and one padded block");
    assert_ne!(cbc, k.hsm.encrypt_cbc_pad(&aes, nonce).unwrap(), "fresh IV");
    let (iv, sealed) = cbc.split_at(16);
    let plain = side
        .decrypt(
            &Mechanism::AesCbcPad(iv.try_into().unwrap()),
            opened,
            sealed,
        )
        .unwrap();
    assert_eq!(plain, nonce, "AES-CBC-PAD nonce");
    let id = id_of(KeyKind::HmacSha256);
    let hmac = key_ref(&id, KeyKind::HmacSha256, &k.keys[&KeyKind::HmacSha256]);
    assert!(matches!(
        k.hsm.encrypt_cbc_pad(&hmac, nonce),
        Err(HsmError::KeyKindMismatch { .. })
    ));
}
