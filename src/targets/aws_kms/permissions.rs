//! Which of the AWS permissions keyorch needs are denied: each probed with a call that changes
//! nothing (a list with limit 1, or an action on a key or alias that cannot exist).

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{AlgorithmSpec, ExpirationModelType, Tag, WrappingKeySpec};

use super::client::{CallError, Kms};
use crate::targets::TargetError;

/// The AWS KMS actions an `aws_kms` keystore needs (the seed's list), in its order.
pub const REQUIRED_PERMISSIONS: [&str; 13] = [
    "ListKeys",
    "CreateKey",
    "GetParametersForImport",
    "ImportKeyMaterial",
    "DeleteAlias",
    "CreateAlias",
    "TagResource",
    "UntagResource",
    "DescribeKey",
    "DeleteImportedKeyMaterial",
    "ListResourceTags",
    "ListAliases",
    "ScheduleKeyDeletion",
];

/// Whether a probe's answer shows the permission denied. `AccessDeniedException` is denied;
/// any other exception (`NotFoundException` for the made-up key, validation errors) means the
/// request got past authorization or tells nothing; credentials, network and time-outs are
/// errors of the whole probe.
fn is_denied(result: Result<(), CallError>) -> Result<bool, TargetError> {
    match result {
        Ok(()) => Ok(false),
        Err(e) if e.is("AccessDeniedException") => Ok(true),
        Err(CallError::Exception { op, code, message }) => {
            match super::client::exception_error(op, &code, &message) {
                e @ (TargetError::InvalidCredentials(_) | TargetError::TimedOut(_)) => Err(e),
                _ => Ok(false),
            }
        }
        Err(CallError::Failed(e)) => Err(e),
    }
}

/// Probes every required permission but `CreateKey` (no call creates nothing; an
/// `AccessDeniedException` at install reports it). Actions on one key target a random key id
/// (a fresh UUID, so no such key exists) and `alias/keyorch-permission-probe-<uuid>`: AWS
/// authorizes against the key ARN it builds from the id, then answers `NotFoundException`.
pub(super) fn denied(kms: &Kms) -> Result<Vec<String>, TargetError> {
    let probe = uuid::Uuid::new_v4().to_string();
    let alias = format!("alias/keyorch-permission-probe-{probe}");
    let tag = Tag::builder()
        .tag_key("keyorch:permission-probe")
        .tag_value("1")
        .build()
        .map_err(|e| TargetError::Internal(format!("AWS KMS tag: {e}")))?;
    let (k, a) = (|| probe.clone(), || alias.clone());
    let mut out: Vec<&str> = Vec::new();
    // Sequential, and the first error that is not an answer about permissions ends the probe.
    let mut record = |name: &'static str, result: Result<(), CallError>| {
        if is_denied(result)? {
            out.push(name);
        }
        Ok::<(), TargetError>(())
    };
    record(
        "ListKeys",
        kms.call("ListKeys", |c| c.list_keys().limit(1).send())
            .map(drop),
    )?;
    record(
        "ListAliases",
        kms.call("ListAliases", |c| c.list_aliases().limit(1).send())
            .map(drop),
    )?;
    record(
        "DescribeKey",
        kms.call("DescribeKey", |c| c.describe_key().key_id(a()).send())
            .map(drop),
    )?;
    record(
        "ListResourceTags",
        kms.call("ListResourceTags", |c| {
            c.list_resource_tags().key_id(k()).send()
        })
        .map(drop),
    )?;
    record(
        "GetParametersForImport",
        kms.call("GetParametersForImport", |c| {
            c.get_parameters_for_import()
                .key_id(k())
                .wrapping_algorithm(AlgorithmSpec::RsaesOaepSha1)
                .wrapping_key_spec(WrappingKeySpec::Rsa2048)
                .send()
        })
        .map(drop),
    )?;
    record(
        "ImportKeyMaterial",
        kms.call("ImportKeyMaterial", |c| {
            c.import_key_material()
                .key_id(k())
                .import_token(Blob::new(b"keyorch-permission-probe".to_vec()))
                .encrypted_key_material(Blob::new(vec![0u8; 256]))
                .expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire)
                .send()
        })
        .map(drop),
    )?;
    record(
        "DeleteImportedKeyMaterial",
        kms.call("DeleteImportedKeyMaterial", |c| {
            c.delete_imported_key_material().key_id(k()).send()
        })
        .map(drop),
    )?;
    record(
        "TagResource",
        kms.call("TagResource", |c| {
            c.tag_resource().key_id(k()).tags(tag).send()
        })
        .map(drop),
    )?;
    record(
        "UntagResource",
        kms.call("UntagResource", |c| {
            c.untag_resource()
                .key_id(k())
                .tag_keys("keyorch:permission-probe")
                .send()
        })
        .map(drop),
    )?;
    // The target key does not exist, so no alias can be made.
    record(
        "CreateAlias",
        kms.call("CreateAlias", |c| {
            c.create_alias().alias_name(a()).target_key_id(k()).send()
        })
        .map(drop),
    )?;
    record(
        "DeleteAlias",
        kms.call("DeleteAlias", |c| c.delete_alias().alias_name(a()).send())
            .map(drop),
    )?;
    record(
        "ScheduleKeyDeletion",
        kms.call("ScheduleKeyDeletion", |c| {
            c.schedule_key_deletion()
                .key_id(k())
                .pending_window_in_days(super::PENDING_WINDOW_DAYS)
                .send()
        })
        .map(drop),
    )?;
    // In the seed's order.
    Ok(REQUIRED_PERMISSIONS
        .iter()
        .filter(|p| out.contains(p))
        .map(|p| p.to_string())
        .collect())
}
