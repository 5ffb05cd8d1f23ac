//! Client assertions from outside (workload identity federation): a JWT the client did not sign
//! itself, such as a Kubernetes projected service-account token that the kubelet rotates in a
//! file, sent as the `client_assertion` of every token request.
//!
//! The assertion is read anew for every token request, so a rotated file is picked up by the
//! next one. What is read is never shown: errors name the file and what is wrong, not its
//! content.

use std::{
    fmt,
    future::Future,
    io::Read,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
};

use zeroize::Zeroizing;

use crate::error::TokenError;

/// The largest client assertion accepted, in bytes: service-account tokens are 1 to 2 KiB.
pub(crate) const MAX_ASSERTION_SIZE: usize = 64 * 1024;

type AssertionFuture = Pin<Box<dyn Future<Output = Result<String, TokenError>> + Send>>;
type AssertionFn = dyn Fn() -> AssertionFuture + Send + Sync;

/// Where a client assertion made by someone else comes from: a file or a closure. Give it to
/// [`ClientCredentials::builder_with_assertion`](crate::ClientCredentials::builder_with_assertion).
///
/// Every token request reads it again and sends it as `client_assertion`, with
/// `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer` (RFC 7521,
/// RFC 7523): the wire form of `private_key_jwt`, which is what Entra ID's federated
/// credentials, Google Cloud's workload identity federation and others expect.
///
/// `Debug` shows the file's path, never an assertion.
#[derive(Clone)]
pub struct ClientAssertion {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    File(PathBuf),
    Fn(Arc<AssertionFn>),
}

impl ClientAssertion {
    /// The assertion in the file at `path`, read at every token request (a Kubernetes projected
    /// service-account token, `AZURE_FEDERATED_TOKEN_FILE`, …). Surrounding whitespace is
    /// ignored.
    ///
    /// A file that cannot be read (missing, being replaced, no permission) fails the token
    /// request with a transient [`TokenError`]: it is retried with backoff. A file larger than
    /// 64 KiB, empty, or holding anything but a JWT's characters (base64url and dots) fails it
    /// with a permanent one.
    pub fn from_file(path: impl Into<PathBuf>) -> Self {
        Self {
            kind: Kind::File(path.into()),
        }
    }

    /// The assertion that `f`'s future returns, asked for at every token request: for an
    /// assertion fetched from a metadata service or an identity agent. The same checks as
    /// [`from_file`](Self::from_file) apply to what it returns; its errors are passed through.
    pub fn from_fn<F, Fut>(f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, TokenError>> + Send + 'static,
    {
        Self {
            kind: Kind::Fn(Arc::new(move || Box::pin(f()))),
        }
    }

    /// The current assertion, checked.
    pub(crate) async fn read(&self) -> Result<Zeroizing<String>, TokenError> {
        let (assertion, from) = match &self.kind {
            Kind::File(path) => {
                let file = path.clone();
                let read = tokio::task::spawn_blocking(move || read_file(&file))
                    .await
                    .map_err(|_| {
                        TokenError::transient("the client assertion file read panicked")
                    })?;
                (read?, format!("file `{}`", path.display()))
            }
            Kind::Fn(f) => (Zeroizing::new(f().await?), "source".to_owned()),
        };
        check(assertion, &from)
    }
}

impl fmt::Debug for ClientAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::File(path) => f.debug_tuple("ClientAssertion::File").field(path).finish(),
            Kind::Fn(_) => f.write_str("ClientAssertion::Fn"),
        }
    }
}

/// Reads at most [`MAX_ASSERTION_SIZE`] bytes (and one more, to tell a larger file).
fn read_file(path: &Path) -> Result<Zeroizing<String>, TokenError> {
    let unreadable = |error: std::io::Error| {
        TokenError::transient(format!(
            "cannot read the client assertion file `{}`: {error}",
            path.display()
        ))
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(4096));
    file.take(MAX_ASSERTION_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() > MAX_ASSERTION_SIZE {
        return Err(TokenError::permanent(format!(
            "the client assertion file `{}` is larger than {MAX_ASSERTION_SIZE} bytes",
            path.display()
        )));
    }
    // Checked for JWT characters next; anything else is refused there.
    let text = String::from_utf8(std::mem::take(&mut *bytes)).map_err(|error| {
        // Zero the bytes the failed conversion hands back.
        drop(Zeroizing::new(error.into_bytes()));
        TokenError::permanent(format!(
            "the client assertion file `{}` is not a JWT (not UTF-8)",
            path.display()
        ))
    })?;
    Ok(Zeroizing::new(text))
}

/// Trims `assertion` and checks that it can go into a form body as it is: non-empty, at most
/// [`MAX_ASSERTION_SIZE`], and only base64url characters and dots (a JWS or JWE in compact
/// form).
fn check(assertion: Zeroizing<String>, from: &str) -> Result<Zeroizing<String>, TokenError> {
    let trimmed = assertion.trim();
    if trimmed.is_empty() {
        return Err(TokenError::permanent(format!(
            "the client assertion {from} gave an empty assertion"
        )));
    }
    if trimmed.len() > MAX_ASSERTION_SIZE {
        return Err(TokenError::permanent(format!(
            "the client assertion {from} gave more than {MAX_ASSERTION_SIZE} bytes"
        )));
    }
    if !trimmed
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(TokenError::permanent(format!(
            "the client assertion {from} gave something other than a JWT in compact form"
        )));
    }
    if trimmed.len() == assertion.len() {
        return Ok(assertion);
    }
    Ok(Zeroizing::new(trimmed.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJl";

    fn temp(name: &str, content: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tcc-federated-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[tokio::test]
    async fn a_file_is_read_trimmed_and_checked() {
        let path = temp("ok", format!("{JWT}\n").as_bytes());
        let read = ClientAssertion::from_file(&path).read().await.unwrap();
        assert_eq!(read.as_str(), JWT);
    }

    #[tokio::test]
    async fn bad_files_fail_without_showing_their_content() {
        let secretish = "s3cr3t.pay load";
        let cases: [(&str, Vec<u8>, bool); 4] = [
            ("spaces", secretish.as_bytes().to_vec(), false),
            ("empty", b"  \n".to_vec(), false),
            (
                "binary",
                vec![0xff, 0xfe, b's', b'3', b'c', b'r', b'3', b't'],
                false,
            ),
            ("large", vec![b'a'; MAX_ASSERTION_SIZE + 1], false),
        ];
        for (name, content, transient) in cases {
            let path = temp(name, &content);
            let error = ClientAssertion::from_file(&path).read().await.unwrap_err();
            assert_eq!(error.is_transient(), transient, "{name}: {error}");
            let text = format!("{error} {error:?}");
            assert!(!text.contains("s3cr3t"), "{name}: {text}");
            assert!(text.contains(&*path.to_string_lossy()), "{name}: {text}");
        }
        // The largest accepted size is accepted.
        let path = temp("largest", &vec![b'a'; MAX_ASSERTION_SIZE]);
        assert!(ClientAssertion::from_file(&path).read().await.is_ok());
        // A missing file may be on its way: transient.
        let missing = ClientAssertion::from_file(temp("x", b"").with_file_name("missing"));
        let error = missing.read().await.unwrap_err();
        assert!(error.is_transient(), "{error}");
        assert!(format!("{missing:?}").contains("missing"));
    }

    #[tokio::test]
    async fn a_closure_is_asked_every_time_and_checked() {
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = Arc::clone(&calls);
        let assertion = ClientAssertion::from_fn(move || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move {
                match n {
                    0 => Ok(JWT.to_owned()),
                    1 => Ok("not a jwt: s3cr3t".to_owned()),
                    _ => Err(TokenError::transient("agent down")),
                }
            }
        });
        assert_eq!(assertion.read().await.unwrap().as_str(), JWT);
        let error = assertion.read().await.unwrap_err();
        assert!(!error.is_transient() && !error.to_string().contains("s3cr3t"));
        assert!(assertion.read().await.unwrap_err().is_transient());
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 3);
        assert_eq!(format!("{assertion:?}"), "ClientAssertion::Fn");
    }
}
