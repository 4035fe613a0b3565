//! A loopback TCP proxy that puts faults between keyorchd and a real server (issue 16): it
//! passes bytes through, delays each of the client's writes, drops connections, or answers
//! every HTTP/1.1 request itself with an error status, switchable at any time. The fault is
//! read on every chunk the client sends, so connections a client keeps alive are hit too.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does to the client's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bytes pass unchanged.
    None,
    /// Every client write is held this long before it goes on.
    Delay(Duration),
    /// Connections are closed as soon as the client sends anything.
    Drop,
    /// Every request is answered with this HTTP status and an AWS JSON error body
    /// (`ServiceUnavailableException` for 503, `KMSInternalException` otherwise), upstream
    /// never sees it.
    Status(u16),
}

pub struct FaultProxy {
    port: u16,
    fault: Arc<Mutex<Fault>>,
    requests_faulted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Listens on a free loopback port, forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let port = listener.local_addr().unwrap().port();
        let fault = Arc::new(Mutex::new(Fault::None));
        let requests_faulted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, n, s) = (fault.clone(), requests_faulted.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                let (f, n) = (f.clone(), n.clone());
                std::thread::spawn(move || serve(client, upstream, f, n));
            }
        });
        FaultProxy {
            port,
            fault,
            requests_faulted,
            stop,
        }
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Client writes the proxy dropped, delayed or answered itself so far.
    pub fn faulted(&self) -> usize {
        self.requests_faulted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    faulted: Arc<AtomicUsize>,
) {
    let mut server: Option<TcpStream> = None;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let current = *fault.lock().unwrap();
        match current {
            Fault::Drop => {
                faulted.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Fault::Status(code) => {
                pending.extend_from_slice(&buf[..n]);
                // Answer once the whole request (headers and Content-Length body) is in.
                if let Some(len) = request_len(&pending) {
                    if pending.len() >= len {
                        pending.drain(..len);
                        faulted.fetch_add(1, Ordering::Relaxed);
                        let kind = if code == 503 {
                            "ServiceUnavailableException"
                        } else {
                            "KMSInternalException"
                        };
                        let body = format!(
                            "{{\"__type\":\"{kind}\",\"message\":\"injected by the fault proxy\"}}"
                        );
                        let answer = format!(
                            "HTTP/1.1 {code} Injected\r\nContent-Type: application/x-amz-json-1.1\r\n\
                             Content-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if client.write_all(answer.as_bytes()).is_err() {
                            break;
                        }
                    }
                }
            }
            Fault::None | Fault::Delay(_) => {
                if let Fault::Delay(d) = current {
                    faulted.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(d);
                }
                if server.is_none() {
                    let Ok(s) = TcpStream::connect(upstream) else {
                        break;
                    };
                    let (mut from, mut to) = (s.try_clone().unwrap(), client.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                    server = Some(s);
                }
                if server.as_mut().unwrap().write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    if let Some(s) = server {
        let _ = s.shutdown(Shutdown::Both);
    }
}

/// The length of the HTTP/1.1 request at the start of `data`, once its headers are in.
fn request_len(data: &[u8]) -> Option<usize> {
    let end = data.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
    let body = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    Some(end + body)
}
