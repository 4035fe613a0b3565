//! Installing a managed key into AWS KMS as imported material (CreateKey EXTERNAL, alias, tag,
//! GetParametersForImport, wrap in keyorch's HSM, ImportKeyMaterial) and uninstalling it.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    AlgorithmSpec, ExpirationModelType, KeyMetadata, KeySpec, KeyState, KeyUsageType, OriginType,
    Tag, WrappingKeySpec,
};

use super::client::{CallError, Kms};
use super::{alias_name, key_id_of, key_spec, remote_key, KEY_ID_TAG, PENDING_WINDOW_DAYS};
use crate::hsm::{Hsm, HsmError, KeyRef, OaepHash};
use crate::targets::TargetError;

/// The key an alias names, or None when the alias does not exist.
pub(super) fn find(kms: &Kms, alias: &str) -> Result<Option<KeyMetadata>, TargetError> {
    let alias = alias.to_string();
    match kms.call("DescribeKey", |c| c.describe_key().key_id(alias).send()) {
        Ok(out) => Ok(out.key_metadata),
        Err(e) if e.is("NotFoundException") => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The value of the key's [`KEY_ID_TAG`], if it has one.
fn key_id_tag(kms: &Kms, arn: &str) -> Result<Option<String>, TargetError> {
    let arn = arn.to_string();
    let out = kms.call("ListResourceTags", |c| {
        c.list_resource_tags().key_id(arn).limit(50).send()
    })?;
    Ok(out
        .tags()
        .iter()
        .find(|t| t.tag_key() == KEY_ID_TAG)
        .map(|t| t.tag_value().to_string()))
}

/// Whether keyorch made the key under `alias` for `label` (see [`check_owned`]); errors
/// reaching AWS are errors, a foreign key is `false`.
pub(super) fn is_owned(
    kms: &Kms,
    alias: &str,
    label: &str,
    meta: &KeyMetadata,
) -> Result<bool, TargetError> {
    match check_owned(kms, alias, label, meta, None) {
        Ok(()) => Ok(true),
        Err(TargetError::Internal(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Refuses to touch a key under keyorch's alias that keyorch did not make for this managed key:
/// origin `EXTERNAL`, tagged [`KEY_ID_TAG`] = the label's key id, and (when `spec` is given)
/// of the expected key spec and usage.
fn check_owned(
    kms: &Kms,
    alias: &str,
    label: &str,
    meta: &KeyMetadata,
    spec: Option<&(KeySpec, KeyUsageType)>,
) -> Result<(), TargetError> {
    let arn = remote_key(meta).arn;
    let refuse = |why: String| {
        Err(TargetError::Internal(format!(
            "{alias} names {arn}, which keyorch did not make for this key ({why}); \
             it is left alone: remove or rename that alias in AWS KMS"
        )))
    };
    if meta.origin() != Some(&OriginType::External) {
        return refuse(format!(
            "origin {}, not EXTERNAL",
            meta.origin().map(|o| o.as_str()).unwrap_or("unknown")
        ));
    }
    if let Some((key_spec, usage)) = spec {
        if meta.key_spec() != Some(key_spec) || meta.key_usage() != Some(usage) {
            return refuse(format!(
                "key spec {} / usage {}, not {} / {}",
                meta.key_spec().map(|s| s.as_str()).unwrap_or("unknown"),
                meta.key_usage().map(|u| u.as_str()).unwrap_or("unknown"),
                key_spec.as_str(),
                usage.as_str()
            ));
        }
    }
    let expected = key_id_of(label);
    match key_id_tag(kms, &arn)? {
        Some(tag) if tag == expected => Ok(()),
        Some(tag) => refuse(format!("tag {KEY_ID_TAG} is {tag:?}, not {expected:?}")),
        None => refuse(format!("no {KEY_ID_TAG} tag")),
    }
}

/// CreateKey (EXTERNAL, tagged) and CreateAlias. If the alias appeared meanwhile (a concurrent
/// install), the new key is scheduled for deletion and the aliased one is used; if CreateAlias
/// fails otherwise, the new key is scheduled for deletion (best effort) and the error returned.
fn create(
    kms: &Kms,
    alias: &str,
    label: &str,
    (spec, usage): &(KeySpec, KeyUsageType),
) -> Result<KeyMetadata, TargetError> {
    let tag = Tag::builder()
        .tag_key(KEY_ID_TAG)
        .tag_value(key_id_of(label))
        .build()
        .map_err(|e| TargetError::Internal(format!("AWS KMS tag: {e}")))?;
    let description = format!(
        "keyorch managed key {} (imported material)",
        key_id_of(label)
    );
    let (spec, usage) = (spec.clone(), usage.clone());
    let created = kms
        .call("CreateKey", |c| {
            c.create_key()
                .origin(OriginType::External)
                .key_spec(spec)
                .key_usage(usage)
                .description(description)
                .tags(tag)
                .send()
        })?
        .key_metadata
        .ok_or_else(|| TargetError::Internal("AWS KMS CreateKey: no key metadata".into()))?;
    let arn = remote_key(&created).arn;
    tracing::info!(%alias, %arn, "AWS KMS key created for import");
    let (alias_owned, key_id) = (alias.to_string(), created.key_id().to_string());
    match kms.call("CreateAlias", |c| {
        c.create_alias()
            .alias_name(alias_owned)
            .target_key_id(key_id)
            .send()
    }) {
        Ok(_) => Ok(created),
        Err(e) => {
            discard(kms, &arn);
            if e.is("AlreadyExistsException") {
                find(kms, alias)?.ok_or_else(|| {
                    TargetError::Internal(format!("{alias} exists and vanished again"))
                })
            } else {
                Err(e.into())
            }
        }
    }
}

/// Best-effort ScheduleKeyDeletion of a key this install made but cannot use.
fn discard(kms: &Kms, arn: &str) {
    let key = arn.to_string();
    let result = kms.call("ScheduleKeyDeletion", |c| {
        c.schedule_key_deletion()
            .key_id(key)
            .pending_window_in_days(PENDING_WINDOW_DAYS)
            .send()
    });
    if let Err(e) = result {
        tracing::warn!(%arn, error = %TargetError::from(e),
            "could not schedule an unused AWS KMS key for deletion; tag keyorch:key-id names it");
    }
}

/// GetParametersForImport, wrap in the HSM, ImportKeyMaterial (does not expire).
fn import(kms: &Kms, hsm: &Hsm, key: &KeyRef<'_>, arn: &str) -> Result<(), TargetError> {
    let (algorithm, hash) = if hsm.supports_oaep_sha256() {
        (AlgorithmSpec::RsaesOaepSha256, OaepHash::Sha256)
    } else {
        (AlgorithmSpec::RsaesOaepSha1, OaepHash::Sha1)
    };
    let key_id = arn.to_string();
    let params = kms.call("GetParametersForImport", |c| {
        c.get_parameters_for_import()
            .key_id(key_id)
            .wrapping_algorithm(algorithm)
            .wrapping_key_spec(WrappingKeySpec::Rsa2048)
            .send()
    })?;
    let (Some(public_key), Some(token)) = (params.public_key, params.import_token) else {
        return Err(TargetError::Internal(
            "AWS KMS GetParametersForImport: no public key or import token".into(),
        ));
    };
    let wrapped = hsm
        .wrap_oaep(key, public_key.as_ref(), hash)
        .map_err(|e| match e {
            HsmError::Unsupported(what) => TargetError::NotSupported(what),
            e => TargetError::Internal(format!(
                "keyorch's HSM could not wrap the key for AWS KMS: {e}"
            )),
        })?;
    let key_id = arn.to_string();
    kms.call("ImportKeyMaterial", |c| {
        c.import_key_material()
            .key_id(key_id)
            .import_token(token)
            .encrypted_key_material(Blob::new(wrapped))
            .expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire)
            .send()
    })?;
    Ok(())
}

/// Finds the key under the label's alias (reusing a half-done install: a key still waiting for
/// its material gets it), or creates key, alias and tag; then imports the material wrapped in
/// `hsm` (RSAES_OAEP_SHA_256 where the HSM can, else RSAES_OAEP_SHA_1, to an RSA-2048 wrapping
/// key). A key that already holds material (Enabled or Disabled) is left as it is. An alias
/// left on a key pending deletion is dropped and a new key made. Returns the key's ARN.
pub(super) fn install(
    kms: &Kms,
    hsm: &Hsm,
    key: &KeyRef<'_>,
    label: &str,
) -> Result<String, TargetError> {
    let spec = key_spec(key.kind)?;
    let alias = alias_name(label)?;
    let existing = match find(kms, &alias)? {
        Some(meta) if meta.key_state() == Some(&KeyState::PendingDeletion) => {
            delete_alias(kms, &alias)?;
            None
        }
        other => other,
    };
    let meta = match existing {
        Some(meta) => {
            check_owned(kms, &alias, label, &meta, Some(&spec))?;
            meta
        }
        None => create(kms, &alias, label, &spec)?,
    };
    let arn = remote_key(&meta).arn;
    match meta.key_state() {
        Some(KeyState::PendingImport) => {
            import(kms, hsm, key, &arn)?;
            tracing::info!(%alias, %arn, "key material imported into AWS KMS");
        }
        Some(KeyState::Enabled | KeyState::Disabled) => {
            tracing::debug!(%alias, %arn, "AWS KMS key already holds its material");
        }
        state => {
            return Err(TargetError::Internal(format!(
                "{alias} names {arn} in key state {}; cannot install into it now",
                state.map(|s| s.as_str()).unwrap_or("unknown")
            )))
        }
    }
    Ok(arn)
}

/// DeleteAlias; an alias already gone is fine.
fn delete_alias(kms: &Kms, alias: &str) -> Result<(), TargetError> {
    let name = alias.to_string();
    match kms.call("DeleteAlias", |c| c.delete_alias().alias_name(name).send()) {
        Ok(_) => Ok(()),
        Err(e) if e.is("NotFoundException") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A call whose target state was reached by someone else meanwhile is a success.
fn tolerate(result: Result<(), CallError>, codes: &[&str]) -> Result<(), TargetError> {
    match result {
        Err(e) if !codes.iter().any(|c| e.is(c)) => Err(e.into()),
        _ => Ok(()),
    }
}

/// DeleteImportedKeyMaterial (when there is material), ScheduleKeyDeletion (7 days) and
/// DeleteAlias. Each step is skipped when already done, so a retry finishes a half-done
/// uninstall. Refuses keys under the alias that keyorch did not make for this label.
pub(super) fn uninstall(kms: &Kms, label: &str) -> Result<bool, TargetError> {
    let alias = alias_name(label)?;
    let Some(meta) = find(kms, &alias)? else {
        return Ok(false);
    };
    let state = meta.key_state().cloned();
    if state == Some(KeyState::PendingDeletion) {
        delete_alias(kms, &alias)?;
        return Ok(false);
    }
    check_owned(kms, &alias, label, &meta, None)?;
    let arn = remote_key(&meta).arn;
    if matches!(state, Some(KeyState::Enabled | KeyState::Disabled)) {
        let key = arn.clone();
        tolerate(
            kms.call("DeleteImportedKeyMaterial", |c| {
                c.delete_imported_key_material().key_id(key).send()
            })
            .map(drop),
            &["KMSInvalidStateException"],
        )?;
    }
    let key = arn.clone();
    let scheduled = kms.call("ScheduleKeyDeletion", |c| {
        c.schedule_key_deletion()
            .key_id(key)
            .pending_window_in_days(PENDING_WINDOW_DAYS)
            .send()
    });
    match scheduled {
        Ok(_) => {}
        // Scheduled meanwhile by someone else? Then the alias can go; otherwise report.
        Err(e) if e.is("KMSInvalidStateException") => {
            let now = find(kms, &arn)?;
            if now.and_then(|m| m.key_state().cloned()) != Some(KeyState::PendingDeletion) {
                return Err(e.into());
            }
        }
        Err(e) => return Err(e.into()),
    }
    delete_alias(kms, &alias)?;
    tracing::info!(%alias, %arn, "AWS KMS key material deleted and key scheduled for deletion");
    Ok(true)
}
