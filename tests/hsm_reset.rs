//! Every session of keyorchd's own HSM closed underneath the session pool (issue 16): another
//! context of the same module finalizes the library (`C_Finalize` closes every session of
//! the process and destroys its session objects, the cached unwrapped keys among them) and
//! initializes it again — what a client sees of an HSM that restarted. Its own test binary,
//! because finalizing SoftHSM2 ends the sessions of every test in the process.

mod common;

use cryptoki::context::{CInitializeArgs, CInitializeFlags};
use keyorch::hsm::{pkcs11_context, GeneratedKey, Hsm, HsmConfig, KeyKind, KeyRef, TokenSelector};
use secrecy::SecretString;
use std::path::Path;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "user-pin-4821";
const SO_PIN: &str = "so-pin-9375";

fn key_ref<'a>(key: &'a GeneratedKey) -> KeyRef<'a> {
    KeyRef {
        id: "k",
        kind: KeyKind::Aes256,
        wrapped: &key.wrapped,
        spki_der: None,
    }
}

/// C_Finalize, then C_Initialize, through the process's context of the module.
fn restart_library() {
    let ctx = pkcs11_context(Path::new(MODULE)).unwrap();
    ctx.clone().finalize().unwrap();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
}

fn round_trip(hsm: &Hsm, r: &KeyRef<'_>, text: &[u8]) -> Result<(), String> {
    let blob = hsm.encrypt(r, text, b"aad").map_err(|e| e.to_string())?;
    let plain = hsm.decrypt(r, &blob, b"aad").map_err(|e| e.to_string())?;
    assert_eq!(plain.as_slice(), text);
    Ok(())
}

/// No call fails after the restart: every pooled session and every cached key handle is
/// stale, and the pool notices and replaces them (and logs in again) rather than handing the
/// error to a caller. Ciphertext made before every restart still decrypts, and nothing is
/// reopened by hand. The restarts come between calls: PKCS#11 leaves C_Finalize while other
/// threads are in calls undefined, and SoftHSM2 2.6.1 crashes then (seen: SIGSEGV in
/// C_EncryptInit), so "under load" here is the lost login of tests/hsm.rs.
#[test]
fn the_pool_recovers_when_every_session_is_closed_underneath() {
    let _dir = common::softhsm_tokens("keyorch-hsm-reset-", &["reset"], SO_PIN, PIN);
    let hsm = Hsm::open(HsmConfig::new(
        MODULE,
        TokenSelector::Label("reset".into()),
        SecretString::from(PIN),
    ))
    .unwrap();
    hsm.master_kek(true).unwrap();
    let aes = hsm.generate(KeyKind::Aes256).unwrap();
    let r = key_ref(&aes);
    let before = hsm.encrypt(&r, b"made before", b"").unwrap();

    // Quiet restarts: fill the pool (parallel calls), restart, then call again.
    for round in 0..5 {
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..20 {
                        round_trip(&hsm, &key_ref(&aes), b"warm").unwrap();
                    }
                });
            }
        });
        restart_library();
        let failures: Vec<String> = (0..40)
            .filter_map(|_| round_trip(&hsm, &r, b"after a restart").err())
            .collect();
        assert!(
            failures.is_empty(),
            "round {round}: {} of 40 calls after the restart failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(4)]
        );
    }

    assert_eq!(
        hsm.decrypt(&r, &before, b"").unwrap().as_slice(),
        b"made before"
    );
}
