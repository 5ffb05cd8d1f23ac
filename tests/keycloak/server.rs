//! The Keycloak under test: one server per test binary, started by the first test that asks
//! for it (`kc.sh start-dev` from `KEYCLOAK_HOME`, Java from `JAVA_HOME`), bound to
//! 127.0.0.1 on a free port with an in-memory database, and given the realm of
//! `tests/keycloak/realm.json`, whose client keys are generated here and never written down.
//!
//! Start-up costs one to three minutes on the 2-core machine, so the server is shared. It
//! stops with the test process: `kc.sh` runs in its own process group under a small shell that
//! holds our stdin pipe, and kills that group by pid when the pipe closes (the test binary has
//! exited, however it exited). Its output goes to `$CARGO_TARGET_TMPDIR/keycloak-<port>.log`,
//! named in every failure.

use std::{
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::Full;
use serde_json::Value;
use tokio::sync::{OnceCell, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tower_client_credentials::{ClientKey, SigningAlgorithm};

use crate::real_servers::http::{HttpClient, announce, http_client, send_form, send_request};

/// The realm the tests use.
pub(crate) const REALM: &str = "tcc";

/// The oldest Keycloak with everything the suite checks: the RFC 8414 document at
/// `/.well-known/oauth-authorization-server/realms/NAME` and DPoP on by default (26.4).
const MIN_KEYCLOAK: (u64, u64) = (26, 4);

/// The access-token lifespan of `rotation-client`: the shortest Keycloak accepts (it refuses
/// neither 1 s in a client's `access.token.lifespan` nor shorter values, but 0 means "the
/// realm's").
pub(crate) const ROTATION_LIFESPAN: u64 = 1;

/// How long start-up may take: 3 minutes were measured on the 2-core machine under a load
/// average of 9 (augmentation included).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(480);

/// The client keys registered in the realm, generated for this run.
pub(crate) struct ClientKeys {
    pub(crate) es256: ClientKey,
    pub(crate) rs256: ClientKey,
}

/// The running Keycloak, shared by the tests of this binary.
pub(crate) struct Keycloak {
    /// `http://127.0.0.1:PORT`.
    base: String,
    pub(crate) version: String,
    pub(crate) keys: ClientKeys,
    admin: (String, String),
    log: PathBuf,
    /// Measured start-up figures, for the suite's report.
    pub(crate) started_in: Duration,
    pub(crate) realm_in: Duration,
    /// Kept open: its end tells the shell to kill Keycloak.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

/// Tests that share the server take it for reading; the load test takes it for writing, so
/// that it runs alone.
static TURN: RwLock<()> = RwLock::const_new(());
static SERVER: OnceCell<Result<Keycloak, String>> = OnceCell::const_new();

/// A test's hold on the server.
pub(crate) struct Turn {
    pub(crate) kc: &'static Keycloak,
    _shared: Option<RwLockReadGuard<'static, ()>>,
    _alone: Option<RwLockWriteGuard<'static, ()>>,
}

impl std::ops::Deref for Turn {
    type Target = Keycloak;
    fn deref(&self) -> &Keycloak {
        self.kc
    }
}

/// What is missing to run Keycloak, if anything: `KEYCLOAK_HOME` (an unpacked
/// `keycloak-quarkus-dist`) and `JAVA_HOME` (Java 21 or later).
fn prerequisites() -> Result<(PathBuf, PathBuf, String), String> {
    let home = std::env::var_os("KEYCLOAK_HOME")
        .map(PathBuf::from)
        .ok_or("KEYCLOAK_HOME is not set (the unpacked org.keycloak:keycloak-quarkus-dist zip)")?;
    let kc = home.join("bin/kc.sh");
    if !kc.is_file() {
        return Err(format!("{} does not exist", kc.display()));
    }
    let version = std::fs::read_to_string(home.join("version.txt"))
        .map_err(|e| format!("{}/version.txt: {e}", home.display()))?;
    let version = version
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut parts = version.split('.').map(|n| n.parse::<u64>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < MIN_KEYCLOAK {
        return Err(format!(
            "Keycloak {version} in {}: the suite needs {}.{} or later",
            home.display(),
            MIN_KEYCLOAK.0,
            MIN_KEYCLOAK.1
        ));
    }
    let java_home = std::env::var_os("JAVA_HOME")
        .map(PathBuf::from)
        .ok_or("JAVA_HOME is not set (Keycloak 26 needs Java 21 or later)")?;
    let java = java_home.join("bin/java");
    let output = Command::new(&java)
        .arg("-version")
        .output()
        .map_err(|e| format!("cannot run {} ({e})", java.display()))?;
    let banner = String::from_utf8_lossy(&output.stderr);
    let major = banner
        .split('"')
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if !output.status.success() || major < 21 {
        return Err(format!(
            "{} -version says {:?}: Keycloak 26 needs Java 21 or later",
            java.display(),
            banner.lines().next().unwrap_or_default()
        ));
    }
    Ok((home, java_home, version))
}

impl Keycloak {
    /// The shared server, for a test that may run beside others.
    ///
    /// # Panics
    ///
    /// When Keycloak or Java is missing: the tests that call this are `ignore`d, so a run that
    /// includes them asked for them.
    pub(crate) async fn shared(test: &str) -> Turn {
        let kc = Self::get(test).await;
        Turn {
            kc,
            _shared: Some(TURN.read().await),
            _alone: None,
        }
    }

    /// The shared server, for a test that runs alone (the load test).
    pub(crate) async fn alone(test: &str) -> Turn {
        let kc = Self::get(test).await;
        Turn {
            kc,
            _shared: None,
            _alone: Some(TURN.write().await),
        }
    }

    async fn get(test: &str) -> &'static Keycloak {
        let (home, java_home, version) = match prerequisites() {
            Ok(found) => found,
            Err(reason) => panic!(
                "Keycloak test `{test}`: {reason}. Set KEYCLOAK_HOME and JAVA_HOME, or run \
                 `tests/keycloak/run.sh` (see tests/keycloak/README.md)"
            ),
        };
        let server = SERVER
            .get_or_init(|| Self::start(home, java_home, version))
            .await;
        match server {
            Ok(kc) => kc,
            Err(error) => panic!("Keycloak did not start: {error}"),
        }
    }

    async fn start(home: PathBuf, java_home: PathBuf, version: String) -> Result<Self, String> {
        let started = Instant::now();
        // Generated while Keycloak starts: an RSA key takes seconds in a debug build.
        let keygen = std::thread::spawn(generate_keys);
        let port = free_port();
        let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("keycloak-{port}.log"));
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let admin = (
            "tcc-admin".to_owned(),
            format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
        );
        // The watcher reads our stdin on fd 3 (an asynchronous list gets /dev/null as stdin)
        // and, at its end, sends TERM to kc.sh, which passes it on to java (or is java, after
        // re-augmenting). `exec` makes `$!` kc.sh itself rather than a subshell around it.
        let script = r#"exec 3<&0
exec "$0" "$@" </dev/null 3<&- &
pid=$!
(read _ <&3; kill -TERM "$pid" 2>/dev/null) &
exec 3<&-
wait "$pid"
"#;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(home.join("bin/kc.sh"))
            .args([
                "start-dev",
                &format!("--http-port={port}"),
                "--http-host=127.0.0.1",
                "--hostname-strict=false",
                "--db=dev-mem",
                "--health-enabled=false",
                "--metrics-enabled=false",
                "--cache=local",
            ])
            .env("JAVA_HOME", &java_home)
            .env("KC_BOOTSTRAP_ADMIN_CLIENT_ID", &admin.0)
            .env("KC_BOOTSTRAP_ADMIN_CLIENT_SECRET", &admin.1)
            .stdin(Stdio::piped())
            .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("spawn {}/bin/kc.sh: {e}", home.display()))?;
        let stdin = child.stdin.take().expect("piped stdin");
        announce(&format!(
            "keycloak: starting Keycloak {version} on 127.0.0.1:{port} (JAVA_HOME={}), log {}",
            java_home.display(),
            log.display()
        ));

        let base = format!("http://127.0.0.1:{port}");
        let client = http_client();
        let probe = format!("{base}/realms/master/.well-known/openid-configuration");
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("kc.sh exited with {status}; see {}", log.display()));
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                return Err(format!(
                    "no answer at {probe} after {STARTUP_TIMEOUT:?}; see {}",
                    log.display()
                ));
            }
            let ready = get_status(&client, &probe).await == Some(StatusCode::OK);
            if ready {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let started_in = started.elapsed();

        let (keys, public) = keygen.join().map_err(|_| "key generation panicked")?;
        let mut kc = Self {
            base,
            version,
            keys,
            admin,
            log,
            started_in,
            realm_in: Duration::ZERO,
            _stdin: Mutex::new(stdin),
            _child: Mutex::new(child),
        };
        let realm_started = Instant::now();
        kc.import_realm(&public).await?;
        kc.realm_in = realm_started.elapsed();
        announce(&format!(
            "keycloak: Keycloak {} answered after {:.1} s; realm `{REALM}` imported in {:.1} s",
            kc.version,
            kc.started_in.as_secs_f64(),
            kc.realm_in.as_secs_f64()
        ));
        Ok(kc)
    }

    /// `tests/keycloak/realm.json` with the public keys filled in, created through the admin
    /// REST API (the bootstrap admin is a service account whose secret is made up per run).
    async fn import_realm(&self, public: &PublicKeys) -> Result<(), String> {
        let template = include_str!("realm.json");
        let jwks = |jwk: &Value| {
            serde_json::to_string(&serde_json::json!({ "keys": [jwk] }).to_string())
                .expect("JSON string")
        };
        let realm = template
            .replace("\"@ES256_JWKS@\"", &jwks(&public.es256))
            .replace("\"@RS256_JWKS@\"", &jwks(&public.rs256))
            .replace("@ROTATION_LIFESPAN@", &ROTATION_LIFESPAN.to_string());
        let _: Value = serde_json::from_str(&realm).map_err(|e| format!("realm JSON: {e}"))?;
        let token = self.admin_token().await?;
        let request = Request::post(format!("{}/admin/realms", self.base))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(realm)))
            .expect("request");
        let (status, _, body) = send_request(&http_client(), request).await;
        if status != StatusCode::CREATED {
            return Err(format!(
                "POST /admin/realms: {status} {}; see {}",
                String::from_utf8_lossy(&body),
                self.log.display()
            ));
        }
        Ok(())
    }

    async fn admin_token(&self) -> Result<String, String> {
        let (status, _, body) = self
            .send(
                Method::POST,
                &format!("{}/realms/master/protocol/openid-connect/token", self.base),
                Some((&self.admin.0, &self.admin.1)),
                &[("grant_type", "client_credentials")],
                &[],
            )
            .await;
        let json: Value = serde_json::from_slice(&body).unwrap_or_default();
        match json["access_token"].as_str() {
            Some(token) if status == StatusCode::OK => Ok(token.to_owned()),
            _ => Err(format!(
                "admin token: {status} {}",
                String::from_utf8_lossy(&body)
            )),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// The realm's issuer, `http://127.0.0.1:PORT/realms/tcc`.
    pub(crate) fn issuer(&self) -> String {
        format!("{}/realms/{REALM}", self.base)
    }

    /// `{issuer}/protocol/openid-connect/{path}`.
    pub(crate) fn endpoint(&self, path: &str) -> String {
        format!("{}/protocol/openid-connect/{path}", self.issuer())
    }

    /// The token endpoint.
    pub(crate) fn token_url(&self) -> String {
        self.endpoint("token")
    }

    /// How many token requests of `client_id` Keycloak answered with a token
    /// (`CLIENT_LOGIN` events of the realm) and refused (`CLIENT_LOGIN_ERROR`).
    pub(crate) async fn client_logins(&self, client_id: &str) -> (usize, usize) {
        let token = self.admin_token().await.expect("admin token");
        let mut counts = [0, 0];
        for (count, kind) in counts
            .iter_mut()
            .zip(["CLIENT_LOGIN", "CLIENT_LOGIN_ERROR"])
        {
            let url = format!(
                "{}/admin/realms/{REALM}/events?client={client_id}&type={kind}&max=100000",
                self.base
            );
            let authorization = format!("Bearer {token}");
            let (status, _, body) = self
                .send(
                    Method::GET,
                    &url,
                    None,
                    &[],
                    &[("authorization", &authorization)],
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
            let events: Vec<Value> = serde_json::from_slice(&body).expect("events JSON");
            *count = events.len();
        }
        (counts[0], counts[1])
    }

    /// A request of our own: a form body, Basic credentials (RFC 6749 §2.3.1 encoding) when
    /// `basic` is given, and extra headers. Returns the status, headers and body.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &str,
        basic: Option<(&str, &str)>,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        send_form(&http_client(), method, url, basic, form, headers).await
    }

    /// A token straight from the token endpoint (not through the crate), as JSON.
    pub(crate) async fn raw_token(&self, client: (&str, &str)) -> Value {
        let (status, _, body) = self
            .send(
                Method::POST,
                &self.token_url(),
                Some(client),
                &[("grant_type", "client_credentials")],
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("token response JSON")
    }
}

async fn get_status(client: &HttpClient, url: &str) -> Option<StatusCode> {
    let request = Request::get(url).body(Full::new(Bytes::new())).ok()?;
    let response = tokio::time::timeout(Duration::from_secs(5), client.request(request))
        .await
        .ok()?
        .ok()?;
    Some(response.status())
}

/// A loopback port nobody listens on now (Keycloak binds it a moment later).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// The public JWKs registered for the `private_key_jwt` clients.
struct PublicKeys {
    es256: Value,
    rs256: Value,
}

/// A P-256 and a 2048-bit RSA key pair, made for this run.
fn generate_keys() -> (ClientKeys, PublicKeys) {
    use aws_lc_rs::{
        encoding::{AsDer as _, Pkcs8V1Der},
        rsa::KeySize,
        signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RsaKeyPair},
    };
    let pkcs8_pem = |der: &[u8]| pem::encode(&pem::Pem::new("PRIVATE KEY", der.to_vec()));

    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);

    let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 key");
    // The uncompressed point: 0x04 ‖ x ‖ y.
    let point = ec.public_key().as_ref();
    let es256_kid = format!("tcc-es256-{stamp}");
    let es256_public = serde_json::json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": es256_kid,
        "x": b64(&point[1..33]), "y": b64(&point[33..65]),
    });
    let pem = pkcs8_pem(ec.to_pkcs8v1().expect("PKCS#8").as_ref());
    let es256 = ClientKey::from_pem(SigningAlgorithm::ES256, pem.as_bytes())
        .expect("ES256 key")
        .with_key_id(es256_kid);

    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key");
    let rs256_kid = format!("tcc-rs256-{stamp}");
    let public = rsa.public_key();
    let rs256_public = serde_json::json!({
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": rs256_kid,
        "n": b64(public.modulus().big_endian_without_leading_zero()),
        "e": b64(public.exponent().big_endian_without_leading_zero()),
    });
    let der: Pkcs8V1Der<'_> = rsa.as_der().expect("PKCS#8");
    let pem = pkcs8_pem(der.as_ref());
    let rs256 = ClientKey::from_pem(SigningAlgorithm::RS256, pem.as_bytes())
        .expect("RS256 key")
        .with_key_id(rs256_kid);

    (
        ClientKeys { es256, rs256 },
        PublicKeys {
            es256: es256_public,
            rs256: rs256_public,
        },
    )
}
