//! HTTP/2 from the client's side: a self-signed certificate made with rcgen (its PEM files in
//! a temporary folder, for the hub), a rustls client that trusts it, and hyper's HTTP/2 client
//! over h2c (prior knowledge) or TLS (ALPN `h2`), one connection carrying many streams. Used
//! by `tests/http2.rs` and `tests/browser_tls.rs` through `#[path]`.

#![allow(dead_code)] // each test uses its part

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{
    Method, Request, Response, StatusCode, Version,
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_rustls::{
    TlsConnector,
    client::TlsStream,
    rustls::{
        ClientConfig, RootCertStore,
        crypto::ring,
        pki_types::{CertificateDer, ServerName},
    },
};

use tower_sse_test_support::guard;

/// A self-signed certificate for `localhost` and `127.0.0.1`, its PEM files in a folder of its
/// own, removed on drop.
pub struct Cert {
    dir: PathBuf,
    /// The certificate, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS #8).
    pub key: PathBuf,
    der: CertificateDer<'static>,
}

impl Cert {
    pub fn new() -> Cert {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let made = rcgen::generate_simple_self_signed(names).expect("a self-signed certificate");
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tower-sse-cert-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        Cert {
            dir,
            cert,
            key,
            der: made.cert.der().clone(),
        }
    }

    /// A client that trusts this certificate only and offers `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        #[allow(deprecated)] // the hub's own provider (src/tls.rs says why)
        let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// A TLS connection to `addr` (as `127.0.0.1`, which the certificate names), offering
    /// `alpn`.
    pub async fn connect(&self, addr: SocketAddr, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        let tcp = guard("connect", TcpStream::connect(addr)).await.unwrap();
        let name = ServerName::IpAddress(addr.ip().into());
        let connector = TlsConnector::from(self.client_config(alpn));
        guard("TLS handshake", connector.connect(name, tcp))
            .await
            .expect("TLS handshake")
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How an HTTP/2 client reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// In the clear, by prior knowledge.
    H2c,
    /// TLS, ALPN `h2`.
    Tls,
}

/// One HTTP/2 connection; each request is a stream of it.
#[derive(Clone)]
pub struct H2 {
    send: http2::SendRequest<Full<Bytes>>,
    base: String,
}

impl H2 {
    /// Connects over `transport`; `cert` is needed for [`Transport::Tls`]. With TLS, checks
    /// that ALPN selected `h2`.
    pub async fn connect(addr: SocketAddr, transport: Transport, cert: Option<&Cert>) -> H2 {
        let builder = http2::Builder::new(TokioExecutor::new());
        let (send, base) = match transport {
            Transport::H2c => {
                let tcp = guard("connect", TcpStream::connect(addr)).await.unwrap();
                let (send, conn) = guard("h2c handshake", builder.handshake(TokioIo::new(tcp)))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                (send, format!("http://{addr}"))
            }
            Transport::Tls => {
                let tls = cert
                    .expect("a certificate for TLS")
                    .connect(addr, &[b"h2"])
                    .await;
                assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN");
                let (send, conn) = guard("h2 handshake", builder.handshake(TokioIo::new(tls)))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                (send, format!("https://{addr}"))
            }
        };
        H2 { send, base }
    }

    /// Sends `GET {path}` as a new stream and waits for the response head.
    pub async fn get(&mut self, path: &str) -> Response<Incoming> {
        self.request(Method::GET, path, Bytes::new()).await
    }

    /// Sends `POST {path}` with `body`; the response, which must be 200.
    pub async fn post(&mut self, path: &str, body: &str) -> String {
        let res = self
            .request(Method::POST, path, Bytes::from(body.to_owned()))
            .await;
        assert_eq!(res.status(), StatusCode::OK, "POST {path}");
        Stream::new(res).rest().await
    }

    async fn request(&mut self, method: Method, path: &str, body: Bytes) -> Response<Incoming> {
        self.try_request(method, path, body)
            .await
            .expect("a response")
    }

    /// Sends `GET {path}` as a new stream; the response head, or why the connection took no
    /// new stream (after a `GOAWAY`, or closed).
    pub async fn try_get(&mut self, path: &str) -> hyper::Result<Response<Incoming>> {
        self.try_request(Method::GET, path, Bytes::new()).await
    }

    async fn try_request(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> hyper::Result<Response<Incoming>> {
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .body(Full::new(body))
            .unwrap();
        guard("stream ready", self.send.ready()).await?;
        let res = guard("response head", self.send.send_request(req)).await?;
        assert_eq!(res.version(), Version::HTTP_2);
        Ok(res)
    }

    /// Opens an event stream on `path`: a new stream of this connection, `200`,
    /// `text/event-stream`.
    pub async fn subscribe(&mut self, path: &str) -> Stream {
        let res = self.get(path).await;
        assert_eq!(res.status(), StatusCode::OK, "GET {path}");
        Stream::new(res)
    }
}

/// A GET over HTTP/1.1 on a TLS connection offering `alpn` (`http/1.1`, or nothing), which
/// the server must not answer with `h2`.
pub async fn get_http1_over_tls(
    cert: &Cert,
    addr: SocketAddr,
    alpn: &[&[u8]],
    path: &str,
) -> Response<Incoming> {
    let tls = cert.connect(addr, alpn).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), alpn.first().copied());
    let (mut send, conn) = guard("http1 handshake", http1::handshake(TokioIo::new(tls)))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = guard("response head", send.send_request(req))
        .await
        .unwrap();
    assert_eq!(res.version(), Version::HTTP_11);
    res
}

/// The body of a response, read one DATA frame at a time, or one event at a time.
pub struct Stream {
    body: Incoming,
    buf: Vec<u8>,
}

impl Stream {
    pub fn new(res: Response<Incoming>) -> Stream {
        Stream {
            body: res.into_body(),
            buf: Vec::new(),
        }
    }

    /// The next chunk of data as it came (a DATA frame over HTTP/2), `None` at the end of the
    /// stream. Panics on an error (a reset).
    pub async fn chunk(&mut self) -> Option<Bytes> {
        loop {
            let frame = guard("next frame", self.body.frame()).await?;
            if let Ok(data) = frame.expect("the stream's frames, no reset").into_data() {
                return Some(data);
            }
        }
    }

    /// The next event (a block ending with a blank line), comment-only blocks skipped;
    /// `None` at the end of the stream.
    pub async fn event(&mut self) -> Option<String> {
        loop {
            while let Some(end) = memchr::memmem::find(&self.buf, b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let block = String::from_utf8(block).expect("UTF-8");
                if !block.lines().all(|l| l.is_empty() || l.starts_with(':')) {
                    return Some(block);
                }
            }
            let chunk = self.chunk().await?;
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// The rest of the body, as text, to its end.
    pub async fn rest(mut self) -> String {
        let mut rest = std::mem::take(&mut self.buf);
        while let Some(chunk) = self.chunk().await {
            rest.extend_from_slice(&chunk);
        }
        String::from_utf8(rest).expect("UTF-8")
    }
}

/// The `data:` of an event block.
pub fn data(event: &str) -> &str {
    event
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("no data in {event:?}"))
}
