//! A real HTTP server on loopback for functions to call: it counts the
//! connections it accepts (so a test can show a denied request sent
//! nothing), and answers as the test sets it: a status and body, slowly,
//! or with a huge body. Plain HTTP or HTTPS with a test CA.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the upstream answers each request.
#[derive(Clone, Debug)]
pub enum Answer {
    /// This status, and a body naming the request's method and path.
    Status(u16),
    /// Waits this long before answering 200.
    Slow(Duration),
    /// 200 with this many bytes of body.
    Huge(usize),
}

pub struct Upstream {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    answer: Arc<Mutex<Answer>>,
    stop: Arc<AtomicBool>,
}

/// A CA and a certificate it signed for `localhost` and 127.0.0.1.
pub struct TestCa {
    pub ca_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "Tern test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        TestCa { ca_pem: ca.pem(), cert_der: cert.der().to_vec(), key_der: key.serialize_der() }
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(self.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            )
            .unwrap();
        Arc::new(config)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl Upstream {
    /// One request per connection.
    pub fn start() -> Upstream {
        Self::serve(None, false)
    }

    /// Connections kept alive for more requests.
    pub fn start_keep_alive() -> Upstream {
        Self::serve(None, true)
    }

    /// HTTPS with a certificate from `ca`, connections kept alive.
    pub fn start_tls(ca: &TestCa) -> Upstream {
        Self::serve(Some(ca.server_config()), true)
    }

    fn serve(tls: Option<Arc<rustls::ServerConfig>>, keep_alive: bool) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let answer = Arc::new(Mutex::new(Answer::Status(200)));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, a, s) = (connections.clone(), answer.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let answer = a.clone();
                let tls = tls.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                    match tls {
                        None => handle(conn, answer, keep_alive),
                        Some(config) => {
                            let Ok(session) = rustls::ServerConnection::new(config) else { return };
                            handle(rustls::StreamOwned::new(session, conn), answer, keep_alive)
                        }
                    }
                });
            }
        });
        Upstream { addr, connections, answer, stop }
    }

    pub fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.addr.port())
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Requests and answers; the connection closes after one unless the
/// upstream keeps connections alive.
fn handle(mut conn: impl Read + Write, answers: Arc<Mutex<Answer>>, keep_alive: bool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        while buf.len() < head_end + length {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + length);
        let line = head.lines().next().unwrap_or_default().to_string();
        let answer = answers.lock().unwrap().clone();
        let (status, body) = match answer {
            Answer::Status(s) => (s, format!("upstream saw {line} with {length} bytes\n").into_bytes()),
            Answer::Slow(d) => {
                std::thread::sleep(d);
                (200, b"slow\n".to_vec())
            }
            Answer::Huge(n) => (200, vec![b'x'; n]),
        };
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: {connection}\r\n\r\n",
            body.len()
        );
        if conn.write_all(head.as_bytes()).is_err() {
            return;
        }
        for c in body.chunks(64 * 1024) {
            if conn.write_all(c).is_err() {
                return;
            }
        }
        let _ = conn.flush();
        if !keep_alive {
            return;
        }
    }
}
