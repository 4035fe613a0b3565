//! The CryptoService commands: encrypt, decrypt, data-key, sign, verify, mac, verify-mac
//! and public-key, with their payload handling and output in both formats.

use clap::{Args, ValueEnum};
use serde_json::json;

use super::input::{CiphertextSource, MessageSource, PlaintextSource};
use super::output::{self, b64, b64_decode, full_name, short_name, OutputFormat, Record};
use super::{CliError, Context, Outcome};
use crate::proto::v1::{
    DecryptRequest, EncryptRequest, GenerateDataKeyRequest, GenerateMacRequest,
    GetPublicKeyRequest, GetPublicKeyResponse, SignRequest, SigningAlgorithm, VerifyMacRequest,
    VerifyRequest,
};

/// `--algorithm` of sign and verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SigningAlgorithmArg {
    #[value(name = "rsassa-pss-sha-256")]
    RsassaPssSha256,
    #[value(name = "rsassa-pss-sha-384")]
    RsassaPssSha384,
    #[value(name = "rsassa-pss-sha-512")]
    RsassaPssSha512,
    #[value(name = "rsassa-pkcs1-v1-5-sha-256")]
    RsassaPkcs1V15Sha256,
    #[value(name = "rsassa-pkcs1-v1-5-sha-384")]
    RsassaPkcs1V15Sha384,
    #[value(name = "rsassa-pkcs1-v1-5-sha-512")]
    RsassaPkcs1V15Sha512,
    #[value(name = "ecdsa-sha-256")]
    EcdsaSha256,
    #[value(name = "ecdsa-sha-384")]
    EcdsaSha384,
}

impl From<SigningAlgorithmArg> for SigningAlgorithm {
    fn from(a: SigningAlgorithmArg) -> Self {
        match a {
            SigningAlgorithmArg::RsassaPssSha256 => SigningAlgorithm::RsassaPssSha256,
            SigningAlgorithmArg::RsassaPssSha384 => SigningAlgorithm::RsassaPssSha384,
            SigningAlgorithmArg::RsassaPssSha512 => SigningAlgorithm::RsassaPssSha512,
            SigningAlgorithmArg::RsassaPkcs1V15Sha256 => SigningAlgorithm::RsassaPkcs1V15Sha256,
            SigningAlgorithmArg::RsassaPkcs1V15Sha384 => SigningAlgorithm::RsassaPkcs1V15Sha384,
            SigningAlgorithmArg::RsassaPkcs1V15Sha512 => SigningAlgorithm::RsassaPkcs1V15Sha512,
            SigningAlgorithmArg::EcdsaSha256 => SigningAlgorithm::EcdsaSha256,
            SigningAlgorithmArg::EcdsaSha384 => SigningAlgorithm::EcdsaSha384,
        }
    }
}

/// Bytes given on the command line as base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base64Bytes(pub Vec<u8>);

fn parse_base64(s: &str) -> Result<Base64Bytes, String> {
    b64_decode(s)
        .map(Base64Bytes)
        .map_err(|e| format!("not valid base64: {e}"))
}

/// `data-key --bytes`: 16 or 32.
fn parse_data_key_bytes(s: &str) -> Result<u32, String> {
    match s {
        "16" => Ok(16),
        "32" => Ok(32),
        _ => Err("must be 16 or 32".into()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct EncryptArgs {
    /// Key id (an ACTIVE AES key).
    #[arg(long)]
    pub key: String,
    #[command(flatten)]
    pub input: PlaintextSource,
    /// Additional authenticated data, as text.
    #[arg(long, value_name = "TEXT")]
    pub aad: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct DecryptArgs {
    /// Key id (the AES key that encrypted).
    #[arg(long)]
    pub key: String,
    #[command(flatten)]
    pub input: CiphertextSource,
    /// Additional authenticated data given at encryption, as text.
    #[arg(long, value_name = "TEXT")]
    pub aad: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct DataKeyArgs {
    /// Key id (an ACTIVE AES key) that encrypts the data key.
    #[arg(long)]
    pub key: String,
    /// Data key length in bytes: 16 or 32.
    #[arg(long, value_name = "16|32", default_value = "32", value_parser = parse_data_key_bytes)]
    pub bytes: u32,
    /// Additional authenticated data, as text.
    #[arg(long, value_name = "TEXT")]
    pub aad: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct SignArgs {
    /// Key id (an ACTIVE RSA or EC key).
    #[arg(long)]
    pub key: String,
    /// Signing algorithm (ECDSA signatures are DER).
    #[arg(long, value_enum)]
    pub algorithm: SigningAlgorithmArg,
    #[command(flatten)]
    pub input: MessageSource,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct VerifyArgs {
    /// Key id (an RSA or EC key).
    #[arg(long)]
    pub key: String,
    /// Signing algorithm.
    #[arg(long, value_enum)]
    pub algorithm: SigningAlgorithmArg,
    /// Signature, base64.
    #[arg(long, value_name = "B64", value_parser = parse_base64)]
    pub signature: Base64Bytes,
    #[command(flatten)]
    pub input: MessageSource,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct MacArgs {
    /// Key id (an ACTIVE HMAC-SHA256 key).
    #[arg(long)]
    pub key: String,
    #[command(flatten)]
    pub input: MessageSource,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct VerifyMacArgs {
    /// Key id (an HMAC-SHA256 key).
    #[arg(long)]
    pub key: String,
    /// MAC, base64.
    #[arg(long, value_name = "B64", value_parser = parse_base64)]
    pub mac: Base64Bytes,
    #[command(flatten)]
    pub input: MessageSource,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct PublicKeyArgs {
    /// Key id (an RSA or EC key).
    #[arg(long)]
    pub key: String,
    /// Print only the PEM (table output).
    #[arg(long)]
    pub pem: bool,
}

fn aad_bytes(aad: Option<String>) -> Vec<u8> {
    aad.map(String::into_bytes).unwrap_or_default()
}

/// A verdict for verify and verify-mac, and the exit it implies.
fn verdict(valid: bool) -> (&'static str, Outcome) {
    if valid {
        ("valid", Outcome::Success)
    } else {
        ("invalid", Outcome::Negative)
    }
}

/// Prints a verification result (`valid`/`invalid`, or JSON `{"key_id", <field>}`); an
/// invalid one is a negative outcome (exit 1).
fn print_verdict(
    format: OutputFormat,
    key_id: &str,
    field: &str,
    valid: bool,
) -> Result<Outcome, CliError> {
    let (word, outcome) = verdict(valid);
    let text = match format {
        OutputFormat::Table => format!("{word}\n"),
        OutputFormat::Json => output::render_json(&json!({ "key_id": key_id, field: valid })),
    };
    output::print(&text)?;
    Ok(outcome)
}

/// Table output is the bare value on one line; JSON is `{"key_id", <field>}`.
fn value_line(format: OutputFormat, key_id: &str, field: &str, value: &str) -> String {
    match format {
        OutputFormat::Table => format!("{value}\n"),
        OutputFormat::Json => output::render_json(&json!({ "key_id": key_id, field: value })),
    }
}

pub async fn encrypt(args: EncryptArgs, ctx: &Context) -> Result<Outcome, CliError> {
    let plaintext = args.input.read()?;
    let mut client = ctx.clients().await?.crypto;
    let r = client
        .encrypt(EncryptRequest {
            key_id: args.key,
            plaintext,
            aad: aad_bytes(args.aad),
        })
        .await?
        .into_inner();
    output::print(&value_line(
        ctx.output,
        &r.key_id,
        "ciphertext",
        &b64(&r.ciphertext),
    ))?;
    Ok(Outcome::Success)
}

pub async fn decrypt(args: DecryptArgs, ctx: &Context) -> Result<Outcome, CliError> {
    let text = args.input.read()?;
    let ciphertext = std::str::from_utf8(&text)
        .ok()
        .and_then(|t| b64_decode(t).ok())
        .ok_or_else(|| CliError::Usage("the ciphertext is not valid base64".into()))?;
    let mut client = ctx.clients().await?.crypto;
    let r = client
        .decrypt(DecryptRequest {
            key_id: args.key,
            ciphertext,
            aad: aad_bytes(args.aad),
        })
        .await?
        .into_inner();
    match ctx.output {
        OutputFormat::Table => output::print_bytes(&r.plaintext)?,
        OutputFormat::Json => output::print(&value_line(
            OutputFormat::Json,
            &r.key_id,
            "plaintext",
            &b64(&r.plaintext),
        ))?,
    }
    Ok(Outcome::Success)
}

pub async fn data_key(args: DataKeyArgs, ctx: &Context) -> Result<Outcome, CliError> {
    let mut client = ctx.clients().await?.crypto;
    let r = client
        .generate_data_key(GenerateDataKeyRequest {
            key_id: args.key,
            number_of_bytes: args.bytes,
            aad: aad_bytes(args.aad),
        })
        .await?
        .into_inner();
    let text = match ctx.output {
        OutputFormat::Table => Record::new()
            .field("key_id", &r.key_id)
            .field("plaintext", b64(&r.plaintext))
            .field("ciphertext", b64(&r.ciphertext))
            .render(),
        OutputFormat::Json => output::render_json(&json!({
            "key_id": r.key_id,
            "plaintext": b64(&r.plaintext),
            "ciphertext": b64(&r.ciphertext),
        })),
    };
    output::print(&text)?;
    Ok(Outcome::Success)
}

pub async fn sign(args: SignArgs, ctx: &Context) -> Result<Outcome, CliError> {
    let message = args.input.read()?;
    let mut client = ctx.clients().await?.crypto;
    let r = client
        .sign(SignRequest {
            key_id: args.key,
            message,
            algorithm: SigningAlgorithm::from(args.algorithm) as i32,
        })
        .await?
        .into_inner();
    let text = match ctx.output {
        OutputFormat::Table => format!("{}\n", b64(&r.signature)),
        OutputFormat::Json => output::render_json(&json!({
            "key_id": r.key_id,
            "signature": b64(&r.signature),
            "algorithm": full_name::<SigningAlgorithm>(r.algorithm),
        })),
    };
    output::print(&text)?;
    Ok(Outcome::Success)
}

pub async fn verify(args: VerifyArgs, ctx: &Context) -> Result<Outcome, CliError> {
    let message = args.input.read()?;
    let mut client = ctx.clients().await?.crypto;
    let r = client
        .verify(VerifyRequest {
            key_id: args.key,
            message,
            signature: args.signature.0,
            algorithm: SigningAlgorithm::from(args.algorithm) as i32,
        })
        .await?
        .into_inner();
    print_verdict(ctx.output, &r.key_id, "signature_valid", r.signature_valid)
}

pub async fn mac(args: MacArgs, ctx: &Context) -> Result<Outcome, CliError> {
    let message = args.input.read()?;
    let mut client = ctx.clients().await?.crypto;
    let r = client
        .generate_mac(GenerateMacRequest {
            key_id: args.key,
            message,
        })
        .await?
        .into_inner();
    output::print(&value_line(ctx.output, &r.key_id, "mac", &b64(&r.mac)))?;
    Ok(Outcome::Success)
}

pub async fn verify_mac(args: VerifyMacArgs, ctx: &Context) -> Result<Outcome, CliError> {
    let message = args.input.read()?;
    let mut client = ctx.clients().await?.crypto;
    let r = client
        .verify_mac(VerifyMacRequest {
            key_id: args.key,
            message,
            mac: args.mac.0,
        })
        .await?
        .into_inner();
    print_verdict(ctx.output, &r.key_id, "mac_valid", r.mac_valid)
}

pub async fn public_key(args: PublicKeyArgs, ctx: &Context) -> Result<Outcome, CliError> {
    let mut client = ctx.clients().await?.crypto;
    let r = client
        .get_public_key(GetPublicKeyRequest { key_id: args.key })
        .await?
        .into_inner();
    output::print(&render_public_key(ctx.output, &r, args.pem))?;
    Ok(Outcome::Success)
}

/// PEM of a DER SubjectPublicKeyInfo: the server's own PEM when it sent one.
fn pem(r: &GetPublicKeyResponse) -> String {
    if !r.public_key_pem.is_empty() {
        let mut pem = r.public_key_pem.clone();
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
        return pem;
    }
    let body = b64(&r.public_key_der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

pub fn render_public_key(format: OutputFormat, r: &GetPublicKeyResponse, pem_only: bool) -> String {
    match format {
        OutputFormat::Table if pem_only => pem(r),
        OutputFormat::Table => {
            let algorithms: Vec<String> = r
                .signing_algorithms
                .iter()
                .map(|a| short_name::<SigningAlgorithm>(*a))
                .collect();
            Record::new()
                .field("key_id", &r.key_id)
                .field("signing_algorithms", algorithms.join(", "))
                .field("public_key_der", b64(&r.public_key_der))
                .render()
        }
        OutputFormat::Json => {
            let algorithms: Vec<_> = r
                .signing_algorithms
                .iter()
                .map(|a| full_name::<SigningAlgorithm>(*a))
                .collect();
            output::render_json(&json!({
                "key_id": r.key_id,
                "public_key_der": b64(&r.public_key_der),
                "public_key_pem": pem(r),
                "signing_algorithms": algorithms,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use serde_json::Value;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("keyorch").chain(args.iter().copied()))
            .map(|c| c.command)
    }

    #[test]
    fn parses_encrypt_sources() {
        let Command::Encrypt(a) =
            parse(&["encrypt", "--key", "k", "--plaintext", "hi", "--aad", "ctx"]).expect("ok")
        else {
            panic!("not encrypt")
        };
        assert_eq!(a.input.plaintext.as_deref(), Some("hi"));
        assert_eq!(a.aad.as_deref(), Some("ctx"));
        assert!(parse(&["encrypt", "--key", "k", "-"]).is_ok());
        assert!(parse(&["encrypt", "--key", "k", "--in", "f.bin"]).is_ok());
        assert_eq!(
            parse(&["encrypt", "--key", "k"])
                .expect_err("no input")
                .exit_code(),
            2
        );
        assert!(parse(&["encrypt", "--plaintext", "hi"]).is_err());
    }

    #[test]
    fn parses_decrypt_and_data_key() {
        assert!(parse(&["decrypt", "--key", "k", "--ciphertext", "AAAA"]).is_ok());
        assert!(parse(&["decrypt", "--key", "k", "--in", "ct.b64"]).is_ok());
        let Command::DataKey(a) = parse(&["data-key", "--key", "k"]).expect("ok") else {
            panic!("not data-key")
        };
        assert_eq!(a.bytes, 32);
        assert!(parse(&["data-key", "--key", "k", "--bytes", "16", "--aad", "x"]).is_ok());
        assert!(parse(&["data-key", "--key", "k", "--bytes", "24"]).is_err());
    }

    #[test]
    fn parses_sign_and_verify() {
        let Command::Sign(a) = parse(&[
            "sign",
            "--key",
            "k",
            "--algorithm",
            "rsassa-pkcs1-v1-5-sha-384",
            "--message",
            "m",
        ])
        .expect("ok") else {
            panic!("not sign")
        };
        assert_eq!(a.algorithm, SigningAlgorithmArg::RsassaPkcs1V15Sha384);
        let Command::Verify(v) = parse(&[
            "verify",
            "--key",
            "k",
            "--algorithm",
            "ecdsa-sha-256",
            "--signature",
            "aGVsbG8=",
            "--in",
            "msg.txt",
        ])
        .expect("ok") else {
            panic!("not verify")
        };
        assert_eq!(v.signature, Base64Bytes(b"hello".to_vec()));
        assert!(parse(&[
            "verify",
            "--key",
            "k",
            "--algorithm",
            "ecdsa-sha-256",
            "--signature",
            "!!",
            "--message",
            "m"
        ])
        .is_err());
        assert!(parse(&["sign", "--key", "k", "--algorithm", "rsa", "--message", "m"]).is_err());
    }

    #[test]
    fn parses_mac_and_public_key() {
        assert!(parse(&["mac", "--key", "k", "--message", "m"]).is_ok());
        assert!(parse(&[
            "verify-mac",
            "--key",
            "k",
            "--mac",
            "AAAA",
            "--message",
            "m"
        ])
        .is_ok());
        assert!(parse(&["verify-mac", "--key", "k", "--message", "m"]).is_err());
        let Command::PublicKey(p) = parse(&["public-key", "--key", "k", "--pem"]).expect("ok")
        else {
            panic!("not public-key")
        };
        assert!(p.pem);
    }

    #[test]
    fn renders_values() {
        assert_eq!(
            value_line(OutputFormat::Table, "k", "ciphertext", "AAAA"),
            "AAAA\n"
        );
        let v: Value =
            serde_json::from_str(&value_line(OutputFormat::Json, "k", "ciphertext", "AAAA"))
                .expect("json");
        assert_eq!(v, json!({"key_id": "k", "ciphertext": "AAAA"}));
        assert_eq!(verdict(false), ("invalid", Outcome::Negative));
    }

    #[test]
    fn renders_public_keys() {
        let r = GetPublicKeyResponse {
            key_id: "k".into(),
            public_key_der: vec![7u8; 60],
            public_key_pem: String::new(),
            signing_algorithms: vec![SigningAlgorithm::EcdsaSha256 as i32],
        };
        let pem_text = render_public_key(OutputFormat::Table, &r, true);
        assert!(pem_text.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(pem_text.ends_with("-----END PUBLIC KEY-----\n"));
        assert!(pem_text.lines().all(|l| l.len() <= 64));
        let table = render_public_key(OutputFormat::Table, &r, false);
        assert!(table.contains("signing_algorithms: ECDSA_SHA_256\n"));
        let v: Value =
            serde_json::from_str(&render_public_key(OutputFormat::Json, &r, false)).expect("json");
        assert_eq!(
            v["signing_algorithms"],
            json!(["SIGNING_ALGORITHM_ECDSA_SHA_256"])
        );
    }
}
