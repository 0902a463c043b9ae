//! A granted request to the network: resolve the host and keep only the
//! addresses the grant allows, connect to one of them (never resolving
//! again, so the checked address is the one used), TLS with rustls, one
//! HTTP/1.1 exchange, and a response body counted and cut at the
//! function's `--max-outbound-body`.

use super::address::is_private;
use super::pool::{Conn, Keep};
use super::{Call, Notes, OutboundError, OutboundGrant};
use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// The TLS client every function on the worker uses: the platform's root
/// store (as rustls-native-certs reads it) and any `--outbound-ca`.
pub(super) fn tls_connector(
    extra: &[CertificateDer<'static>],
) -> Result<tokio_rustls::TlsConnector, OutboundError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!("a certificate of the platform's root store was not read: {e}");
    }
    roots.add_parsable_certificates(native.certs);
    for cert in extra {
        roots
            .add(cert.clone())
            .map_err(|e| OutboundError::Tls(format!("an --outbound-ca certificate: {e}")))?;
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| OutboundError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The addresses of the call's host it may connect to. A private or local
/// address is kept only if a pattern that granted the call names it.
pub(super) async fn resolve(call: &Call) -> Result<Vec<SocketAddr>, Error> {
    let up = &call.upstream;
    let net = &call.grant.net;
    let found: Vec<SocketAddr> = match up.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, up.port)],
        Err(_) => {
            let lookup = tokio::net::lookup_host((up.host.as_str(), up.port));
            match tokio::time::timeout(call.remaining(), lookup).await {
                Ok(Ok(addrs)) => addrs.collect(),
                Ok(Err(e)) => {
                    net.count(|c| &c.errors, 1);
                    call.notes
                        .push(format!("outbound request to {}: cannot resolve it: {e}", up.authority()));
                    return Err(Error::DnsError { rcode: Some(e.to_string()), info_code: None });
                }
                Err(_) => return Err(Error::DnsTimeout),
            }
        }
    };
    let allowed: Vec<SocketAddr> = found
        .iter()
        .copied()
        .filter(|a| !is_private(a.ip()) || call.granted.iter().any(|p| p.names_address(a.ip())))
        .collect();
    if allowed.is_empty() {
        let Some(first) = found.first() else { return Err(Error::DestinationNotFound) };
        net.count(|c| &c.denied, 1);
        call.notes.push(format!(
            "outbound request to {} denied: it is {}, a private or local address, and no --allow-outbound pattern names that address or its network",
            up.authority(),
            first.ip()
        ));
        return Err(Error::DestinationIpProhibited);
    }
    Ok(allowed)
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Sends `req` over a kept-alive connection to the upstream if the
/// function's pool has one, else a new one to the first of `addrs` that
/// answers. The connection comes back with the response, to return to the
/// pool when its body has been read to the end.
pub(super) async fn call(
    call: &Call,
    addrs: Vec<SocketAddr>,
    mut req: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<(http::Response<WasiBody>, Keep), Error> {
    let remaining = call.remaining();
    let within = |t: Option<std::time::Duration>| t.map_or(remaining, |t| t.min(remaining));
    let connect_timeout = within(options.and_then(|o| o.connect_timeout));
    let first_byte_timeout = within(options.and_then(|o| o.first_byte_timeout));

    // The request line carries the path; the authority is in Host.
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
    *req.uri_mut() = http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;
    let mut req = req.map(|b| super::count_request(b, call.grant.net.clone()));

    let key = format!("{}://{}", call.upstream.scheme, call.upstream.authority());
    let pool = &call.grant.pool;
    let (conn, res) = loop {
        let (mut conn, pooled) = match pool.take(&key) {
            Some(c) => (c, true),
            None => (open(call, &addrs, connect_timeout).await?, false),
        };
        // A kept-alive connection is ready once it has read the end of its
        // last response; one the upstream closed is not.
        if pooled && conn.sender.ready().await.is_err() {
            continue;
        }
        let sent = tokio::time::timeout(first_byte_timeout, conn.sender.try_send_request(req)).await;
        match sent {
            Err(_) => return Err(Error::ConnectionReadTimeout),
            Ok(Ok(res)) => break (conn, res),
            // A kept-alive connection the upstream closed meanwhile, before
            // the request went out: try again on another.
            Ok(Err(mut e)) if pooled && e.message().is_some() => {
                req = e.take_message().expect("checked");
            }
            Ok(Err(e)) => return Err(Error::from(e.into_error())),
        }
    };

    let max = call.grant.max_body;
    if let Some(len) =
        res.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len > max
    {
        call.notes.push(format!(
            "outbound response from {} refused: its body is {len} bytes, past the function's --max-outbound-body of {max}",
            call.upstream.authority()
        ));
        return Err(Error::HttpResponseBodySize(Some(len)));
    }
    Ok((res.map(|b| b.map_err(Error::from).boxed_unsync()), Keep { conn, key }))
}

/// A new connection to the first of `addrs` that answers, TLS if https,
/// driven by a task of its own.
async fn open(call: &Call, addrs: &[SocketAddr], timeout: std::time::Duration) -> Result<Conn, Error> {
    let tcp = tokio::time::timeout(timeout, connect(addrs)).await.map_err(|_| Error::ConnectionTimeout)??;
    let stream: Box<dyn Stream> = if call.upstream.scheme == "https" {
        let name = match call.upstream.host.parse::<IpAddr>() {
            Ok(ip) => ServerName::from(ip),
            Err(_) => {
                ServerName::try_from(call.upstream.host.clone()).map_err(|_| Error::HttpRequestUriInvalid)?
            }
        };
        let tls = call.grant.shared.tls.connect(name, tcp);
        Box::new(
            tokio::time::timeout(timeout, tls)
                .await
                .map_err(|_| Error::ConnectionTimeout)?
                .map_err(tls_error)?,
        )
    } else {
        Box::new(tcp)
    };
    let (sender, connection) =
        tokio::time::timeout(timeout, hyper::client::conn::http1::handshake(TokioIo::new(stream)))
            .await
            .map_err(|_| Error::ConnectionTimeout)??;
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("outbound connection ended: {e}");
        }
    });
    Ok(Conn::new(sender, task))
}

async fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, Error> {
    let mut last = None;
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Error::ConnectionRefused,
        Some(e) => Error::Connect(e),
        None => Error::DestinationNotFound,
    })
}

fn tls_error(e: std::io::Error) -> Error {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(_)) => Error::TlsCertificateError,
        Some(rustls::Error::AlertReceived(alert)) => Error::TlsAlertReceived {
            alert_id: Some(u8::from(*alert)),
            alert_message: Some(format!("{alert:?}")),
        },
        _ => Error::Tls(e),
    }
}

/// A response body on its way to the guest: its bytes are counted, past
/// the function's limit it ends in an error instead of growing, and read
/// to the end it gives its connection back to the function's pool (dropped
/// before that, the connection is closed).
pub(crate) struct CountedBody {
    inner: WasiBody,
    grant: Arc<OutboundGrant>,
    authority: String,
    notes: Notes,
    seen: u64,
    /// The connection it came on (none for a call to another function).
    keep: Option<Keep>,
    /// The request's place among the instance's open requests, given back
    /// when the body is dropped.
    _permit: OwnedSemaphorePermit,
}

impl CountedBody {
    pub(crate) fn wrap(
        inner: WasiBody,
        grant: Arc<OutboundGrant>,
        authority: String,
        notes: Notes,
        permit: OwnedSemaphorePermit,
        keep: Option<Keep>,
    ) -> WasiBody {
        CountedBody { inner, grant, authority, notes, seen: 0, keep, _permit: permit }.boxed_unsync()
    }
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.seen > self.grant.max_body {
            return Poll::Ready(None);
        }
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(data) = f.data_ref()
        {
            let n = data.len() as u64;
            self.seen += n;
            self.grant.net.count(|c| &c.bytes_in, n);
            let max = self.grant.max_body;
            if self.seen > max {
                // Cut mid-body, the connection cannot carry another request.
                self.keep = None;
                self.grant.net.count(|c| &c.errors, 1);
                self.notes.push(format!(
                    "outbound response from {} cut: its body passed the function's --max-outbound-body of {max} bytes",
                    self.authority
                ));
                return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(max)))));
            }
        }
        match &frame {
            None => {
                if let Some(Keep { conn, key }) = self.keep.take() {
                    self.grant.pool.put(&key, conn);
                }
            }
            Some(Err(_)) => self.keep = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
