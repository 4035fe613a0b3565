//! Paging flags shared by the list commands (`--page-size`, `--page-token`, `--all`) and
//! the loop that follows `next_page_token` to the end.

use std::future::Future;

use clap::Args;

use super::CliError;
use crate::proto::v1::PageRequest;

/// Paging of a list command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct PageArgs {
    /// Results per page (server default 50, at most 1000).
    #[arg(long, value_name = "N")]
    pub page_size: Option<u32>,
    /// Continue from the next_page_token of a previous page.
    #[arg(long, value_name = "TOKEN")]
    pub page_token: Option<String>,
    /// Follow next_page_token until every page is fetched.
    #[arg(long)]
    pub all: bool,
}

impl PageArgs {
    fn request(&self, token: String) -> PageRequest {
        PageRequest {
            page_size: self.page_size.unwrap_or(0),
            page_token: token,
        }
    }
}

/// Fetches one page, or every page with `--all`. Returns the items and the last
/// next_page_token (empty when the listing is complete).
pub async fn fetch<T, F, Fut>(
    page: &PageArgs,
    mut fetch_page: F,
) -> Result<(Vec<T>, String), CliError>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, String), tonic::Status>>,
{
    let mut token = page.page_token.clone().unwrap_or_default();
    let mut items = Vec::new();
    loop {
        let (mut batch, next) = fetch_page(page.request(token)).await?;
        items.append(&mut batch);
        if !page.all || next.is_empty() {
            return Ok((items, next));
        }
        token = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages(req: PageRequest) -> std::future::Ready<Result<(Vec<u32>, String), tonic::Status>> {
        let answer = match req.page_token.as_str() {
            "" => (vec![1, 2], "p2".to_string()),
            "p2" => (vec![3], "p3".to_string()),
            _ => (vec![4], String::new()),
        };
        std::future::ready(Ok(answer))
    }

    #[tokio::test]
    async fn one_page_keeps_the_token() {
        let (items, next) = fetch(&PageArgs::default(), pages).await.expect("ok");
        assert_eq!(items, vec![1, 2]);
        assert_eq!(next, "p2");
    }

    #[tokio::test]
    async fn all_follows_tokens_to_the_end() {
        let args = PageArgs {
            all: true,
            ..PageArgs::default()
        };
        let (items, next) = fetch(&args, pages).await.expect("ok");
        assert_eq!(items, vec![1, 2, 3, 4]);
        assert_eq!(next, "");
    }
}
