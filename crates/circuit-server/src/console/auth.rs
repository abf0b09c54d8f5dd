//! The console's sessions, with a cluster key. An operator gets a one-time
//! login URL from `circuit console-login` (which holds the key file): its
//! token is a random nonce and an expiry, signed with HMAC-SHA256 under a
//! subkey of the cluster key ([`circuit_proto::Key::derive`]), so only a
//! holder of the key can make one, and the server needs no shared state
//! with the command. The server takes each token once, before it expires,
//! and answers with a session cookie (HttpOnly, SameSite=Strict). Every
//! POST also carries a CSRF token in a header: an HMAC of the session id
//! under a secret of this server's, so it is bound to the session.
//!
//! Without a key there are no sessions (the console listens on loopback
//! only, unless `--http-insecure`), but POSTs still need the CSRF header,
//! whose token only a page of the console's own origin can read.
//!
//! Times are seconds since the epoch, passed in: the core is pure.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use circuit_proto::Key;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What the login token's signing key is derived for.
const LOGIN_PURPOSE: &str = "console login token";

/// How long a login URL is good for, in seconds.
pub const LOGIN_TTL: u64 = 300;

/// How long a session lasts without use, in seconds.
pub const SESSION_IDLE: u64 = 8 * 3600;

/// The name of the session cookie.
pub const COOKIE: &str = "circuit_session";

/// The header every POST carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-circuit-csrf";

/// The most sessions held at once; the oldest goes first.
const MAX_SESSIONS: usize = 256;

fn mac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("OS random source");
    b
}

/// A one-time login token valid until `now + LOGIN_TTL`:
/// `base64url(nonce ‖ expiry) "." base64url(HMAC)`.
pub fn login_token(key: &Key, now: u64) -> String {
    token_with(&key.derive(LOGIN_PURPOSE), random::<16>(), now + LOGIN_TTL)
}

fn token_with(signing: &[u8; 32], nonce: [u8; 16], expiry: u64) -> String {
    let mut body = nonce.to_vec();
    body.extend_from_slice(&expiry.to_be_bytes());
    let sig = mac(signing, &[b"login\0", &body]);
    format!("{}.{}", B64.encode(&body), B64.encode(sig))
}

/// Why a login or a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The token is not one of ours (bad encoding or signature).
    BadToken,
    /// The token has expired.
    Expired,
    /// The token was used already.
    Used,
    /// No session, or an expired one.
    NoSession,
    /// A POST without the right CSRF token.
    Csrf,
}

impl Refusal {
    /// One line for the operator.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::BadToken => "login refused: the token is not valid for this cluster's key",
            Refusal::Expired => "login refused: the token has expired; get a new URL with `circuit console-login`",
            Refusal::Used => "login refused: the token was used already; get a new URL with `circuit console-login`",
            Refusal::NoSession => "no session: log in with the URL `circuit console-login` prints",
            Refusal::Csrf => "refused: missing or wrong CSRF token (reload the page)",
        }
    }
}

/// The console's sessions and tokens.
pub struct Auth {
    /// The login tokens' signing key; `None` without a cluster key.
    signing: Option<[u8; 32]>,
    /// This server's secret for CSRF tokens.
    csrf: [u8; 32],
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Session id (base64) → when it expires.
    sessions: HashMap<String, u64>,
    /// Nonces of login tokens taken → their expiry (kept until then).
    used: HashMap<[u8; 16], u64>,
}

impl Auth {
    /// Sessions signed by `key`'s subkey; none needed without a key.
    pub fn new(key: Option<&Key>) -> Auth {
        Auth {
            signing: key.map(|k| k.derive(LOGIN_PURPOSE)),
            csrf: random(),
            inner: Mutex::default(),
        }
    }

    /// True when requests need a session.
    pub fn required(&self) -> bool {
        self.signing.is_some()
    }

    /// Takes a login token (once) and opens a session: its id.
    pub fn login(&self, token: &str, now: u64) -> Result<String, Refusal> {
        let signing = self.signing.as_ref().ok_or(Refusal::BadToken)?;
        let (body, sig) = token.split_once('.').ok_or(Refusal::BadToken)?;
        let body = B64.decode(body).map_err(|_| Refusal::BadToken)?;
        let sig = B64.decode(sig).map_err(|_| Refusal::BadToken)?;
        if body.len() != 24 {
            return Err(Refusal::BadToken);
        }
        let mut m = HmacSha256::new_from_slice(signing).expect("any key length");
        m.update(b"login\0");
        m.update(&body);
        m.verify_slice(&sig).map_err(|_| Refusal::BadToken)?;
        let nonce: [u8; 16] = body[..16].try_into().expect("16 bytes");
        let expiry = u64::from_be_bytes(body[16..].try_into().expect("8 bytes"));
        if now > expiry {
            return Err(Refusal::Expired);
        }
        let mut inner = self.inner.lock().unwrap();
        inner.used.retain(|_, exp| *exp >= now);
        inner.sessions.retain(|_, exp| *exp >= now);
        if inner.used.insert(nonce, expiry).is_some() {
            return Err(Refusal::Used);
        }
        if inner.sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = inner.sessions.iter().min_by_key(|(_, e)| **e).map(|(k, _)| k.clone())
        {
            inner.sessions.remove(&oldest);
        }
        let id = B64.encode(random::<32>());
        inner.sessions.insert(id.clone(), now + SESSION_IDLE);
        Ok(id)
    }

    /// Checks (and extends) the session `id`; always fine without a key.
    pub fn check(&self, id: Option<&str>, now: u64) -> Result<(), Refusal> {
        if !self.required() {
            return Ok(());
        }
        let id = id.ok_or(Refusal::NoSession)?;
        let mut inner = self.inner.lock().unwrap();
        match inner.sessions.get_mut(id) {
            Some(exp) if *exp >= now => {
                *exp = now + SESSION_IDLE;
                Ok(())
            }
            Some(_) => {
                inner.sessions.remove(id);
                Err(Refusal::NoSession)
            }
            None => Err(Refusal::NoSession),
        }
    }

    /// True while session `id` lasts (always without a key); unlike
    /// [`Auth::check`], it does not extend the session.
    pub fn alive(&self, id: Option<&str>, now: u64) -> bool {
        !self.required()
            || id.is_some_and(|id| {
                self.inner
                    .lock()
                    .unwrap()
                    .sessions
                    .get(id)
                    .is_some_and(|exp| *exp >= now)
            })
    }

    /// The CSRF token of session `id` (of the console itself without a key).
    pub fn csrf_token(&self, id: Option<&str>) -> String {
        B64.encode(mac(&self.csrf, &[b"csrf\0", id.unwrap_or("").as_bytes()]))
    }

    /// Checks a POST's CSRF token against its session.
    pub fn check_csrf(&self, id: Option<&str>, token: Option<&str>) -> Result<(), Refusal> {
        let token = token.ok_or(Refusal::Csrf)?;
        let want = self.csrf_token(id);
        // Compared in constant time, through the MAC's own check.
        let given = B64.decode(token).map_err(|_| Refusal::Csrf)?;
        let mut m = HmacSha256::new_from_slice(&self.csrf).expect("any key length");
        m.update(b"csrf\0");
        m.update(id.unwrap_or("").as_bytes());
        m.verify_slice(&given).map_err(|_| Refusal::Csrf)?;
        debug_assert_eq!(want, token);
        Ok(())
    }

    /// Ends session `id`.
    pub fn logout(&self, id: &str) {
        self.inner.lock().unwrap().sessions.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::from_base64(&Key::generate(), "test").unwrap()
    }

    #[test]
    fn a_token_logs_in_once_before_it_expires() {
        let k = key();
        let auth = Auth::new(Some(&k));
        let t = login_token(&k, 1000);
        assert_eq!(auth.login(&t, 1000 + LOGIN_TTL + 1), Err(Refusal::Expired));
        let id = auth.login(&t, 1001).unwrap();
        assert_eq!(auth.login(&t, 1002), Err(Refusal::Used));
        assert_eq!(auth.check(Some(&id), 1003), Ok(()));
        assert_eq!(auth.check(Some("nope"), 1003), Err(Refusal::NoSession));
        assert_eq!(auth.check(None, 1003), Err(Refusal::NoSession));
        // Idle too long: gone.
        assert!(auth.alive(Some(&id), 1003 + SESSION_IDLE) && !auth.alive(Some("other"), 1003));
        assert!(!auth.alive(Some(&id), 1003 + SESSION_IDLE + 1) && !auth.alive(None, 1003));
        assert_eq!(auth.check(Some(&id), 1003 + SESSION_IDLE + 1), Err(Refusal::NoSession));
    }

    #[test]
    fn a_token_of_another_key_or_tampered_is_refused() {
        let (k, other) = (key(), key());
        let auth = Auth::new(Some(&k));
        assert_eq!(auth.login(&login_token(&other, 10), 11), Err(Refusal::BadToken));
        let t = login_token(&k, 10);
        let (body, sig) = t.split_once('.').unwrap();
        // A later expiry under the same signature.
        let mut raw = B64.decode(body).unwrap();
        raw[23] ^= 1;
        let forged = format!("{}.{sig}", B64.encode(raw));
        assert_eq!(auth.login(&forged, 11), Err(Refusal::BadToken));
        assert_eq!(auth.login("garbage", 11), Err(Refusal::BadToken));
        assert_eq!(auth.login("", 11), Err(Refusal::BadToken));
        // Without a key nobody logs in, and nobody needs to.
        let open = Auth::new(None);
        assert_eq!(open.login(&t, 11), Err(Refusal::BadToken));
        assert_eq!(open.check(None, 11), Ok(()));
    }

    #[test]
    fn csrf_tokens_are_bound_to_the_session() {
        let k = key();
        let auth = Auth::new(Some(&k));
        let a = auth.login(&login_token(&k, 1), 2).unwrap();
        let b = auth.login(&login_token(&k, 1), 2).unwrap();
        let ta = auth.csrf_token(Some(&a));
        assert_eq!(auth.check_csrf(Some(&a), Some(&ta)), Ok(()));
        assert_eq!(auth.check_csrf(Some(&b), Some(&ta)), Err(Refusal::Csrf));
        assert_eq!(auth.check_csrf(Some(&a), None), Err(Refusal::Csrf));
        assert_eq!(auth.check_csrf(Some(&a), Some("x")), Err(Refusal::Csrf));
        // Another server's secret: its tokens do not pass here.
        let other = Auth::new(Some(&k));
        assert_eq!(other.check_csrf(Some(&a), Some(&ta)), Err(Refusal::Csrf));
    }
}
