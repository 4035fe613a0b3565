//! Paging rule for List/Describe calls: size bounds and an opaque cursor token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::DomainError;

pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 1000;

/// A validated page request: return at most `size` items whose id sorts after `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub size: usize,
    pub after: Option<String>,
}

const TOKEN_PREFIX: &str = "k1:";

impl Page {
    pub fn parse(page_size: u32, page_token: &str) -> Result<Page, DomainError> {
        let size = match page_size as usize {
            0 => DEFAULT_PAGE_SIZE,
            n if n > MAX_PAGE_SIZE => {
                return Err(DomainError::invalid(
                    "page.page_size",
                    format!("must be at most {MAX_PAGE_SIZE} (got {n})"),
                ))
            }
            n => n,
        };
        let after = if page_token.is_empty() {
            None
        } else {
            let bad =
                || DomainError::invalid("page.page_token", "is not a token this server issued");
            let raw = URL_SAFE_NO_PAD.decode(page_token).map_err(|_| bad())?;
            let text = String::from_utf8(raw).map_err(|_| bad())?;
            let id = text.strip_prefix(TOKEN_PREFIX).ok_or_else(bad)?;
            if id.is_empty() {
                return Err(bad());
            }
            Some(id.to_string())
        };
        Ok(Page { size, after })
    }

    /// The token for the page after the one that ended with `last_id`.
    pub fn token_after(last_id: &str) -> String {
        URL_SAFE_NO_PAD.encode(format!("{TOKEN_PREFIX}{last_id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_tokens() {
        assert_eq!(Page::parse(0, "").unwrap().size, DEFAULT_PAGE_SIZE);
        assert_eq!(Page::parse(1000, "").unwrap().size, 1000);
        assert!(Page::parse(1001, "").is_err());
        let t = Page::token_after("key_abc");
        assert_eq!(
            Page::parse(5, &t).unwrap().after.as_deref(),
            Some("key_abc")
        );
        assert!(Page::parse(5, "garbage!!").is_err());
        assert!(Page::parse(5, &URL_SAFE_NO_PAD.encode("nope")).is_err());
    }
}
