//! Mutual TLS (RFC 8705) without Node.js: a token endpoint written here, on `127.0.0.1:0`
//! over rustls, that demands a client certificate from its own CA (the handshake fails
//! without one) and records the certificate and the form of each token request. Shows that
//! the built-in transport presents the certificate given to `client_certificate`, that the
//! mutual-TLS methods send `client_id` and nothing secret, and that discovery sends token
//! requests to `mtls_endpoint_aliases.token_endpoint` for a client that uses mutual TLS.
//!
//! Every certificate is made at test time with rcgen. The interop suite
//! (tests/interop/mtls.rs) runs the same methods against oidc-provider.

use std::{
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http::{Method, Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::json;
use tokio::net::TcpListener;
use tower_client_credentials::{
    AuthMethod, ClientCredentials, ClientCredentialsBuilder, DiscoveryError,
};

/// A certificate and its key, in PEM, and the certificate's DER.
struct Identity {
    cert: String,
    key: String,
    der: Vec<u8>,
}

fn ca(common_name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn issue(sans: &[&str], issuer: &CertifiedIssuer<'static, KeyPair>) -> Identity {
    let params =
        CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    Identity {
        cert: cert.pem(),
        key: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

/// What the token endpoint saw of one token request.
#[derive(Debug, Clone)]
struct Seen {
    /// The client certificate of the connection (DER).
    peer: Option<Vec<u8>>,
    authorization: Option<String>,
    form: Vec<(String, String)>,
}

/// A token endpoint over TLS that demands a certificate from `client_ca`.
struct MtlsServer {
    url: String,
    /// The CA of the server's own certificate, for the client to trust.
    server_ca: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    failed_handshakes: Arc<AtomicUsize>,
}

impl MtlsServer {
    async fn start(client_ca: &CertifiedIssuer<'static, KeyPair>) -> Self {
        let server_ca = ca("tcc test server CA");
        let server = issue(&["127.0.0.1"], &server_ca);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(client_ca.der().clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(server.der.clone())],
                PrivateKeyDer::from_pem_slice(server.key.as_bytes()).unwrap(),
            )
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/token", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let failed_handshakes = Arc::new(AtomicUsize::new(0));
        let (log, failures) = (Arc::clone(&seen), Arc::clone(&failed_handshakes));
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, log, failures) =
                    (acceptor.clone(), Arc::clone(&log), Arc::clone(&failures));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        failures.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    let peer = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|cert| cert.to_vec());
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (log, peer) = (Arc::clone(&log), peer.clone());
                        async move {
                            let authorization = request
                                .headers()
                                .get(header::AUTHORIZATION)
                                .map(|v| v.to_str().unwrap().to_owned());
                            assert_eq!(request.method(), Method::POST);
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            log.lock().unwrap().push(Seen {
                                peer,
                                authorization,
                                form: serde_urlencoded::from_bytes(&body).unwrap(),
                            });
                            let token = json!({"access_token": "bound-token",
                                               "token_type": "Bearer", "expires_in": 300});
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                                token.to_string(),
                            ))))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        Self {
            url,
            server_ca: server_ca.pem(),
            seen,
            failed_handshakes,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Both mutual-TLS methods: the built-in transport presents the certificate, and the form has
/// `client_id` and nothing secret.
#[tokio::test]
async fn the_built_in_transport_presents_the_client_certificate() {
    let client_ca = ca("tcc test client CA");
    let client = issue(&["client.test"], &client_ca);
    let server = MtlsServer::start(&client_ca).await;
    for method in [
        AuthMethod::TlsClientAuth,
        AuthMethod::SelfSignedTlsClientAuth,
    ] {
        let handle = ClientCredentials::builder_with_tls_auth(&server.url, "svc-orders")
            .auth_method(method)
            .client_certificate(&client.cert, &client.key)
            .add_root_certificates(&server.server_ca)
            .scopes(["orders:read"])
            .build()
            .unwrap()
            .start()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", method.as_str()));
        assert_eq!(handle.current().unwrap().access_token(), "bound-token");
    }
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    for seen in seen {
        assert_eq!(seen.peer.as_deref(), Some(client.der.as_slice()));
        assert_eq!(seen.authorization, None);
        assert_eq!(
            seen.form,
            form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "svc-orders"),
                ("scope", "orders:read"),
            ])
        );
    }
    assert_eq!(server.failed_handshakes.load(Ordering::SeqCst), 0);
}

/// With a secret method, a certificate is still presented (for servers that bind tokens to
/// it); without one, this server's handshake fails, which is what makes the test above mean
/// something: a transient transport error, and no token request.
#[tokio::test]
async fn a_certificate_goes_with_other_methods_too_and_none_fails_the_handshake() {
    let client_ca = ca("tcc test client CA");
    let client = issue(&["client.test"], &client_ca);
    let server = MtlsServer::start(&client_ca).await;
    let secret = || {
        ClientCredentials::builder(&server.url, "svc-orders", "s3cret")
            .add_root_certificates(&server.server_ca)
    };
    secret()
        .client_certificate(&client.cert, &client.key)
        .build()
        .unwrap()
        .start()
        .await
        .expect("a token with client_secret_basic over mutual TLS");
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].peer.as_deref(), Some(client.der.as_slice()));
    assert!(
        seen[0]
            .authorization
            .as_deref()
            .unwrap()
            .starts_with("Basic ")
    );

    let error = secret()
        .build()
        .unwrap()
        .start()
        .await
        .expect_err("no certificate, no handshake");
    assert!(error.is_transient(), "{error}");
    // A certificate from another CA is refused in the handshake too.
    let stranger = issue(&["client.test"], &ca("another CA"));
    let error = secret()
        .client_certificate(&stranger.cert, &stranger.key)
        .build()
        .unwrap()
        .start()
        .await
        .expect_err("a certificate from another CA");
    assert!(error.is_transient(), "{error}");
    // No token request got through (the failed handshakes may be counted after the client
    // has seen its error, so they are not counted here).
    assert_eq!(server.seen().len(), 1);
}

const ISSUER: &str = "https://auth.example";

/// An in-memory server: metadata with `mtls_endpoint_aliases`, and the token requests each
/// path receives.
fn discovery_client(
    methods: &[&str],
    log: Arc<Mutex<Vec<String>>>,
) -> impl Fn(ClientCredentialsBuilder) -> ClientCredentialsBuilder {
    let metadata = json!({
        "issuer": ISSUER,
        "token_endpoint": "https://auth.example/token",
        "token_endpoint_auth_methods_supported": methods,
        "mtls_endpoint_aliases": {"token_endpoint": "https://mtls.auth.example/token"},
    })
    .to_string();
    move |builder: ClientCredentialsBuilder| {
        let (metadata, log) = (metadata.clone(), Arc::clone(&log));
        builder.http_client(tower::service_fn(move |request: Request<Full<Bytes>>| {
            let (metadata, log) = (metadata.clone(), Arc::clone(&log));
            async move {
                let body = if request.method() == Method::GET {
                    metadata
                } else {
                    log.lock().unwrap().push(request.uri().to_string());
                    json!({"access_token": "t", "token_type": "Bearer", "expires_in": 300})
                        .to_string()
                };
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
            }
        }))
    }
}

/// RFC 8705 §5: a client that uses mutual TLS (here through its own client, which presents
/// the certificate) sends token requests to the alias; a secret client does not; a TLS
/// client needs the server to list a mutual-TLS method.
#[tokio::test]
async fn discovery_follows_the_mtls_alias_for_mutual_tls_clients_only() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let attach = discovery_client(
        &[
            "client_secret_basic",
            "self_signed_tls_client_auth",
            "tls_client_auth",
        ],
        Arc::clone(&log),
    );
    attach(ClientCredentials::from_issuer_with_tls_auth(ISSUER, "svc"))
        .discover()
        .await
        .unwrap()
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    attach(ClientCredentials::from_issuer(ISSUER, "svc", "secret"))
        .discover()
        .await
        .unwrap()
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        [
            "https://mtls.auth.example/token",
            "https://auth.example/token"
        ]
    );

    let attach = discovery_client(&["client_secret_basic", "private_key_jwt"], log);
    match attach(ClientCredentials::from_issuer_with_tls_auth(ISSUER, "svc"))
        .discover()
        .await
    {
        Err(DiscoveryError::NoUsableAuthMethod { usable, .. }) => assert_eq!(
            usable,
            [
                AuthMethod::TlsClientAuth,
                AuthMethod::SelfSignedTlsClientAuth
            ]
        ),
        other => panic!("{other:?}"),
    }
}
