//! Crash safety (DESIGN §5): whatever keyorchd acknowledged is there after `kill -9` and a
//! restart on the same state folder — vaults, keystores, keys with their states, targets,
//! instances and tags — and ciphertexts, signatures and MACs made before the crash still
//! decrypt and verify. Each kind of mutation is followed by its own kill -9.

mod common;

use std::collections::HashMap;

use common::*;
use keyorch::client::Clients;
use keyorch::proto::v1::{
    ConnectKeystoreRequest, DeleteKeystoreRequest, DeleteVaultRequest, DisconnectKeystoreRequest,
    GenerateMacRequest, GetKeyRequest, GetVaultRequest, InstallKeyRequest, KeyAlgorithm, KeyState,
    SignRequest, SigningAlgorithm, UpdateKeyRequest, UpdateKeystoreRequest, UpdateVaultRequest,
    VerifyMacRequest, VerifyRequest,
};
use tonic::Code;

/// Snapshots, kills the daemon with SIGKILL, restarts it and checks the store is the same.
async fn crash_and_compare(d: &mut TestDaemon, what: &str) -> Clients {
    let before = snapshot(&d.clients()).await;
    d.kill9().await;
    d.restart().await;
    let c = d.clients();
    let after = snapshot(&c).await;
    assert_eq!(
        before, after,
        "state lost or changed by kill -9 after: {what}"
    );
    c
}

#[tokio::test]
async fn acknowledged_state_survives_kill_9() {
    let mut d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let idle = create_keystore(&mut c, &fx.vault.id, "idle", false).await;
    let aes = fx.key(&mut c, "aes", KeyAlgorithm::Aes, 256, true).await;
    let rsa = fx.key(&mut c, "rsa", KeyAlgorithm::Rsa, 2048, true).await;
    let ec = fx.key(&mut c, "ec", KeyAlgorithm::Ec, 384, false).await;
    let mut hmac_req = key_req(
        &fx.vault.id,
        "hmac",
        KeyAlgorithm::HmacSha256,
        256,
        &[&fx.keystore.id],
        true,
    );
    hmac_req.tags = HashMap::from([("owner".to_string(), "payments".to_string())]);
    let hmac = ok(c.keys.create_key(hmac_req)).await;

    let ct = encrypt(&mut c, &aes.id, b"written before the crash", b"aad").await;
    let sig = ok(c.crypto.sign(SignRequest {
        key_id: rsa.id.clone(),
        message: b"signed before the crash".to_vec(),
        algorithm: SigningAlgorithm::RsassaPkcs1V15Sha256 as i32,
    }))
    .await
    .signature;
    let mac = ok(c.crypto.generate_mac(GenerateMacRequest {
        key_id: hmac.id.clone(),
        message: b"maced before the crash".to_vec(),
    }))
    .await
    .mac;

    let mut c = crash_and_compare(&mut d, "setup").await;

    assert_key_state(&get_key(&mut c, &aes.id).await, KeyState::Active);
    assert_key_state(&get_key(&mut c, &ec.id).await, KeyState::PreActive);
    assert_eq!(get_keystore(&mut c, &idle.id).await.name, "idle");
    assert_eq!(
        decrypt(&mut c, &aes.id, &ct, b"aad").await,
        b"written before the crash"
    );
    assert!(
        ok(c.crypto.verify(VerifyRequest {
            key_id: rsa.id.clone(),
            message: b"signed before the crash".to_vec(),
            signature: sig,
            algorithm: SigningAlgorithm::RsassaPkcs1V15Sha256 as i32,
        }))
        .await
        .signature_valid
    );
    assert!(
        ok(c.crypto.verify_mac(VerifyMacRequest {
            key_id: hmac.id.clone(),
            message: b"maced before the crash".to_vec(),
            mac,
        }))
        .await
        .mac_valid
    );
    // And the daemon keeps working after the crash.
    let ct2 = encrypt(&mut c, &aes.id, b"after", b"").await;
    assert_eq!(decrypt(&mut c, &aes.id, &ct2, b"").await, b"after");
    ok(c.keys.activate_key(key_id(&ec.id))).await;
}

#[tokio::test]
async fn every_kind_of_mutation_survives_kill_9() {
    let mut d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let ks2 = create_keystore(&mut c, &fx.vault.id, "internal-2", true).await;
    let spare = create_keystore(&mut c, &fx.vault.id, "spare", false).await;
    let empty_vault = create_vault(&mut c, "empty").await;
    let key = fx.key(&mut c, "main", KeyAlgorithm::Aes, 256, true).await;
    let victim = fx.key(&mut c, "victim", KeyAlgorithm::Aes, 128, true).await;
    let ct = encrypt(&mut c, &key.id, b"data", b"").await;
    let victim_ct = encrypt(&mut c, &victim.id, b"data", b"").await;
    let mut c = crash_and_compare(&mut d, "creation").await;

    let v = ok(c.vaults.update_vault(UpdateVaultRequest {
        id: fx.vault.id.clone(),
        name: Some("renamed vault".into()),
        description: Some("after update".into()),
    }))
    .await;
    assert_eq!(v.name, "renamed vault");
    let mut c = crash_and_compare(&mut d, "UpdateVault").await;
    assert_eq!(get_vault(&mut c, &fx.vault.id).await.name, "renamed vault");

    ok(c.keystores.update_keystore(UpdateKeystoreRequest {
        id: ks2.id.clone(),
        name: Some("second".into()),
        description: None,
        ..Default::default()
    }))
    .await;
    let mut c = crash_and_compare(&mut d, "UpdateKeystore").await;
    assert_eq!(get_keystore(&mut c, &ks2.id).await.name, "second");

    ok(c.keys.update_key(UpdateKeyRequest {
        id: key.id.clone(),
        name: Some("main-renamed".into()),
        description: Some("d".into()),
        replace_tags: true,
        tags: HashMap::from([("k".to_string(), "v".to_string())]),
    }))
    .await;
    let mut c = crash_and_compare(&mut d, "UpdateKey").await;
    let k = get_key(&mut c, &key.id).await;
    assert_eq!(k.name, "main-renamed");
    assert_eq!(k.tags.get("k").map(String::as_str), Some("v"));

    ok(c.keys.install_key(InstallKeyRequest {
        id: key.id.clone(),
        keystore_id: ks2.id.clone(),
    }))
    .await;
    let mut c = crash_and_compare(&mut d, "InstallKey").await;
    assert!(get_key(&mut c, &key.id)
        .await
        .target_keystore_ids
        .contains(&ks2.id));

    ok(c.keys.uninstall_key(InstallKeyRequest {
        id: key.id.clone(),
        keystore_id: ks2.id.clone(),
    }))
    .await;
    let mut c = crash_and_compare(&mut d, "UninstallKey").await;
    assert!(!get_key(&mut c, &key.id)
        .await
        .target_keystore_ids
        .contains(&ks2.id));

    ok(c.keys.deactivate_key(key_id(&key.id))).await;
    let mut c = crash_and_compare(&mut d, "DeactivateKey").await;
    assert_key_state(&get_key(&mut c, &key.id).await, KeyState::Deactivated);
    let s = fails(c.crypto.encrypt(encrypt_req(&key.id, b"x", b""))).await;
    assert_status(&s, tonic::Code::FailedPrecondition, KEY_INVALID_STATE);
    assert_eq!(decrypt(&mut c, &key.id, &ct, b"").await, b"data");

    ok(c.keys.activate_key(key_id(&key.id))).await;
    let mut c = crash_and_compare(&mut d, "ActivateKey").await;
    assert_key_state(&get_key(&mut c, &key.id).await, KeyState::Active);
    assert_eq!(decrypt(&mut c, &key.id, &ct, b"").await, b"data");

    ok(c.keys.mark_compromised(key_id(&victim.id))).await;
    let mut c = crash_and_compare(&mut d, "MarkCompromised").await;
    assert_key_state(&get_key(&mut c, &victim.id).await, KeyState::Compromised);

    ok(c.keys.destroy_key(key_id(&victim.id))).await;
    let mut c = crash_and_compare(&mut d, "DestroyKey").await;
    assert_key_state(
        &get_key(&mut c, &victim.id).await,
        KeyState::DestroyedCompromised,
    );
    let s = fails(c.crypto.decrypt(decrypt_req(&victim.id, &victim_ct, b""))).await;
    assert_status(&s, Code::FailedPrecondition, KEY_INVALID_STATE);

    ok(c.keys.delete_key(key_id(&victim.id))).await;
    let mut c = crash_and_compare(&mut d, "DeleteKey").await;
    let s = fails(c.keys.get_key(GetKeyRequest {
        id: victim.id.clone(),
    }))
    .await;
    assert_status(&s, Code::NotFound, NOT_FOUND);

    ok(c.keystores.disconnect_keystore(DisconnectKeystoreRequest {
        id: fx.keystore.id.clone(),
        uninstall_keys: false,
        force: true,
    }))
    .await;
    let mut c = crash_and_compare(&mut d, "DisconnectKeystore").await;
    let s = fails(c.crypto.encrypt(encrypt_req(&key.id, b"x", b""))).await;
    assert_status(&s, Code::FailedPrecondition, KEYSTORE_INVALID_STATE);

    ok(c.keystores.connect_keystore(ConnectKeystoreRequest {
        id: fx.keystore.id.clone(),
    }))
    .await;
    let mut c = crash_and_compare(&mut d, "ConnectKeystore").await;
    assert_eq!(decrypt(&mut c, &key.id, &ct, b"").await, b"data");

    ok(c.keystores.delete_keystore(DeleteKeystoreRequest {
        id: spare.id.clone(),
    }))
    .await;
    ok(c.vaults.delete_vault(DeleteVaultRequest {
        id: empty_vault.id.clone(),
    }))
    .await;
    let mut c = crash_and_compare(&mut d, "DeleteKeystore and DeleteVault").await;
    let s = fails(c.vaults.get_vault(GetVaultRequest {
        id: empty_vault.id.clone(),
    }))
    .await;
    assert_status(&s, Code::NotFound, NOT_FOUND);
    // Freed names can be reused after the crash.
    create_vault(&mut c, "empty").await;
    create_keystore(&mut c, &fx.vault.id, "spare", false).await;
}

#[tokio::test]
async fn a_burst_of_writes_survives_kill_9() {
    let mut d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let mut ciphertexts = Vec::new();
    for i in 0..10 {
        let k = fx
            .key(&mut c, &format!("burst-{i}"), KeyAlgorithm::Aes, 256, true)
            .await;
        let ct = encrypt(&mut c, &k.id, format!("p{i}").as_bytes(), b"").await;
        ciphertexts.push((k.id, ct, format!("p{i}")));
    }
    let before = snapshot(&c).await;

    // Concurrent creations, then SIGKILL right after the last acknowledgement.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let mut c = d.clients();
        tasks.push(tokio::spawn(async move {
            create_vault(&mut c, &format!("parallel {i}")).await
        }));
    }
    let mut vaults = Vec::new();
    for t in tasks {
        vaults.push(t.await.expect("task"));
    }
    d.kill9().await;
    d.restart().await;
    let mut c = d.clients();

    for v in &vaults {
        assert_eq!(
            &get_vault(&mut c, &v.id).await,
            v,
            "acknowledged vault lost"
        );
    }
    let mut after = snapshot(&c).await;
    after
        .vaults
        .retain(|v| !vaults.iter().any(|n| n.id == v.id));
    assert_eq!(after, before, "state lost or changed by kill -9");
    for (id, ct, pt) in ciphertexts {
        assert_eq!(decrypt(&mut c, &id, &ct, b"").await, pt.as_bytes());
    }
}
