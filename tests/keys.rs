//! KeyService against the real daemon: creation of every supported algorithm and size, the
//! key lifecycle of DESIGN §3 (every allowed transition and every rejected one, with
//! FAILED_PRECONDITION / KMSInvalidStateException and the store unchanged), install and
//! uninstall of targets, target rules, validation of names, sizes, enums and tags, update
//! semantics, filters and paging, NOT_FOUND for unknown ids.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use keyorch::client::Clients;
use keyorch::proto::v1::{
    ConnectKeystoreRequest, DisconnectKeystoreRequest, GetKeyRequest, InstallKeyRequest,
    InstanceState, Key, KeyAlgorithm, KeyState, ListKeysRequest, PageRequest, UpdateKeyRequest,
};
use tonic::{Code, Status};

/// Every (algorithm, size) the daemon must support.
const SUPPORTED: &[(KeyAlgorithm, u32)] = &[
    (KeyAlgorithm::Aes, 128),
    (KeyAlgorithm::Aes, 192),
    (KeyAlgorithm::Aes, 256),
    (KeyAlgorithm::Rsa, 2048),
    (KeyAlgorithm::Rsa, 3072),
    (KeyAlgorithm::Rsa, 4096),
    (KeyAlgorithm::Ec, 256),
    (KeyAlgorithm::Ec, 384),
    (KeyAlgorithm::HmacSha256, 256),
];

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit())
}

async fn disconnect(c: &mut Clients, id: &str) {
    ok(c.keystores.disconnect_keystore(DisconnectKeystoreRequest {
        id: id.into(),
        uninstall_keys: false,
        force: false,
    }))
    .await;
}

#[tokio::test]
async fn create_returns_a_pre_active_key_with_its_metadata() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let mut req = key_req(
        &fx.vault.id,
        "orders-dek",
        KeyAlgorithm::Aes,
        256,
        &[&fx.keystore.id],
        false,
    );
    req.description = "encrypts order rows".into();
    req.tags = HashMap::from([
        ("env".to_string(), "prod".to_string()),
        ("team".to_string(), "billing".to_string()),
    ]);
    let key = ok(c.keys.create_key(req.clone())).await;

    assert!(!key.id.is_empty());
    assert_eq!(key.vault_id, fx.vault.id);
    assert_eq!(key.name, "orders-dek");
    assert_eq!(key.description, "encrypts order rows");
    assert_eq!(key.algorithm, KeyAlgorithm::Aes as i32);
    assert_eq!(key.key_size_bits, 256);
    assert_key_state(&key, KeyState::PreActive);
    assert_eq!(key.target_keystore_ids, vec![fx.keystore.id.clone()]);
    assert_eq!(key.tags, req.tags);
    assert!(key.created_at.is_some());
    assert!(key.activated_at.is_none());
    assert_eq!(
        key.key_check_value.len(),
        16,
        "check value is not 8 bytes of hex: {key:?}"
    );
    assert!(is_hex(&key.key_check_value), "{key:?}");
    assert!(
        key.instances
            .iter()
            .all(|i| i.state != InstanceState::Installed as i32),
        "a PRE_ACTIVE key is installed somewhere: {key:?}"
    );

    assert_eq!(get_key(&mut c, &key.id).await, key);
}

#[tokio::test]
async fn every_supported_algorithm_and_size_is_created() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let mut check_values = HashSet::new();
    for (i, (alg, bits)) in SUPPORTED.iter().enumerate() {
        let key = fx
            .key(&mut c, &format!("k{i}-{alg:?}-{bits}"), *alg, *bits, false)
            .await;
        assert_eq!(key.algorithm, *alg as i32, "{key:?}");
        assert_eq!(key.key_size_bits, *bits, "{key:?}");
        assert_key_state(&key, KeyState::PreActive);
        assert_eq!(key.key_check_value.len(), 16, "{key:?}");
        assert!(is_hex(&key.key_check_value), "{key:?}");
        assert!(
            check_values.insert(key.key_check_value.to_lowercase()),
            "two keys share a check value: {key:?}"
        );
    }
    assert_eq!(snapshot(&c).await.keys.len(), SUPPORTED.len());
}

#[tokio::test]
async fn create_with_activate_installs_into_every_target() {
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
    assert_key_state(&key, KeyState::Active);
    assert!(key.activated_at.is_some());
    for ks in [&fx.keystore.id, &ks2.id] {
        assert_eq!(
            instance_state(&key, ks),
            Some(InstanceState::Installed),
            "{key:?}"
        );
    }
    let remote: HashSet<_> = key.instances.iter().map(|i| i.remote_ref.clone()).collect();
    assert!(
        remote.iter().all(|r| !r.is_empty()),
        "installed instance without a remote reference: {key:?}"
    );
}

#[tokio::test]
async fn lifecycle_pre_active_active_deactivated_destroyed_deleted() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let ks = fx.keystore.id.clone();
    let key = fx.key(&mut c, "k", KeyAlgorithm::Aes, 256, false).await;

    let k = ok(c.keys.activate_key(key_id(&key.id))).await;
    assert_key_state(&k, KeyState::Active);
    assert!(k.activated_at.is_some());
    assert_eq!(instance_state(&k, &ks), Some(InstanceState::Installed));
    assert_eq!(get_key(&mut c, &key.id).await, k);

    let k = ok(c.keys.deactivate_key(key_id(&key.id))).await;
    assert_key_state(&k, KeyState::Deactivated);
    assert!(k.deactivated_at.is_some());
    assert_eq!(instance_state(&k, &ks), Some(InstanceState::NotInstalled));

    // Reactivation from DEACTIVATED.
    let k = ok(c.keys.activate_key(key_id(&key.id))).await;
    assert_key_state(&k, KeyState::Active);
    assert_eq!(instance_state(&k, &ks), Some(InstanceState::Installed));
    assert_eq!(k.key_check_value, key.key_check_value, "material changed");

    ok(c.keys.deactivate_key(key_id(&key.id))).await;
    let k = ok(c.keys.destroy_key(key_id(&key.id))).await;
    assert_key_state(&k, KeyState::Destroyed);
    assert!(k.destroyed_at.is_some());
    assert_ne!(instance_state(&k, &ks), Some(InstanceState::Installed));
    // The record stays until DeleteKey.
    assert_key_state(&get_key(&mut c, &key.id).await, KeyState::Destroyed);

    ok(c.keys.delete_key(key_id(&key.id))).await;
    let s = fails(c.keys.get_key(GetKeyRequest { id: key.id.clone() })).await;
    assert_status(&s, Code::NotFound, NOT_FOUND);
    assert!(snapshot(&c).await.keys.is_empty());
}

#[tokio::test]
async fn pre_active_keys_can_be_destroyed_directly() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let key = fx.key(&mut c, "k", KeyAlgorithm::Rsa, 2048, false).await;
    let k = ok(c.keys.destroy_key(key_id(&key.id))).await;
    assert_key_state(&k, KeyState::Destroyed);
    ok(c.keys.delete_key(key_id(&key.id))).await;
}

#[tokio::test]
async fn compromised_keys_end_destroyed_compromised() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;

    let from_active = fx.key(&mut c, "a", KeyAlgorithm::Aes, 256, true).await;
    let k = ok(c.keys.mark_compromised(key_id(&from_active.id))).await;
    assert_key_state(&k, KeyState::Compromised);
    assert!(k.compromised_at.is_some());
    let k = ok(c.keys.destroy_key(key_id(&from_active.id))).await;
    assert_key_state(&k, KeyState::DestroyedCompromised);
    assert!(k.destroyed_at.is_some());
    ok(c.keys.delete_key(key_id(&from_active.id))).await;

    let from_deactivated = fx.key(&mut c, "b", KeyAlgorithm::Ec, 384, true).await;
    ok(c.keys.deactivate_key(key_id(&from_deactivated.id))).await;
    let k = ok(c.keys.mark_compromised(key_id(&from_deactivated.id))).await;
    assert_key_state(&k, KeyState::Compromised);
    assert_key_state(
        &get_key(&mut c, &from_deactivated.id).await,
        KeyState::Compromised,
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Activate,
    Deactivate,
    Destroy,
    MarkCompromised,
    Delete,
    Install,
    Uninstall,
}

const OPS: [Op; 7] = [
    Op::Activate,
    Op::Deactivate,
    Op::Destroy,
    Op::MarkCompromised,
    Op::Delete,
    Op::Install,
    Op::Uninstall,
];

async fn apply(
    c: &mut Clients,
    op: Op,
    key: &str,
    other_ks: &str,
    own_ks: &str,
) -> Result<(), Status> {
    let id = key_id(key);
    match op {
        Op::Activate => c.keys.activate_key(id).await.map(drop),
        Op::Deactivate => c.keys.deactivate_key(id).await.map(drop),
        Op::Destroy => c.keys.destroy_key(id).await.map(drop),
        Op::MarkCompromised => c.keys.mark_compromised(id).await.map(drop),
        Op::Delete => c.keys.delete_key(id).await.map(drop),
        Op::Install => c
            .keys
            .install_key(InstallKeyRequest {
                id: key.into(),
                keystore_id: other_ks.into(),
            })
            .await
            .map(drop),
        Op::Uninstall => c
            .keys
            .uninstall_key(InstallKeyRequest {
                id: key.into(),
                keystore_id: own_ks.into(),
            })
            .await
            .map(drop),
    }
}

/// Operations allowed from each state (DESIGN §3). For ACTIVE keys Install/Uninstall are
/// allowed by state and tested separately.
fn allowed(state: KeyState) -> &'static [Op] {
    match state {
        KeyState::PreActive => &[Op::Activate, Op::Destroy],
        KeyState::Active => &[
            Op::Deactivate,
            Op::MarkCompromised,
            Op::Install,
            Op::Uninstall,
        ],
        KeyState::Deactivated => &[Op::Activate, Op::Destroy, Op::MarkCompromised],
        KeyState::Compromised => &[Op::Destroy],
        KeyState::Destroyed | KeyState::DestroyedCompromised => &[Op::Delete],
        KeyState::Unspecified => &[],
    }
}

async fn key_in_state(c: &mut Clients, fx: &Fixture, name: &str, state: KeyState) -> Key {
    let key = fx.key(c, name, KeyAlgorithm::Aes, 256, false).await;
    let steps: &[Op] = match state {
        KeyState::PreActive => &[],
        KeyState::Active => &[Op::Activate],
        KeyState::Deactivated => &[Op::Activate, Op::Deactivate],
        KeyState::Destroyed => &[Op::Destroy],
        KeyState::Compromised => &[Op::Activate, Op::MarkCompromised],
        KeyState::DestroyedCompromised => &[Op::Activate, Op::MarkCompromised, Op::Destroy],
        KeyState::Unspecified => unreachable!(),
    };
    for op in steps {
        apply(c, *op, &key.id, "", &fx.keystore.id)
            .await
            .unwrap_or_else(|s| panic!("{op:?} towards {state:?}: {}", describe(&s)));
    }
    let key = get_key(c, &key.id).await;
    assert_key_state(&key, state);
    key
}

#[tokio::test]
async fn rejected_transitions_are_failed_precondition_and_change_nothing() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let other = create_keystore(&mut c, &fx.vault.id, "internal-2", true).await;

    let states = [
        KeyState::PreActive,
        KeyState::Active,
        KeyState::Deactivated,
        KeyState::Compromised,
        KeyState::Destroyed,
        KeyState::DestroyedCompromised,
    ];
    let mut keys = Vec::new();
    for (i, state) in states.iter().enumerate() {
        keys.push((
            *state,
            key_in_state(&mut c, &fx, &format!("k{i}"), *state).await,
        ));
    }
    let before = snapshot(&c).await;

    let mut checked = 0;
    for (state, key) in &keys {
        for op in OPS {
            if allowed(*state).contains(&op) {
                continue;
            }
            let s = match apply(&mut c, op, &key.id, &other.id, &fx.keystore.id).await {
                Ok(()) => panic!("{op:?} on a {state:?} key succeeded"),
                Err(s) => s,
            };
            assert_eq!(
                s.code(),
                Code::FailedPrecondition,
                "{op:?} on {state:?}: {}",
                describe(&s)
            );
            assert_status(&s, Code::FailedPrecondition, KEY_INVALID_STATE);
            assert_unchanged(
                &before,
                &snapshot(&c).await,
                &format!("{op:?} on a {state:?} key"),
            );
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} rejected transitions checked");
}

#[tokio::test]
async fn install_and_uninstall_add_and_remove_one_target() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let ks1 = fx.keystore.id.clone();
    let ks2 = create_keystore(&mut c, &fx.vault.id, "internal-2", true)
        .await
        .id;
    let ks_down = create_keystore(&mut c, &fx.vault.id, "internal-down", false)
        .await
        .id;
    let v2 = create_vault(&mut c, "vault-2").await;
    let ks_foreign = create_keystore(&mut c, &v2.id, "foreign", true).await.id;
    let key = fx.key(&mut c, "k", KeyAlgorithm::Aes, 256, true).await;

    let k = ok(c.keys.install_key(InstallKeyRequest {
        id: key.id.clone(),
        keystore_id: ks2.clone(),
    }))
    .await;
    assert_key_state(&k, KeyState::Active);
    assert!(k.target_keystore_ids.contains(&ks2), "{k:?}");
    assert!(k.target_keystore_ids.contains(&ks1), "{k:?}");
    assert_eq!(instance_state(&k, &ks2), Some(InstanceState::Installed));
    assert_eq!(instance_state(&k, &ks1), Some(InstanceState::Installed));

    let before = snapshot(&c).await;
    let s = fails(c.keys.install_key(InstallKeyRequest {
        id: key.id.clone(),
        keystore_id: ks_down.clone(),
    }))
    .await;
    assert_status(&s, Code::FailedPrecondition, KEYSTORE_INVALID_STATE);
    assert_unchanged(
        &before,
        &snapshot(&c).await,
        "install into a disconnected keystore",
    );

    let s = fails(c.keys.install_key(InstallKeyRequest {
        id: key.id.clone(),
        keystore_id: ks_foreign.clone(),
    }))
    .await;
    assert_eq!(s.code(), Code::InvalidArgument, "{}", describe(&s));
    assert_unchanged(&before, &snapshot(&c).await, "install into another vault");

    let s = fails(c.keys.install_key(InstallKeyRequest {
        id: key.id.clone(),
        keystore_id: unknown_id(),
    }))
    .await;
    assert!(
        matches!(s.code(), Code::NotFound | Code::InvalidArgument),
        "{}",
        describe(&s)
    );
    assert_unchanged(
        &before,
        &snapshot(&c).await,
        "install into an unknown keystore",
    );

    let k = ok(c.keys.uninstall_key(InstallKeyRequest {
        id: key.id.clone(),
        keystore_id: ks2.clone(),
    }))
    .await;
    assert_key_state(&k, KeyState::Active);
    assert_eq!(k.target_keystore_ids, vec![ks1.clone()]);
    assert_ne!(instance_state(&k, &ks2), Some(InstanceState::Installed));
    assert_eq!(instance_state(&k, &ks1), Some(InstanceState::Installed));

    // The last installed target of an ACTIVE key cannot be uninstalled.
    let before = snapshot(&c).await;
    let s = fails(c.keys.uninstall_key(InstallKeyRequest {
        id: key.id.clone(),
        keystore_id: ks1.clone(),
    }))
    .await;
    assert_status(&s, Code::FailedPrecondition, KEY_INVALID_STATE);
    assert_unchanged(&before, &snapshot(&c).await, "uninstall the last target");

    // Re-installing a removed target works.
    let k = ok(c.keys.install_key(InstallKeyRequest {
        id: key.id.clone(),
        keystore_id: ks2.clone(),
    }))
    .await;
    assert_eq!(instance_state(&k, &ks2), Some(InstanceState::Installed));
}

#[tokio::test]
async fn activation_needs_every_target_connected() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let ks1 = fx.keystore.id.clone();
    let ks2 = create_keystore(&mut c, &fx.vault.id, "internal-2", true)
        .await
        .id;
    let key = create_key(
        &mut c,
        &fx.vault.id,
        "k",
        KeyAlgorithm::Aes,
        256,
        &[&ks1, &ks2],
        false,
    )
    .await;
    disconnect(&mut c, &ks2).await;

    let before = snapshot(&c).await;
    let s = fails(c.keys.activate_key(key_id(&key.id))).await;
    assert_status(&s, Code::FailedPrecondition, KEYSTORE_INVALID_STATE);
    assert_unchanged(&before, &snapshot(&c).await, "activate with a target down");
    assert_key_state(&get_key(&mut c, &key.id).await, KeyState::PreActive);

    ok(c.keystores
        .connect_keystore(ConnectKeystoreRequest { id: ks2.clone() }))
    .await;
    let k = ok(c.keys.activate_key(key_id(&key.id))).await;
    assert_key_state(&k, KeyState::Active);
    assert_eq!(instance_state(&k, &ks1), Some(InstanceState::Installed));
    assert_eq!(instance_state(&k, &ks2), Some(InstanceState::Installed));
}

#[tokio::test]
async fn wrong_sizes_and_unknown_algorithms_are_rejected() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let before = snapshot(&c).await;

    let wrong_sizes: &[(KeyAlgorithm, u32)] = &[
        (KeyAlgorithm::Aes, 0),
        (KeyAlgorithm::Aes, 64),
        (KeyAlgorithm::Aes, 512),
        (KeyAlgorithm::Aes, 2048),
        (KeyAlgorithm::Rsa, 0),
        (KeyAlgorithm::Rsa, 1024),
        (KeyAlgorithm::Rsa, 2047),
        (KeyAlgorithm::Rsa, 8192),
        (KeyAlgorithm::Rsa, 256),
        (KeyAlgorithm::Ec, 0),
        (KeyAlgorithm::Ec, 224),
        (KeyAlgorithm::Ec, 521),
        (KeyAlgorithm::Ec, 2048),
        (KeyAlgorithm::HmacSha256, 0),
        (KeyAlgorithm::HmacSha256, 128),
        (KeyAlgorithm::HmacSha256, 512),
    ];
    for (alg, bits) in wrong_sizes {
        let s = fails(c.keys.create_key(key_req(
            &fx.vault.id,
            "sized",
            *alg,
            *bits,
            &[&fx.keystore.id],
            true,
        )))
        .await;
        assert_invalid(&s, "key_size_bits");
        assert_unchanged(
            &before,
            &snapshot(&c).await,
            &format!("{alg:?} with {bits} bits"),
        );
    }

    for alg in [KeyAlgorithm::Unspecified as i32, 5, 99, -1] {
        let mut req = key_req(
            &fx.vault.id,
            "alg",
            KeyAlgorithm::Aes,
            256,
            &[&fx.keystore.id],
            false,
        );
        req.algorithm = alg;
        let s = fails(c.keys.create_key(req)).await;
        assert_invalid(&s, "algorithm");
    }
    assert_unchanged(&before, &snapshot(&c).await, "unknown algorithms");
}

#[tokio::test]
async fn bad_names_descriptions_and_tags_are_rejected() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let key = fx
        .key(&mut c, "existing", KeyAlgorithm::Aes, 256, false)
        .await;
    let before = snapshot(&c).await;
    let base = key_req(
        &fx.vault.id,
        "fine",
        KeyAlgorithm::Aes,
        256,
        &[&fx.keystore.id],
        false,
    );

    for name in bad_names() {
        let mut req = base.clone();
        req.name = name.clone();
        let s = fails(c.keys.create_key(req)).await;
        assert_invalid(&s, "name");
        let s = fails(c.keys.update_key(UpdateKeyRequest {
            id: key.id.clone(),
            name: Some(name.clone()),
            ..Default::default()
        }))
        .await;
        assert_invalid(&s, "name");
    }

    let mut req = base.clone();
    req.description = long_description();
    let s = fails(c.keys.create_key(req)).await;
    assert_invalid(&s, "description");
    let s = fails(c.keys.update_key(UpdateKeyRequest {
        id: key.id.clone(),
        description: Some(long_description()),
        ..Default::default()
    }))
    .await;
    assert_invalid(&s, "description");

    let bad_tags: Vec<HashMap<String, String>> = vec![
        (0..51)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect(),
        HashMap::from([(String::new(), "v".to_string())]),
        HashMap::from([("k".repeat(129), "v".to_string())]),
        HashMap::from([("k".to_string(), "v".repeat(257))]),
    ];
    for tags in bad_tags {
        let mut req = base.clone();
        req.tags = tags.clone();
        let s = fails(c.keys.create_key(req)).await;
        assert_invalid_like(&s, "tags");
        let s = fails(c.keys.update_key(UpdateKeyRequest {
            id: key.id.clone(),
            replace_tags: true,
            tags,
            ..Default::default()
        }))
        .await;
        assert_invalid_like(&s, "tags");
    }
    assert_unchanged(
        &before,
        &snapshot(&c).await,
        "bad names, descriptions, tags",
    );

    // The edges are accepted.
    let mut req = base.clone();
    req.description = "d".repeat(200);
    req.tags = (0..50)
        .map(|i| (format!("{i:0>128}"), "v".repeat(256)))
        .collect();
    let k = ok(c.keys.create_key(req)).await;
    assert_eq!(k.tags.len(), 50);
}

#[tokio::test]
async fn targets_must_be_connected_keystores_of_the_keys_vault() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let down = create_keystore(&mut c, &fx.vault.id, "down", false).await;
    let v2 = create_vault(&mut c, "vault-2").await;
    let foreign = create_keystore(&mut c, &v2.id, "foreign", true).await;
    let before = snapshot(&c).await;
    let req = |targets: &[&str]| key_req(&fx.vault.id, "k", KeyAlgorithm::Aes, 256, targets, false);

    let s = fails(c.keys.create_key(req(&[]))).await;
    assert_invalid(&s, "target_keystore_ids");
    let s = fails(c.keys.create_key(req(&[&foreign.id]))).await;
    assert_invalid(&s, "target_keystore_ids");
    let s = fails(c.keys.create_key(req(&[&fx.keystore.id, &foreign.id]))).await;
    assert_invalid(&s, "target_keystore_ids");
    let s = fails(c.keys.create_key(req(&[&down.id]))).await;
    assert_status(&s, Code::FailedPrecondition, KEYSTORE_INVALID_STATE);
    let s = fails(c.keys.create_key(req(&[&fx.keystore.id, &down.id]))).await;
    assert_status(&s, Code::FailedPrecondition, KEYSTORE_INVALID_STATE);
    let unknown = unknown_id();
    let s = fails(c.keys.create_key(req(&[&unknown]))).await;
    assert!(
        matches!(s.code(), Code::InvalidArgument | Code::NotFound),
        "{}",
        describe(&s)
    );

    let mut in_unknown_vault = req(&[&fx.keystore.id]);
    in_unknown_vault.vault_id = unknown_id();
    let s = fails(c.keys.create_key(in_unknown_vault)).await;
    assert_status(&s, Code::NotFound, NOT_FOUND);
    assert_unchanged(&before, &snapshot(&c).await, "bad targets");
}

#[tokio::test]
async fn key_names_are_unique_per_vault() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    fx.key(&mut c, "same", KeyAlgorithm::Aes, 256, false).await;
    let other = fx.key(&mut c, "other", KeyAlgorithm::Aes, 256, false).await;
    let before = snapshot(&c).await;

    let s = fails(c.keys.create_key(key_req(
        &fx.vault.id,
        "same",
        KeyAlgorithm::Ec,
        256,
        &[&fx.keystore.id],
        false,
    )))
    .await;
    assert_status(&s, Code::AlreadyExists, ALREADY_EXISTS);
    let s = fails(c.keys.update_key(UpdateKeyRequest {
        id: other.id.clone(),
        name: Some("same".into()),
        ..Default::default()
    }))
    .await;
    assert_status(&s, Code::AlreadyExists, ALREADY_EXISTS);
    assert_unchanged(&before, &snapshot(&c).await, "duplicate key names");

    let v2 = create_vault(&mut c, "vault-2").await;
    let ks2 = create_keystore(&mut c, &v2.id, "ks", true).await;
    let k = create_key(
        &mut c,
        &v2.id,
        "same",
        KeyAlgorithm::Aes,
        256,
        &[&ks2.id],
        false,
    )
    .await;
    assert_eq!(k.vault_id, v2.id);
}

#[tokio::test]
async fn update_changes_name_description_and_tags() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let mut req = key_req(
        &fx.vault.id,
        "k",
        KeyAlgorithm::HmacSha256,
        256,
        &[&fx.keystore.id],
        true,
    );
    req.description = "first".into();
    req.tags = HashMap::from([
        ("env".to_string(), "prod".to_string()),
        ("team".to_string(), "a".to_string()),
    ]);
    let key = ok(c.keys.create_key(req)).await;

    let k = ok(c.keys.update_key(UpdateKeyRequest {
        id: key.id.clone(),
        name: Some("renamed".into()),
        ..Default::default()
    }))
    .await;
    assert_eq!(k.name, "renamed");
    assert_eq!(k.description, "first");
    assert_eq!(k.tags, key.tags);
    assert_key_state(&k, KeyState::Active);
    assert!(k.updated_at.is_some());

    // Without replace_tags, tags are merged in.
    let k = ok(c.keys.update_key(UpdateKeyRequest {
        id: key.id.clone(),
        description: Some("second".into()),
        tags: HashMap::from([
            ("team".to_string(), "b".to_string()),
            ("cost".to_string(), "42".to_string()),
        ]),
        ..Default::default()
    }))
    .await;
    assert_eq!(k.name, "renamed");
    assert_eq!(k.description, "second");
    assert_eq!(
        k.tags,
        HashMap::from([
            ("env".to_string(), "prod".to_string()),
            ("team".to_string(), "b".to_string()),
            ("cost".to_string(), "42".to_string()),
        ])
    );

    let k = ok(c.keys.update_key(UpdateKeyRequest {
        id: key.id.clone(),
        replace_tags: true,
        tags: HashMap::from([("only".to_string(), "one".to_string())]),
        ..Default::default()
    }))
    .await;
    assert_eq!(
        k.tags,
        HashMap::from([("only".to_string(), "one".to_string())])
    );
    let k = ok(c.keys.update_key(UpdateKeyRequest {
        id: key.id.clone(),
        replace_tags: true,
        ..Default::default()
    }))
    .await;
    assert!(k.tags.is_empty(), "{k:?}");
    assert_eq!(get_key(&mut c, &key.id).await, k);
    assert_eq!(k.key_check_value, key.key_check_value);
}

#[tokio::test]
async fn list_filters_and_pages() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let ks2 = create_keystore(&mut c, &fx.vault.id, "internal-2", true).await;
    let aes = fx.key(&mut c, "aes", KeyAlgorithm::Aes, 256, true).await;
    let rsa = fx.key(&mut c, "rsa", KeyAlgorithm::Rsa, 2048, false).await;
    let ec = fx.key(&mut c, "ec", KeyAlgorithm::Ec, 256, false).await;
    let hmac = create_key(
        &mut c,
        &fx.vault.id,
        "hmac",
        KeyAlgorithm::HmacSha256,
        256,
        &[&ks2.id],
        false,
    )
    .await;
    let v2 = create_vault(&mut c, "vault-2").await;
    let ks3 = create_keystore(&mut c, &v2.id, "ks", true).await;
    let elsewhere = create_key(
        &mut c,
        &v2.id,
        "aes",
        KeyAlgorithm::Aes,
        128,
        &[&ks3.id],
        true,
    )
    .await;

    let ids = |keys: Vec<Key>| keys.into_iter().map(|k| k.id).collect::<HashSet<_>>();
    let set = |keys: &[&Key]| keys.iter().map(|k| k.id.clone()).collect::<HashSet<_>>();

    let all = list_all_keys(&mut c, ListKeysRequest::default(), 1).await;
    assert_eq!(all.len(), 5, "paged by 1 saw duplicates or gaps: {all:?}");
    assert_eq!(ids(all), set(&[&aes, &rsa, &ec, &hmac, &elsewhere]));

    let f = ListKeysRequest {
        vault_id: fx.vault.id.clone(),
        ..Default::default()
    };
    assert_eq!(
        ids(list_all_keys(&mut c, f, 2).await),
        set(&[&aes, &rsa, &ec, &hmac])
    );
    let f = ListKeysRequest {
        state: KeyState::Active as i32,
        ..Default::default()
    };
    assert_eq!(
        ids(list_all_keys(&mut c, f, 0).await),
        set(&[&aes, &elsewhere])
    );
    let f = ListKeysRequest {
        algorithm: KeyAlgorithm::Rsa as i32,
        ..Default::default()
    };
    assert_eq!(ids(list_all_keys(&mut c, f, 0).await), set(&[&rsa]));
    let f = ListKeysRequest {
        keystore_id: ks2.id.clone(),
        ..Default::default()
    };
    assert_eq!(ids(list_all_keys(&mut c, f, 0).await), set(&[&hmac]));
    let f = ListKeysRequest {
        name: "aes".into(),
        ..Default::default()
    };
    assert_eq!(
        ids(list_all_keys(&mut c, f, 0).await),
        set(&[&aes, &elsewhere])
    );
    let f = ListKeysRequest {
        vault_id: fx.vault.id.clone(),
        algorithm: KeyAlgorithm::Aes as i32,
        ..Default::default()
    };
    assert_eq!(ids(list_all_keys(&mut c, f, 0).await), set(&[&aes]));

    let page = ok(c.keys.list_keys(ListKeysRequest {
        page: Some(PageRequest {
            page_size: 2,
            page_token: String::new(),
        }),
        ..Default::default()
    }))
    .await;
    assert_eq!(page.keys.len(), 2);
    assert!(!page.next_page_token.is_empty());

    let s = fails(c.keys.list_keys(ListKeysRequest {
        page: Some(PageRequest {
            page_size: 1001,
            page_token: String::new(),
        }),
        ..Default::default()
    }))
    .await;
    assert_invalid_like(&s, "page_size");
    let s = fails(c.keys.list_keys(ListKeysRequest {
        page: Some(PageRequest {
            page_size: 2,
            page_token: "garbage".into(),
        }),
        ..Default::default()
    }))
    .await;
    assert_invalid_like(&s, "page_token");
}

#[tokio::test]
async fn unknown_key_ids_are_not_found() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let gone = fx.key(&mut c, "gone", KeyAlgorithm::Aes, 256, false).await;
    ok(c.keys.destroy_key(key_id(&gone.id))).await;
    ok(c.keys.delete_key(key_id(&gone.id))).await;
    let before = snapshot(&c).await;

    for id in [gone.id.clone(), unknown_id()] {
        let s = fails(c.keys.get_key(GetKeyRequest { id: id.clone() })).await;
        assert_status(&s, Code::NotFound, NOT_FOUND);
        let s = fails(c.keys.update_key(UpdateKeyRequest {
            id: id.clone(),
            name: Some("x".into()),
            ..Default::default()
        }))
        .await;
        assert_status(&s, Code::NotFound, NOT_FOUND);
        for op in OPS {
            let s = match apply(&mut c, op, &id, &fx.keystore.id, &fx.keystore.id).await {
                Ok(()) => panic!("{op:?} on an unknown key succeeded"),
                Err(s) => s,
            };
            assert_status(&s, Code::NotFound, NOT_FOUND);
        }
    }
    assert_unchanged(&before, &snapshot(&c).await, "unknown key ids");
}
