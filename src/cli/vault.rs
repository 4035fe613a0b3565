//! `keyorch vault ...`: the VaultService RPCs, and how a Vault prints as a record, a table
//! row and JSON.

use clap::Subcommand;
use serde_json::{json, Value};

use super::output::{self, timestamp, timestamp_json, OutputFormat, Record, Table};
use super::paging::{self, PageArgs};
use super::{CliError, Context, Outcome};
use crate::proto::v1::{
    CreateVaultRequest, DeleteVaultRequest, GetVaultRequest, ListVaultsRequest, UpdateVaultRequest,
    Vault,
};

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum VaultCommand {
    /// Create a vault.
    Create {
        /// Vault name, unique (1-100 characters).
        #[arg(long)]
        name: String,
        /// Free text, at most 200 characters.
        #[arg(long)]
        description: Option<String>,
    },
    /// Show one vault.
    Get {
        /// Vault id.
        id: String,
    },
    /// List vaults.
    List {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Rename a vault or change its description.
    Update {
        /// Vault id.
        id: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// New description.
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete an empty vault.
    Delete {
        /// Vault id.
        id: String,
    },
}

pub async fn run(cmd: VaultCommand, ctx: &Context) -> Result<Outcome, CliError> {
    let mut client = ctx.clients().await?.vaults;
    let vault = match cmd {
        VaultCommand::Create { name, description } => client
            .create_vault(CreateVaultRequest {
                name,
                description: description.unwrap_or_default(),
            })
            .await?
            .into_inner(),
        VaultCommand::Get { id } => client.get_vault(GetVaultRequest { id }).await?.into_inner(),
        VaultCommand::Update {
            id,
            name,
            description,
        } => client
            .update_vault(UpdateVaultRequest {
                id,
                name,
                description,
            })
            .await?
            .into_inner(),
        VaultCommand::Delete { id } => {
            client
                .delete_vault(DeleteVaultRequest { id: id.clone() })
                .await?;
            output::print(&output::deleted(ctx.output, &id))?;
            return Ok(Outcome::Success);
        }
        VaultCommand::List { page } => {
            let (vaults, next) = paging::fetch(&page, |page| {
                let mut client = client.clone();
                async move {
                    let r = client
                        .list_vaults(ListVaultsRequest { page: Some(page) })
                        .await?
                        .into_inner();
                    Ok((r.vaults, r.next_page_token))
                }
            })
            .await?;
            output::print(&render_list(ctx.output, &vaults, &next))?;
            return Ok(Outcome::Success);
        }
    };
    output::print(&render(ctx.output, &vault))?;
    Ok(Outcome::Success)
}

pub fn record(v: &Vault) -> Record {
    Record::new()
        .field("id", &v.id)
        .field("name", &v.name)
        .field("description", &v.description)
        .optional("created_at", timestamp(&v.created_at))
        .optional("updated_at", timestamp(&v.updated_at))
}

pub fn to_json(v: &Vault) -> Value {
    json!({
        "id": v.id,
        "name": v.name,
        "description": v.description,
        "created_at": timestamp_json(&v.created_at),
        "updated_at": timestamp_json(&v.updated_at),
    })
}

pub fn table(vaults: &[Vault]) -> Table {
    let mut t = Table::new(vec!["ID", "NAME", "CREATED_AT", "DESCRIPTION"]);
    for v in vaults {
        t.push(vec![
            v.id.clone(),
            v.name.clone(),
            timestamp(&v.created_at).unwrap_or_default(),
            v.description.clone(),
        ]);
    }
    t
}

pub fn render(format: OutputFormat, v: &Vault) -> String {
    match format {
        OutputFormat::Table => record(v).render(),
        OutputFormat::Json => output::render_json(&to_json(v)),
    }
}

pub fn render_list(format: OutputFormat, vaults: &[Vault], next: &str) -> String {
    match format {
        OutputFormat::Table => output::list_text(table(vaults), next),
        OutputFormat::Json => output::render_json(&json!({
            "vaults": vaults.iter().map(to_json).collect::<Vec<_>>(),
            "next_page_token": next,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn sample() -> Vault {
        Vault {
            id: "v-1".into(),
            name: "payments".into(),
            description: "card keys".into(),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            updated_at: None,
        }
    }

    fn parse(args: &[&str]) -> Result<VaultCommand, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("keyorch").chain(args.iter().copied()))?;
        match cli.command {
            crate::cli::Command::Vault(cmd) => Ok(cmd),
            other => panic!("not a vault command: {other:?}"),
        }
    }

    #[test]
    fn parses_every_subcommand() {
        assert_eq!(
            parse(&["vault", "create", "--name", "a", "--description", "d"]).expect("ok"),
            VaultCommand::Create {
                name: "a".into(),
                description: Some("d".into())
            }
        );
        assert_eq!(
            parse(&["vault", "get", "v-1"]).expect("ok"),
            VaultCommand::Get { id: "v-1".into() }
        );
        assert_eq!(
            parse(&[
                "vault",
                "list",
                "--page-size",
                "5",
                "--page-token",
                "t",
                "--all"
            ])
            .expect("ok"),
            VaultCommand::List {
                page: PageArgs {
                    page_size: Some(5),
                    page_token: Some("t".into()),
                    all: true
                }
            }
        );
        assert_eq!(
            parse(&["vault", "update", "v-1", "--name", "b"]).expect("ok"),
            VaultCommand::Update {
                id: "v-1".into(),
                name: Some("b".into()),
                description: None
            }
        );
        assert_eq!(
            parse(&["vault", "delete", "v-1"]).expect("ok"),
            VaultCommand::Delete { id: "v-1".into() }
        );
        assert!(parse(&["vault", "create"]).is_err());
        assert!(parse(&["vault", "get"]).is_err());
    }

    #[test]
    fn renders_a_record() {
        assert_eq!(
            render(OutputFormat::Table, &sample()),
            "id: v-1\nname: payments\ndescription: card keys\ncreated_at: 2023-11-14T22:13:20Z\n"
        );
    }

    #[test]
    fn renders_json() {
        let v: Value = serde_json::from_str(&render(OutputFormat::Json, &sample())).expect("json");
        assert_eq!(
            v,
            json!({"id": "v-1", "name": "payments", "description": "card keys",
                   "created_at": "2023-11-14T22:13:20Z", "updated_at": null})
        );
    }

    #[test]
    fn renders_lists() {
        let text = render_list(OutputFormat::Table, &[sample()], "tok");
        assert_eq!(
            text,
            "ID   NAME      CREATED_AT            DESCRIPTION\n\
             v-1  payments  2023-11-14T22:13:20Z  card keys\n\
             next_page_token: tok\n"
        );
        let v: Value =
            serde_json::from_str(&render_list(OutputFormat::Json, &[sample()], "")).expect("json");
        assert_eq!(v["vaults"][0]["name"], "payments");
        assert_eq!(v["next_page_token"], "");
    }
}
