use serde_json::json;

use super::super::test_support::{ProofKey, sign_proof};
use super::*;

const URL: &str = "http://127.0.0.1:8080/api/orders";
const WINDOW: Duration = Duration::from_secs(60);
const TOKEN: &str = "an-access-token";

fn now() -> SystemTime {
    SystemTime::now()
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn claims(time: SystemTime) -> Value {
    json!({
        "jti": "jti-1",
        "htm": "POST",
        "htu": URL,
        "iat": unix(time),
        "ath": access_token_hash(TOKEN),
    })
}

fn check(proof: &str) -> Result<VerifiedProof, ProofError> {
    verify_proof(proof, &Method::POST, URL, Some(TOKEN), None, now(), WINDOW)
}

/// A valid proof by `key`, then with `edit` applied to its header and claims.
fn edited(key: &ProofKey, edit: impl FnOnce(&mut Value, &mut Value)) -> String {
    let mut header = key.header();
    let mut claims = claims(now());
    edit(&mut header, &mut claims);
    sign_proof(key, &header, &claims)
}

#[test]
fn valid_proofs_for_each_algorithm() {
    for key in [ProofKey::es256(), ProofKey::ed25519(), ProofKey::rs256()] {
        let proof = edited(&key, |_, _| {});
        let verified = check(&proof).unwrap_or_else(|e| panic!("{}: {e}", key.alg));
        assert_eq!(verified.jkt, key.thumbprint(), "{}", key.alg);
        assert_eq!(verified.jti, "jti-1");
        assert_eq!(verified.alg, key.alg);
        assert_eq!(verified.nonce, None);
    }
}

#[test]
fn thumbprint_is_rfc_7638() {
    // The example key and thumbprint of RFC 7638 §3.1.
    let jwk: Jwk = serde_json::from_value(json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    }))
    .expect("jwk");
    assert_eq!(
        jwk.thumbprint(ThumbprintHash::SHA256).expect("thumbprint"),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

#[test]
fn access_token_hash_is_sha256_base64url() {
    // SHA-256("abc") = ba7816bf…15ad.
    assert_eq!(
        access_token_hash("abc"),
        "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
    );
}

#[test]
fn malformed_jwts() {
    let key = ProofKey::es256();
    let good = edited(&key, |_, _| {});
    let (head, rest) = good.split_once('.').expect("dots");
    for proof in [
        String::new(),
        "abc".to_owned(),
        format!("{head}.{rest}.extra"),
        good.rsplit_once('.').expect("dots").0.to_owned(),
        format!("{}.", good.rsplit_once('.').expect("dots").0),
        format!("!!!.{rest}"),
        format!("{}.{rest}", URL_SAFE_NO_PAD.encode("[1,2]")),
        format!("{}.{rest}", URL_SAFE_NO_PAD.encode("not json")),
    ] {
        assert_eq!(check(&proof), Err(ProofError::Malformed), "{proof}");
    }
    // A nonce that is not a string.
    let proof = edited(&key, |_, claims| claims["nonce"] = json!(42));
    assert_eq!(check(&proof), Err(ProofError::Malformed));
}

#[test]
fn typ_must_be_dpop_jwt() {
    let key = ProofKey::es256();
    for typ in [json!("JWT"), json!("at+jwt"), json!(null), json!(1)] {
        let proof = edited(&key, |header, _| header["typ"] = typ.clone());
        assert_eq!(check(&proof), Err(ProofError::Type), "{typ}");
    }
    let proof = edited(&key, |header, _| {
        header.as_object_mut().expect("object").remove("typ");
    });
    assert_eq!(check(&proof), Err(ProofError::Type));
    // A media type: case-insensitive, `application/` optional (RFC 7515 §4.1.9).
    for typ in ["application/dpop+jwt", "DPoP+JWT"] {
        let proof = edited(&key, |header, _| header["typ"] = json!(typ));
        assert!(check(&proof).is_ok(), "{typ}");
    }
}

#[test]
fn alg_must_be_supported_and_asymmetric() {
    let key = ProofKey::es256();
    for alg in ["none", "HS256", "ES384", "PS256", ""] {
        let proof = edited(&key, |header, _| header["alg"] = json!(alg));
        assert_eq!(
            check(&proof),
            Err(ProofError::UnsupportedAlgorithm),
            "{alg}"
        );
    }
    let proof = edited(&key, |header, _| {
        header.as_object_mut().expect("object").remove("alg");
    });
    assert_eq!(check(&proof), Err(ProofError::UnsupportedAlgorithm));

    // An unsigned proof (`alg: none`, empty signature) is refused before anything else.
    let header = json!({"typ": "dpop+jwt", "alg": "none", "jwk": key.jwk});
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims(now()).to_string())
    );
    assert_eq!(check(&unsigned), Err(ProofError::Malformed));

    // An HMAC proof whose "jwk" is the symmetric key.
    let secret = b"0123456789abcdef0123456789abcdef";
    let header = json!({
        "typ": "dpop+jwt",
        "alg": "HS256",
        "jwk": {"kty": "oct", "k": URL_SAFE_NO_PAD.encode(secret)},
    });
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims(now()).to_string())
    );
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(secret),
        Algorithm::HS256,
    )
    .expect("sign");
    assert_eq!(
        check(&format!("{message}.{signature}")),
        Err(ProofError::UnsupportedAlgorithm)
    );
}

#[test]
fn jwk_must_be_present_public_and_fit_alg() {
    let key = ProofKey::es256();
    let proof = edited(&key, |header, _| {
        header.as_object_mut().expect("object").remove("jwk");
    });
    assert_eq!(check(&proof), Err(ProofError::MissingJwk));

    // Private JWKs, as key files have them (with `d`, and `p`, `q`… for RSA).
    for key in [ProofKey::es256(), ProofKey::ed25519(), ProofKey::rs256()] {
        let private = key.private_jwk();
        let proof = edited(&key, |header, _| header["jwk"] = private.clone());
        assert_eq!(check(&proof), Err(ProofError::PrivateKey), "{}", key.alg);
    }
    for member in ["p", "q", "dp", "dq", "qi", "k"] {
        let proof = edited(&key, |header, _| header["jwk"][member] = json!("AQAB"));
        assert_eq!(check(&proof), Err(ProofError::PrivateKey), "{member}");
    }

    // A key of another type than `alg` says.
    let rsa = ProofKey::rs256();
    let proof = edited(&key, |header, _| header["jwk"] = rsa.jwk.clone());
    assert_eq!(check(&proof), Err(ProofError::InvalidJwk));
    let ed = ProofKey::ed25519();
    let proof = edited(&key, |header, _| header["jwk"] = ed.jwk.clone());
    assert_eq!(check(&proof), Err(ProofError::InvalidJwk));
    // Not a JWK.
    for jwk in [json!("key"), json!({"kty": "EC"}), json!({"kty": "XYZ"})] {
        let proof = edited(&key, |header, _| header["jwk"] = jwk.clone());
        assert_eq!(check(&proof), Err(ProofError::InvalidJwk), "{jwk}");
    }
    // A P-384 key under ES256.
    let proof = edited(&key, |header, _| header["jwk"]["crv"] = json!("P-384"));
    assert_eq!(check(&proof), Err(ProofError::InvalidJwk));
}

#[test]
fn signature_must_verify_with_the_jwk() {
    for key in [ProofKey::es256(), ProofKey::ed25519(), ProofKey::rs256()] {
        // Signed by the key, but the header names another key of the same type.
        let other = key.other();
        let proof = edited(&key, |header, _| header["jwk"] = other.jwk.clone());
        assert_eq!(check(&proof), Err(ProofError::Signature), "{}", key.alg);

        // A claim changed after signing.
        let proof = edited(&key, |_, _| {});
        let (head, rest) = proof.split_once('.').expect("dots");
        let (_, signature) = rest.split_once('.').expect("dots");
        let mut changed = claims(now());
        changed["htm"] = json!("GET");
        let tampered = format!(
            "{head}.{}.{signature}",
            URL_SAFE_NO_PAD.encode(changed.to_string())
        );
        assert_eq!(check(&tampered), Err(ProofError::Signature), "{}", key.alg);
    }
}

#[test]
fn required_claims() {
    let key = ProofKey::es256();
    for name in ["jti", "htm", "htu", "iat"] {
        let proof = edited(&key, |_, claims| {
            claims.as_object_mut().expect("object").remove(name);
        });
        assert_eq!(check(&proof), Err(ProofError::MissingClaim(name)), "{name}");
    }
    let proof = edited(&key, |_, claims| claims["jti"] = json!(""));
    assert_eq!(check(&proof), Err(ProofError::MissingClaim("jti")));
    let proof = edited(&key, |_, claims| claims["jti"] = json!(7));
    assert_eq!(check(&proof), Err(ProofError::MissingClaim("jti")));
    let proof = edited(&key, |_, claims| claims["iat"] = json!("1700000000"));
    assert_eq!(check(&proof), Err(ProofError::MissingClaim("iat")));
}

#[test]
fn htm_must_be_the_method() {
    let key = ProofKey::es256();
    for htm in ["GET", "post", "PUT"] {
        let proof = edited(&key, |_, claims| claims["htm"] = json!(htm));
        assert_eq!(check(&proof), Err(ProofError::Method), "{htm}");
    }
}

#[test]
fn htu_must_be_the_url_after_normalisation() {
    let key = ProofKey::es256();
    for htu in [
        "http://127.0.0.1:8080/api/orders?page=2",
        "http://127.0.0.1:8080/api/orders#top",
        "HTTP://127.0.0.1:8080/api/./orders",
        "http://127.0.0.1:8080/api/x/../orders",
        "http://127.0.0.1:8080/api/%6Frders",
    ] {
        let proof = edited(&key, |_, claims| claims["htu"] = json!(htu));
        assert!(check(&proof).is_ok(), "{htu}");
    }
    for htu in [
        "http://127.0.0.1:8081/api/orders",
        "https://127.0.0.1:8080/api/orders",
        "http://127.0.0.1:8080/api/orders/",
        "http://127.0.0.1:8080/api/Orders",
        "http://127.0.0.1/api/orders",
        "http://localhost:8080/api/orders",
        "/api/orders",
        "http://127.0.0.1:8080/api/orders%2",
    ] {
        let proof = edited(&key, |_, claims| claims["htu"] = json!(htu));
        assert_eq!(check(&proof), Err(ProofError::Url), "{htu}");
    }
    // The request's own query is ignored too.
    let proof = edited(&key, |_, _| {});
    let url = format!("{URL}?page=3");
    assert!(
        verify_proof(
            &proof,
            &Method::POST,
            &url,
            Some(TOKEN),
            None,
            now(),
            WINDOW
        )
        .is_ok()
    );
}

#[test]
fn normalisation() {
    for (url, normalized) in [
        ("http://EXAMPLE.com", "http://example.com/"),
        ("http://example.com:80/", "http://example.com/"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("https://example.com:80/a", "https://example.com:80/a"),
        ("http://example.com:/a", "http://example.com/a"),
        ("http://example.com:0080/a", "http://example.com/a"),
        ("http://[::1]:8080/a", "http://[::1]:8080/a"),
        ("http://[::1]:80", "http://[::1]/"),
        ("http://h/a/b/c/./../../g", "http://h/a/g"),
        ("http://h/%7e%41%2f%2F", "http://h/~A%2F%2F"),
        ("http://h/a?x#y", "http://h/a"),
    ] {
        assert_eq!(normalize_htu(url).as_deref(), Some(normalized), "{url}");
    }
    for url in [
        "",
        "/a",
        "h/a",
        "http://",
        "http://h:x/",
        "1http://h/",
        "http://h/%zz",
    ] {
        assert_eq!(normalize_htu(url), None, "{url}");
    }
}

#[test]
fn iat_must_be_within_the_window() {
    let key = ProofKey::es256();
    let now = now();
    for (offset, ok) in [
        (-59_i64, true),
        (59, true),
        (-61, false),
        (61, false),
        (-3600, false),
    ] {
        let time = if offset < 0 {
            now - Duration::from_secs(offset.unsigned_abs())
        } else {
            now + Duration::from_secs(offset.unsigned_abs())
        };
        let proof = sign_proof(&key, &key.header(), &claims(time));
        let result = verify_proof(&proof, &Method::POST, URL, Some(TOKEN), None, now, WINDOW);
        assert_eq!(result.is_ok(), ok, "{offset}: {result:?}");
        if !ok {
            assert_eq!(result, Err(ProofError::IssuedAt));
        }
    }
    // The clock is the caller's: the same proof checked an hour later is refused.
    let proof = sign_proof(&key, &key.header(), &claims(now));
    let later = now + Duration::from_secs(3600);
    assert_eq!(
        verify_proof(&proof, &Method::POST, URL, Some(TOKEN), None, later, WINDOW),
        Err(ProofError::IssuedAt)
    );
}

#[test]
fn ath_must_match_the_access_token() {
    let key = ProofKey::es256();
    let proof = edited(&key, |_, claims| {
        claims.as_object_mut().expect("object").remove("ath");
    });
    assert_eq!(check(&proof), Err(ProofError::MissingAth));
    // Without an access token (the token endpoint), no `ath` is needed.
    assert!(verify_proof(&proof, &Method::POST, URL, None, None, now(), WINDOW).is_ok());

    let proof = edited(&key, |_, claims| {
        claims["ath"] = json!(access_token_hash("another-token"));
    });
    assert_eq!(check(&proof), Err(ProofError::Ath));
    // Padded base64 is not base64url without padding.
    let proof = edited(&key, |_, claims| {
        claims["ath"] = json!(format!("{}=", access_token_hash(TOKEN)));
    });
    assert_eq!(check(&proof), Err(ProofError::Ath));
}

#[test]
fn nonce_when_required() {
    let key = ProofKey::es256();
    let with = |nonce: Option<&str>| {
        edited(&key, |_, claims| {
            if let Some(nonce) = nonce {
                claims["nonce"] = json!(nonce);
            }
        })
    };
    let verify = |proof: &str, expected: Option<&str>| {
        verify_proof(
            proof,
            &Method::POST,
            URL,
            Some(TOKEN),
            expected,
            now(),
            WINDOW,
        )
    };
    assert_eq!(
        verify(&with(None), Some("n-1")),
        Err(ProofError::MissingNonce)
    );
    assert_eq!(
        verify(&with(Some("n-0")), Some("n-1")),
        Err(ProofError::StaleNonce)
    );
    let verified = verify(&with(Some("n-1")), Some("n-1")).expect("current nonce");
    assert_eq!(verified.nonce.as_deref(), Some("n-1"));
    // Without a required nonce, one in the proof does no harm.
    assert!(verify(&with(Some("n-0")), None).is_ok());
    assert_eq!(ProofError::MissingNonce.error_code(), "use_dpop_nonce");
    assert_eq!(ProofError::StaleNonce.error_code(), "use_dpop_nonce");
    assert_eq!(ProofError::Ath.error_code(), "invalid_dpop_proof");

    // Nonce errors come last: a bad proof without a nonce is not a nonce error.
    let bad = edited(&key, |_, claims| claims["htm"] = json!("GET"));
    assert_eq!(verify(&bad, Some("n-1")), Err(ProofError::Method));
}

#[test]
fn proof_header_is_exactly_one() {
    let mut headers = HeaderMap::new();
    assert_eq!(proof_header(&headers), Err(ProofError::Missing));
    headers.append(DPOP_HEADER, "a.b.c".parse().expect("value"));
    assert_eq!(proof_header(&headers), Ok("a.b.c"));
    headers.append(DPOP_HEADER, "d.e.f".parse().expect("value"));
    assert_eq!(proof_header(&headers), Err(ProofError::Multiple));
}

#[test]
fn jti_cache_refuses_replays() {
    let key = ProofKey::es256();
    let first = check(&edited(&key, |_, _| {})).expect("valid");
    let second = check(&edited(&key, |_, claims| claims["jti"] = json!("jti-2"))).expect("valid");
    let mut cache = JtiCache::new();
    assert_eq!(cache.insert(&first, WINDOW), Ok(()));
    assert_eq!(cache.insert(&second, WINDOW), Ok(()));
    assert_eq!(cache.insert(&first, WINDOW), Err(ProofError::Replay));
    assert_eq!(cache.len(), 2);
}

#[test]
fn decoded_proof_and_descriptions() {
    let key = ProofKey::es256();
    let proof = edited(&key, |_, _| {});
    let decoded = DecodedProof::decode(&proof).expect("decoded");
    assert_eq!(decoded.header["typ"], "dpop+jwt");
    assert_eq!(decoded.claim("htm"), Some("POST"));
    assert_eq!(DecodedProof::decode("x.y"), None);
    assert_eq!(
        ProofError::MissingClaim("iat").to_string(),
        "the DPoP proof has no iat"
    );
    assert!(!format!("{:?}", check(&proof)).contains(&proof));
}
