//! CryptoService against the real daemon: AES-GCM round trips with AAD and tamper
//! detection, GenerateDataKey, Sign/Verify for RSA-PSS, RSA-PKCS#1 v1.5 and ECDSA (checked
//! independently with the `openssl` CLI against GetPublicKey's PEM), HMAC, payload limits,
//! key-usage errors, and the rules: a key whose keystore is disconnected cannot
//! be used (and reconnecting restores it), a DEACTIVATED key decrypts and verifies but
//! neither encrypts nor signs, a DESTROYED key does nothing.

mod common;

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use common::*;
use keyorch::client::Clients;
use keyorch::proto::v1::{
    ConnectKeystoreRequest, DisconnectKeystoreRequest, GenerateDataKeyRequest, GenerateMacRequest,
    GetPublicKeyRequest, GetPublicKeyResponse, Key, KeyAlgorithm, SignRequest, SigningAlgorithm,
    VerifyMacRequest, VerifyRequest,
};
use sha2::Digest as _;
use tonic::{Code, Status};

const KIB: usize = 1024;

const RSA_ALGORITHMS: [SigningAlgorithm; 6] = [
    SigningAlgorithm::RsassaPssSha256,
    SigningAlgorithm::RsassaPssSha384,
    SigningAlgorithm::RsassaPssSha512,
    SigningAlgorithm::RsassaPkcs1V15Sha256,
    SigningAlgorithm::RsassaPkcs1V15Sha384,
    SigningAlgorithm::RsassaPkcs1V15Sha512,
];

const ALL_SIGNING: [SigningAlgorithm; 8] = [
    SigningAlgorithm::RsassaPssSha256,
    SigningAlgorithm::RsassaPssSha384,
    SigningAlgorithm::RsassaPssSha512,
    SigningAlgorithm::RsassaPkcs1V15Sha256,
    SigningAlgorithm::RsassaPkcs1V15Sha384,
    SigningAlgorithm::RsassaPkcs1V15Sha512,
    SigningAlgorithm::EcdsaSha256,
    SigningAlgorithm::EcdsaSha384,
];

fn sign_req(key: &str, message: &[u8], alg: SigningAlgorithm) -> SignRequest {
    SignRequest {
        key_id: key.into(),
        message: message.to_vec(),
        algorithm: alg as i32,
    }
}

fn verify_req(key: &str, message: &[u8], sig: &[u8], alg: SigningAlgorithm) -> VerifyRequest {
    VerifyRequest {
        key_id: key.into(),
        message: message.to_vec(),
        signature: sig.to_vec(),
        algorithm: alg as i32,
    }
}

fn mac_req(key: &str, message: &[u8]) -> GenerateMacRequest {
    GenerateMacRequest {
        key_id: key.into(),
        message: message.to_vec(),
    }
}

fn verify_mac_req(key: &str, message: &[u8], mac: &[u8]) -> VerifyMacRequest {
    VerifyMacRequest {
        key_id: key.into(),
        message: message.to_vec(),
        mac: mac.to_vec(),
    }
}

fn data_key_req(key: &str, bytes: u32, aad: &[u8]) -> GenerateDataKeyRequest {
    GenerateDataKeyRequest {
        key_id: key.into(),
        number_of_bytes: bytes,
        aad: aad.to_vec(),
    }
}

fn pub_req(key: &str) -> GetPublicKeyRequest {
    GetPublicKeyRequest { key_id: key.into() }
}

async fn sign(c: &mut Clients, key: &str, message: &[u8], alg: SigningAlgorithm) -> Vec<u8> {
    let r = ok(c.crypto.sign(sign_req(key, message, alg))).await;
    assert_eq!(r.key_id, key);
    assert_eq!(r.algorithm, alg as i32);
    r.signature
}

async fn verify(
    c: &mut Clients,
    key: &str,
    message: &[u8],
    sig: &[u8],
    alg: SigningAlgorithm,
) -> bool {
    ok(c.crypto.verify(verify_req(key, message, sig, alg)))
        .await
        .signature_valid
}

async fn public_key(c: &mut Clients, key: &str) -> GetPublicKeyResponse {
    ok(c.crypto.get_public_key(pub_req(key))).await
}

fn digest_name(alg: SigningAlgorithm) -> &'static str {
    match alg {
        SigningAlgorithm::RsassaPssSha256
        | SigningAlgorithm::RsassaPkcs1V15Sha256
        | SigningAlgorithm::EcdsaSha256 => "-sha256",
        SigningAlgorithm::RsassaPssSha384
        | SigningAlgorithm::RsassaPkcs1V15Sha384
        | SigningAlgorithm::EcdsaSha384 => "-sha384",
        SigningAlgorithm::RsassaPssSha512 | SigningAlgorithm::RsassaPkcs1V15Sha512 => "-sha512",
        SigningAlgorithm::Unspecified => unreachable!(),
    }
}

fn is_pss(alg: SigningAlgorithm) -> bool {
    matches!(
        alg,
        SigningAlgorithm::RsassaPssSha256
            | SigningAlgorithm::RsassaPssSha384
            | SigningAlgorithm::RsassaPssSha512
    )
}

/// Verifies a signature with the `openssl` CLI, independently of keyorch.
fn openssl_verifies(
    dir: &Path,
    pem: &str,
    message: &[u8],
    sig: &[u8],
    alg: SigningAlgorithm,
) -> bool {
    let pem_path = dir.join("pub.pem");
    let msg_path = dir.join("message.bin");
    let sig_path = dir.join("signature.bin");
    std::fs::write(&pem_path, pem).unwrap();
    std::fs::write(&msg_path, message).unwrap();
    std::fs::write(&sig_path, sig).unwrap();
    let mut cmd = Command::new("openssl");
    cmd.arg("dgst")
        .arg(digest_name(alg))
        .arg("-verify")
        .arg(&pem_path);
    if is_pss(alg) {
        cmd.args([
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:auto",
        ]);
    }
    cmd.arg("-signature").arg(&sig_path).arg(&msg_path);
    let out = run(&mut cmd);
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK")
}

/// `openssl pkey -text` of a DER SubjectPublicKeyInfo (panics if openssl cannot parse it).
fn openssl_describe_der(dir: &Path, der: &[u8]) -> String {
    let path = dir.join("pub.der");
    std::fs::write(&path, der).unwrap();
    run_ok(
        Command::new("openssl")
            .args(["pkey", "-pubin", "-inform", "DER", "-text", "-noout", "-in"])
            .arg(&path),
    )
}

fn pem_body(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("PEM body is base64")
}

fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at] ^= 0x01;
    out
}

#[tokio::test]
async fn aes_gcm_round_trip_with_aad() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    for bits in [128, 192, 256] {
        let key = fx
            .key(
                &mut c,
                &format!("aes-{bits}"),
                KeyAlgorithm::Aes,
                bits,
                true,
            )
            .await;
        let plaintext = b"attack at dawn";
        let aad = b"order-42";
        let r = ok(c.crypto.encrypt(encrypt_req(&key.id, plaintext, aad))).await;
        assert_eq!(r.key_id, key.id);
        assert_eq!(
            r.ciphertext.len(),
            12 + plaintext.len() + 16,
            "ciphertext is not IV || ct || tag"
        );
        assert!(
            !contains_bytes(&r.ciphertext, plaintext),
            "plaintext visible in the ciphertext"
        );
        let again = encrypt(&mut c, &key.id, plaintext, aad).await;
        assert_ne!(again, r.ciphertext, "two encryptions share an IV");
        assert_ne!(again[..12], r.ciphertext[..12], "IV reused");

        let back = ok(c.crypto.decrypt(decrypt_req(&key.id, &r.ciphertext, aad))).await;
        assert_eq!(back.key_id, key.id);
        assert_eq!(back.plaintext, plaintext);
        assert_eq!(decrypt(&mut c, &key.id, &again, aad).await, plaintext);

        // Without AAD as well.
        let ct = encrypt(&mut c, &key.id, b"x", b"").await;
        assert_eq!(decrypt(&mut c, &key.id, &ct, b"").await, b"x");
    }
}

#[tokio::test]
async fn wrong_aad_and_tampered_ciphertexts_are_invalid_ciphertext() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let key = fx.key(&mut c, "aes", KeyAlgorithm::Aes, 256, true).await;
    let other = fx.key(&mut c, "aes-2", KeyAlgorithm::Aes, 256, true).await;
    let ct = encrypt(&mut c, &key.id, b"secret payload", b"context-a").await;

    let s = fails(c.crypto.decrypt(decrypt_req(&key.id, &ct, b"context-b"))).await;
    assert_status(&s, Code::InvalidArgument, INVALID_CIPHERTEXT);
    let s = fails(c.crypto.decrypt(decrypt_req(&key.id, &ct, b""))).await;
    assert_status(&s, Code::InvalidArgument, INVALID_CIPHERTEXT);

    // IV, body and tag: each flipped bit is caught.
    for at in [0, 11, 12, ct.len() - 17, ct.len() - 16, ct.len() - 1] {
        let s = fails(
            c.crypto
                .decrypt(decrypt_req(&key.id, &flip(&ct, at), b"context-a")),
        )
        .await;
        assert_status(&s, Code::InvalidArgument, INVALID_CIPHERTEXT);
    }
    // Another key's ciphertext.
    let s = fails(c.crypto.decrypt(decrypt_req(&other.id, &ct, b"context-a"))).await;
    assert_status(&s, Code::InvalidArgument, INVALID_CIPHERTEXT);
    // Truncated: too short to hold IV and tag, or with the tag cut.
    for bad in [&ct[..0], &ct[..10], &ct[..27], &ct[..ct.len() - 1]] {
        let s = fails(c.crypto.decrypt(decrypt_req(&key.id, bad, b"context-a"))).await;
        assert_eq!(s.code(), Code::InvalidArgument, "{}", describe(&s));
    }
    // The original still decrypts.
    assert_eq!(
        decrypt(&mut c, &key.id, &ct, b"context-a").await,
        b"secret payload"
    );
}

#[tokio::test]
async fn payload_limits() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let aes = fx.key(&mut c, "aes", KeyAlgorithm::Aes, 256, true).await;
    let ec = fx.key(&mut c, "ec", KeyAlgorithm::Ec, 256, true).await;
    let hmac = fx
        .key(&mut c, "hmac", KeyAlgorithm::HmacSha256, 256, true)
        .await;
    let before = snapshot(&c).await;

    // Encrypt: plaintext 1 byte..64 KiB, aad at most 8 KiB.
    let max = vec![0xa5u8; 64 * KIB];
    let ct = encrypt(&mut c, &aes.id, &max, &[1u8; 8 * KIB]).await;
    assert_eq!(decrypt(&mut c, &aes.id, &ct, &[1u8; 8 * KIB]).await, max);
    let s = fails(c.crypto.encrypt(encrypt_req(&aes.id, b"", b""))).await;
    assert_invalid(&s, "plaintext");
    let s = fails(
        c.crypto
            .encrypt(encrypt_req(&aes.id, &vec![0u8; 64 * KIB + 1], b"")),
    )
    .await;
    assert_invalid(&s, "plaintext");
    let s = fails(
        c.crypto
            .encrypt(encrypt_req(&aes.id, b"x", &vec![0u8; 8 * KIB + 1])),
    )
    .await;
    assert_invalid(&s, "aad");
    let small = encrypt(&mut c, &aes.id, b"x", b"").await;
    let s = fails(
        c.crypto
            .decrypt(decrypt_req(&aes.id, &small, &vec![0u8; 8 * KIB + 1])),
    )
    .await;
    assert_invalid(&s, "aad");
    let s = fails(
        c.crypto
            .generate_data_key(data_key_req(&aes.id, 32, &vec![0u8; 8 * KIB + 1])),
    )
    .await;
    assert_invalid(&s, "aad");

    // Sign and MAC: message 1 byte..64 KiB.
    let alg = SigningAlgorithm::EcdsaSha256;
    let sig = sign(&mut c, &ec.id, &max, alg).await;
    assert!(verify(&mut c, &ec.id, &max, &sig, alg).await);
    for bad in [Vec::new(), vec![0u8; 64 * KIB + 1]] {
        let s = fails(c.crypto.sign(sign_req(&ec.id, &bad, alg))).await;
        assert_invalid(&s, "message");
        let s = fails(c.crypto.verify(verify_req(&ec.id, &bad, &sig, alg))).await;
        assert_invalid(&s, "message");
        let s = fails(c.crypto.generate_mac(mac_req(&hmac.id, &bad))).await;
        assert_invalid(&s, "message");
        let s = fails(
            c.crypto
                .verify_mac(verify_mac_req(&hmac.id, &bad, &[0u8; 32])),
        )
        .await;
        assert_invalid(&s, "message");
    }
    let mac = ok(c.crypto.generate_mac(mac_req(&hmac.id, &max))).await.mac;
    assert!(
        ok(c.crypto.verify_mac(verify_mac_req(&hmac.id, &max, &mac)))
            .await
            .mac_valid
    );
    assert_unchanged(&before, &snapshot(&c).await, "crypto calls");
}

#[tokio::test]
async fn generate_data_key_returns_a_key_and_its_ciphertext() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let key = fx.key(&mut c, "kek", KeyAlgorithm::Aes, 256, true).await;

    for (asked, expected) in [(0u32, 32usize), (32, 32), (16, 16)] {
        let r = ok(c
            .crypto
            .generate_data_key(data_key_req(&key.id, asked, b"ctx")))
        .await;
        assert_eq!(r.key_id, key.id);
        assert_eq!(r.plaintext.len(), expected, "number_of_bytes {asked}");
        assert_eq!(r.ciphertext.len(), 12 + expected + 16);
        assert_eq!(
            decrypt(&mut c, &key.id, &r.ciphertext, b"ctx").await,
            r.plaintext
        );
        let s = fails(
            c.crypto
                .decrypt(decrypt_req(&key.id, &r.ciphertext, b"other")),
        )
        .await;
        assert_status(&s, Code::InvalidArgument, INVALID_CIPHERTEXT);
    }
    let a = ok(c.crypto.generate_data_key(data_key_req(&key.id, 32, b""))).await;
    let b = ok(c.crypto.generate_data_key(data_key_req(&key.id, 32, b""))).await;
    assert_ne!(a.plaintext, b.plaintext, "data keys repeat");

    for bad in [1u32, 8, 24, 33, 64, 1024] {
        let s = fails(c.crypto.generate_data_key(data_key_req(&key.id, bad, b""))).await;
        assert_invalid(&s, "number_of_bytes");
    }
}

#[tokio::test]
async fn rsa_signatures_verify_here_and_with_openssl() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let key = fx.key(&mut c, "rsa", KeyAlgorithm::Rsa, 2048, true).await;
    let pk = public_key(&mut c, &key.id).await;
    let tmp = tempfile::tempdir().unwrap();
    let message = b"the quick brown fox";

    for alg in RSA_ALGORITHMS {
        assert!(
            pk.signing_algorithms.contains(&(alg as i32)),
            "{alg:?} not advertised: {:?}",
            pk.signing_algorithms
        );
        let sig = sign(&mut c, &key.id, message, alg).await;
        assert_eq!(sig.len(), 256, "{alg:?}: RSA-2048 signature length");
        assert!(verify(&mut c, &key.id, message, &sig, alg).await, "{alg:?}");
        assert!(
            openssl_verifies(tmp.path(), &pk.public_key_pem, message, &sig, alg),
            "openssl rejects the {alg:?} signature"
        );
        assert!(
            !openssl_verifies(tmp.path(), &pk.public_key_pem, b"other", &sig, alg),
            "openssl accepts a signature of another message ({alg:?})"
        );
        assert!(
            !verify(&mut c, &key.id, b"the quick brown fox.", &sig, alg).await,
            "{alg:?}: signature valid for another message"
        );
        assert!(
            !verify(&mut c, &key.id, message, &flip(&sig, 100), alg).await,
            "{alg:?}: tampered signature valid"
        );

        let second = sign(&mut c, &key.id, message, alg).await;
        if is_pss(alg) {
            assert_ne!(sig, second, "{alg:?}: PSS signatures are randomised");
        } else {
            assert_eq!(
                sig, second,
                "{alg:?}: PKCS#1 v1.5 signatures are deterministic"
            );
        }
    }
}

#[tokio::test]
async fn ecdsa_signatures_are_der_and_verify_with_openssl() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let tmp = tempfile::tempdir().unwrap();
    let message = b"ledger entry 7";

    for (bits, alg) in [
        (256, SigningAlgorithm::EcdsaSha256),
        (384, SigningAlgorithm::EcdsaSha384),
    ] {
        let key = fx
            .key(&mut c, &format!("ec-{bits}"), KeyAlgorithm::Ec, bits, true)
            .await;
        let pk = public_key(&mut c, &key.id).await;
        assert!(
            pk.signing_algorithms.contains(&(alg as i32)),
            "{alg:?} not advertised for P-{bits}: {:?}",
            pk.signing_algorithms
        );
        let sig = sign(&mut c, &key.id, message, alg).await;
        assert_eq!(
            sig[0], 0x30,
            "ECDSA signature is not a DER SEQUENCE: {sig:02x?}"
        );
        assert_eq!(
            sig[1] as usize + 2,
            sig.len(),
            "DER length does not match: {sig:02x?}"
        );
        assert!(verify(&mut c, &key.id, message, &sig, alg).await);
        assert!(
            openssl_verifies(tmp.path(), &pk.public_key_pem, message, &sig, alg),
            "openssl rejects the P-{bits} signature"
        );
        assert!(!verify(&mut c, &key.id, b"ledger entry 8", &sig, alg).await);
        let last = sig.len() - 1;
        assert!(!verify(&mut c, &key.id, message, &flip(&sig, last), alg).await);

        // Whatever the key does not advertise, it refuses.
        for other in ALL_SIGNING {
            if pk.signing_algorithms.contains(&(other as i32)) {
                continue;
            }
            let s = fails(c.crypto.sign(sign_req(&key.id, message, other))).await;
            assert_status(&s, Code::InvalidArgument, INVALID_KEY_USAGE);
        }
    }
}

#[tokio::test]
async fn public_keys_parse_and_match_the_key_check_value() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let tmp = tempfile::tempdir().unwrap();

    for (alg, bits, expect) in [
        (KeyAlgorithm::Rsa, 2048, "(2048 bit)"),
        (KeyAlgorithm::Rsa, 3072, "(3072 bit)"),
        (KeyAlgorithm::Ec, 256, "prime256v1"),
        (KeyAlgorithm::Ec, 384, "secp384r1"),
    ] {
        let key = fx
            .key(&mut c, &format!("{alg:?}-{bits}"), alg, bits, true)
            .await;
        let pk = public_key(&mut c, &key.id).await;
        assert_eq!(pk.key_id, key.id);
        assert!(
            pk.public_key_pem.starts_with("-----BEGIN PUBLIC KEY-----"),
            "{}",
            pk.public_key_pem
        );
        assert!(pk
            .public_key_pem
            .trim_end()
            .ends_with("-----END PUBLIC KEY-----"));
        assert_eq!(
            pem_body(&pk.public_key_pem),
            pk.public_key_der,
            "PEM and DER differ"
        );
        let text = openssl_describe_der(tmp.path(), &pk.public_key_der);
        assert!(text.contains(expect), "{alg:?}-{bits}: openssl says {text}");
        assert!(!pk.signing_algorithms.is_empty());

        // DESIGN: RSA/EC check value = first 8 bytes of SHA-256 of the DER SPKI.
        let digest = sha2::Sha256::digest(&pk.public_key_der);
        assert_eq!(
            key.key_check_value.to_lowercase(),
            hex::encode(&digest[..8]),
            "{alg:?}-{bits}: key check value is not SHA-256(SPKI)[..8]"
        );
    }
}

#[tokio::test]
async fn hmac_generates_and_verifies_macs() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let key = fx
        .key(&mut c, "hmac", KeyAlgorithm::HmacSha256, 256, true)
        .await;
    let other = fx
        .key(&mut c, "hmac-2", KeyAlgorithm::HmacSha256, 256, true)
        .await;

    let r = ok(c.crypto.generate_mac(mac_req(&key.id, b"message"))).await;
    assert_eq!(r.key_id, key.id);
    assert_eq!(r.mac.len(), 32);
    let again = ok(c.crypto.generate_mac(mac_req(&key.id, b"message"))).await;
    assert_eq!(again.mac, r.mac, "HMAC is deterministic");
    let theirs = ok(c.crypto.generate_mac(mac_req(&other.id, b"message"))).await;
    assert_ne!(theirs.mac, r.mac, "two keys give the same MAC");

    let v = ok(c
        .crypto
        .verify_mac(verify_mac_req(&key.id, b"message", &r.mac)))
    .await;
    assert_eq!(v.key_id, key.id);
    assert!(v.mac_valid);
    assert!(
        !ok(c
            .crypto
            .verify_mac(verify_mac_req(&key.id, b"messagf", &r.mac)))
        .await
        .mac_valid
    );
    assert!(
        !ok(c
            .crypto
            .verify_mac(verify_mac_req(&key.id, b"message", &flip(&r.mac, 31))))
        .await
        .mac_valid
    );
    assert!(
        !ok(c
            .crypto
            .verify_mac(verify_mac_req(&other.id, b"message", &r.mac)))
        .await
        .mac_valid
    );
}

#[tokio::test]
async fn operations_that_do_not_fit_the_key_are_invalid_key_usage() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let aes = fx.key(&mut c, "aes", KeyAlgorithm::Aes, 256, true).await;
    let rsa = fx.key(&mut c, "rsa", KeyAlgorithm::Rsa, 2048, true).await;
    let ec = fx.key(&mut c, "ec", KeyAlgorithm::Ec, 256, true).await;
    let hmac = fx
        .key(&mut c, "hmac", KeyAlgorithm::HmacSha256, 256, true)
        .await;
    let pss = SigningAlgorithm::RsassaPssSha256;
    let ecdsa = SigningAlgorithm::EcdsaSha256;

    let mut failures: Vec<(&str, Status)> = Vec::new();
    // Symmetric encryption only with AES.
    for k in [&rsa, &ec, &hmac] {
        failures.push((
            "Encrypt",
            fails(c.crypto.encrypt(encrypt_req(&k.id, b"x", b""))).await,
        ));
        failures.push((
            "Decrypt",
            fails(c.crypto.decrypt(decrypt_req(&k.id, &[0u8; 40], b""))).await,
        ));
        failures.push((
            "GenerateDataKey",
            fails(c.crypto.generate_data_key(data_key_req(&k.id, 32, b""))).await,
        ));
    }
    // Signing only with RSA and EC.
    for k in [&aes, &hmac] {
        failures.push((
            "Sign",
            fails(c.crypto.sign(sign_req(&k.id, b"m", pss))).await,
        ));
        failures.push((
            "Verify",
            fails(c.crypto.verify(verify_req(&k.id, b"m", &[0u8; 64], pss))).await,
        ));
        failures.push((
            "GetPublicKey",
            fails(c.crypto.get_public_key(pub_req(&k.id))).await,
        ));
    }
    // MACs only with HMAC.
    for k in [&aes, &rsa, &ec] {
        failures.push((
            "GenerateMac",
            fails(c.crypto.generate_mac(mac_req(&k.id, b"m"))).await,
        ));
        failures.push((
            "VerifyMac",
            fails(c.crypto.verify_mac(verify_mac_req(&k.id, b"m", &[0u8; 32]))).await,
        ));
    }
    // A signing algorithm of the other family.
    failures.push((
        "Sign RSA/ECDSA",
        fails(c.crypto.sign(sign_req(&rsa.id, b"m", ecdsa))).await,
    ));
    failures.push((
        "Sign EC/PSS",
        fails(c.crypto.sign(sign_req(&ec.id, b"m", pss))).await,
    ));

    for (what, s) in &failures {
        assert_eq!(s.code(), Code::InvalidArgument, "{what}: {}", describe(s));
        assert_status(s, Code::InvalidArgument, INVALID_KEY_USAGE);
    }

    // Unknown signing algorithms are a validation error.
    for bad in [SigningAlgorithm::Unspecified as i32, 99, -3] {
        let mut req = sign_req(&rsa.id, b"m", pss);
        req.algorithm = bad;
        let s = fails(c.crypto.sign(req)).await;
        assert_invalid(&s, "algorithm");
        let mut req = verify_req(&ec.id, b"m", &[0u8; 64], ecdsa);
        req.algorithm = bad;
        let s = fails(c.crypto.verify(req)).await;
        assert_invalid(&s, "algorithm");
    }
}

/// An ACTIVE key of each family with something it produced earlier.
struct Material {
    aes: Key,
    rsa: Key,
    ec: Key,
    hmac: Key,
    ciphertext: Vec<u8>,
    rsa_sig: Vec<u8>,
    ec_sig: Vec<u8>,
    mac: Vec<u8>,
}

const MSG: &[u8] = b"pay 100 to bob";
const AAD: &[u8] = b"tenant-7";
const PSS: SigningAlgorithm = SigningAlgorithm::RsassaPssSha256;
const ECDSA: SigningAlgorithm = SigningAlgorithm::EcdsaSha256;

async fn material(c: &mut Clients, fx: &Fixture) -> Material {
    let aes = fx.key(c, "aes", KeyAlgorithm::Aes, 256, true).await;
    let rsa = fx.key(c, "rsa", KeyAlgorithm::Rsa, 2048, true).await;
    let ec = fx.key(c, "ec", KeyAlgorithm::Ec, 256, true).await;
    let hmac = fx.key(c, "hmac", KeyAlgorithm::HmacSha256, 256, true).await;
    let ciphertext = encrypt(c, &aes.id, MSG, AAD).await;
    let rsa_sig = sign(c, &rsa.id, MSG, PSS).await;
    let ec_sig = sign(c, &ec.id, MSG, ECDSA).await;
    let mac = ok(c.crypto.generate_mac(mac_req(&hmac.id, MSG))).await.mac;
    Material {
        aes,
        rsa,
        ec,
        hmac,
        ciphertext,
        rsa_sig,
        ec_sig,
        mac,
    }
}

impl Material {
    fn keys(&self) -> [&Key; 4] {
        [&self.aes, &self.rsa, &self.ec, &self.hmac]
    }

    /// Every operation that produces something new: must fail in `code`/`reason`.
    async fn assert_producing_ops_fail(&self, c: &mut Clients, code: Code, reason: &str) {
        let results = [
            (
                "Encrypt",
                c.crypto
                    .encrypt(encrypt_req(&self.aes.id, MSG, AAD))
                    .await
                    .map(drop),
            ),
            (
                "GenerateDataKey",
                c.crypto
                    .generate_data_key(data_key_req(&self.aes.id, 32, AAD))
                    .await
                    .map(drop),
            ),
            (
                "Sign RSA",
                c.crypto
                    .sign(sign_req(&self.rsa.id, MSG, PSS))
                    .await
                    .map(drop),
            ),
            (
                "Sign EC",
                c.crypto
                    .sign(sign_req(&self.ec.id, MSG, ECDSA))
                    .await
                    .map(drop),
            ),
            (
                "GenerateMac",
                c.crypto
                    .generate_mac(mac_req(&self.hmac.id, MSG))
                    .await
                    .map(drop),
            ),
        ];
        for (what, r) in results {
            match r {
                Ok(()) => panic!("{what} succeeded; expected {code:?} {reason}"),
                Err(s) => {
                    assert_eq!(s.code(), code, "{what}: {}", describe(&s));
                    assert_status(&s, code, reason);
                }
            }
        }
    }

    /// Every operation on existing data: must fail in `code`/`reason`.
    async fn assert_consuming_ops_fail(&self, c: &mut Clients, code: Code, reason: &str) {
        let results = [
            (
                "Decrypt",
                c.crypto
                    .decrypt(decrypt_req(&self.aes.id, &self.ciphertext, AAD))
                    .await
                    .map(drop),
            ),
            (
                "Verify RSA",
                c.crypto
                    .verify(verify_req(&self.rsa.id, MSG, &self.rsa_sig, PSS))
                    .await
                    .map(drop),
            ),
            (
                "Verify EC",
                c.crypto
                    .verify(verify_req(&self.ec.id, MSG, &self.ec_sig, ECDSA))
                    .await
                    .map(drop),
            ),
            (
                "VerifyMac",
                c.crypto
                    .verify_mac(verify_mac_req(&self.hmac.id, MSG, &self.mac))
                    .await
                    .map(drop),
            ),
            (
                "GetPublicKey RSA",
                c.crypto
                    .get_public_key(pub_req(&self.rsa.id))
                    .await
                    .map(drop),
            ),
            (
                "GetPublicKey EC",
                c.crypto
                    .get_public_key(pub_req(&self.ec.id))
                    .await
                    .map(drop),
            ),
        ];
        for (what, r) in results {
            match r {
                Ok(()) => panic!("{what} succeeded; expected {code:?} {reason}"),
                Err(s) => {
                    assert_eq!(s.code(), code, "{what}: {}", describe(&s));
                    assert_status(&s, code, reason);
                }
            }
        }
    }

    /// Decrypt, Verify, VerifyMac and GetPublicKey work and give the right answers.
    async fn assert_consuming_ops_work(&self, c: &mut Clients) {
        assert_eq!(decrypt(c, &self.aes.id, &self.ciphertext, AAD).await, MSG);
        assert!(verify(c, &self.rsa.id, MSG, &self.rsa_sig, PSS).await);
        assert!(!verify(c, &self.rsa.id, b"pay 900 to bob", &self.rsa_sig, PSS).await);
        assert!(verify(c, &self.ec.id, MSG, &self.ec_sig, ECDSA).await);
        assert!(
            ok(c.crypto
                .verify_mac(verify_mac_req(&self.hmac.id, MSG, &self.mac)))
            .await
            .mac_valid
        );
        public_key(c, &self.rsa.id).await;
        public_key(c, &self.ec.id).await;
    }

    async fn assert_producing_ops_work(&self, c: &mut Clients) {
        let ct = encrypt(c, &self.aes.id, MSG, AAD).await;
        assert_eq!(decrypt(c, &self.aes.id, &ct, AAD).await, MSG);
        ok(c.crypto
            .generate_data_key(data_key_req(&self.aes.id, 32, AAD)))
        .await;
        let sig = sign(c, &self.rsa.id, MSG, PSS).await;
        assert!(verify(c, &self.rsa.id, MSG, &sig, PSS).await);
        let sig = sign(c, &self.ec.id, MSG, ECDSA).await;
        assert!(verify(c, &self.ec.id, MSG, &sig, ECDSA).await);
        let mac = ok(c.crypto.generate_mac(mac_req(&self.hmac.id, MSG)))
            .await
            .mac;
        assert_eq!(mac, self.mac);
    }
}

#[tokio::test]
async fn a_disconnected_keystore_cuts_every_use_and_reconnecting_restores_it() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let m = material(&mut c, &fx).await;

    ok(c.keystores.disconnect_keystore(DisconnectKeystoreRequest {
        id: fx.keystore.id.clone(),
        uninstall_keys: false,
        force: true,
    }))
    .await;
    m.assert_producing_ops_fail(&mut c, Code::FailedPrecondition, KEYSTORE_INVALID_STATE)
        .await;
    m.assert_consuming_ops_fail(&mut c, Code::FailedPrecondition, KEYSTORE_INVALID_STATE)
        .await;

    ok(c.keystores.connect_keystore(ConnectKeystoreRequest {
        id: fx.keystore.id.clone(),
    }))
    .await;
    m.assert_consuming_ops_work(&mut c).await;
    m.assert_producing_ops_work(&mut c).await;
}

#[tokio::test]
async fn one_connected_target_is_enough() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let ks2 = create_keystore(&mut c, &fx.vault.id, "internal-2", true).await;
    let key = create_key(
        &mut c,
        &fx.vault.id,
        "k",
        KeyAlgorithm::Aes,
        256,
        &[&fx.keystore.id, &ks2.id],
        true,
    )
    .await;
    let ct = encrypt(&mut c, &key.id, MSG, b"").await;
    ok(c.keystores.disconnect_keystore(DisconnectKeystoreRequest {
        id: fx.keystore.id.clone(),
        uninstall_keys: false,
        force: false,
    }))
    .await;
    assert_eq!(decrypt(&mut c, &key.id, &ct, b"").await, MSG);
    let ct2 = encrypt(&mut c, &key.id, MSG, b"").await;
    assert_eq!(decrypt(&mut c, &key.id, &ct2, b"").await, MSG);
}

#[tokio::test]
async fn a_deactivated_key_decrypts_and_verifies_but_does_not_encrypt_or_sign() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let m = material(&mut c, &fx).await;
    for k in m.keys() {
        ok(c.keys.deactivate_key(key_id(&k.id))).await;
    }
    m.assert_consuming_ops_work(&mut c).await;
    m.assert_producing_ops_fail(&mut c, Code::FailedPrecondition, KEY_INVALID_STATE)
        .await;

    // Decrypting needs a connected target even for a DEACTIVATED key.
    ok(c.keystores.disconnect_keystore(DisconnectKeystoreRequest {
        id: fx.keystore.id.clone(),
        uninstall_keys: false,
        force: false,
    }))
    .await;
    m.assert_consuming_ops_fail(&mut c, Code::FailedPrecondition, KEYSTORE_INVALID_STATE)
        .await;
    ok(c.keystores.connect_keystore(ConnectKeystoreRequest {
        id: fx.keystore.id.clone(),
    }))
    .await;

    // Reactivated, it works again with the same material.
    for k in m.keys() {
        ok(c.keys.activate_key(key_id(&k.id))).await;
    }
    m.assert_producing_ops_work(&mut c).await;
}

#[tokio::test]
async fn a_compromised_key_only_decrypts_and_verifies() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let m = material(&mut c, &fx).await;
    for k in m.keys() {
        ok(c.keys.mark_compromised(key_id(&k.id))).await;
    }
    m.assert_consuming_ops_work(&mut c).await;
    m.assert_producing_ops_fail(&mut c, Code::FailedPrecondition, KEY_INVALID_STATE)
        .await;
}

#[tokio::test]
async fn a_destroyed_key_does_nothing() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let m = material(&mut c, &fx).await;
    for k in m.keys() {
        ok(c.keys.deactivate_key(key_id(&k.id))).await;
        ok(c.keys.destroy_key(key_id(&k.id))).await;
    }
    m.assert_producing_ops_fail(&mut c, Code::FailedPrecondition, KEY_INVALID_STATE)
        .await;
    m.assert_consuming_ops_fail(&mut c, Code::FailedPrecondition, KEY_INVALID_STATE)
        .await;

    // DESTROYED_COMPROMISED likewise.
    let aes = fx.key(&mut c, "aes-2", KeyAlgorithm::Aes, 256, true).await;
    let ct = encrypt(&mut c, &aes.id, MSG, b"").await;
    ok(c.keys.mark_compromised(key_id(&aes.id))).await;
    ok(c.keys.destroy_key(key_id(&aes.id))).await;
    let s = fails(c.crypto.decrypt(decrypt_req(&aes.id, &ct, b""))).await;
    assert_status(&s, Code::FailedPrecondition, KEY_INVALID_STATE);
    let s = fails(c.crypto.encrypt(encrypt_req(&aes.id, MSG, b""))).await;
    assert_status(&s, Code::FailedPrecondition, KEY_INVALID_STATE);
}

#[tokio::test]
async fn a_pre_active_key_cannot_be_used() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let aes = fx.key(&mut c, "aes", KeyAlgorithm::Aes, 256, false).await;
    let rsa = fx.key(&mut c, "rsa", KeyAlgorithm::Rsa, 2048, false).await;
    let hmac = fx
        .key(&mut c, "hmac", KeyAlgorithm::HmacSha256, 256, false)
        .await;

    let s = fails(c.crypto.encrypt(encrypt_req(&aes.id, MSG, b""))).await;
    assert_status(&s, Code::FailedPrecondition, KEY_INVALID_STATE);
    let s = fails(c.crypto.decrypt(decrypt_req(&aes.id, &[0u8; 40], b""))).await;
    assert_status(&s, Code::FailedPrecondition, KEY_INVALID_STATE);
    let s = fails(c.crypto.generate_data_key(data_key_req(&aes.id, 32, b""))).await;
    assert_status(&s, Code::FailedPrecondition, KEY_INVALID_STATE);
    let s = fails(c.crypto.sign(sign_req(&rsa.id, MSG, PSS))).await;
    assert_status(&s, Code::FailedPrecondition, KEY_INVALID_STATE);
    let s = fails(c.crypto.get_public_key(pub_req(&rsa.id))).await;
    assert_status(&s, Code::FailedPrecondition, KEY_INVALID_STATE);
    let s = fails(c.crypto.generate_mac(mac_req(&hmac.id, MSG))).await;
    assert_status(&s, Code::FailedPrecondition, KEY_INVALID_STATE);

    // Activation makes it usable.
    ok(c.keys.activate_key(key_id(&aes.id))).await;
    let ct = encrypt(&mut c, &aes.id, MSG, b"").await;
    assert_eq!(decrypt(&mut c, &aes.id, &ct, b"").await, MSG);
}

#[tokio::test]
async fn unknown_keys_are_not_found() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let id = unknown_id();
    let checks = [
        c.crypto.encrypt(encrypt_req(&id, MSG, b"")).await.map(drop),
        c.crypto
            .decrypt(decrypt_req(&id, &[0u8; 40], b""))
            .await
            .map(drop),
        c.crypto
            .generate_data_key(data_key_req(&id, 32, b""))
            .await
            .map(drop),
        c.crypto.sign(sign_req(&id, MSG, PSS)).await.map(drop),
        c.crypto
            .verify(verify_req(&id, MSG, &[0u8; 64], PSS))
            .await
            .map(drop),
        c.crypto.generate_mac(mac_req(&id, MSG)).await.map(drop),
        c.crypto
            .verify_mac(verify_mac_req(&id, MSG, &[0u8; 32]))
            .await
            .map(drop),
        c.crypto.get_public_key(pub_req(&id)).await.map(drop),
    ];
    for r in checks {
        let s = r.expect_err("an unknown key was usable");
        assert_status(&s, Code::NotFound, NOT_FOUND);
    }
}
