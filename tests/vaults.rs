//! VaultService against the real daemon: every RPC's happy path, name and description
//! rules (INVALID_ARGUMENT naming the field, store unchanged), global name uniqueness,
//! NOT_FOUND for unknown ids, VaultNotEmpty while keystores or keys remain, and paging.

mod common;

use std::collections::HashSet;

use common::*;
use keyorch::proto::v1::{
    CreateVaultRequest, DeleteKeystoreRequest, DeleteVaultRequest, DisconnectKeystoreRequest,
    GetVaultRequest, KeyAlgorithm, ListVaultsRequest, PageRequest, UpdateVaultRequest,
};
use tonic::Code;

#[tokio::test]
async fn create_get_list_update_delete() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();

    let created = ok(c.vaults.create_vault(CreateVaultRequest {
        name: "payments".into(),
        description: "card keys".into(),
    }))
    .await;
    assert!(!created.id.is_empty(), "no id: {created:?}");
    assert_eq!(created.name, "payments");
    assert_eq!(created.description, "card keys");
    assert!(created.created_at.is_some(), "no created_at: {created:?}");

    let got = get_vault(&mut c, &created.id).await;
    assert_eq!(got, created);

    let listed = list_all_vaults(&mut c, 0).await;
    assert_eq!(listed, vec![created.clone()]);

    let updated = ok(c.vaults.update_vault(UpdateVaultRequest {
        id: created.id.clone(),
        name: Some("payments-eu".into()),
        description: Some("card keys, EU".into()),
    }))
    .await;
    assert_eq!(updated.id, created.id);
    assert_eq!(updated.name, "payments-eu");
    assert_eq!(updated.description, "card keys, EU");
    assert_eq!(updated.created_at, created.created_at);
    assert!(updated.updated_at.is_some(), "no updated_at: {updated:?}");
    assert_eq!(get_vault(&mut c, &created.id).await, updated);

    ok(c.vaults.delete_vault(DeleteVaultRequest {
        id: created.id.clone(),
    }))
    .await;
    let s = fails(c.vaults.get_vault(GetVaultRequest {
        id: created.id.clone(),
    }))
    .await;
    assert_status(&s, Code::NotFound, NOT_FOUND);
    assert!(list_all_vaults(&mut c, 0).await.is_empty());
}

#[tokio::test]
async fn update_changes_only_the_fields_sent() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let v = ok(c.vaults.create_vault(CreateVaultRequest {
        name: "ops".into(),
        description: "first".into(),
    }))
    .await;

    let u = ok(c.vaults.update_vault(UpdateVaultRequest {
        id: v.id.clone(),
        name: None,
        description: Some("second".into()),
    }))
    .await;
    assert_eq!((u.name.as_str(), u.description.as_str()), ("ops", "second"));

    let u = ok(c.vaults.update_vault(UpdateVaultRequest {
        id: v.id.clone(),
        name: Some("ops-2".into()),
        description: None,
    }))
    .await;
    assert_eq!(
        (u.name.as_str(), u.description.as_str()),
        ("ops-2", "second")
    );

    // An explicitly empty description clears it.
    let u = ok(c.vaults.update_vault(UpdateVaultRequest {
        id: v.id.clone(),
        name: None,
        description: Some(String::new()),
    }))
    .await;
    assert_eq!((u.name.as_str(), u.description.as_str()), ("ops-2", ""));
    assert_eq!(get_vault(&mut c, &v.id).await, u);
}

#[tokio::test]
async fn names_at_the_edges_of_the_rule_are_accepted() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    for name in good_names() {
        let v = create_vault(&mut c, &name).await;
        assert_eq!(v.name, name);
    }
    let v = ok(c.vaults.create_vault(CreateVaultRequest {
        name: "described".into(),
        description: "d".repeat(200),
    }))
    .await;
    assert_eq!(v.description.len(), 200);
    assert_eq!(
        list_all_vaults(&mut c, 0).await.len(),
        good_names().len() + 1
    );
}

#[tokio::test]
async fn bad_names_and_descriptions_are_rejected_and_change_nothing() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let existing = create_vault(&mut c, "existing").await;
    let before = snapshot(&c).await;

    for name in bad_names() {
        let s = fails(c.vaults.create_vault(vault_req(&name))).await;
        assert_invalid(&s, "name");
        assert_unchanged(&before, &snapshot(&c).await, &format!("create {name:?}"));

        let s = fails(c.vaults.update_vault(UpdateVaultRequest {
            id: existing.id.clone(),
            name: Some(name.clone()),
            description: None,
        }))
        .await;
        assert_invalid(&s, "name");
        assert_unchanged(&before, &snapshot(&c).await, &format!("rename to {name:?}"));
    }

    let s = fails(c.vaults.create_vault(CreateVaultRequest {
        name: "fine".into(),
        description: long_description(),
    }))
    .await;
    assert_invalid(&s, "description");
    let s = fails(c.vaults.update_vault(UpdateVaultRequest {
        id: existing.id.clone(),
        name: None,
        description: Some(long_description()),
    }))
    .await;
    assert_invalid(&s, "description");
    assert_unchanged(&before, &snapshot(&c).await, "long descriptions");
}

#[tokio::test]
async fn vault_names_are_globally_unique() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    create_vault(&mut c, "alpha").await;
    let beta = create_vault(&mut c, "beta").await;
    let before = snapshot(&c).await;

    let s = fails(c.vaults.create_vault(vault_req("alpha"))).await;
    assert_status(&s, Code::AlreadyExists, ALREADY_EXISTS);
    let s = fails(c.vaults.update_vault(UpdateVaultRequest {
        id: beta.id.clone(),
        name: Some("alpha".into()),
        description: None,
    }))
    .await;
    assert_status(&s, Code::AlreadyExists, ALREADY_EXISTS);
    assert_unchanged(&before, &snapshot(&c).await, "duplicate names");

    // Renaming to its own name is not a conflict; a freed name can be taken again.
    ok(c.vaults.update_vault(UpdateVaultRequest {
        id: beta.id.clone(),
        name: Some("beta".into()),
        description: None,
    }))
    .await;
    ok(c.vaults.update_vault(UpdateVaultRequest {
        id: beta.id.clone(),
        name: Some("gamma".into()),
        description: None,
    }))
    .await;
    let again = create_vault(&mut c, "beta").await;
    assert_ne!(again.id, beta.id);
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let gone = create_vault(&mut c, "short-lived").await;
    ok(c.vaults.delete_vault(DeleteVaultRequest {
        id: gone.id.clone(),
    }))
    .await;
    let before = snapshot(&c).await;

    for id in [gone.id.clone(), unknown_id()] {
        let s = fails(c.vaults.get_vault(GetVaultRequest { id: id.clone() })).await;
        assert_status(&s, Code::NotFound, NOT_FOUND);
        let s = fails(c.vaults.update_vault(UpdateVaultRequest {
            id: id.clone(),
            name: Some("x".into()),
            description: None,
        }))
        .await;
        assert_status(&s, Code::NotFound, NOT_FOUND);
        let s = fails(c.vaults.delete_vault(DeleteVaultRequest { id: id.clone() })).await;
        assert_status(&s, Code::NotFound, NOT_FOUND);
    }
    assert_unchanged(&before, &snapshot(&c).await, "unknown ids");
}

#[tokio::test]
async fn a_vault_with_keystores_or_keys_cannot_be_deleted() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let v = create_vault(&mut c, "busy").await;
    let ks = create_keystore(&mut c, &v.id, "ks", true).await;
    let before = snapshot(&c).await;

    let s = fails(
        c.vaults
            .delete_vault(DeleteVaultRequest { id: v.id.clone() }),
    )
    .await;
    assert_status(&s, Code::FailedPrecondition, VAULT_NOT_EMPTY);
    assert_unchanged(
        &before,
        &snapshot(&c).await,
        "delete vault holding a keystore",
    );

    // A key whose record is still there (even DESTROYED) keeps the vault non-empty.
    let key = create_key(&mut c, &v.id, "k", KeyAlgorithm::Aes, 256, &[&ks.id], false).await;
    ok(c.keys.destroy_key(key_id(&key.id))).await;
    ok(c.keystores.disconnect_keystore(DisconnectKeystoreRequest {
        id: ks.id.clone(),
        uninstall_keys: false,
        force: false,
    }))
    .await;
    ok(c.keystores
        .delete_keystore(DeleteKeystoreRequest { id: ks.id.clone() }))
    .await;
    let before = snapshot(&c).await;
    let s = fails(
        c.vaults
            .delete_vault(DeleteVaultRequest { id: v.id.clone() }),
    )
    .await;
    assert_status(&s, Code::FailedPrecondition, VAULT_NOT_EMPTY);
    assert_unchanged(&before, &snapshot(&c).await, "delete vault holding a key");

    ok(c.keys.delete_key(key_id(&key.id))).await;
    ok(c.vaults
        .delete_vault(DeleteVaultRequest { id: v.id.clone() }))
    .await;
    assert!(snapshot(&c).await.vaults.is_empty());
}

#[tokio::test]
async fn list_pages_through_every_vault_once() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let mut ids = HashSet::new();
    for i in 0..7 {
        ids.insert(create_vault(&mut c, &format!("v{i}")).await.id);
    }

    let first = ok(c.vaults.list_vaults(ListVaultsRequest {
        page: Some(PageRequest {
            page_size: 3,
            page_token: String::new(),
        }),
    }))
    .await;
    assert_eq!(first.vaults.len(), 3);
    assert!(!first.next_page_token.is_empty());

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut sizes = Vec::new();
    loop {
        let page = ok(c.vaults.list_vaults(ListVaultsRequest {
            page: Some(PageRequest {
                page_size: 3,
                page_token: token.clone(),
            }),
        }))
        .await;
        sizes.push(page.vaults.len());
        seen.extend(page.vaults.into_iter().map(|v| v.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(sizes.len() < 10, "paging does not end");
    }
    assert_eq!(sizes, vec![3, 3, 1]);
    assert_eq!(seen.len(), 7, "a vault was listed twice: {seen:?}");
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), ids);

    // Exactly one full page: the token is empty on it.
    let all = ok(c.vaults.list_vaults(ListVaultsRequest {
        page: Some(PageRequest {
            page_size: 7,
            page_token: String::new(),
        }),
    }))
    .await;
    assert_eq!(all.vaults.len(), 7);
    assert!(
        all.next_page_token.is_empty(),
        "a token on the last page: {:?}",
        all.next_page_token
    );
}

#[tokio::test]
async fn page_size_zero_means_fifty_and_over_a_thousand_is_rejected() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    for i in 0..53 {
        create_vault(&mut c, &format!("vault {i:02}")).await;
    }

    let page = ok(c.vaults.list_vaults(ListVaultsRequest {
        page: Some(PageRequest {
            page_size: 0,
            page_token: String::new(),
        }),
    }))
    .await;
    assert_eq!(page.vaults.len(), 50);
    assert!(!page.next_page_token.is_empty());
    let rest = ok(c.vaults.list_vaults(ListVaultsRequest {
        page: Some(PageRequest {
            page_size: 0,
            page_token: page.next_page_token.clone(),
        }),
    }))
    .await;
    assert_eq!(rest.vaults.len(), 3);
    assert!(rest.next_page_token.is_empty());

    // No page message at all behaves like page_size 0.
    let none = ok(c.vaults.list_vaults(ListVaultsRequest { page: None })).await;
    assert_eq!(none.vaults.len(), 50);

    let max = ok(c.vaults.list_vaults(ListVaultsRequest {
        page: Some(PageRequest {
            page_size: 1000,
            page_token: String::new(),
        }),
    }))
    .await;
    assert_eq!(max.vaults.len(), 53);

    let s = fails(c.vaults.list_vaults(ListVaultsRequest {
        page: Some(PageRequest {
            page_size: 1001,
            page_token: String::new(),
        }),
    }))
    .await;
    assert_invalid_like(&s, "page_size");

    for garbage in ["not-a-token", "!!!"] {
        let s = fails(c.vaults.list_vaults(ListVaultsRequest {
            page: Some(PageRequest {
                page_size: 10,
                page_token: garbage.into(),
            }),
        }))
        .await;
        assert_invalid_like(&s, "page_token");
    }
}
