//! `WWW-Authenticate` (RFC 9110 §11.6.1): the one parser of the challenges a server sends
//! with a 401, for the layer (which logs the `error` of a `Bearer` challenge) and for DPoP
//! (which tells a refused proof from a refused token by the `error` of the `DPoP` challenge).
//!
//! ```text
//! WWW-Authenticate = #challenge
//! challenge        = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
//! auth-param       = token BWS "=" BWS ( token / quoted-string )
//! token68          = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
//! ```
//!
//! Challenges and their parameters are both separated by commas: an element `name=value` is a
//! parameter of the challenge before it, anything else starts a new challenge. Empty elements
//! (`, ,`) are skipped, as RFC 9110 §5.6.1 asks of recipients.
//!
//! The parser is total and linear: it reads each byte a bounded number of times, never panics,
//! and keeps at most [`MAX_CHALLENGES`] challenges (over all header lines) of at most
//! [`MAX_PARAMS`] parameters each. An element that does not parse (a `=` where a name should
//! start, an unterminated quoted string, a stray `\`) is skipped up to the next comma; a
//! header line that is not UTF-8 is skipped whole. No crate fit: `http-auth` refuses `token68`
//! and stops at the first error, so one broken challenge would hide a `DPoP` challenge after it.

use std::borrow::Cow;

use http::{HeaderMap, header::WWW_AUTHENTICATE};

/// The most challenges kept from one response; later ones are ignored.
pub(crate) const MAX_CHALLENGES: usize = 32;
/// The most parameters kept per challenge; later ones are ignored.
pub(crate) const MAX_PARAMS: usize = 32;
/// The longest `error` code [`challenge_error`] returns.
const MAX_ERROR_LEN: usize = 64;

/// One challenge: a scheme with a `token68` or parameters (or neither).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge<'a> {
    /// The auth-scheme, as sent (schemes compare case-insensitively).
    pub(crate) scheme: &'a str,
    /// The `token68`, when the challenge has one instead of parameters.
    pub(crate) token68: Option<&'a str>,
    /// The parameters in order, values unquoted and unescaped.
    pub(crate) params: Vec<(&'a str, Cow<'a, str>)>,
}

impl Challenge<'_> {
    /// Whether the scheme is `scheme`, ignoring ASCII case.
    pub(crate) fn is(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }

    /// The value of the first parameter called `name` (names compare case-insensitively).
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| &**value)
    }
}

/// The challenges of every `WWW-Authenticate` line of `headers`, in order, at most
/// [`MAX_CHALLENGES`] in all.
pub(crate) fn challenges(headers: &HeaderMap) -> Vec<Challenge<'_>> {
    let mut out = Vec::new();
    for value in headers.get_all(WWW_AUTHENTICATE) {
        // Header values are visible ASCII, tabs and spaces, and obs-text: take obs-text that
        // is UTF-8 (in quoted strings), and skip a line that is not.
        if let Ok(text) = std::str::from_utf8(value.as_bytes()) {
            parse_into(text, &mut out);
        }
        if out.len() >= MAX_CHALLENGES {
            break;
        }
    }
    out
}

/// The `error` parameter of the first challenge with scheme `scheme` that has one.
pub(crate) fn error_of<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<Cow<'a, str>> {
    challenges(headers)
        .into_iter()
        .filter(|challenge| challenge.is(scheme))
        .find_map(|challenge| take_param(challenge, "error"))
}

/// The `error` code of a 401, for logging: the `error` of the first `Bearer` challenge that
/// has one, else of the first challenge that has one. `None` unless it is a short ASCII token
/// (at most 64 visible characters): anything else is not worth logging.
pub(crate) fn challenge_error(headers: &HeaderMap) -> Option<String> {
    let challenges = challenges(headers);
    let bearer = challenges
        .iter()
        .filter(|challenge| challenge.is("Bearer"))
        .find_map(|challenge| challenge.param("error"));
    let code = bearer.or_else(|| challenges.iter().find_map(|c| c.param("error")))?;
    (!code.is_empty() && code.len() <= MAX_ERROR_LEN && code.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| code.to_owned())
}

fn take_param<'a>(challenge: Challenge<'a>, name: &str) -> Option<Cow<'a, str>> {
    challenge
        .params
        .into_iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

/// The challenges of one field value, at most [`MAX_CHALLENGES`].
#[cfg(any(test, fuzzing))]
pub(crate) fn parse(value: &str) -> Vec<Challenge<'_>> {
    let mut out = Vec::new();
    parse_into(value, &mut out);
    out
}

/// Appends the challenges of `value` to `out` until it holds [`MAX_CHALLENGES`].
fn parse_into<'a>(value: &'a str, out: &mut Vec<Challenge<'a>>) {
    let mut cursor = Cursor {
        text: value,
        pos: 0,
    };
    // Whether an element `name=value` belongs to the last challenge of `out`: not after a
    // challenge with a token68, nor after an element that did not parse as a scheme.
    let mut open = false;
    loop {
        // Empty elements and the whitespace around commas.
        while matches!(cursor.peek(), Some(b',' | b' ' | b'\t')) {
            cursor.pos += 1;
        }
        if cursor.peek().is_none() {
            return;
        }
        let name = cursor.token();
        if name.is_empty() {
            cursor.skip_element();
            open = false;
            continue;
        }
        let after_name = cursor.pos;
        cursor.skip_ows();
        if cursor.eat(b'=') {
            // An auth-param of the challenge before it.
            let param = cursor.param_value().filter(|_| cursor.at_element_end());
            if let (Some(value), Some(challenge), true) = (param, out.last_mut(), open)
                && challenge.params.len() < MAX_PARAMS
            {
                challenge.params.push((name, value));
            }
            cursor.skip_element();
            continue;
        }
        // A new challenge: the scheme alone, or the scheme, 1*SP and a token68 or parameters.
        if out.len() >= MAX_CHALLENGES {
            return;
        }
        cursor.pos = after_name;
        let mut challenge = Challenge {
            scheme: name,
            token68: None,
            params: Vec::new(),
        };
        open = true;
        if cursor.at_element_end() {
            out.push(challenge);
            continue;
        }
        if cursor.pos == after_name {
            // No space after the scheme (`Bearer"x"`, `Basic;`): not a challenge.
            cursor.skip_element();
            open = false;
            continue;
        }
        let rest = cursor.pos;
        if let Some(token68) = cursor.token68().filter(|_| cursor.at_element_end()) {
            challenge.token68 = Some(token68);
            open = false;
        } else {
            // The first auth-param; a malformed one is dropped, the challenge kept.
            cursor.pos = rest;
            let name = cursor.token();
            cursor.skip_ows();
            if !name.is_empty()
                && cursor.eat(b'=')
                && let Some(value) = cursor.param_value().filter(|_| cursor.at_element_end())
            {
                challenge.params.push((name, value));
            }
        }
        out.push(challenge);
        cursor.skip_element();
    }
}

/// A position in a field value. Every method moves forward or not at all; the main loop
/// makes sure each turn consumes at least one byte.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.pos += 1;
        }
        found
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// Whether only whitespace is left before the next comma or the end.
    fn at_element_end(&mut self) -> bool {
        self.skip_ows();
        matches!(self.peek(), None | Some(b','))
    }

    /// The longest run of `tchar`s here (RFC 9110 §5.6.2), maybe empty.
    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        self.slice(start)
    }

    /// The text from `start` to here. Every position the parser stops at is after an ASCII
    /// byte or a whole character, so this is never empty for want of a boundary; `get`
    /// rather than indexing all the same, so that no input can make it panic.
    fn slice(&self, start: usize) -> &'a str {
        self.text.get(start..self.pos).unwrap_or_default()
    }

    /// A token68 here, or `None` (and the position anywhere after it).
    fn token68(&mut self) -> Option<&'a str> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
        {
            self.pos += 1;
        }
        if self.pos == start {
            return None;
        }
        while self.eat(b'=') {}
        Some(self.slice(start))
    }

    /// A parameter value after `=` (and BWS): a token, or a quoted string unescaped. A
    /// quoted string that does not parse leaves the position at its opening quote, for
    /// [`skip_element`](Self::skip_element) to skip it whole.
    fn param_value(&mut self) -> Option<Cow<'a, str>> {
        self.skip_ows();
        if self.peek() == Some(b'"') {
            let open = self.pos;
            let value = self.quoted_string();
            if value.is_none() {
                self.pos = open;
            }
            return value;
        }
        let token = self.token();
        (!token.is_empty()).then_some(Cow::Borrowed(token))
    }

    /// A quoted string (RFC 9110 §5.6.4) starting here, without its quotes and escapes;
    /// `None` when it is not terminated or holds a control character.
    fn quoted_string(&mut self) -> Option<Cow<'a, str>> {
        let bytes = self.text.as_bytes();
        self.pos += 1;
        let start = self.pos;
        let mut unescaped: Option<String> = None;
        loop {
            let b = *bytes.get(self.pos)?;
            match b {
                b'"' => {
                    let raw = self.slice(start);
                    self.pos += 1;
                    return Some(unescaped.map_or(Cow::Borrowed(raw), Cow::Owned));
                }
                b'\\' => {
                    let escaped = *bytes.get(self.pos + 1)?;
                    if is_control(escaped) {
                        return None;
                    }
                    let out = unescaped.get_or_insert_with(|| self.slice(start).into());
                    // The escaped character may be multi-byte: copy it whole.
                    let len = utf8_len(escaped);
                    let end = (self.pos + 1 + len).min(bytes.len());
                    out.push_str(self.text.get(self.pos + 1..end)?);
                    self.pos = end;
                }
                _ if is_control(b) => return None,
                _ => {
                    let len = utf8_len(b);
                    let end = (self.pos + len).min(bytes.len());
                    if let Some(out) = &mut unescaped {
                        out.push_str(self.text.get(self.pos..end)?);
                    }
                    self.pos = end;
                }
            }
        }
    }

    /// Moves to the next comma outside quotes, or to the end. Moves at least one byte unless
    /// already there.
    fn skip_element(&mut self) {
        let bytes = self.text.as_bytes();
        let mut quoted = false;
        while let Some(&b) = bytes.get(self.pos) {
            match b {
                b',' if !quoted => return,
                b'"' => quoted = !quoted,
                b'\\' if quoted => self.pos += 1,
                _ => {}
            }
            self.pos += 1;
        }
        // A `\` as the last byte leaves the position one past the end.
        self.pos = bytes.len();
    }
}

/// `tchar` (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Control characters other than HTAB, which quoted strings may not hold.
fn is_control(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// The length of the UTF-8 sequence that starts with `b` (1 for a stray continuation byte,
/// which a `&str` cannot hold at a boundary anyway).
fn utf8_len(b: u8) -> usize {
    match b {
        0xf0.. => 4,
        0xe0.. => 3,
        0xc0.. => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn challenge<'a>(
        scheme: &'a str,
        token68: Option<&'a str>,
        params: &[(&'a str, &'a str)],
    ) -> Challenge<'a> {
        Challenge {
            scheme,
            token68,
            params: params
                .iter()
                .map(|&(name, value)| (name, Cow::Borrowed(value)))
                .collect(),
        }
    }

    fn headers(lines: &[&'static str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in lines {
            map.append(WWW_AUTHENTICATE, HeaderValue::from_static(line));
        }
        map
    }

    #[test]
    fn rfc_9110_examples() {
        // §11.6.1, with the escaped quotes of §5.6.4.
        assert_eq!(
            parse(
                r#"Basic realm="simple", Newauth realm="apps", type=1, title="Login to \"apps\"""#
            ),
            [
                challenge("Basic", None, &[("realm", "simple")]),
                challenge(
                    "Newauth",
                    None,
                    &[
                        ("realm", "apps"),
                        ("type", "1"),
                        ("title", r#"Login to "apps""#)
                    ]
                ),
            ]
        );
        // RFC 6750 §3 and RFC 9449 §7.1.
        assert_eq!(
            parse(
                r#"Bearer realm="example", error="invalid_token", error_description="The access token expired""#
            ),
            [challenge(
                "Bearer",
                None,
                &[
                    ("realm", "example"),
                    ("error", "invalid_token"),
                    ("error_description", "The access token expired")
                ]
            )]
        );
        assert_eq!(
            parse(r#"DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof""#)
                [0]
                .param("ERROR"),
            Some("use_dpop_nonce")
        );
    }

    #[test]
    fn token68_bws_and_empty_elements() {
        assert_eq!(
            parse("Basic dXNlcjpwYXNz=="),
            [challenge("Basic", Some("dXNlcjpwYXNz=="), &[])]
        );
        assert_eq!(
            parse("Basic abc=, Bearer error = x ,, ,Negotiate"),
            [
                challenge("Basic", Some("abc="), &[]),
                challenge("Bearer", None, &[("error", "x")]),
                challenge("Negotiate", None, &[]),
            ]
        );
        // A parameter after a token68 belongs to no challenge.
        assert_eq!(
            parse("Basic abc, realm=x"),
            [challenge("Basic", Some("abc"), &[])]
        );
        assert_eq!(
            parse(r#"Bearer x="a\\b\"c""#)[0].param("x"),
            Some(r#"a\b"c"#)
        );
        assert_eq!(parse(r#"Bearer x="é\é""#)[0].param("x"), Some("éé"));
    }

    #[test]
    fn hostile_values_end_and_keep_what_parses() {
        assert_eq!(parse("="), []);
        assert_eq!(parse(",,,"), []);
        assert_eq!(parse(""), []);
        assert_eq!(
            parse(r#"Bearer realm="x", =b"#),
            [challenge("Bearer", None, &[("realm", "x")])]
        );
        // After a broken element, parameters attach to nothing until the next scheme.
        assert_eq!(
            parse(r#"=, a=b, DPoP error="use_dpop_nonce""#),
            [challenge("DPoP", None, &[("error", "use_dpop_nonce")])]
        );
        assert_eq!(
            parse(r#"Bearer error="unterminated"#),
            [challenge("Bearer", None, &[])]
        );
        assert_eq!(
            parse(r#"Bearer error="x\"#),
            [challenge("Bearer", None, &[])]
        );
        assert_eq!(parse("Bearer error=x\\"), [challenge("Bearer", None, &[])]);
        assert_eq!(parse("\\"), []);
        assert_eq!(parse("Bearer\"x\", Basic"), [challenge("Basic", None, &[])]);
        assert_eq!(
            parse("Bearer error=a b, realm=r"),
            [challenge("Bearer", None, &[("realm", "r")])]
        );
        // 100 kB of `a=`: one pass, nothing kept.
        assert_eq!(parse(&"a=".repeat(50_000)), []);
        let long = format!("Bearer {}", "a=b, ".repeat(20_000));
        let parsed = parse(&long);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].params.len(), MAX_PARAMS);
        assert_eq!(parse(&"A, ".repeat(1000)).len(), MAX_CHALLENGES);
        assert_eq!(parse(&"\"".repeat(100_000)), []);
    }

    #[test]
    fn several_lines_and_the_helpers() {
        let map = headers(&[
            r#"Basic realm="api", Bearer realm="api""#,
            r#"DPoP algs="ES256", DPoP error="use_dpop_nonce", Bearer error="invalid_token""#,
        ]);
        let all = challenges(&map);
        assert_eq!(
            all.iter().map(|c| c.scheme).collect::<Vec<_>>(),
            ["Basic", "Bearer", "DPoP", "DPoP", "Bearer"]
        );
        assert_eq!(error_of(&map, "dpop").as_deref(), Some("use_dpop_nonce"));
        assert_eq!(error_of(&map, "Basic"), None);
        assert_eq!(challenge_error(&map).as_deref(), Some("invalid_token"));

        // A line that is not UTF-8 is skipped, the others kept.
        let mut map = headers(&[r#"Bearer error="invalid_token""#]);
        map.append(
            WWW_AUTHENTICATE,
            HeaderValue::from_bytes(b"DPoP error=\"\xff\"").unwrap(),
        );
        assert_eq!(challenges(&map).len(), 1);

        // The cap holds over all lines.
        let many = headers(&["A, B, C, D, E, F, G, H, I, J, K, L, M, N, O, P, Q"; 3]);
        assert_eq!(challenges(&many).len(), MAX_CHALLENGES);
    }

    #[test]
    fn challenge_errors_are_short_ascii_tokens() {
        let error = |value: &'static str| challenge_error(&headers(&[value]));
        assert_eq!(
            error(r#"Bearer realm="api", error="invalid_token", error_description="expired""#),
            Some("invalid_token".into())
        );
        assert_eq!(
            error("Bearer error=insufficient_scope"),
            Some("insufficient_scope".into())
        );
        assert_eq!(
            error(r#"DPoP error="use_dpop_nonce""#),
            Some("use_dpop_nonce".into())
        );
        assert_eq!(error(r#"Bearer realm="api""#), None);
        assert_eq!(error(r#"Bearer error="two words""#), None);
        assert_eq!(error(r#"Bearer error="""#), None);
        let long = Box::leak(format!("Bearer error={}", "x".repeat(65)).into_boxed_str());
        assert_eq!(error(long), None);
    }

    /// Writes challenges back as a field value: parsing it again gives the same challenges.
    fn write(challenges: &[Challenge<'_>]) -> String {
        let mut out = Vec::new();
        for challenge in challenges {
            let mut text = challenge.scheme.to_owned();
            if let Some(token68) = challenge.token68 {
                text = format!("{text} {token68}");
            }
            let params: Vec<String> = challenge
                .params
                .iter()
                .map(|(name, value)| {
                    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
                    format!("{name}=\"{escaped}\"")
                })
                .collect();
            if !params.is_empty() {
                text = format!("{text} {}", params.join(", "));
            }
            out.push(text);
        }
        out.join(", ")
    }

    #[test]
    fn written_challenges_parse_back_the_same() {
        for value in [
            r#"Basic realm="simple", Newauth realm="apps", type=1, title="Login to \"apps\"""#,
            "Basic dXNlcjpwYXNz==, Negotiate, Bearer error=x",
            r#"Bearer realm="x", =b, DPoP algs="ES256 EdDSA" , error="a\\b""#,
        ] {
            let parsed = parse(value);
            let written = write(&parsed);
            assert_eq!(parse(&written), parsed, "{value} -> {written}");
        }
    }
}
