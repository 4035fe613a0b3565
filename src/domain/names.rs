//! Name, description and tag rules shared by vaults, keystores and keys (DESIGN §1).

use std::collections::BTreeMap;

use super::DomainError;

pub const MAX_NAME: usize = 100;
pub const MAX_DESCRIPTION: usize = 200;
pub const MAX_TAGS: usize = 50;
pub const MAX_TAG_KEY: usize = 128;
pub const MAX_TAG_VALUE: usize = 256;

/// 1–100 characters; the first a letter or digit; the rest letters, digits, `.`, `-`, `_` or space.
pub fn validate_name(field: &str, name: &str) -> Result<(), DomainError> {
    let count = name.chars().count();
    if count == 0 {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if count > MAX_NAME {
        return Err(DomainError::invalid(
            field,
            format!("must be at most {MAX_NAME} characters (got {count})"),
        ));
    }
    let mut chars = name.chars();
    if let Some(first) = chars.next() {
        if !first.is_alphanumeric() {
            return Err(DomainError::invalid(
                field,
                "must start with a letter or a digit",
            ));
        }
    }
    if let Some(bad) = chars.find(|c| !(c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ')))
    {
        return Err(DomainError::invalid(
            field,
            format!("may contain only letters, digits, '.', '-', '_' and spaces (found {bad:?})"),
        ));
    }
    Ok(())
}

/// At most 200 characters.
pub fn validate_description(field: &str, description: &str) -> Result<(), DomainError> {
    let count = description.chars().count();
    if count > MAX_DESCRIPTION {
        return Err(DomainError::invalid(
            field,
            format!("must be at most {MAX_DESCRIPTION} characters (got {count})"),
        ));
    }
    Ok(())
}

/// At most 50 tags; keys 1–128 characters, values at most 256, no control characters.
pub fn validate_tags(field: &str, tags: &BTreeMap<String, String>) -> Result<(), DomainError> {
    if tags.len() > MAX_TAGS {
        return Err(DomainError::invalid(
            field,
            format!("at most {MAX_TAGS} tags (got {})", tags.len()),
        ));
    }
    for (k, v) in tags {
        let kc = k.chars().count();
        if kc == 0 || kc > MAX_TAG_KEY {
            return Err(DomainError::invalid(
                field,
                format!("tag keys must be 1 to {MAX_TAG_KEY} characters"),
            ));
        }
        if v.chars().count() > MAX_TAG_VALUE {
            return Err(DomainError::invalid(
                field,
                format!("tag {k:?}: values must be at most {MAX_TAG_VALUE} characters"),
            ));
        }
        if k.chars().chain(v.chars()).any(char::is_control) {
            return Err(DomainError::invalid(
                field,
                format!("tag {k:?}: control characters are not allowed"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "A1",
            "9 lives",
            "prod.keys-eu_1",
            &"x".repeat(100),
            "Ünïcode",
        ] {
            assert!(validate_name("name", ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            " a",
            "-a",
            ".a",
            "_a",
            "a/b",
            "a\nb",
            &"x".repeat(101),
            "a:b",
        ] {
            let err = validate_name("name", bad).unwrap_err();
            assert!(matches!(err, DomainError::Invalid { ref field, .. } if field == "name"));
        }
    }

    #[test]
    fn descriptions() {
        assert!(validate_description("description", &"d".repeat(200)).is_ok());
        assert!(validate_description("description", &"d".repeat(201)).is_err());
    }

    #[test]
    fn tags() {
        let mut t = BTreeMap::new();
        t.insert("env".to_string(), "prod".to_string());
        assert!(validate_tags("tags", &t).is_ok());
        t.insert(String::new(), "x".to_string());
        assert!(validate_tags("tags", &t).is_err());
        let many: BTreeMap<_, _> = (0..51).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(validate_tags("tags", &many).is_err());
    }
}
