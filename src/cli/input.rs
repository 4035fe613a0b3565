//! Where a command's payload comes from: exactly one of a text flag, `--in FILE`
//! (`--in -` is stdin) or a lone `-` argument (stdin).

use std::io::Read;
use std::path::{Path, PathBuf};

use super::CliError;

/// Reads all of stdin.
fn read_stdin() -> Result<Vec<u8>, CliError> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut buf)
        .map_err(|source| CliError::Io {
            what: "cannot read stdin".into(),
            source,
        })?;
    Ok(buf)
}

/// Reads a file, or stdin when the path is `-`.
pub fn read_path(path: &Path) -> Result<Vec<u8>, CliError> {
    if path == Path::new("-") {
        return read_stdin();
    }
    std::fs::read(path).map_err(|source| CliError::Io {
        what: format!("cannot read {}", path.display()),
        source,
    })
}

/// Resolves the three mutually exclusive ways of giving a payload (clap guarantees one).
fn resolve(
    text: Option<String>,
    file: Option<PathBuf>,
    stdin: Option<String>,
) -> Result<Vec<u8>, CliError> {
    match (text, file, stdin) {
        (Some(text), _, _) => Ok(text.into_bytes()),
        (None, Some(path), _) => read_path(&path),
        (None, None, Some(_)) => read_stdin(),
        (None, None, None) => Err(CliError::Usage("no input given".into())),
    }
}

macro_rules! payload_source {
    ($name:ident, $flag:ident, $flag_name:literal, $text_help:literal, $file_help:literal) => {
        /// One payload source; exactly one must be given.
        #[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
        #[group(required = true, multiple = false)]
        pub struct $name {
            #[arg(long = $flag_name, value_name = "TEXT", help = $text_help)]
            pub $flag: Option<String>,
            #[arg(long = "in", value_name = "FILE", help = $file_help)]
            pub file: Option<PathBuf>,
            /// `-`: read from stdin.
            #[arg(value_name = "-", value_parser = ["-"], hide_possible_values = true)]
            pub stdin: Option<String>,
        }

        impl $name {
            /// The payload bytes as given (text as UTF-8, files and stdin as they are).
            pub fn read(self) -> Result<Vec<u8>, CliError> {
                resolve(self.$flag, self.file, self.stdin)
            }
        }
    };
}

payload_source!(
    PlaintextSource,
    plaintext,
    "plaintext",
    "Plaintext given as text",
    "Read the plaintext from FILE (`-` for stdin)"
);
payload_source!(
    CiphertextSource,
    ciphertext,
    "ciphertext",
    "Ciphertext given as base64",
    "Read the base64 ciphertext from FILE (`-` for stdin)"
);
payload_source!(
    MessageSource,
    message,
    "message",
    "Message given as text",
    "Read the message from FILE (`-` for stdin)"
);

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        source: MessageSource,
    }

    #[test]
    fn exactly_one_source() {
        let p = Probe::try_parse_from(["p", "--message", "hi"]).expect("text");
        assert_eq!(p.source.read().expect("reads"), b"hi");
        let p = Probe::try_parse_from(["p", "-"]).expect("dash");
        assert_eq!(p.source.stdin.as_deref(), Some("-"));
        let p = Probe::try_parse_from(["p", "--in", "-"]).expect("in dash");
        assert_eq!(p.source.file, Some(PathBuf::from("-")));
        assert!(Probe::try_parse_from(["p"]).is_err());
        assert!(Probe::try_parse_from(["p", "--message", "a", "--in", "f"]).is_err());
        assert!(Probe::try_parse_from(["p", "--message", "a", "-"]).is_err());
        assert!(Probe::try_parse_from(["p", "file.txt"]).is_err());
    }

    #[test]
    fn file_source_reads_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.bin");
        std::fs::write(&path, [0u8, 159, 146, 150]).expect("write");
        let p = Probe::try_parse_from(["p", "--in", path.to_str().expect("utf8")]).expect("ok");
        assert_eq!(p.source.read().expect("reads"), vec![0u8, 159, 146, 150]);
        let missing = Probe::try_parse_from(["p", "--in", "/nonexistent/x"]).expect("ok");
        assert_eq!(missing.source.read().expect_err("fails").exit_code(), 1);
    }
}
