//! `keyorch health`: one grpc.health.v1 Check against keyorchd; exit 0 only when the
//! answer is SERVING.

use clap::Args;
use serde_json::json;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::output::{self, OutputFormat, Record};
use super::{CliError, Context, Outcome};

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct HealthArgs {
    /// Service to check; empty means the whole server.
    #[arg(long, default_value = "")]
    pub service: String,
}

pub async fn run(args: HealthArgs, ctx: &Context) -> Result<Outcome, CliError> {
    let mut client = HealthClient::new(ctx.channel().await?);
    let response = client
        .check(HealthCheckRequest {
            service: args.service.clone(),
        })
        .await?
        .into_inner();
    let status = ServingStatus::try_from(response.status).unwrap_or(ServingStatus::Unknown);
    output::print(&render(ctx.output, &args.service, status))?;
    Ok(if status == ServingStatus::Serving {
        Outcome::Success
    } else {
        Outcome::Negative
    })
}

pub fn render(format: OutputFormat, service: &str, status: ServingStatus) -> String {
    match format {
        OutputFormat::Table => Record::new().field("status", status.as_str_name()).render(),
        OutputFormat::Json => output::render_json(&json!({
            "service": service,
            "status": status.as_str_name(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_status() {
        assert_eq!(
            render(OutputFormat::Table, "", ServingStatus::Serving),
            "status: SERVING\n"
        );
        assert_eq!(
            render(OutputFormat::Json, "", ServingStatus::NotServing),
            "{\n  \"service\": \"\",\n  \"status\": \"NOT_SERVING\"\n}\n"
        );
    }
}
