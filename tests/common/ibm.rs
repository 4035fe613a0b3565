//! The loopback fake of IBM's KMS API v2 and IAM (tests/ibm_kms/fake.py) and the Python it
//! runs on: the venv of scripts/ibm-clients.sh (IBM's SDK and `cryptography`), installed once
//! per test binary into target/ibm-clients-venv (`KEYORCH_IBM_CLIENTS_VENV` picks another).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

/// How long a fake may take to print `LISTENING <port>`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv scripts/ibm-clients.sh installed the SDK and cryptography into (once per binary).
pub fn venv() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let venv = std::env::var_os("KEYORCH_IBM_CLIENTS_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("target/ibm-clients-venv"));
        let out = Command::new(repo().join("scripts/ibm-clients.sh"))
            .arg("install")
            .arg(&venv)
            .output()
            .expect("run scripts/ibm-clients.sh");
        assert!(
            out.status.success(),
            "scripts/ibm-clients.sh install failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        venv
    })
    .clone()
}

/// The venv's python, with nothing from the caller's environment (no proxies, no
/// REQUESTS_CA_BUNDLE, no IBM_CREDENTIALS_FILE).
pub fn python(home: &Path) -> Command {
    let mut cmd = Command::new(venv().join("bin/python"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .stdin(Stdio::null());
    cmd
}

/// A running fake.py; killed when dropped.
pub struct Fake {
    child: Child,
    pub url: String,
    /// Its stderr: one line per request, `method path -> status`.
    pub log: PathBuf,
}

impl Fake {
    /// A fake of `flavor` accepting `api_key` for `instance`, over https with `server.pem`
    /// and `server-key.pem` in `dir`, or over http; `extra` arguments such as `--deny list`.
    pub fn start(
        dir: &Path,
        flavor: &str,
        (api_key, instance): (&str, &str),
        extra: &[&str],
        https: bool,
    ) -> Fake {
        let name = format!(
            "fake-{flavor}{}{}",
            extra.join("").replace(',', "-"),
            if https { "" } else { "-http" }
        );
        let log = dir.join(format!("{name}.stderr"));
        let stderr = File::create(&log).expect("fake stderr file");
        let mut cmd = python(dir);
        cmd.arg(repo().join("tests/ibm_kms/fake.py"))
            .args(["--port", "0", "--flavor", flavor])
            .args(["--api-key", api_key, "--instance-id", instance]);
        if https {
            cmd.arg("--cert")
                .arg(dir.join("server.pem"))
                .arg("--key")
                .arg(dir.join("server-key.pem"));
        }
        let mut child = cmd
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start fake.py");
        let stdout = child.stdout.take().expect("fake stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let port = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line
                .strip_prefix("LISTENING ")
                .and_then(|p| p.trim().parse::<u16>().ok())
                .unwrap_or_else(|| panic!("{name} printed {line:?}, not LISTENING <port>")),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let err = std::fs::read_to_string(&log);
                panic!("{name} did not start within {START_TIMEOUT:?}:\n{err:?}");
            }
        };
        Fake {
            child,
            url: format!(
                "{}://127.0.0.1:{port}",
                if https { "https" } else { "http" }
            ),
            log,
        }
    }

    /// What the fake logged so far.
    pub fn logged(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
