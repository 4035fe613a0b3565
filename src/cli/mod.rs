//! The `keyorch` command line: the clap command tree, the shared connection context and
//! dispatch of each subcommand to its module; `run()` is the whole program.

mod audit;
mod bench;
mod bench_cpu;
mod bench_fixture;
mod bench_hpack;
mod bench_install;
mod bench_raw;
mod bench_raw_install;
mod bench_scale;
mod bench_soak;
mod bench_stats;
mod bench_xks;
mod crypto;
mod error;
mod health;
mod input;
mod key;
mod keystore;
mod output;
mod paging;
mod vault;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tonic::transport::Channel;

use crate::client::Clients;
pub use error::CliError;
pub use output::OutputFormat;

/// keyorch: command-line client of the keyorchd key orchestrator.
#[derive(Debug, Parser)]
#[command(name = "keyorch", version)]
pub struct Cli {
    /// Unix socket of keyorchd.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = crate::paths::SOCKET_ENV,
        value_name = "PATH",
        default_value_os_t = crate::paths::default_socket()
    )]
    pub socket: PathBuf,

    /// Output format.
    #[arg(
        long,
        short = 'o',
        global = true,
        help_heading = "Global options",
        env = "KEYORCH_OUTPUT",
        value_enum,
        default_value_t = OutputFormat::Table
    )]
    pub output: OutputFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// The top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage vaults.
    #[command(subcommand)]
    Vault(vault::VaultCommand),
    /// Manage keystores and their connections.
    #[command(subcommand)]
    Keystore(keystore::KeystoreCommand),
    /// Manage keys and their lifecycle.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Encrypt with an AES key (AES-GCM); prints the ciphertext in base64.
    Encrypt(crypto::EncryptArgs),
    /// Decrypt a base64 ciphertext; writes the raw plaintext to stdout.
    Decrypt(crypto::DecryptArgs),
    /// Generate a data key: its plaintext and its ciphertext under an AES key.
    DataKey(crypto::DataKeyArgs),
    /// Sign a message with an RSA or EC key; prints the signature in base64.
    Sign(crypto::SignArgs),
    /// Verify a signature; prints valid or invalid (exit 0 when valid, 1 when invalid).
    Verify(crypto::VerifyArgs),
    /// Compute an HMAC-SHA256 with an HMAC key; prints it in base64.
    Mac(crypto::MacArgs),
    /// Verify an HMAC; prints valid or invalid (exit 0 when valid, 1 when invalid).
    VerifyMac(crypto::VerifyMacArgs),
    /// Print the public key of an RSA or EC key.
    PublicKey(crypto::PublicKeyArgs),
    /// Ask keyorchd's grpc.health.v1 service whether it is serving (exit 0 when SERVING).
    Health(health::HealthArgs),
    /// Read and verify the hash-chained audit trail.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Measure keyorchd: against raw PKCS#11 on the same tokens (encrypt, install, xks), and
    /// under a long mixed load (soak).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// How a command that ran to the end wants the process to exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Success,
    /// Exit 1 without an error message: the answer was "no" (invalid signature, not serving).
    Negative,
}

/// What every command needs: where the daemon is and how to print.
#[derive(Debug, Clone)]
pub struct Context {
    pub socket: PathBuf,
    pub output: OutputFormat,
}

impl Context {
    /// Opens the channel to keyorchd; failure is [`CliError::Connect`] (exit 3).
    pub async fn channel(&self) -> Result<Channel, CliError> {
        crate::client::connect(&self.socket)
            .await
            .map_err(|source| CliError::Connect {
                socket: self.socket.clone(),
                source,
            })
    }

    /// Every keyorch.v1 client on one fresh channel.
    pub async fn clients(&self) -> Result<Clients, CliError> {
        Ok(Clients::new(self.channel().await?))
    }
}

/// Parses the command line, runs the command and returns the process exit code:
/// 0 success, 1 server error or negative answer, 2 usage error, 3 daemon unreachable.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // clap prints help/version to stdout and errors to stderr; usage errors exit 2.
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
    };
    match execute(cli) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Negative) => ExitCode::from(1),
        Err(err) => {
            eprint!("{}", err.report());
            ExitCode::from(err.exit_code())
        }
    }
}

/// Runs a parsed command line on a single-threaded tokio runtime.
pub fn execute(cli: Cli) -> Result<Outcome, CliError> {
    let ctx = Context {
        socket: cli.socket,
        output: cli.output,
    };
    if let Command::Bench(bench) = &cli.command {
        // SOFTHSM2_CONF must be in the environment before any thread exists.
        bench.prepare_environment()?;
    }
    // One thread for every command, `bench` included: its concurrent calls are tasks on one
    // thread, which costs the client ≈ 25 % less CPU per call than a multi-threaded runtime
    // (docs/benchmarks.md) — CPU that, on a small host, keyorchd would otherwise lose.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Local(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(dispatch(cli.command, &ctx))
}

async fn dispatch(command: Command, ctx: &Context) -> Result<Outcome, CliError> {
    match command {
        Command::Vault(cmd) => vault::run(cmd, ctx).await,
        Command::Audit(cmd) => audit::run(cmd, ctx).await,
        Command::Keystore(cmd) => keystore::run(cmd, ctx).await,
        Command::Key(cmd) => key::run(cmd, ctx).await,
        Command::Encrypt(args) => crypto::encrypt(args, ctx).await,
        Command::Decrypt(args) => crypto::decrypt(args, ctx).await,
        Command::DataKey(args) => crypto::data_key(args, ctx).await,
        Command::Sign(args) => crypto::sign(args, ctx).await,
        Command::Verify(args) => crypto::verify(args, ctx).await,
        Command::Mac(args) => crypto::mac(args, ctx).await,
        Command::VerifyMac(args) => crypto::verify_mac(args, ctx).await,
        Command::PublicKey(args) => crypto::public_key(args, ctx).await,
        Command::Health(args) => health::run(args, ctx).await,
        Command::Bench(cmd) => bench::run(cmd, ctx).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_parse_anywhere() {
        let cli = Cli::try_parse_from([
            "keyorch",
            "vault",
            "list",
            "--socket",
            "/tmp/k.sock",
            "--output",
            "json",
        ])
        .expect("parses");
        assert_eq!(cli.socket, PathBuf::from("/tmp/k.sock"));
        assert_eq!(cli.output, OutputFormat::Json);
    }

    #[test]
    fn unknown_subcommand_is_a_usage_error() {
        let err = Cli::try_parse_from(["keyorch", "frobnicate"]).expect_err("rejected");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn bad_output_format_is_rejected() {
        let err =
            Cli::try_parse_from(["keyorch", "--output", "yaml", "health"]).expect_err("rejected");
        assert_eq!(err.exit_code(), 2);
    }
}
