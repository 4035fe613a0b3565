//! Library-level tests of the `pkcs11` keystore target against real SoftHSM2 tokens: keyorch's
//! own token and target tokens of the same module in one process, with pkcs11-tool for interop.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keyorch::hsm::{
    pkcs11_context, GeneratedKey, Hsm, HsmConfig, HsmError, KeyKind, KeyRef, OaepHash, SignAlg,
    TokenSelector, KEK_LABEL, MAX_SECRET_LEN,
};
use keyorch::targets::pkcs11::{Pkcs11Target, Pkcs11TargetConfig, IMPORT_KEK_LABEL, UNUSABLE_KCV};
use keyorch::targets::TargetError;
use secrecy::SecretString;

use common::softhsm_tokens;
use sha2::{Digest, Sha256};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "target-pin-5613";
const SO_PIN: &str = "so-pin-2290";

/// keyorch's own token and the targets. SoftHSM 2.6.1 does not see tokens initialised after
/// C_Initialize, so every token is made before the first open.
const OWN: &str = "keyorch";
const TARGET: &str = "target";
const TOKENS: &[&str] = &[OWN, TARGET, "pin", "kekdel", "other", "bench"];

/// The kinds installed in the interop test (one of each family).
const KINDS: [KeyKind; 4] = [
    KeyKind::Aes256,
    KeyKind::HmacSha256,
    KeyKind::Rsa2048,
    KeyKind::EcP256,
];

struct Fixture {
    dir: PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // SOFTHSM2_CONF is inherited by pkcs11-tool too.
        let dir = softhsm_tokens("keyorch-target-", TOKENS, SO_PIN, PIN);
        Fixture { dir }
    })
}

fn target_config(label: &str) -> Pkcs11TargetConfig {
    fixture();
    Pkcs11TargetConfig {
        module: PathBuf::from(MODULE),
        token: TokenSelector::Label(label.to_string()),
        pin: SecretString::from(PIN),
    }
}

fn open_target(label: &str) -> Pkcs11Target {
    Pkcs11Target::open(target_config(label)).unwrap()
}

/// keyorch's own HSM with its master KEK, and one key of each kind in [`KINDS`].
struct Own {
    hsm: Hsm,
    keys: HashMap<KeyKind, GeneratedKey>,
}

fn own() -> &'static Own {
    static OWN_HSM: OnceLock<Own> = OnceLock::new();
    OWN_HSM.get_or_init(|| {
        fixture();
        let hsm = Hsm::open(HsmConfig::new(
            MODULE,
            TokenSelector::Label(OWN.to_string()),
            SecretString::from(PIN),
        ))
        .unwrap();
        hsm.master_kek(true).unwrap();
        let keys = KINDS
            .iter()
            .map(|kind| (*kind, hsm.generate(*kind).unwrap()))
            .collect();
        Own { hsm, keys }
    })
}

/// The shared target with its import KEK, and what the first `ensure_import_kek` answered.
struct Shared {
    target: Pkcs11Target,
    created_first: bool,
    spki: Vec<u8>,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let target = open_target(TARGET);
        let t = Instant::now();
        let created_first = target.ensure_import_kek().unwrap();
        eprintln!("ensure_import_kek (RSA-3072 generation): {:?}", t.elapsed());
        let spki = target.import_kek_spki().unwrap();
        Shared {
            target,
            created_first,
            spki,
        }
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

/// Wraps `key` for `spki` in keyorch's HSM and installs it in `target` under `label`.
fn install(
    target: &Pkcs11Target,
    spki: &[u8],
    label: &str,
    kind: KeyKind,
    key: &GeneratedKey,
) -> Result<bool, TargetError> {
    let blob = own()
        .hsm
        .wrap_for_transport(&key_ref(label, kind, key), spki, OaepHash::Sha1)
        .unwrap();
    target.install(label, kind, &blob, OaepHash::Sha1, key.spki_der.as_deref())
}

/// A session of this process on the token labelled `label` (logged in by whoever opened it).
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

fn find(session: &Session, label: &str, class: ObjectClass) -> Vec<ObjectHandle> {
    session
        .find_objects(&[
            Attribute::Token(true),
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap()
}

/// Runs pkcs11-tool, logged in to `token`.
fn tool(token: &str, args: &[&str]) -> Output {
    Command::new("pkcs11-tool")
        .args([
            "--module",
            MODULE,
            "--token-label",
            token,
            "--login",
            "--pin",
            PIN,
        ])
        .args(args)
        .output()
        .unwrap()
}

fn tool_ok(token: &str, args: &[&str]) -> Output {
    let out = tool(token, args);
    assert!(
        out.status.success(),
        "pkcs11-tool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn scratch(name: &str) -> PathBuf {
    let dir = fixture().dir.join("scratch");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---- GCM from the raw block cipher (pkcs11-tool does AES-ECB, not AES-GCM) -----------------

/// Multiplication in GF(2^128) as GCM defines it (NIST SP 800-38D, algorithm 1).
fn gf_mul(x: u128, y: u128) -> u128 {
    let r = 0xE1u128 << 120;
    let mut z = 0u128;
    let mut v = y;
    for i in 0..128 {
        if (x >> (127 - i)) & 1 == 1 {
            z ^= v;
        }
        v = if v & 1 == 1 { (v >> 1) ^ r } else { v >> 1 };
    }
    z
}

fn ghash(h: [u8; 16], aad: &[u8], ciphertext: &[u8]) -> [u8; 16] {
    let h = u128::from_be_bytes(h);
    let mut x = 0u128;
    for data in [aad, ciphertext] {
        for chunk in data.chunks(16) {
            let mut block = [0u8; 16];
            block[..chunk.len()].copy_from_slice(chunk);
            x = gf_mul(x ^ u128::from_be_bytes(block), h);
        }
    }
    let lens = ((aad.len() as u128 * 8) << 64) | (ciphertext.len() as u128 * 8);
    gf_mul(x ^ lens, h).to_be_bytes()
}

/// The blocks GCM needs for `len` bytes under `iv`, computed by pkcs11-tool with AES-ECB on
/// the key labelled `label` in `token`: (H = E(0), E(J0), keystream).
fn gcm_blocks(
    token: &str,
    label: &str,
    iv: &[u8; 12],
    len: usize,
) -> ([u8; 16], [u8; 16], Vec<u8>) {
    let counter = |i: u32| {
        let mut block = [0u8; 16];
        block[..12].copy_from_slice(iv);
        block[12..].copy_from_slice(&i.to_be_bytes());
        block
    };
    let mut input = vec![0u8; 16];
    let n = len.div_ceil(16) as u32;
    for i in 1..=n + 1 {
        input.extend_from_slice(&counter(i));
    }
    let in_path = scratch(&format!("{label}-ecb.in"));
    let out_path = scratch(&format!("{label}-ecb.out"));
    std::fs::write(&in_path, &input).unwrap();
    tool_ok(
        token,
        &[
            "--encrypt",
            "-m",
            "AES-ECB",
            "--id",
            &hex::encode(label),
            "-i",
            path_str(&in_path),
            "-o",
            path_str(&out_path),
        ],
    );
    let out = std::fs::read(&out_path).unwrap();
    assert_eq!(out.len(), input.len());
    let h: [u8; 16] = out[..16].try_into().unwrap();
    let ej0: [u8; 16] = out[16..32].try_into().unwrap();
    (h, ej0, out[32..32 + len].to_vec())
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// keyorch encrypts with AES-GCM; the target's copy, driven by pkcs11-tool, decrypts; and the
/// other way round.
fn aes_interop(label: &str, key: &GeneratedKey) {
    let hsm = &own().hsm;
    let r = key_ref(label, KeyKind::Aes256, key);
    let plaintext = b"keyorch encrypted this; the target's copy of the key decrypts it".to_vec();
    let aad = b"interop aad";
    let blob = hsm.encrypt(&r, &plaintext, aad).unwrap();
    let iv: [u8; 12] = blob[..12].try_into().unwrap();
    let (ciphertext, tag) = blob[12..].split_at(blob.len() - 12 - 16);
    let (h, ej0, keystream) = gcm_blocks(TARGET, label, &iv, ciphertext.len());
    assert_eq!(xor(ciphertext, &keystream), plaintext, "target decrypts");
    assert_eq!(
        xor(&ghash(h, aad, ciphertext), &ej0),
        tag,
        "target authenticates keyorch's tag"
    );

    let plaintext = b"the target encrypted this with pkcs11-tool".to_vec();
    let iv = [0x42u8; 12];
    let (h, ej0, keystream) = gcm_blocks(TARGET, label, &iv, plaintext.len());
    let ciphertext = xor(&plaintext, &keystream);
    let tag = xor(&ghash(h, aad, &ciphertext), &ej0);
    let mut blob = iv.to_vec();
    blob.extend_from_slice(&ciphertext);
    blob.extend_from_slice(&tag);
    assert_eq!(hsm.decrypt(&r, &blob, aad).unwrap().as_slice(), plaintext);
}

fn hmac_interop(label: &str, key: &GeneratedKey) {
    let message = b"an HMAC computed twice";
    let msg = scratch(&format!("{label}.msg"));
    let mac = scratch(&format!("{label}.mac"));
    std::fs::write(&msg, message).unwrap();
    tool_ok(
        TARGET,
        &[
            "--sign",
            "-m",
            "SHA256-HMAC",
            "--id",
            &hex::encode(label),
            "-i",
            path_str(&msg),
            "-o",
            path_str(&mac),
        ],
    );
    let ours = own()
        .hsm
        .hmac(&key_ref(label, KeyKind::HmacSha256, key), message)
        .unwrap();
    assert_eq!(std::fs::read(&mac).unwrap(), ours);
}

/// pkcs11-tool signs in the target and keyorch verifies; keyorch signs and pkcs11-tool verifies
/// with the installed public key.
fn signature_interop(label: &str, kind: KeyKind, key: &GeneratedKey) {
    let hsm = &own().hsm;
    let r = key_ref(label, kind, key);
    let message = b"signed on one side, verified on the other";
    let msg = scratch(&format!("{label}.msg"));
    let sig = scratch(&format!("{label}.sig"));
    // SoftHSM2 2.6.1 has no CKM_ECDSA_SHA256: pkcs11-tool signs the digest with raw CKM_ECDSA.
    let input: Vec<u8> = match kind {
        KeyKind::EcP256 => Sha256::digest(message).to_vec(),
        _ => message.to_vec(),
    };
    std::fs::write(&msg, &input).unwrap();
    let cases: Vec<(SignAlg, Vec<&str>)> = match kind {
        KeyKind::EcP256 => vec![(
            SignAlg::EcdsaSha256,
            vec!["-m", "ECDSA", "--signature-format", "openssl"],
        )],
        _ => vec![
            (SignAlg::RsaPkcs1Sha256, vec!["-m", "SHA256-RSA-PKCS"]),
            (
                SignAlg::RsaPssSha256,
                vec![
                    "-m",
                    "SHA256-RSA-PKCS-PSS",
                    "--mgf",
                    "MGF1-SHA256",
                    "--salt-len",
                    "32",
                ],
            ),
        ],
    };
    let id = hex::encode(label);
    for (alg, mech) in cases {
        let mut args = vec!["--sign", "--id", &id, "-i", path_str(&msg)];
        args.extend(["-o", path_str(&sig)]);
        args.extend(mech.iter().copied());
        tool_ok(TARGET, &args);
        let signature = std::fs::read(&sig).unwrap();
        assert!(
            hsm.verify(&r, alg, message, &signature).unwrap(),
            "{kind:?} {alg:?}: pkcs11-tool's signature verifies in keyorch"
        );

        let ours = hsm.sign(&r, alg, message).unwrap();
        std::fs::write(&sig, &ours).unwrap();
        let mut args = vec!["--verify", "--id", &id, "-i", path_str(&msg)];
        args.extend(["--signature-file", path_str(&sig)]);
        args.extend(mech.iter().copied());
        let out = tool_ok(TARGET, &args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("Signature is valid"),
            "{kind:?} {alg:?}: keyorch's signature verifies in pkcs11-tool: {stdout}"
        );
    }
}

// ---- tests -------------------------------------------------------------------------------

#[test]
fn target_is_send_and_sync() {
    fn assert_traits<T: Send + Sync + 'static>() {}
    assert_traits::<Pkcs11Target>();
}

#[test]
fn open_classifies_pin_token_and_module_errors() {
    let mut wrong = target_config("pin");
    wrong.pin = SecretString::from("not-the-pin");
    assert!(!format!("{wrong:?}").contains("not-the-pin"));
    let err = Pkcs11Target::open(wrong.clone()).unwrap_err();
    assert!(matches!(err, TargetError::InvalidCredentials(_)), "{err:?}");
    assert!(!err.to_string().contains("not-the-pin"), "{err}");

    let target = open_target("pin");
    // The token is logged in for the whole process now; a wrong PIN must still be refused.
    let err = Pkcs11Target::open(wrong).unwrap_err();
    assert!(matches!(err, TargetError::InvalidCredentials(_)), "{err:?}");

    let (label, serial) = target.token_info();
    assert_eq!(label, "pin");
    let mut by_serial = target_config("ignored");
    by_serial.token = TokenSelector::Serial(serial);
    Pkcs11Target::open(by_serial).unwrap();

    let err = Pkcs11Target::open(target_config("no-such-token")).unwrap_err();
    assert!(matches!(err, TargetError::TargetNotFound(_)), "{err:?}");

    let mut missing = target_config("pin");
    missing.module = PathBuf::from("/nonexistent/libpkcs11.so");
    let err = Pkcs11Target::open(missing).unwrap_err();
    assert!(
        matches!(err, TargetError::InvalidConfiguration(_)),
        "{err:?}"
    );
    let mut not_pkcs11 = target_config("pin");
    not_pkcs11.module = PathBuf::from("/lib/x86_64-linux-gnu/libm.so.6");
    if not_pkcs11.module.exists() {
        let err = Pkcs11Target::open(not_pkcs11).unwrap_err();
        assert!(
            matches!(err, TargetError::InvalidConfiguration(_)),
            "{err:?}"
        );
    }

    // No import KEK on this token: check() says so (and not "not logged in"), also after the
    // login was lost behind the target's back.
    assert!(matches!(target.check(), Err(TargetError::ImportKekMissing)));
    side_session("pin").logout().unwrap();
    assert!(matches!(target.check(), Err(TargetError::ImportKekMissing)));
    assert_eq!(target.installed_labels().unwrap(), Vec::<String>::new());
    assert!(!target.supports_oaep_sha256());
}

#[test]
fn import_kek_is_created_once_and_locked_down() {
    let s = shared();
    assert!(
        s.created_first,
        "the first ensure_import_kek creates the pair"
    );
    assert!(!s.target.ensure_import_kek().unwrap());
    s.target.check().unwrap();
    assert_eq!(s.target.import_kek_spki().unwrap(), s.spki);

    let session = side_session(TARGET);
    let [private] = find(&session, IMPORT_KEK_LABEL, ObjectClass::PRIVATE_KEY)[..] else {
        panic!("expected exactly one private half");
    };
    let attrs = session
        .get_attributes(
            private,
            &[
                AttributeType::Token,
                AttributeType::Private,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::Unwrap,
                AttributeType::Decrypt,
                AttributeType::Sign,
                AttributeType::Derive,
                AttributeType::ModulusBits,
                AttributeType::Modulus,
            ],
        )
        .unwrap();
    for expected in [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::NeverExtractable(true),
        Attribute::Unwrap(true),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Derive(false),
    ] {
        assert!(attrs.contains(&expected), "{expected:?} in {attrs:?}");
    }
    let modulus = attrs
        .iter()
        .find_map(|a| match a {
            Attribute::Modulus(n) => Some(n.len()),
            _ => None,
        })
        .unwrap();
    assert_eq!(modulus * 8, 3072);
    let [public] = find(&session, IMPORT_KEK_LABEL, ObjectClass::PUBLIC_KEY)[..] else {
        panic!("expected exactly one public half");
    };
    let attrs = session
        .get_attributes(
            public,
            &[
                AttributeType::Token,
                AttributeType::Wrap,
                AttributeType::Encrypt,
            ],
        )
        .unwrap();
    assert_eq!(
        attrs,
        vec![
            Attribute::Token(true),
            Attribute::Wrap(true),
            Attribute::Encrypt(true)
        ]
    );

    // And as pkcs11-tool sees it.
    let out = tool_ok(TARGET, &["--list-objects", "--type", "privkey"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    let kek = listing
        .split("Private Key Object")
        .find(|o| o.contains(IMPORT_KEK_LABEL))
        .unwrap_or_else(|| panic!("{listing}"));
    let usage = kek.lines().find(|l| l.contains("Usage:")).unwrap();
    assert_eq!(usage.split(':').nth(1).unwrap().trim(), "unwrap", "{kek}");
    let access = kek.lines().find(|l| l.contains("Access:")).unwrap();
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

    // SoftHSM2 does OAEP with SHA-1 only, on both sides.
    assert!(!s.target.supports_oaep_sha256());
    assert!(!own().hsm.supports_oaep_sha256());
    let aes = &own().keys[&KeyKind::Aes256];
    assert!(matches!(
        own().hsm.wrap_for_transport(
            &key_ref("x", KeyKind::Aes256, aes),
            &s.spki,
            OaepHash::Sha256
        ),
        Err(HsmError::Unsupported(_))
    ));
}

#[test]
fn installed_keys_match_and_work_with_pkcs11_tool() {
    let s = shared();
    for kind in KINDS {
        let key = &own().keys[&kind];
        let label = format!("keyorch-interop-{kind:?}").to_lowercase();
        let t = Instant::now();
        assert!(
            install(&s.target, &s.spki, &label, kind, key).unwrap(),
            "{kind:?}"
        );
        eprintln!("wrap + install {kind:?}: {:?}", t.elapsed());
        assert_eq!(
            s.target.key_check_value(&label, kind).unwrap().as_deref(),
            Some(key.kcv.as_str()),
            "{kind:?}: the target's check value equals keyorch's"
        );
        // Idempotent: a second install leaves the object alone.
        assert!(
            !install(&s.target, &s.spki, &label, kind, key).unwrap(),
            "{kind:?}"
        );
        match kind {
            KeyKind::Aes256 => aes_interop(&label, key),
            KeyKind::HmacSha256 => hmac_interop(&label, key),
            _ => signature_interop(&label, kind, key),
        }
    }
    let labels = s.target.installed_labels().unwrap();
    for kind in KINDS {
        let label = format!("keyorch-interop-{kind:?}").to_lowercase();
        assert!(labels.contains(&label), "{labels:?}");
    }

    // The installed objects are locked down: sensitive, never extractable, only their usage.
    let session = side_session(TARGET);
    let aes = find(&session, "keyorch-interop-aes256", ObjectClass::SECRET_KEY);
    let attrs = session
        .get_attributes(
            aes[0],
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Wrap,
                AttributeType::Unwrap,
                AttributeType::Id,
            ],
        )
        .unwrap();
    assert_eq!(
        attrs,
        vec![
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Id(b"keyorch-interop-aes256".to_vec()),
        ]
    );
    let out = tool(
        TARGET,
        &[
            "--read-object",
            "--type",
            "secrkey",
            "--label",
            "keyorch-interop-aes256",
        ],
    );
    assert!(
        !out.status.success(),
        "an installed key's value was readable"
    );
}

#[test]
fn uninstall_removes_both_halves_and_partial_pairs_are_completed() {
    let s = shared();
    let kind = KeyKind::EcP256;
    let key = &own().keys[&kind];
    let label = "keyorch-uninstall-ec";
    assert_eq!(s.target.key_check_value(label, kind).unwrap(), None);
    assert!(install(&s.target, &s.spki, label, kind, key).unwrap());
    let session = side_session(TARGET);
    assert_eq!(find(&session, label, ObjectClass::PRIVATE_KEY).len(), 1);
    assert_eq!(find(&session, label, ObjectClass::PUBLIC_KEY).len(), 1);

    // An install cut short between the private and the public half: the check value says
    // "not there", and installing again completes the pair.
    for public in find(&session, label, ObjectClass::PUBLIC_KEY) {
        session.destroy_object(public).unwrap();
    }
    assert_eq!(s.target.key_check_value(label, kind).unwrap(), None);
    assert!(install(&s.target, &s.spki, label, kind, key).unwrap());
    assert_eq!(
        s.target.key_check_value(label, kind).unwrap().as_deref(),
        Some(key.kcv.as_str())
    );

    assert!(s.target.uninstall(label).unwrap());
    assert_eq!(s.target.key_check_value(label, kind).unwrap(), None);
    assert!(find(&session, label, ObjectClass::PRIVATE_KEY).is_empty());
    assert!(find(&session, label, ObjectClass::PUBLIC_KEY).is_empty());
    assert!(!s.target.uninstall(label).unwrap());
    assert!(!s
        .target
        .installed_labels()
        .unwrap()
        .iter()
        .any(|l| l == label));
    assert!(matches!(
        s.target.uninstall(IMPORT_KEK_LABEL),
        Err(TargetError::InvalidConfiguration(_))
    ));
}

#[test]
fn other_material_under_the_label_never_matches() {
    let s = shared();
    let aes = &own().keys[&KeyKind::Aes256];
    // An AES key made by pkcs11-tool under keyorch's label: no CKA_SIGN, so its CMAC comes
    // from two AES-ECB blocks; a real check value, a different one.
    let label = "keyorch-replaced-aes";
    tool_ok(
        TARGET,
        &[
            "--keygen",
            "--key-type",
            "AES:32",
            "--label",
            label,
            "--usage-decrypt",
        ],
    );
    let kcv = s
        .target
        .key_check_value(label, KeyKind::Aes256)
        .unwrap()
        .unwrap();
    assert_eq!(kcv.len(), 16, "{kcv}");
    assert_ne!(kcv, aes.kcv);
    assert!(!install(&s.target, &s.spki, label, KeyKind::Aes256, aes).unwrap());
    // Asked as the wrong kind: unusable, never equal to a check value.
    assert_eq!(
        s.target
            .key_check_value(label, KeyKind::HmacSha256)
            .unwrap()
            .as_deref(),
        Some(UNUSABLE_KCV)
    );
    assert!(s.target.uninstall(label).unwrap());

    // The ECB fallback computes the same CMAC as CKM_AES_CMAC: check it on keyorch's key.
    let label = "keyorch-cmac-fallback";
    assert!(install(&s.target, &s.spki, label, KeyKind::Aes256, aes).unwrap());
    let session = side_session(TARGET);
    let handle = find(&session, label, ObjectClass::SECRET_KEY)[0];
    let l = session
        .encrypt(&Mechanism::AesEcb, handle, &[0u8; 16])
        .unwrap();
    let v = u128::from_be_bytes(l.try_into().unwrap());
    let k1 = ((v << 1) ^ if v >> 127 == 1 { 0x87 } else { 0 }).to_be_bytes();
    let t = session.encrypt(&Mechanism::AesEcb, handle, &k1).unwrap();
    assert_eq!(hex::encode(&t[..8]), aes.kcv);
    assert!(s.target.uninstall(label).unwrap());

    // A transport blob made for another target's KEK does not install, and leaves nothing.
    let other = open_target("other");
    other.ensure_import_kek().unwrap();
    let blob = own()
        .hsm
        .wrap_for_transport(
            &key_ref("k", KeyKind::Aes256, aes),
            &other.import_kek_spki().unwrap(),
            OaepHash::Sha1,
        )
        .unwrap();
    let label = "keyorch-wrong-kek";
    let err = s
        .target
        .install(label, KeyKind::Aes256, &blob, OaepHash::Sha1, None)
        .unwrap_err();
    assert!(matches!(err, TargetError::Internal(_)), "{err:?}");
    assert_eq!(
        s.target.key_check_value(label, KeyKind::Aes256).unwrap(),
        None
    );
    // A truncated blob, and a blob of one kind installed as another, are refused too.
    let good = own()
        .hsm
        .wrap_for_transport(&key_ref("k", KeyKind::Aes256, aes), &s.spki, OaepHash::Sha1)
        .unwrap();
    assert!(s
        .target
        .install(
            label,
            KeyKind::Aes256,
            &good[..good.len() - 8],
            OaepHash::Sha1,
            None
        )
        .is_err());
    assert!(s
        .target
        .install(label, KeyKind::Aes128, &good, OaepHash::Sha1, None)
        .is_err());
    assert_eq!(
        s.target.key_check_value(label, KeyKind::Aes256).unwrap(),
        None
    );
}

#[test]
fn concurrent_installs_create_each_object_once() {
    let s = shared();
    let kind = KeyKind::HmacSha256;
    let key = &own().keys[&kind];
    let blob = own()
        .hsm
        .wrap_for_transport(&key_ref("k", kind, key), &s.spki, OaepHash::Sha1)
        .unwrap();
    // Two handles on the same token, four threads, one label: exactly one creates it.
    let second = open_target(TARGET);
    let created: Vec<bool> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let target = if i % 2 == 0 { &s.target } else { &second };
                let blob = &blob;
                scope.spawn(move || {
                    target
                        .install("keyorch-race", kind, blob, OaepHash::Sha1, None)
                        .unwrap()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(created.iter().filter(|c| **c).count(), 1, "{created:?}");
    let session = side_session(TARGET);
    assert_eq!(
        find(&session, "keyorch-race", ObjectClass::SECRET_KEY).len(),
        1
    );

    // Different labels in parallel all install. (Without the per-token store lock, SoftHSM2
    // 2.6.1 fails about 1 in 200 of these with CKR_GENERAL_ERROR.)
    std::thread::scope(|scope| {
        for t in 0..4 {
            let blob = &blob;
            scope.spawn(move || {
                for i in 0..6 {
                    let label = format!("keyorch-parallel-{t}-{i}");
                    assert!(s
                        .target
                        .install(&label, kind, blob, OaepHash::Sha1, None)
                        .unwrap());
                    assert_eq!(
                        s.target.key_check_value(&label, kind).unwrap().as_deref(),
                        Some(key.kcv.as_str())
                    );
                    assert!(s.target.uninstall(&label).unwrap());
                }
            });
        }
    });
    assert!(s.target.uninstall("keyorch-race").unwrap());
}

#[test]
fn deleted_import_kek_is_reported_and_recreated() {
    let target = open_target("kekdel");
    assert!(target.ensure_import_kek().unwrap());
    let spki = target.import_kek_spki().unwrap();
    let aes = &own().keys[&KeyKind::Aes256];
    assert!(install(&target, &spki, "keyorch-before", KeyKind::Aes256, aes).unwrap());

    let session = side_session("kekdel");
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        for handle in find(&session, IMPORT_KEK_LABEL, class) {
            session.destroy_object(handle).unwrap();
        }
    }
    assert!(matches!(target.check(), Err(TargetError::ImportKekMissing)));
    assert!(matches!(
        target.import_kek_spki(),
        Err(TargetError::ImportKekMissing)
    ));
    // The blob was wrapped to the old KEK (the caller could not know): the install notices the
    // KEK is gone rather than failing obscurely.
    let err = install(&target, &spki, "keyorch-after", KeyKind::Aes256, aes).unwrap_err();
    assert!(matches!(err, TargetError::ImportKekMissing), "{err:?}");
    assert!(err.to_string().contains("reconnect"), "{err}");
    // Keys installed before are still there.
    assert_eq!(
        target
            .key_check_value("keyorch-before", KeyKind::Aes256)
            .unwrap()
            .as_deref(),
        Some(aes.kcv.as_str())
    );

    assert!(target.ensure_import_kek().unwrap());
    target.check().unwrap();
    let new_spki = target.import_kek_spki().unwrap();
    assert_ne!(new_spki, spki);
    assert!(install(&target, &new_spki, "keyorch-after", KeyKind::Aes256, aes).unwrap());
    assert_eq!(
        target
            .key_check_value("keyorch-after", KeyKind::Aes256)
            .unwrap()
            .as_deref(),
        Some(aes.kcv.as_str())
    );

    // Only the public half deleted: check() reports the KEK missing, ensure rebuilds the
    // public half from the private one (no new pair).
    for handle in find(&session, IMPORT_KEK_LABEL, ObjectClass::PUBLIC_KEY) {
        session.destroy_object(handle).unwrap();
    }
    assert!(matches!(target.check(), Err(TargetError::ImportKekMissing)));
    assert!(!target.ensure_import_kek().unwrap());
    assert_eq!(target.import_kek_spki().unwrap(), new_spki);
    target.check().unwrap();
}

#[test]
fn secrets_seal_and_unseal() {
    let hsm = &own().hsm;
    let secret = b"a keystore PIN: 8231-5532-0913";
    let sealed = hsm.seal_secret(secret).unwrap();
    assert!(!sealed.windows(secret.len()).any(|w| w == secret));
    assert!(!sealed.windows(4).any(|w| w == b"8231"));
    assert_eq!(hsm.unseal_secret(&sealed).unwrap().as_slice(), secret);
    // Salted: the same secret seals differently each time.
    assert_ne!(hsm.seal_secret(secret).unwrap(), sealed);

    assert!(hsm
        .unseal_secret(&hsm.seal_secret(b"").unwrap())
        .unwrap()
        .is_empty());
    let big = vec![0x5au8; MAX_SECRET_LEN];
    assert_eq!(
        hsm.unseal_secret(&hsm.seal_secret(&big).unwrap())
            .unwrap()
            .as_slice(),
        big.as_slice()
    );
    assert!(hsm.seal_secret(&vec![0u8; MAX_SECRET_LEN + 1]).is_err());

    let mut tampered = sealed.clone();
    tampered[3] ^= 1;
    assert!(matches!(
        hsm.unseal_secret(&tampered),
        Err(HsmError::KeyBlobInvalid(_))
    ));
    assert!(matches!(
        hsm.unseal_secret(&sealed[..16]),
        Err(HsmError::KeyBlobInvalid(_))
    ));
    // A wrapped key is not a sealed secret.
    assert!(matches!(
        hsm.unseal_secret(&own().keys[&KeyKind::Aes256].wrapped),
        Err(HsmError::KeyBlobInvalid(_))
    ));
}

/// Not a benchmark harness: times N installs through keyorch (wrap in keyorch's HSM, unwrap in
/// the target into a token object) against raw cryptoki making the same calls with every
/// handle found beforehand and nothing checked, interleaved so that noise hits both alike.
/// Run with `cargo test --release --test pkcs11_target -- --nocapture install_throughput`.
#[test]
fn install_throughput_against_raw_cryptoki() {
    const N: usize = 40;
    let target = open_target("bench");
    target.ensure_import_kek().unwrap();
    let spki = target.import_kek_spki().unwrap();
    let aes = &own().keys[&KeyKind::Aes256];
    let hsm = &own().hsm;
    let raw = RawPath::new(&spki);

    // Warm up both paths once.
    install(&target, &spki, "keyorch-bench-warm", KeyKind::Aes256, aes).unwrap();
    target.uninstall("keyorch-bench-warm").unwrap();
    raw.install("raw-bench-warm", &aes.wrapped);

    let (mut wrap, mut unwrap, mut raw_total) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut flow = Duration::ZERO;
    for i in 0..N {
        let label = format!("keyorch-bench-{i}");
        let r = key_ref(&label, KeyKind::Aes256, aes);
        let t = Instant::now();
        let blob = hsm.wrap_for_transport(&r, &spki, OaepHash::Sha1).unwrap();
        let t1 = Instant::now();
        assert!(target
            .install(&label, KeyKind::Aes256, &blob, OaepHash::Sha1, None)
            .unwrap());
        let t2 = Instant::now();
        raw.install(&format!("raw-bench-{i}"), &aes.wrapped);
        let t3 = Instant::now();
        // What the service does per install: fetch the SPKI, choose the hash, wrap, install,
        // then prove the copy by its check value.
        let label = format!("keyorch-bench-flow-{i}");
        let r = key_ref(&label, KeyKind::Aes256, aes);
        let spki = target.import_kek_spki().unwrap();
        let hash = if hsm.supports_oaep_sha256() && target.supports_oaep_sha256() {
            OaepHash::Sha256
        } else {
            OaepHash::Sha1
        };
        let blob = hsm.wrap_for_transport(&r, &spki, hash).unwrap();
        assert!(target
            .install(&label, KeyKind::Aes256, &blob, hash, None)
            .unwrap());
        assert_eq!(
            target.key_check_value(&label, KeyKind::Aes256).unwrap(),
            Some(aes.kcv.clone())
        );
        flow += t3.elapsed();
        raw_total += t3 - t2;
        wrap += t1 - t;
        unwrap += t2 - t1;
    }
    for i in 0..N {
        target.uninstall(&format!("keyorch-bench-{i}")).unwrap();
        target
            .uninstall(&format!("keyorch-bench-flow-{i}"))
            .unwrap();
    }
    raw.clean_up();

    let keyorch = wrap + unwrap;
    let ops = |d: Duration| N as f64 / d.as_secs_f64();
    eprintln!(
        "install AES-256 (RSA-3072 OAEP-SHA1 + KWP), {N} sequential, interleaved: \
         keyorch {:.0}/s ({:?} each: wrap {:?}, install {:?}), raw cryptoki {:.0}/s ({:?} each), \
         ratio {:.2}",
        ops(keyorch),
        keyorch / N as u32,
        wrap / N as u32,
        unwrap / N as u32,
        ops(raw_total),
        raw_total / N as u32,
        ops(keyorch) / ops(raw_total)
    );
    eprintln!(
        "  with the service's extra calls (import_kek_spki, key_check_value): {:.0}/s ({:?} \
         each), ratio {:.2}",
        ops(flow),
        flow / N as u32,
        ops(flow) / ops(raw_total)
    );
}

/// The calls of an install straight through cryptoki: one session per token, handles found once.
struct RawPath {
    own: Session,
    target: Session,
    master: ObjectHandle,
    import_private: ObjectHandle,
    modulus: Vec<u8>,
}

impl RawPath {
    fn new(spki: &[u8]) -> RawPath {
        let own_session = side_session(OWN);
        let target_session = side_session("bench");
        let master = own_session
            .find_objects(&[Attribute::Label(KEK_LABEL.as_bytes().to_vec())])
            .unwrap()[0];
        let import_private = find(&target_session, IMPORT_KEK_LABEL, ObjectClass::PRIVATE_KEY)[0];
        // The SPKI of an RSA-3072 key with exponent 65537 ends with the 384-byte modulus and
        // "02 03 01 00 01".
        let modulus = spki[spki.len() - 5 - 384..spki.len() - 5].to_vec();
        RawPath {
            own: own_session,
            target: target_session,
            master,
            import_private,
            modulus,
        }
    }

    fn install(&self, label: &str, wrapped: &[u8]) {
        use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
        use cryptoki::mechanism::MechanismType;
        use cryptoki::object::KeyType;

        let oaep = Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
            MechanismType::SHA1,
            PkcsMgfType::MGF1_SHA1,
            PkcsOaepSource::empty(),
        ));
        let aes = |extra: &[Attribute]| {
            let mut t = vec![
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
            ];
            t.extend_from_slice(extra);
            t
        };
        let public = self
            .own
            .create_object(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::RSA),
                Attribute::Token(false),
                Attribute::Wrap(true),
                Attribute::Modulus(self.modulus.clone()),
                Attribute::PublicExponent(vec![1, 0, 1]),
            ])
            .unwrap();
        let ephemeral = self
            .own
            .generate_key(
                &Mechanism::AesKeyGen,
                &aes(&[
                    Attribute::ValueLen(32.into()),
                    Attribute::Extractable(true),
                    Attribute::Wrap(true),
                ]),
            )
            .unwrap();
        let managed = self
            .own
            .unwrap_key(
                &Mechanism::AesKeyWrapPad,
                self.master,
                wrapped,
                &aes(&[Attribute::Extractable(true)]),
            )
            .unwrap();
        let mut blob = self.own.wrap_key(&oaep, public, ephemeral).unwrap();
        blob.extend(
            self.own
                .wrap_key(&Mechanism::AesKeyWrapPad, ephemeral, managed)
                .unwrap(),
        );
        for h in [public, ephemeral, managed] {
            self.own.destroy_object(h).unwrap();
        }

        let (rsa, kwp) = blob.split_at(384);
        let eph = self
            .target
            .unwrap_key(
                &oaep,
                self.import_private,
                rsa,
                &aes(&[Attribute::Unwrap(true)]),
            )
            .unwrap();
        self.target
            .unwrap_key(
                &Mechanism::AesKeyWrapPad,
                eph,
                kwp,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Token(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Label(label.as_bytes().to_vec()),
                    Attribute::Id(label.as_bytes().to_vec()),
                ],
            )
            .unwrap();
        self.target.destroy_object(eph).unwrap();
    }

    fn clean_up(&self) {
        for h in self
            .target
            .find_objects(&[
                Attribute::Token(true),
                Attribute::Class(ObjectClass::SECRET_KEY),
            ])
            .unwrap()
        {
            let label = self
                .target
                .get_attributes(h, &[AttributeType::Label])
                .unwrap();
            if matches!(label.first(), Some(Attribute::Label(l)) if l.starts_with(b"raw-bench-")) {
                self.target.destroy_object(h).unwrap();
            }
        }
    }
}
