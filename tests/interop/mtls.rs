//! Mutual-TLS client authentication (RFC 8705) against oidc-provider: `mtls-client`
//! (`tls_client_auth`, registered by subject DN, certificate from a CA the provider trusts) and
//! `mtls-self-signed-client` (`self_signed_tls_client_auth`, its certificate registered in its
//! `jwks`). The provider serves its token endpoint on a second, HTTPS listener on 127.0.0.1
//! that asks for a client certificate, and names it in `mtls_endpoint_aliases`; both clients
//! get certificate-bound tokens (`cnf.x5t#S256`).
//!
//! Every certificate is made here, at test time, with rcgen (on aws-lc-rs), and written to a
//! folder of its own under the system's temporary directory for the provider to read.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use base64::Engine;
use http::Method;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
};
use tower_client_credentials::{AuthMethod, ClientCredentials, ClientCredentialsBuilder};

use super::{AuthServer, BOTH_SCOPES, start_error};

const MTLS_CLIENT: &str = "mtls-client";
const SELF_SIGNED_CLIENT: &str = "mtls-self-signed-client";
/// `mtls-client`'s registered `tls_client_auth_subject_dn`.
const SUBJECT: &str = "tcc-mtls-client";

/// A certificate (PEM) and its key (PEM).
struct Identity {
    cert: String,
    key: String,
    der: Vec<u8>,
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn ca(common_name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name = name(common_name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
}

/// A certificate for `common_name` (and the SANs), issued by `issuer` or self-signed.
fn identity(
    common_name: &str,
    sans: &[&str],
    issuer: Option<&CertifiedIssuer<'static, KeyPair>>,
) -> Identity {
    let sans: Vec<String> = sans.iter().map(|san| (*san).to_owned()).collect();
    let mut params = CertificateParams::new(sans).expect("parameters");
    params.distinguished_name = name(common_name);
    let key = KeyPair::generate().expect("key");
    let cert = match issuer {
        Some(issuer) => params.signed_by(&key, issuer),
        None => params.self_signed(&key),
    }
    .expect("certificate");
    Identity {
        cert: cert.pem(),
        key: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

/// The certificates of one test, and the folder the provider reads them from (removed on
/// drop).
struct Pki {
    dir: PathBuf,
    ca: String,
    /// `mtls-client`'s: its subject, from the CA.
    client: Identity,
    /// `mtls-self-signed-client`'s registered certificate.
    self_signed: Identity,
}

impl Pki {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tcc-interop-mtls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temporary folder");
        let ca = ca("tcc interop CA");
        let server = identity("127.0.0.1", &["127.0.0.1"], Some(&ca));
        let pki = Self {
            dir,
            ca: ca.pem(),
            client: identity(SUBJECT, &[], Some(&ca)),
            self_signed: identity(SELF_SIGNED_CLIENT, &[], None),
        };
        for (file, pem) in [
            ("ca.pem", pki.ca.as_str()),
            ("server.pem", &server.cert),
            ("server.key", &server.key),
            ("self-signed.pem", &pki.self_signed.cert),
        ] {
            std::fs::write(pki.dir.join(file), pem).expect("write a certificate");
        }
        pki
    }

    /// The provider's environment: the HTTPS listener and the two clients.
    fn env(&self) -> Vec<(&'static str, String)> {
        let path = |file: &str| self.dir.join(file).display().to_string();
        vec![
            ("MTLS_CERT", path("server.pem")),
            ("MTLS_KEY", path("server.key")),
            ("MTLS_CA", path("ca.pem")),
            ("MTLS_SUBJECT_DN", format!("CN={SUBJECT}")),
            ("MTLS_SELF_SIGNED_CERT", path("self-signed.pem")),
            ("TOKEN_TTL", "60".to_owned()),
        ]
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts the provider with `pki`'s listener.
async fn start_mtls(test: &str, pki: &Pki) -> AuthServer {
    let env = pki.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    AuthServer::start(test, &env).await
}

/// The mTLS token endpoint the provider's metadata names.
async fn mtls_token_endpoint(auth: &AuthServer) -> String {
    let (status, _, body) = auth
        .send(Method::GET, "/.well-known/openid-configuration", None, &[])
        .await;
    assert!(status.is_success(), "{status}");
    let metadata: serde_json::Value = serde_json::from_slice(&body).expect("metadata");
    let alias = metadata["mtls_endpoint_aliases"]["token_endpoint"]
        .as_str()
        .expect("mtls_endpoint_aliases.token_endpoint")
        .to_owned();
    assert!(alias.starts_with("https://127.0.0.1:"), "{alias}");
    alias
}

/// `client`'s builder for the token endpoint at `url`, presenting `identity`, trusting the
/// test CA.
fn builder(url: &str, client: &str, identity: &Identity, pki: &Pki) -> ClientCredentialsBuilder {
    ClientCredentials::builder_with_tls_auth(url, client)
        .client_certificate(&identity.cert, &identity.key)
        .add_root_certificates(&pki.ca)
        .scopes(BOTH_SCOPES)
}

/// The SHA-256 thumbprint of a certificate, base64url (RFC 8705 §3.1).
fn thumbprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// The `cnf.x5t#S256` claim of a JWT access token (read, not verified: the resource server
/// tests check signatures).
fn bound_thumbprint(jwt: &str) -> String {
    let payload = jwt.split('.').nth(1).expect("a JWT");
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    let claims: serde_json::Value = serde_json::from_slice(&payload).expect("JSON claims");
    claims["cnf"]["x5t#S256"]
        .as_str()
        .unwrap_or_else(|| panic!("no cnf.x5t#S256 in {claims}"))
        .to_owned()
}

/// Both methods get tokens bound to the certificate they presented: `tls_client_auth`
/// through discovery (which picks the method and follows `mtls_endpoint_aliases`, since the
/// issuer's own token endpoint is plain http), `self_signed_tls_client_auth` by hand.
#[tokio::test]
#[ignore = "needs Node.js >= 20.18 and `npm ci` in tests/interop: tests/interop/run.sh runs it"]
async fn mutual_tls_both_methods_get_certificate_bound_tokens() {
    let pki = Pki::new();
    let auth = start_mtls("mutual_tls_both_methods_get_certificate_bound_tokens", &pki).await;
    let alias = mtls_token_endpoint(&auth).await;

    let discovered = ClientCredentials::from_issuer_with_tls_auth(auth.issuer(), MTLS_CLIENT)
        .client_certificate(&pki.client.cert, &pki.client.key)
        .add_root_certificates(&pki.ca)
        .scopes(BOTH_SCOPES)
        .discover()
        .await
        .expect("discovery");
    let debug = format!("{discovered:?}");
    assert!(debug.contains(&format!("token_url: {alias:?}")), "{debug}");
    assert!(debug.contains("auth: Some(TlsClientAuth)"), "{debug}");
    let handle = discovered
        .build()
        .expect("configuration")
        .start()
        .await
        .expect("a token for tls_client_auth");
    let token = handle.current().expect("a token");
    assert_eq!(token.scope(), Some("api:read api:write"));
    assert_eq!(
        bound_thumbprint(token.access_token()),
        thumbprint(&pki.client.der)
    );

    let handle = builder(&alias, SELF_SIGNED_CLIENT, &pki.self_signed, &pki)
        .auth_method(AuthMethod::SelfSignedTlsClientAuth)
        .build()
        .expect("configuration")
        .start()
        .await
        .expect("a token for self_signed_tls_client_auth");
    let token = handle.current().expect("a token");
    assert_eq!(
        bound_thumbprint(token.access_token()),
        thumbprint(&pki.self_signed.der)
    );
    assert_ne!(
        thumbprint(&pki.client.der),
        thumbprint(&pki.self_signed.der)
    );
    assert_eq!(auth.logged("POST /token -> 200").await, 2);
}

/// A certificate the provider does not accept for the client is `invalid_client`: the right
/// subject from another CA (`tls_client_auth`), another self-signed certificate
/// (`self_signed_tls_client_auth`), the other client's certificate.
#[tokio::test]
#[ignore = "needs Node.js >= 20.18 and `npm ci` in tests/interop: tests/interop/run.sh runs it"]
async fn mutual_tls_with_a_wrong_certificate_is_invalid_client() {
    let pki = Pki::new();
    let auth = start_mtls(
        "mutual_tls_with_a_wrong_certificate_is_invalid_client",
        &pki,
    )
    .await;
    let alias = mtls_token_endpoint(&auth).await;
    let other_ca = ca("another CA");
    let same_subject_other_ca = identity(SUBJECT, &[], Some(&other_ca));
    let other_self_signed = identity(SELF_SIGNED_CLIENT, &[], None);

    for (client, method, identity) in [
        (
            MTLS_CLIENT,
            AuthMethod::TlsClientAuth,
            &same_subject_other_ca,
        ),
        (MTLS_CLIENT, AuthMethod::TlsClientAuth, &pki.self_signed),
        (
            SELF_SIGNED_CLIENT,
            AuthMethod::SelfSignedTlsClientAuth,
            &other_self_signed,
        ),
        (
            SELF_SIGNED_CLIENT,
            AuthMethod::SelfSignedTlsClientAuth,
            &pki.client,
        ),
    ] {
        start_error(
            builder(&alias, client, identity, &pki).auth_method(method),
            401,
            "invalid_client",
        )
        .await;
    }
    // The right certificate, for contrast: the refusals above are the certificates'.
    builder(&alias, MTLS_CLIENT, &pki.client, &pki)
        .build()
        .expect("configuration")
        .start()
        .await
        .expect("the registered certificate gets a token");
    assert_eq!(auth.logged("POST /token -> 401").await, 4);
}
