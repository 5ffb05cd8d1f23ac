//! How the token endpoint answers: client authentication, faults, DPoP, and the token.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use tokio::time::Instant;

use crate::{
    BoxBody, body,
    dpop::{self, DecodedProof, ProofError},
    registry::{Claims, Confirmation, IssuedToken},
};

use super::*;

impl State {
    pub(super) async fn handle(self: Arc<Self>, request: Request<Bytes>) -> Response<BoxBody> {
        if request.uri().path() != TOKEN_PATH {
            return error_response(StatusCode::NOT_FOUND, "invalid_request", "no such endpoint");
        }
        let index = self.token_requests.fetch_add(1, Ordering::SeqCst);
        let parsed = Parsed::new(&request);
        self.record(index, &request, &parsed);

        let Some(fault) = self.next_fault(index) else {
            let response = self.token_response(&request, &parsed);
            trace(index, &parsed, &response, "none");
            return response;
        };
        if let Some(delay) = fault.delay {
            tokio::time::sleep(delay).await;
        }
        let Fault {
            status,
            headers,
            kind,
            ..
        } = fault;
        let (fault_name, mut response) = match kind {
            FaultKind::Succeed => ("delay", self.token_response(&request, &parsed)),
            FaultKind::Respond(bytes) => ("respond", Response::new(body::full(bytes))),
            FaultKind::Stall(prefix) => ("stall_body", Response::new(body::stalled(prefix))),
            FaultKind::Abort(prefix) => ("abort_body", Response::new(body::aborted(prefix))),
            FaultKind::Hang => {
                tracing::debug!(index, "mock token endpoint hangs");
                return std::future::pending().await;
            }
        };
        if let Some(status) = status {
            *response.status_mut() = status;
        }
        response.headers_mut().extend(headers);
        trace(index, &parsed, &response, fault_name);
        response
    }

    pub(super) fn record(&self, index: u64, request: &Request<Bytes>, parsed: &Parsed) {
        let mut headers = request.headers().clone();
        if let Some(value) = headers.get_mut(header::AUTHORIZATION) {
            value.set_sensitive(true);
        }
        if let http::header::Entry::Occupied(mut entry) = headers.entry(dpop::DPOP_HEADER) {
            for value in entry.iter_mut() {
                value.set_sensitive(true);
            }
        }
        let mut params = BTreeMap::new();
        if let Ok(list) = &parsed.params {
            for (name, value) in list {
                params.entry(name.clone()).or_insert_with(|| value.clone());
            }
        }
        let recorded = RecordedRequest {
            index,
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers,
            content_type: parsed.content_type.clone(),
            params,
            auth_method: parsed.auth_method(),
            body: request.body().clone(),
        };
        *crate::lock(&self.last_request) = Some(recorded);

        if crate::lock(&self.config).dpop.enabled
            && let Some(proof) = request.headers().get(dpop::DPOP_HEADER)
        {
            self.dpop.proofs.fetch_add(1, Ordering::SeqCst);
            let decoded = proof.to_str().ok().and_then(DecodedProof::decode);
            *crate::lock(&self.dpop.last_proof) = decoded;
        }
    }

    pub(super) fn next_fault(&self, index: u64) -> Option<Fault> {
        let plan = {
            let mut faults = crate::lock(&self.faults);
            if let Some(fault) = faults.queued.pop_front() {
                return Some(fault);
            }
            faults.plan.clone()
        };
        // Called without the lock, so a plan may use the server.
        plan.and_then(|plan| plan(index))
    }

    /// The normal answer to a token request.
    pub(super) fn token_response(
        &self,
        request: &Request<Bytes>,
        parsed: &Parsed,
    ) -> Response<BoxBody> {
        match self
            .authorize(request, parsed)
            .and_then(|grant| Ok((grant, self.check_dpop(request)?)))
        {
            Ok((grant, jkt)) => self.issue(grant, parsed, jkt),
            Err(refusal) => refusal.into_response(),
        }
    }

    /// Checks the request's DPoP proof, if DPoP is on; returns the thumbprint to bind the
    /// token to, or `None` for a bearer token.
    pub(super) fn check_dpop(&self, request: &Request<Bytes>) -> Result<Option<String>, Refusal> {
        let config = crate::lock(&self.config).dpop.clone();
        if !config.enabled {
            return Ok(None);
        }
        let nonce = config.nonce.then(|| crate::lock(&self.dpop.nonce).clone());
        let proof = match dpop::proof_header(request.headers()) {
            Ok(proof) => proof,
            Err(ProofError::Missing) if !config.required => return Ok(None),
            Err(error) => return Err(self.refuse_proof(error, nonce)),
        };
        let url = dpop::request_url(request.uri(), crate::lock(&self.base_url).as_deref());
        let verified = dpop::verify_proof(
            proof,
            request.method(),
            &url,
            None,
            nonce.as_deref(),
            SystemTime::now(),
            config.iat_window,
        )
        .and_then(|verified| {
            crate::lock(&self.dpop.jtis).insert(&verified, config.iat_window)?;
            Ok(verified)
        })
        .map_err(|error| self.refuse_proof(error, nonce))?;
        Ok(Some(verified.jkt))
    }

    /// `400 use_dpop_nonce` with the current nonce, or `400 invalid_dpop_proof`.
    pub(super) fn refuse_proof(&self, error: ProofError, nonce: Option<String>) -> Refusal {
        self.dpop.rejected.fetch_add(1, Ordering::SeqCst);
        tracing::debug!(%error, "mock token endpoint refused a DPoP proof");
        let refusal = Refusal::bad_request(error.error_code(), error.description());
        *crate::lock(&self.dpop.last_error) = Some(error.clone());
        match nonce.and_then(|nonce| HeaderValue::from_str(&nonce).ok()) {
            Some(nonce) if error.is_nonce_error() => {
                self.dpop.nonce_challenges.fetch_add(1, Ordering::SeqCst);
                refusal.with_header(dpop::DPOP_NONCE_HEADER, nonce)
            }
            _ => refusal,
        }
    }

    /// Checks the request and the client; returns the client id and the scope to grant.
    pub(super) fn authorize(
        &self,
        request: &Request<Bytes>,
        parsed: &Parsed,
    ) -> Result<(String, String), Refusal> {
        if request.method() != Method::POST {
            return Err(Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                "the token endpoint accepts only POST",
            )
            .with_header(header::ALLOW, HeaderValue::from_static("POST")));
        }
        let params = parsed
            .params
            .as_ref()
            .map_err(|description| Refusal::bad_request("invalid_request", *description))?;
        let mut seen = BTreeSet::new();
        // RFC 8707 lets `resource` repeat; no other parameter may (RFC 6749 §3.1).
        if let Some((name, _)) = params
            .iter()
            .find(|(name, _)| name.as_str() != "resource" && !seen.insert(name))
        {
            return Err(Refusal::bad_request(
                "invalid_request",
                format!("parameter {name} is repeated"),
            ));
        }

        let client_id = self.authenticate(parsed)?;

        match parsed.param("grant_type") {
            Some("client_credentials") => {}
            Some(_) => {
                return Err(Refusal::bad_request(
                    "unsupported_grant_type",
                    "only client_credentials is supported",
                ));
            }
            None => {
                return Err(Refusal::bad_request(
                    "invalid_request",
                    "grant_type is missing",
                ));
            }
        }

        let scope = self.grant_scope(&client_id, parsed.param("scope"))?;
        Ok((client_id, scope))
    }

    /// Authenticates the client; returns its id.
    pub(super) fn authenticate(&self, parsed: &Parsed) -> Result<String, Refusal> {
        let body_id = parsed.param("client_id");
        let body_secret = parsed.param("client_secret");
        let (id, secret, basic) = match (&parsed.basic, body_secret) {
            (Some(_), Some(_)) => {
                return Err(Refusal::invalid_client(
                    "use one client authentication method, not both",
                    true,
                ));
            }
            (Some(Err(description)), None) => {
                return Err(Refusal::invalid_client(description, true));
            }
            (Some(Ok((id, secret))), None) => {
                if body_id.is_some_and(|body_id| body_id != id) {
                    return Err(Refusal::invalid_client(
                        "client_id does not match the Basic credentials",
                        true,
                    ));
                }
                (id.as_str(), secret.as_str(), true)
            }
            (None, Some(secret)) => match body_id {
                Some(id) => (id, secret, false),
                None => return Err(Refusal::invalid_client("client_id is missing", false)),
            },
            (None, None) => {
                return Err(Refusal::invalid_client(
                    "client authentication is required",
                    true,
                ));
            }
        };
        match self.clients.get(id) {
            Some(client) if client.secret == secret => Ok(id.to_owned()),
            _ => Err(Refusal::invalid_client(
                "unknown client or wrong secret",
                basic,
            )),
        }
    }

    /// The scope to grant `client_id` for the `requested` scope.
    pub(super) fn grant_scope(
        &self,
        client_id: &str,
        requested: Option<&str>,
    ) -> Result<String, Refusal> {
        let allowed = self
            .clients
            .get(client_id)
            .and_then(|client| client.scopes.as_ref());
        let Some(requested) = requested else {
            return Ok(match allowed {
                Some(allowed) => allowed
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
                None => crate::lock(&self.config)
                    .default_scope
                    .clone()
                    .unwrap_or_default(),
            });
        };
        let mut granted = Vec::new();
        for scope in requested.split(' ').filter(|scope| !scope.is_empty()) {
            // scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
            if !scope
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
            {
                return Err(Refusal::bad_request("invalid_scope", "malformed scope"));
            }
            if allowed.is_some_and(|allowed| !allowed.contains(scope)) {
                return Err(Refusal::bad_request(
                    "invalid_scope",
                    format!("scope {scope} is not allowed"),
                ));
            }
            if !granted.contains(&scope) {
                granted.push(scope);
            }
        }
        Ok(granted.join(" "))
    }

    /// Issues a token and answers with it.
    pub(super) fn issue(
        &self,
        (client_id, scope): (String, String),
        parsed: &Parsed,
        jkt: Option<String>,
    ) -> Response<BoxBody> {
        let config = crate::lock(&self.config).clone();
        let audience = [parsed.param("audience"), parsed.param("resource")]
            .into_iter()
            .flatten()
            .find(|audience| !audience.is_empty())
            .unwrap_or(&config.audience)
            .to_owned();
        // Milliseconds, so that the JSON number is short and exact enough.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as f64
            / 1000.0;
        let lifetime_secs = config.lifetime.as_secs_f64();
        let jti = format!(
            "{:016x}-{}",
            fastrand::u64(..),
            self.jti_seq.fetch_add(1, Ordering::SeqCst)
        );
        let claims = Claims {
            iss: self.registry.issuer().to_owned(),
            sub: client_id.clone(),
            aud: audience.clone(),
            iat: now,
            exp: now + lifetime_secs,
            jti: jti.clone(),
            scope: scope.clone(),
            client_id: client_id.clone(),
            cnf: jkt.clone().map(|jkt| Confirmation { jkt }),
        };
        let access_token = match self.registry.sign(&claims) {
            Ok(token) => token,
            Err(error) => {
                tracing::warn!(%error, "mock token endpoint failed to sign a token");
                return error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "failed to sign the token",
                );
            }
        };
        let issued_at = Instant::now();
        let expires_at = issued_at
            .checked_add(config.lifetime)
            .unwrap_or_else(|| issued_at + Duration::from_secs(86400 * 365 * 30));
        self.registry.insert(IssuedToken {
            access_token: access_token.clone(),
            jti,
            client_id,
            audience,
            scope: scope.clone(),
            issued_at,
            expires_at,
            revoked: false,
            dpop_jkt: jkt.clone(),
        });
        self.issued.fetch_add(1, Ordering::SeqCst);

        let mut body = serde_json::Map::new();
        body.insert("access_token".into(), access_token.into());
        let token_type = match jkt {
            Some(_) if !config.dpop.bound_as_bearer => "DPoP".to_owned(),
            _ => config.token_type,
        };
        body.insert("token_type".into(), token_type.into());
        match config.expires_in {
            ExpiresIn::Number => {
                body.insert("expires_in".into(), config.lifetime.as_secs().into());
            }
            ExpiresIn::String => {
                body.insert(
                    "expires_in".into(),
                    config.lifetime.as_secs().to_string().into(),
                );
            }
            ExpiresIn::Omitted => {}
        }
        if !scope.is_empty() {
            body.insert("scope".into(), scope.into());
        }
        let mut response = json_response(
            StatusCode::OK,
            serde_json::Value::Object(body).to_string().into(),
        );
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if jkt.is_some()
            && config.dpop.nonce
            && let Ok(nonce) = HeaderValue::from_str(&crate::lock(&self.dpop.nonce))
        {
            headers.insert(dpop::DPOP_NONCE_HEADER, nonce);
        }
        response
    }
}

/// A refused token request: an [RFC 6749 §5.2] error response.
///
/// [RFC 6749 §5.2]: https://www.rfc-editor.org/rfc/rfc6749#section-5.2
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    pub(super) error: &'static str,
    pub(super) description: Cow<'static, str>,
    pub(super) header: Option<(header::HeaderName, HeaderValue)>,
}

impl Refusal {
    pub(super) fn new(
        status: StatusCode,
        error: &'static str,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            header: None,
        }
    }

    pub(super) fn bad_request(
        error: &'static str,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, description)
    }

    /// `401 invalid_client`, with a Basic challenge when the client tried Basic (or nothing).
    pub(super) fn invalid_client(description: &'static str, challenge: bool) -> Self {
        let refusal = Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description);
        if challenge {
            refusal.with_header(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="mock""#),
            )
        } else {
            refusal
        }
    }

    pub(super) fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.header = Some((name, value));
        self
    }

    pub(super) fn into_response(self) -> Response<BoxBody> {
        let mut response = error_response(self.status, self.error, &self.description);
        if let Some((name, value)) = self.header {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// Logs a token request, without its secrets.
pub(super) fn trace(index: u64, parsed: &Parsed, response: &Response<BoxBody>, fault: &str) {
    let client_id = match &parsed.basic {
        Some(Ok((id, _))) => Some(id.as_str()),
        _ => parsed.param("client_id"),
    };
    tracing::debug!(
        index,
        client_id,
        auth_method = ?parsed.auth_method(),
        status = response.status().as_u16(),
        fault,
        "mock token request"
    );
}

/// `{"error": error, "error_description": description}`.
pub(super) fn error_body(error: &str, description: &str) -> Bytes {
    serde_json::json!({ "error": error, "error_description": description })
        .to_string()
        .into()
}

pub(super) fn error_response(
    status: StatusCode,
    error: &str,
    description: &str,
) -> Response<BoxBody> {
    json_response(status, error_body(error, description))
}

pub(super) fn json_response(status: StatusCode, body: Bytes) -> Response<BoxBody> {
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
