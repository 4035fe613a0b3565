//! Secrets stay secret, checked with tools nobody here wrote: OpenSC's `pkcs11-tool`, logged
//! into the daemon's own token, shows exactly one secret key (the master KEK: sensitive,
//! never extractable, wrap/unwrap only) and no extractable private or secret key, even
//! after keys of every family were created and used; the token PINs appear in no file of
//! the state folder other than their own 0600 file, in no log line at trace level, and
//! not in the daemon's command line or environment.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use keyorch::client::Clients;
use keyorch::proto::v1::{
    GenerateDataKeyRequest, GenerateMacRequest, GetPublicKeyRequest, KeyAlgorithm, SignRequest,
    SigningAlgorithm,
};

/// One object printed by `pkcs11-tool --list-objects`.
#[derive(Debug)]
struct P11Object {
    /// "Secret Key", "Private Key", "Public Key", …
    class: String,
    header: String,
    label: String,
    usage: Vec<String>,
    access: Vec<String>,
}

impl P11Object {
    fn has(&self, flag: &str) -> bool {
        self.access.iter().any(|a| a == flag)
    }

    /// pkcs11-tool prints "extractable" when CKA_EXTRACTABLE is true and
    /// "never extractable" when CKA_NEVER_EXTRACTABLE is true.
    fn extractable(&self) -> bool {
        self.has("extractable")
    }
}

fn comma_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect()
}

/// Parses pkcs11-tool 0.23's listing: an unindented "<Class> Object; …" header, then
/// indented `label:`, `Usage:`, `Access:` lines.
fn parse_objects(listing: &str) -> Vec<P11Object> {
    let mut out: Vec<P11Object> = Vec::new();
    for line in listing.lines() {
        if line.trim().is_empty() || line.starts_with("warning:") {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            let class = line
                .split_once(" Object")
                .or_else(|| line.split_once(" object"))
                .map(|(c, _)| c.trim().to_string())
                .unwrap_or_else(|| line.trim().to_string());
            out.push(P11Object {
                class,
                header: line.to_string(),
                label: String::new(),
                usage: Vec::new(),
                access: Vec::new(),
            });
            continue;
        }
        let Some(obj) = out.last_mut() else { continue };
        let t = line.trim();
        if let Some(v) = t.strip_prefix("label:") {
            obj.label = v.trim().to_string();
        } else if let Some(v) = t.strip_prefix("Usage:") {
            obj.usage = comma_list(v);
        } else if let Some(v) = t.strip_prefix("Access:") {
            obj.access = comma_list(v);
        }
    }
    out
}

/// Lists the dev token's objects as the token user, with pkcs11-tool.
fn list_token_objects(d: &TestDaemon) -> (String, Vec<P11Object>) {
    let pin = d.user_pin();
    let listing = run_ok(
        Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", d.softhsm_conf())
            .args(["--module", SOFTHSM_MODULE])
            .args(["--token-label", DEV_TOKEN_LABEL])
            .args(["--login", "--pin", &pin])
            .arg("--list-objects"),
    );
    let objects = parse_objects(&listing);
    (listing, objects)
}

/// Creates and uses a key of every family, so that the daemon has unwrapped each one.
async fn exercise(c: &mut Clients, fx: &Fixture, suffix: &str) {
    let aes = fx
        .key(c, &format!("aes{suffix}"), KeyAlgorithm::Aes, 256, true)
        .await;
    let rsa = fx
        .key(c, &format!("rsa{suffix}"), KeyAlgorithm::Rsa, 2048, true)
        .await;
    let ec = fx
        .key(c, &format!("ec{suffix}"), KeyAlgorithm::Ec, 256, true)
        .await;
    let hmac = fx
        .key(
            c,
            &format!("hmac{suffix}"),
            KeyAlgorithm::HmacSha256,
            256,
            true,
        )
        .await;
    let ct = encrypt(c, &aes.id, b"payload", b"aad").await;
    assert_eq!(decrypt(c, &aes.id, &ct, b"aad").await, b"payload");
    ok(c.crypto.generate_data_key(GenerateDataKeyRequest {
        key_id: aes.id.clone(),
        number_of_bytes: 32,
        aad: Vec::new(),
    }))
    .await;
    for (key, alg) in [
        (&rsa, SigningAlgorithm::RsassaPssSha256),
        (&ec, SigningAlgorithm::EcdsaSha256),
    ] {
        ok(c.crypto.sign(SignRequest {
            key_id: key.id.clone(),
            message: b"m".to_vec(),
            algorithm: alg as i32,
        }))
        .await;
        ok(c.crypto.get_public_key(GetPublicKeyRequest {
            key_id: key.id.clone(),
        }))
        .await;
    }
    ok(c.crypto.generate_mac(GenerateMacRequest {
        key_id: hmac.id.clone(),
        message: b"m".to_vec(),
    }))
    .await;
    // And a rejected request, so that error paths log too.
    let _ = c.vaults.create_vault(vault_req("bad/name")).await;
}

#[track_caller]
fn assert_only_the_kek(listing: &str, objects: &[P11Object]) {
    assert!(
        !objects.is_empty(),
        "pkcs11-tool listed nothing (parser or login problem):\n{listing}"
    );
    let secrets: Vec<&P11Object> = objects.iter().filter(|o| o.class == "Secret Key").collect();
    assert_eq!(
        secrets.len(),
        1,
        "the token must hold exactly one secret key (the master KEK):\n{listing}"
    );
    let kek = secrets[0];
    assert_eq!(kek.label, "keyorch-master-kek", "{kek:?}");
    assert!(
        kek.header.contains("AES length 32"),
        "KEK is not AES-256: {kek:?}"
    );
    assert!(kek.has("sensitive"), "KEK is not sensitive: {kek:?}");
    assert!(!kek.extractable(), "KEK is extractable: {kek:?}");
    assert!(
        kek.has("never extractable"),
        "KEK was extractable at some point: {kek:?}"
    );
    assert!(
        kek.usage.iter().any(|u| u == "wrap") && kek.usage.iter().any(|u| u == "unwrap"),
        "KEK cannot wrap and unwrap: {kek:?}"
    );
    assert!(
        kek.usage.iter().all(|u| u == "wrap" || u == "unwrap"),
        "KEK is not wrap/unwrap only (DESIGN §4): {kek:?}"
    );

    for o in objects
        .iter()
        .filter(|o| o.class == "Secret Key" || o.class == "Private Key")
    {
        assert!(
            !o.extractable(),
            "extractable key object in the token: {o:?}"
        );
        assert!(
            o.has("sensitive"),
            "non-sensitive key object in the token: {o:?}"
        );
    }
}

#[tokio::test]
async fn the_token_holds_only_a_non_extractable_master_kek() {
    let mut d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    exercise(&mut c, &fx, "").await;

    let (listing, objects) = list_token_objects(&d);
    assert_only_the_kek(&listing, &objects);

    // After a restart (and a kill -9) the same single KEK is found, not a new one.
    d.restart().await;
    let mut c = d.clients();
    exercise(&mut c, &fx, "-2").await;
    d.kill9().await;
    d.restart().await;
    let mut c = d.clients();
    exercise(&mut c, &fx, "-3").await;
    let (listing, objects) = list_token_objects(&d);
    assert_only_the_kek(&listing, &objects);
}

/// Files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    walk_files(dir)
        .into_iter()
        .filter(|p| {
            let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            contains_bytes(&bytes, needle)
        })
        .map(|p| {
            p.strip_prefix(dir)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// The forms in which a PIN could leak: as written, and in upper/lower case.
fn pin_forms(pin: &str) -> Vec<Vec<u8>> {
    let mut forms = vec![
        pin.as_bytes().to_vec(),
        pin.to_uppercase().into_bytes(),
        pin.to_lowercase().into_bytes(),
    ];
    forms.sort();
    forms.dedup();
    forms
}

#[tokio::test]
async fn pins_are_only_in_their_own_files_and_never_logged() {
    let mut d = TestDaemon::start().await;
    let user_pin = d.user_pin();
    let so_pin = d.so_pin();
    assert!(
        user_pin.len() >= 8 && so_pin.len() >= 8,
        "PINs too short for a meaningful search"
    );
    assert_eq!(mode(&d.state_dir().join("user-pin")), 0o600);
    assert_eq!(mode(&d.state_dir().join("so-pin")), 0o600);

    // Not in the daemon's command line or environment.
    for what in ["cmdline", "environ"] {
        let bytes = std::fs::read(format!("/proc/{}/{what}", d.pid())).unwrap_or_default();
        for pin in [&user_pin, &so_pin] {
            assert!(
                !contains_bytes(&bytes, pin.as_bytes()),
                "a PIN is in keyorchd's {what}"
            );
        }
    }

    // A session of operations, a clean restart and a crash restart, all at trace level.
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    exercise(&mut c, &fx, "").await;
    d.restart().await;
    let mut c = d.clients();
    exercise(&mut c, &fx, "-2").await;
    d.kill9().await;
    d.restart().await;
    let mut c = d.clients();
    exercise(&mut c, &fx, "-3").await;
    d.stop().await;

    let logs = d.log_bytes();
    assert!(
        logs.iter().map(Vec::len).sum::<usize>() > 0,
        "the daemon logged nothing at trace level"
    );
    let dir = d.state_dir();
    for (name, pin, own_file) in [
        ("user PIN", &user_pin, "user-pin"),
        ("SO PIN", &so_pin, "so-pin"),
    ] {
        for form in pin_forms(pin) {
            let found = files_containing(&dir, &form);
            assert!(
                found.iter().all(|f| f == own_file),
                "the {name} is in files other than {own_file}: {found:?}"
            );
            for (i, log) in logs.iter().enumerate() {
                assert!(
                    !contains_bytes(log, &form),
                    "the {name} appears in the daemon's log output (file #{i})"
                );
            }
        }
    }
    // The search works: each PIN is found in its own file.
    assert_eq!(
        files_containing(&dir, user_pin.as_bytes()),
        vec!["user-pin"]
    );
    assert_eq!(files_containing(&dir, so_pin.as_bytes()), vec!["so-pin"]);
    // And the PIN files hold nothing else.
    assert_eq!(
        std::fs::read_to_string(dir.join("user-pin"))
            .unwrap()
            .trim(),
        user_pin
    );
}
