//! Turns the config's `[[access.grant]]` entries into the access `Policy`: user and group
//! names are resolved here, at load (and at each SIGHUP), never per request.

use std::collections::BTreeSet;

use nix::unistd::{Group, User};

use super::config::{field, Config, ConfigError, GrantEntry};
use crate::domain::{Policy, Role, Subject, ANY_VAULT};

/// Every role, for the `--dev` grant to the developer.
pub const ALL_ROLES: [Role; 4] = [Role::Admin, Role::Operator, Role::User, Role::Auditor];

fn role(name: &str) -> Option<Role> {
    match name {
        "admin" => Some(Role::Admin),
        "operator" => Some(Role::Operator),
        "user" => Some(Role::User),
        "auditor" => Some(Role::Auditor),
        _ => None,
    }
}

/// The rules that need no name service: one subject, a vault, known roles.
pub fn check_entries(entries: &[GrantEntry]) -> Result<(), ConfigError> {
    for (i, g) in entries.iter().enumerate() {
        let at = |key: &str| format!("access.grant[{i}].{key}");
        let subjects = [
            g.uid.is_some(),
            g.gid.is_some(),
            g.user.is_some(),
            g.group.is_some(),
            g.certificate.is_some(),
            g.aws_access_key_id.is_some(),
        ];
        if subjects.iter().filter(|s| **s).count() != 1 {
            return Err(field(
                format!("access.grant[{i}]"),
                "set exactly one of uid, gid, user, group, certificate and aws_access_key_id",
            ));
        }
        if let Some(k) = &g.aws_access_key_id {
            super::aws::check_access_key_id(k)
                .map_err(|rule| field(at("aws_access_key_id"), rule))?;
        }
        for (key, value) in [
            ("user", &g.user),
            ("group", &g.group),
            ("certificate", &g.certificate),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(field(at(key), "must not be empty"));
            }
        }
        if let Some(c) = &g.certificate {
            canonical_certificate(c).map_err(|rule| field(at("certificate"), rule))?;
        }
        if g.vault.is_empty() || g.vault.chars().any(char::is_whitespace) {
            return Err(field(
                at("vault"),
                "must be \"*\" (every vault) or a vault id",
            ));
        }
        if g.roles.is_empty() {
            return Err(field(at("roles"), "must name at least one role"));
        }
        for r in &g.roles {
            if role(r).is_none() {
                return Err(field(
                    at("roles"),
                    format!("unknown role {r:?}: must be admin, operator, user or auditor"),
                ));
            }
        }
    }
    Ok(())
}

/// A group by name or number: its gid and the names of its listed members.
pub fn resolve_group(name_field: &str, group: &str) -> Result<(u32, Vec<String>), ConfigError> {
    let found = match group.parse::<u32>() {
        Ok(gid) => Group::from_gid(nix::unistd::Gid::from_raw(gid))
            .map_err(|e| field(name_field, format!("cannot look up gid {gid}: {e}")))?
            .map_or((gid, Vec::new()), |g| (gid, g.mem)),
        Err(_) => {
            let g = Group::from_name(group)
                .map_err(|e| field(name_field, format!("cannot look up group {group:?}: {e}")))?
                .ok_or_else(|| field(name_field, format!("no such group {group:?}")))?;
            (g.gid.as_raw(), g.mem)
        }
    };
    Ok(found)
}

fn resolve_user(name_field: &str, user: &str) -> Result<u32, ConfigError> {
    if let Ok(uid) = user.parse::<u32>() {
        return Ok(uid);
    }
    let u = User::from_name(user)
        .map_err(|e| field(name_field, format!("cannot look up user {user:?}: {e}")))?
        .ok_or_else(|| field(name_field, format!("no such user {user:?}")))?;
    Ok(u.uid.as_raw())
}

/// A certificate identity as keyorchd computes it (`identity::rfc4514`): spaces around
/// `,` `+` `=` dropped and the RFC 4514 short names upper-cased, so that `cn = ops, o =
/// example` matches `CN=ops,O=example`. `DNS:` and `URI:` names are kept as written.
pub fn canonical_certificate(dn: &str) -> Result<String, String> {
    let dn = trim_unescaped_end(dn.trim_start());
    let dn = dn.as_str();
    if dn.starts_with("DNS:") || dn.starts_with("URI:") {
        return Ok(dn.to_string());
    }
    let mut rdns = Vec::new();
    for rdn in split_unescaped(dn, ',') {
        let mut attrs = Vec::new();
        for attr in split_unescaped(&rdn, '+') {
            let Some((ty, value)) = attr.split_once('=') else {
                return Err(format!(
                    "{attr:?} is not TYPE=value (write the subject as an RFC 4514 string such as \"CN=ops,O=example\", or DNS:name / URI:uri)"
                ));
            };
            let ty = ty.trim();
            if ty.is_empty() {
                return Err(format!("{attr:?} has no attribute type"));
            }
            let upper = ty.to_ascii_uppercase();
            let ty = if ["CN", "L", "ST", "O", "OU", "C", "STREET", "DC", "UID"]
                .contains(&upper.as_str())
            {
                upper
            } else {
                ty.to_string()
            };
            attrs.push(format!("{ty}={}", value.trim_start()));
        }
        rdns.push(attrs.join("+"));
    }
    Ok(rdns.join(","))
}

/// Splits on `sep` where it is not escaped by a backslash; trims each part's end unless
/// its last space is escaped.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            cur.push(c);
            escaped = true;
        } else if c == sep {
            parts.push(trim_unescaped_end(&cur));
            cur.clear();
        } else {
            cur.push(c);
        }
    }
    parts.push(trim_unescaped_end(&cur));
    parts
        .into_iter()
        .map(|p| p.trim_start().to_string())
        .collect()
}

fn trim_unescaped_end(s: &str) -> String {
    let mut out = s.to_string();
    while out.ends_with(' ') && !out.ends_with("\\ ") {
        out.pop();
    }
    out
}

impl Config {
    /// The access policy of `[[access.grant]]`. A `user`/`group` name that does not
    /// resolve is an error naming the entry. A `group` grants its gid (callers whose
    /// primary group it is) and each member the group database lists (by uid).
    pub fn policy(&self) -> Result<Policy, ConfigError> {
        check_entries(&self.access.grant)?;
        let mut policy = Policy::default();
        for (i, g) in self.access.grant.iter().enumerate() {
            let at = |key: &str| format!("access.grant[{i}].{key}");
            let mut subjects = BTreeSet::new();
            if let Some(uid) = g.uid {
                subjects.insert(Subject::Uid(uid));
            } else if let Some(gid) = g.gid {
                subjects.insert(Subject::Gid(gid));
            } else if let Some(user) = &g.user {
                subjects.insert(Subject::Uid(resolve_user(&at("user"), user)?));
            } else if let Some(group) = &g.group {
                let (gid, members) = resolve_group(&at("group"), group)?;
                subjects.insert(Subject::Gid(gid));
                for m in members {
                    // A member the user database no longer knows is left out, not fatal.
                    match resolve_user(&at("group"), &m) {
                        Ok(uid) => {
                            subjects.insert(Subject::Uid(uid));
                        }
                        Err(e) => tracing::warn!("{e}: member {m:?} left out"),
                    }
                }
            } else if let Some(c) = &g.certificate {
                let subject =
                    canonical_certificate(c).map_err(|rule| field(at("certificate"), rule))?;
                subjects.insert(Subject::Certificate(subject));
            } else if let Some(k) = &g.aws_access_key_id {
                subjects.insert(Subject::AwsAccessKey(k.clone()));
            }
            for s in subjects {
                for r in &g.roles {
                    let r =
                        role(r).ok_or_else(|| field(at("roles"), format!("unknown role {r:?}")))?;
                    policy.grant(s.clone(), &g.vault, r);
                }
            }
        }
        Ok(policy)
    }
}

/// `--dev`: the developer (the uid running keyorchd) holds every role on every vault.
pub fn dev_policy(uid: u32) -> Policy {
    let mut policy = Policy::default();
    grant_all(&mut policy, Subject::Uid(uid));
    policy
}

/// Grants `subject` every role on every vault (`--dev`: the developer, and the dev AWS
/// access key).
pub fn grant_all(policy: &mut Policy, subject: Subject) {
    for r in ALL_ROLES {
        policy.grant(subject.clone(), ANY_VAULT, r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Principal;

    fn entry() -> GrantEntry {
        GrantEntry {
            uid: None,
            gid: None,
            user: None,
            group: None,
            certificate: None,
            aws_access_key_id: None,
            vault: "*".into(),
            roles: vec!["user".into()],
        }
    }

    #[test]
    fn each_entry_needs_one_subject_a_vault_and_known_roles() {
        let e = check_entries(&[entry()]).unwrap_err().to_string();
        assert!(e.contains("access.grant[0]"), "{e}");
        let two = GrantEntry {
            uid: Some(1),
            gid: Some(2),
            ..entry()
        };
        assert!(check_entries(&[two]).is_err());
        let bad_role = GrantEntry {
            uid: Some(1),
            roles: vec!["root".into()],
            ..entry()
        };
        let e = check_entries(&[
            GrantEntry {
                uid: Some(1),
                ..entry()
            },
            bad_role,
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("access.grant[1].roles"), "{e}");
        let no_roles = GrantEntry {
            uid: Some(1),
            roles: vec![],
            ..entry()
        };
        assert!(check_entries(&[no_roles]).is_err());
        let no_vault = GrantEntry {
            uid: Some(1),
            vault: String::new(),
            ..entry()
        };
        let e = check_entries(&[no_vault]).unwrap_err().to_string();
        assert!(e.contains("access.grant[0].vault"), "{e}");
        let bad_dn = GrantEntry {
            certificate: Some("just a name".into()),
            ..entry()
        };
        let e = check_entries(&[bad_dn]).unwrap_err().to_string();
        assert!(e.contains("access.grant[0].certificate"), "{e}");
    }

    #[test]
    fn certificate_subjects_are_canonical() {
        assert_eq!(
            canonical_certificate(" cn = ops , o=example ").unwrap(),
            "CN=ops,O=example"
        );
        assert_eq!(
            canonical_certificate("CN=a\\, b+uid=7,DC=example").unwrap(),
            "CN=a\\, b+UID=7,DC=example"
        );
        assert_eq!(canonical_certificate("CN=x\\ ").unwrap(), "CN=x\\ ");
        assert_eq!(
            canonical_certificate("DNS:client.example").unwrap(),
            "DNS:client.example"
        );
    }

    #[test]
    fn names_resolve_and_unknown_names_are_errors() {
        let cfg = |g: GrantEntry| {
            Config {
            access: super::super::config::AccessSection { grant: vec![g] },
            ..toml::from_str::<Config>(
                "[hsm]\nmodule='/bin/sh'\ntoken_label='x'\npin_env='P'\n[store]\npath='/tmp'\n[listen]\nsocket='/tmp/s'\n",
            )
            .unwrap()
        }
        };
        let p = cfg(GrantEntry {
            user: Some("root".into()),
            roles: vec!["admin".into(), "auditor".into()],
            ..entry()
        })
        .policy()
        .unwrap();
        let root = Principal::Unix { uid: 0, gid: 0 };
        assert!(p.allows(&root, Some("v"), Role::Admin));
        let e = cfg(GrantEntry {
            user: Some("no-such-user-keyorch".into()),
            ..entry()
        })
        .policy()
        .unwrap_err()
        .to_string();
        assert!(e.contains("access.grant[0].user"), "{e}");
        let e = cfg(GrantEntry {
            group: Some("no-such-group-keyorch".into()),
            ..entry()
        })
        .policy()
        .unwrap_err()
        .to_string();
        assert!(e.contains("access.grant[0].group"), "{e}");
        let p = cfg(GrantEntry {
            group: Some("root".into()),
            vault: "vault-1".into(),
            ..entry()
        })
        .policy()
        .unwrap();
        assert!(p.allows(
            &Principal::Unix { uid: 4242, gid: 0 },
            Some("vault-1"),
            Role::User
        ));
        assert!(!p.allows(
            &Principal::Unix { uid: 4242, gid: 0 },
            Some("vault-2"),
            Role::User
        ));
        let p = cfg(GrantEntry {
            certificate: Some("cn=ops, o=example".into()),
            ..entry()
        })
        .policy()
        .unwrap();
        let ops = Principal::Certificate {
            subject: "CN=ops,O=example".into(),
        };
        assert!(p.allows(&ops, Some("v"), Role::User));
        assert!(!p.allows(&ops, Some("v"), Role::Operator));
    }

    #[test]
    fn the_developer_holds_every_role_in_dev() {
        let p = dev_policy(1234);
        let dev = Principal::Unix { uid: 1234, gid: 99 };
        for r in ALL_ROLES {
            assert!(p.allows(&dev, Some("any"), r));
            assert!(p.allows(&dev, None, r));
        }
        assert!(!p.allows(&Principal::Unix { uid: 1, gid: 99 }, None, Role::User));
    }
}
