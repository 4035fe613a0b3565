//! KeystoreService against the real daemon: create/get/describe/update/delete of internal
//! keystores, the connection state machine of DESIGN §2 (connect, disconnect, the refusal
//! to strand ACTIVE keys, `force` and `uninstall_keys`, instances UNAVAILABLE while
//! disconnected), delete rules, validation (store unchanged), filters and paging.

mod common;

use std::collections::HashSet;

use common::*;
use keyorch::client::Clients;
use keyorch::proto::v1::{
    create_keystore_request, keystore, test_keystore_connection_request, ConnectKeystoreRequest,
    ConnectionState, CreateKeystoreRequest, DeleteKeystoreRequest, DescribeKeystoresRequest,
    DisconnectKeystoreRequest, GetKeystoreRequest, InstanceState, InternalKeystoreConfig,
    KeyAlgorithm, KeyState, KeystoreType, PageRequest, TestKeystoreConnectionRequest,
    UpdateKeystoreRequest,
};
use tonic::Code;

async fn connect(c: &mut Clients, id: &str) -> keyorch::proto::v1::Keystore {
    ok(c.keystores
        .connect_keystore(ConnectKeystoreRequest { id: id.into() }))
    .await
}

fn disconnect_req(id: &str, uninstall_keys: bool, force: bool) -> DisconnectKeystoreRequest {
    DisconnectKeystoreRequest {
        id: id.into(),
        uninstall_keys,
        force,
    }
}

#[tokio::test]
async fn create_get_describe_update_delete() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let v = create_vault(&mut c, "v").await;

    let mut req = keystore_req(&v.id, "hsm-main", false);
    req.description = "the daemon's own token".into();
    let ks = ok(c.keystores.create_keystore(req)).await;
    assert!(!ks.id.is_empty());
    assert_eq!(ks.vault_id, v.id);
    assert_eq!(ks.name, "hsm-main");
    assert_eq!(ks.description, "the daemon's own token");
    assert_eq!(ks.r#type, KeystoreType::Internal as i32);
    assert_connection(&ks, ConnectionState::Disconnected);
    assert_eq!(
        ks.config,
        Some(keystore::Config::Internal(InternalKeystoreConfig {}))
    );
    assert!(ks.created_at.is_some());

    assert_eq!(
        without_health(get_keystore(&mut c, &ks.id).await),
        without_health(ks.clone())
    );
    let all = list_all_keystores(&mut c, DescribeKeystoresRequest::default(), 0).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, ks.id);

    let u = ok(c.keystores.update_keystore(UpdateKeystoreRequest {
        id: ks.id.clone(),
        name: Some("hsm-primary".into()),
        description: None,
        ..Default::default()
    }))
    .await;
    assert_eq!(u.name, "hsm-primary");
    assert_eq!(u.description, "the daemon's own token");
    assert!(u.updated_at.is_some());
    let u = ok(c.keystores.update_keystore(UpdateKeystoreRequest {
        id: ks.id.clone(),
        name: None,
        description: Some("renamed".into()),
        ..Default::default()
    }))
    .await;
    assert_eq!(
        (u.name.as_str(), u.description.as_str()),
        ("hsm-primary", "renamed")
    );
    assert_eq!(get_keystore(&mut c, &ks.id).await.name, "hsm-primary");

    ok(c.keystores
        .delete_keystore(DeleteKeystoreRequest { id: ks.id.clone() }))
    .await;
    let s = fails(
        c.keystores
            .get_keystore(GetKeystoreRequest { id: ks.id.clone() }),
    )
    .await;
    assert_status(&s, Code::NotFound, KEYSTORE_NOT_FOUND);
    assert!(snapshot(&c).await.keystores.is_empty());
}

#[tokio::test]
async fn create_with_connect_starts_connected() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let v = create_vault(&mut c, "v").await;
    let ks = create_keystore(&mut c, &v.id, "ks", true).await;
    assert_connection(&ks, ConnectionState::Connected);
    assert_connection(
        &get_keystore(&mut c, &ks.id).await,
        ConnectionState::Connected,
    );
}

#[tokio::test]
async fn metadata_can_be_updated_in_any_connection_state() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let v = create_vault(&mut c, "v").await;
    let ks = create_keystore(&mut c, &v.id, "ks", true).await;
    let u = ok(c.keystores.update_keystore(UpdateKeystoreRequest {
        id: ks.id.clone(),
        name: Some("while-connected".into()),
        description: Some("x".into()),
        ..Default::default()
    }))
    .await;
    assert_eq!(u.name, "while-connected");
    assert_connection(&u, ConnectionState::Connected);
    ok(c.keystores
        .disconnect_keystore(disconnect_req(&ks.id, false, false)))
    .await;
    let u = ok(c.keystores.update_keystore(UpdateKeystoreRequest {
        id: ks.id.clone(),
        name: Some("while-disconnected".into()),
        description: None,
        ..Default::default()
    }))
    .await;
    assert_eq!(u.name, "while-disconnected");
    assert_connection(&u, ConnectionState::Disconnected);
}

#[tokio::test]
async fn connect_and_disconnect_follow_the_state_machine() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let v = create_vault(&mut c, "v").await;
    let ks = create_keystore(&mut c, &v.id, "ks", false).await;
    assert_connection(&ks, ConnectionState::Disconnected);

    // Disconnect from DISCONNECTED is rejected and changes nothing.
    let before = snapshot(&c).await;
    let s = fails(
        c.keystores
            .disconnect_keystore(disconnect_req(&ks.id, false, false)),
    )
    .await;
    assert_status(&s, Code::FailedPrecondition, KEYSTORE_INVALID_STATE);
    assert_unchanged(
        &before,
        &snapshot(&c).await,
        "disconnect a disconnected keystore",
    );

    let up = connect(&mut c, &ks.id).await;
    assert_connection(&up, ConnectionState::Connected);
    assert_eq!(up.connection_error_code, 0);
    assert!(up.connection_error_message.is_empty());

    // Connect on CONNECTED is a successful no-op.
    let again = connect(&mut c, &ks.id).await;
    assert_connection(&again, ConnectionState::Connected);

    let down = ok(c
        .keystores
        .disconnect_keystore(disconnect_req(&ks.id, false, false)))
    .await;
    assert_connection(&down, ConnectionState::Disconnected);
    assert_connection(
        &get_keystore(&mut c, &ks.id).await,
        ConnectionState::Disconnected,
    );

    // Disconnect is reversible.
    assert_connection(&connect(&mut c, &ks.id).await, ConnectionState::Connected);
}

#[tokio::test]
async fn delete_requires_disconnected() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let v = create_vault(&mut c, "v").await;
    let ks = create_keystore(&mut c, &v.id, "ks", true).await;
    let before = snapshot(&c).await;
    let s = fails(
        c.keystores
            .delete_keystore(DeleteKeystoreRequest { id: ks.id.clone() }),
    )
    .await;
    assert_status(&s, Code::FailedPrecondition, KEYSTORE_INVALID_STATE);
    assert_unchanged(&before, &snapshot(&c).await, "delete a connected keystore");

    ok(c.keystores
        .disconnect_keystore(disconnect_req(&ks.id, false, false)))
    .await;
    ok(c.keystores
        .delete_keystore(DeleteKeystoreRequest { id: ks.id.clone() }))
    .await;
    assert!(snapshot(&c).await.keystores.is_empty());
}

#[tokio::test]
async fn delete_is_refused_while_a_live_key_targets_it() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let ks = fx.keystore.id.clone();
    let key = fx.key(&mut c, "k", KeyAlgorithm::Aes, 256, false).await;
    assert_key_state(&key, KeyState::PreActive);

    // PRE_ACTIVE key: disconnecting is allowed, deleting is not.
    ok(c.keystores
        .disconnect_keystore(disconnect_req(&ks, false, false)))
    .await;
    let before = snapshot(&c).await;
    let s = fails(
        c.keystores
            .delete_keystore(DeleteKeystoreRequest { id: ks.clone() }),
    )
    .await;
    assert_status(&s, Code::FailedPrecondition, KEYSTORE_HAS_KEYS);
    assert!(
        s.message().contains(&key.id),
        "message does not name the key: {}",
        describe(&s)
    );
    assert_unchanged(&before, &snapshot(&c).await, "delete a targeted keystore");

    // Once the key is destroyed it no longer holds the keystore.
    ok(c.keys.destroy_key(key_id(&key.id))).await;
    ok(c.keystores
        .delete_keystore(DeleteKeystoreRequest { id: ks.clone() }))
    .await;
    let s = fails(c.keystores.get_keystore(GetKeystoreRequest { id: ks })).await;
    assert_status(&s, Code::NotFound, KEYSTORE_NOT_FOUND);
}

#[tokio::test]
async fn disconnect_that_would_strand_an_active_key_is_refused() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let ks = fx.keystore.id.clone();
    let active = fx.key(&mut c, "active", KeyAlgorithm::Aes, 256, true).await;
    let active2 = fx
        .key(&mut c, "active-2", KeyAlgorithm::Ec, 256, true)
        .await;
    let pre = fx.key(&mut c, "pre", KeyAlgorithm::Aes, 128, false).await;
    assert_key_state(&active, KeyState::Active);
    assert_eq!(
        instance_state(&active, &ks),
        Some(InstanceState::Installed),
        "{active:?}"
    );

    let before = snapshot(&c).await;
    let s = fails(
        c.keystores
            .disconnect_keystore(disconnect_req(&ks, false, false)),
    )
    .await;
    assert_status(&s, Code::FailedPrecondition, KEYSTORE_INVALID_STATE);
    for k in [&active.id, &active2.id] {
        assert!(
            s.message().contains(k.as_str()),
            "message does not list stranded key {k}: {}",
            describe(&s)
        );
    }
    assert!(
        !s.message().contains(&pre.id),
        "message lists a PRE_ACTIVE key: {}",
        describe(&s)
    );
    assert_unchanged(&before, &snapshot(&c).await, "refused disconnect");
}

#[tokio::test]
async fn forced_disconnect_keeps_keys_and_reports_instances_unavailable() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let ks = fx.keystore.id.clone();
    let key = fx.key(&mut c, "k", KeyAlgorithm::Aes, 256, true).await;

    let down = ok(c
        .keystores
        .disconnect_keystore(disconnect_req(&ks, false, true)))
    .await;
    assert_connection(&down, ConnectionState::Disconnected);
    let k = get_key(&mut c, &key.id).await;
    assert_key_state(&k, KeyState::Active);
    assert_eq!(k.target_keystore_ids, vec![ks.clone()]);
    assert_eq!(
        instance_state(&k, &ks),
        Some(InstanceState::Unavailable),
        "{k:?}"
    );

    // Reconnecting brings the installed instance back.
    connect(&mut c, &ks).await;
    let k = get_key(&mut c, &key.id).await;
    assert_key_state(&k, KeyState::Active);
    assert_eq!(
        instance_state(&k, &ks),
        Some(InstanceState::Installed),
        "{k:?}"
    );
}

#[tokio::test]
async fn disconnect_with_uninstall_keys_removes_the_keystore_from_their_targets() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let ks = fx.keystore.id.clone();
    let key = fx.key(&mut c, "k", KeyAlgorithm::Aes, 256, true).await;

    let down = ok(c
        .keystores
        .disconnect_keystore(disconnect_req(&ks, true, false)))
    .await;
    assert_connection(&down, ConnectionState::Disconnected);
    let k = get_key(&mut c, &key.id).await;
    assert!(
        !k.target_keystore_ids.contains(&ks),
        "keystore still a target: {k:?}"
    );
    assert_ne!(
        instance_state(&k, &ks),
        Some(InstanceState::Installed),
        "instance still installed: {k:?}"
    );

    // The key no longer targets it: reconnecting does not bring it back, and the keystore
    // can be deleted once disconnected again.
    connect(&mut c, &ks).await;
    let k = get_key(&mut c, &key.id).await;
    assert!(!k.target_keystore_ids.contains(&ks), "{k:?}");
    ok(c.keystores
        .disconnect_keystore(disconnect_req(&ks, false, false)))
    .await;
    ok(c.keystores
        .delete_keystore(DeleteKeystoreRequest { id: ks.clone() }))
    .await;
}

#[tokio::test]
async fn disconnect_is_allowed_when_active_keys_have_another_connected_target() {
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
        "two-targets",
        KeyAlgorithm::Aes,
        256,
        &[&ks1, &ks2],
        true,
    )
    .await;
    assert_eq!(instance_state(&key, &ks1), Some(InstanceState::Installed));
    assert_eq!(instance_state(&key, &ks2), Some(InstanceState::Installed));

    ok(c.keystores
        .disconnect_keystore(disconnect_req(&ks1, false, false)))
    .await;
    let k = get_key(&mut c, &key.id).await;
    assert_eq!(instance_state(&k, &ks1), Some(InstanceState::Unavailable));
    assert_eq!(instance_state(&k, &ks2), Some(InstanceState::Installed));

    // Now ks2 is the only connected installed target: refused.
    let s = fails(
        c.keystores
            .disconnect_keystore(disconnect_req(&ks2, false, false)),
    )
    .await;
    assert_status(&s, Code::FailedPrecondition, KEYSTORE_INVALID_STATE);
    assert!(s.message().contains(&key.id), "{}", describe(&s));
}

#[tokio::test]
async fn keystores_of_deactivated_keys_disconnect_freely() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let key = fx.key(&mut c, "k", KeyAlgorithm::Aes, 256, true).await;
    ok(c.keys.deactivate_key(key_id(&key.id))).await;
    let down = ok(c
        .keystores
        .disconnect_keystore(disconnect_req(&fx.keystore.id, false, false)))
    .await;
    assert_connection(&down, ConnectionState::Disconnected);
}

#[tokio::test]
async fn names_are_unique_per_vault() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let v1 = create_vault(&mut c, "v1").await;
    let v2 = create_vault(&mut c, "v2").await;
    create_keystore(&mut c, &v1.id, "shared-name", false).await;
    let other = create_keystore(&mut c, &v1.id, "other", false).await;
    let before = snapshot(&c).await;

    let s = fails(
        c.keystores
            .create_keystore(keystore_req(&v1.id, "shared-name", true)),
    )
    .await;
    assert_status(&s, Code::AlreadyExists, KEYSTORE_NAME_IN_USE);
    let s = fails(c.keystores.update_keystore(UpdateKeystoreRequest {
        id: other.id.clone(),
        name: Some("shared-name".into()),
        description: None,
        ..Default::default()
    }))
    .await;
    assert_status(&s, Code::AlreadyExists, KEYSTORE_NAME_IN_USE);
    assert_unchanged(&before, &snapshot(&c).await, "duplicate keystore names");

    // The same name in another vault is fine.
    let ks = create_keystore(&mut c, &v2.id, "shared-name", false).await;
    assert_eq!(ks.vault_id, v2.id);
}

#[tokio::test]
async fn invalid_requests_are_rejected_and_change_nothing() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let v = create_vault(&mut c, "v").await;
    let ks = create_keystore(&mut c, &v.id, "ks", false).await;
    let before = snapshot(&c).await;

    for name in bad_names() {
        let s = fails(
            c.keystores
                .create_keystore(keystore_req(&v.id, &name, false)),
        )
        .await;
        assert_invalid(&s, "name");
        let s = fails(c.keystores.update_keystore(UpdateKeystoreRequest {
            id: ks.id.clone(),
            name: Some(name.clone()),
            description: None,
            ..Default::default()
        }))
        .await;
        assert_invalid(&s, "name");
    }
    assert_unchanged(&before, &snapshot(&c).await, "bad keystore names");

    let mut req = keystore_req(&v.id, "fine", false);
    req.description = long_description();
    let s = fails(c.keystores.create_keystore(req)).await;
    assert_invalid(&s, "description");
    let s = fails(c.keystores.update_keystore(UpdateKeystoreRequest {
        id: ks.id.clone(),
        name: None,
        description: Some(long_description()),
        ..Default::default()
    }))
    .await;
    assert_invalid(&s, "description");

    for bad_type in [KeystoreType::Unspecified as i32, 99, -1] {
        let mut req = keystore_req(&v.id, "typed", false);
        req.r#type = bad_type;
        let s = fails(c.keystores.create_keystore(req)).await;
        assert_invalid(&s, "type");
    }
    assert_unchanged(&before, &snapshot(&c).await, "invalid keystore requests");
}

#[tokio::test]
async fn external_keystore_types_are_not_supported_yet() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let v = create_vault(&mut c, "v").await;
    let before = snapshot(&c).await;
    for t in [KeystoreType::Kmip] {
        let req = CreateKeystoreRequest {
            vault_id: v.id.clone(),
            name: "external".into(),
            description: String::new(),
            r#type: t as i32,
            connect: false,
            config: None,
            credentials: None,
        };
        let s = fails(c.keystores.create_keystore(req)).await;
        assert_status(&s, Code::Unimplemented, UNSUPPORTED);
    }
    // aws_kms, xks, the IBM, Azure and Google types exist: without their configuration it is
    // a field error, not UNIMPLEMENTED.
    for (t, field) in [
        (KeystoreType::AwsKms, "aws_kms"),
        (KeystoreType::Xks, "xks"),
        (KeystoreType::IbmKeyProtect, "ibm_kms"),
        (KeystoreType::IbmHpcs, "ibm_kms"),
        (KeystoreType::AzureKeyVault, "azure_key_vault"),
        (KeystoreType::GoogleCloudKms, "google_cloud_kms"),
    ] {
        let s = fails(c.keystores.create_keystore(CreateKeystoreRequest {
            vault_id: v.id.clone(),
            name: "external".into(),
            description: String::new(),
            r#type: t as i32,
            connect: false,
            config: None,
            credentials: None,
        }))
        .await;
        assert_invalid(&s, field);
    }
    assert_unchanged(&before, &snapshot(&c).await, "unsupported types");
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let v = create_vault(&mut c, "v").await;
    let gone = create_keystore(&mut c, &v.id, "gone", false).await;
    ok(c.keystores.delete_keystore(DeleteKeystoreRequest {
        id: gone.id.clone(),
    }))
    .await;
    let before = snapshot(&c).await;

    for id in [gone.id.clone(), unknown_id()] {
        let s = fails(
            c.keystores
                .get_keystore(GetKeystoreRequest { id: id.clone() }),
        )
        .await;
        assert_status(&s, Code::NotFound, KEYSTORE_NOT_FOUND);
        let s = fails(c.keystores.update_keystore(UpdateKeystoreRequest {
            id: id.clone(),
            name: Some("x".into()),
            description: None,
            ..Default::default()
        }))
        .await;
        assert_status(&s, Code::NotFound, KEYSTORE_NOT_FOUND);
        let s = fails(
            c.keystores
                .delete_keystore(DeleteKeystoreRequest { id: id.clone() }),
        )
        .await;
        assert_status(&s, Code::NotFound, KEYSTORE_NOT_FOUND);
        let s = fails(
            c.keystores
                .connect_keystore(ConnectKeystoreRequest { id: id.clone() }),
        )
        .await;
        assert_status(&s, Code::NotFound, KEYSTORE_NOT_FOUND);
        let s = fails(
            c.keystores
                .disconnect_keystore(disconnect_req(&id, false, false)),
        )
        .await;
        assert_status(&s, Code::NotFound, KEYSTORE_NOT_FOUND);
    }

    // A keystore in a vault that does not exist.
    let s = fails(
        c.keystores
            .create_keystore(keystore_req(&unknown_id(), "orphan", false)),
    )
    .await;
    assert_status(&s, Code::NotFound, NOT_FOUND);
    assert_unchanged(&before, &snapshot(&c).await, "unknown ids");
}

#[tokio::test]
async fn test_connection_checks_without_changing_anything() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let v = create_vault(&mut c, "v").await;
    let ks = create_keystore(&mut c, &v.id, "ks", false).await;
    let before = snapshot(&c).await;

    let r = ok(c
        .keystores
        .test_keystore_connection(TestKeystoreConnectionRequest {
            subject: Some(test_keystore_connection_request::Subject::Id(ks.id.clone())),
        }))
    .await;
    assert!(r.ok, "internal keystore test failed: {r:?}");
    assert_eq!(r.error_code, 0);

    let candidate = CreateKeystoreRequest {
        vault_id: v.id.clone(),
        name: "candidate".into(),
        description: String::new(),
        r#type: KeystoreType::Internal as i32,
        connect: true,
        config: Some(create_keystore_request::Config::Internal(
            InternalKeystoreConfig {},
        )),
        credentials: None,
    };
    let r = ok(c
        .keystores
        .test_keystore_connection(TestKeystoreConnectionRequest {
            subject: Some(test_keystore_connection_request::Subject::Candidate(
                candidate,
            )),
        }))
    .await;
    assert!(r.ok, "candidate test failed: {r:?}");
    assert_unchanged(&before, &snapshot(&c).await, "TestKeystoreConnection");
    assert_connection(
        &get_keystore(&mut c, &ks.id).await,
        ConnectionState::Disconnected,
    );
}

#[tokio::test]
async fn describe_filters_and_pages() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let v1 = create_vault(&mut c, "v1").await;
    let v2 = create_vault(&mut c, "v2").await;
    let mut v1_ids = HashSet::new();
    for i in 0..5 {
        v1_ids.insert(
            create_keystore(&mut c, &v1.id, &format!("ks-{i}"), i % 2 == 0)
                .await
                .id,
        );
    }
    let in_v2 = create_keystore(&mut c, &v2.id, "ks-0", false).await;

    let by_vault = list_all_keystores(
        &mut c,
        DescribeKeystoresRequest {
            vault_id: v1.id.clone(),
            ..Default::default()
        },
        2,
    )
    .await;
    assert_eq!(by_vault.len(), 5, "paged by 2: {by_vault:?}");
    assert_eq!(
        by_vault
            .iter()
            .map(|k| k.id.clone())
            .collect::<HashSet<_>>(),
        v1_ids
    );

    let by_name = list_all_keystores(
        &mut c,
        DescribeKeystoresRequest {
            name: "ks-0".into(),
            ..Default::default()
        },
        0,
    )
    .await;
    assert_eq!(by_name.len(), 2, "{by_name:?}");
    assert!(by_name.iter().any(|k| k.id == in_v2.id));

    let connected = list_all_keystores(
        &mut c,
        DescribeKeystoresRequest {
            connection_state: ConnectionState::Connected as i32,
            ..Default::default()
        },
        0,
    )
    .await;
    assert_eq!(connected.len(), 3, "{connected:?}");
    assert!(connected
        .iter()
        .all(|k| k.connection_state == ConnectionState::Connected as i32));

    let internal = list_all_keystores(
        &mut c,
        DescribeKeystoresRequest {
            r#type: KeystoreType::Internal as i32,
            ..Default::default()
        },
        0,
    )
    .await;
    assert_eq!(internal.len(), 6);
    let none = list_all_keystores(
        &mut c,
        DescribeKeystoresRequest {
            r#type: KeystoreType::AwsKms as i32,
            ..Default::default()
        },
        0,
    )
    .await;
    assert!(none.is_empty());

    let first = ok(c.keystores.describe_keystores(DescribeKeystoresRequest {
        page: Some(PageRequest {
            page_size: 4,
            page_token: String::new(),
        }),
        ..Default::default()
    }))
    .await;
    assert_eq!(first.keystores.len(), 4);
    assert!(!first.next_page_token.is_empty());
    let second = ok(c.keystores.describe_keystores(DescribeKeystoresRequest {
        page: Some(PageRequest {
            page_size: 4,
            page_token: first.next_page_token.clone(),
        }),
        ..Default::default()
    }))
    .await;
    assert_eq!(second.keystores.len(), 2);
    assert!(second.next_page_token.is_empty());

    let s = fails(c.keystores.describe_keystores(DescribeKeystoresRequest {
        page: Some(PageRequest {
            page_size: 1001,
            page_token: String::new(),
        }),
        ..Default::default()
    }))
    .await;
    assert_invalid_like(&s, "page_size");
    let s = fails(c.keystores.describe_keystores(DescribeKeystoresRequest {
        page: Some(PageRequest {
            page_size: 2,
            page_token: "garbage".into(),
        }),
        ..Default::default()
    }))
    .await;
    assert_invalid_like(&s, "page_token");
}
