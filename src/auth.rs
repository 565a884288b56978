//! The owner's authentication: argon2id passwords, server-side sessions behind an HttpOnly cookie, and the login
//! throttle.
//!
//! A session token is 32 random bytes; the browser holds it in `natter_session` and the store holds only its SHA-256,
//! so a copy of the data dir does not let anyone in. Logging out deletes the session and closes its sockets.

use std::net::IpAddr;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ring::rand::{SecureRandom, SystemRandom};

use crate::config::AdminConfig;
use crate::error::ApiError;
use crate::store::{hash_token, Session, Store, StoreError, TokenHash};
use crate::throttle::RateLimiter;
use crate::timestamp;

pub const SESSION_COOKIE: &str = "natter_session";

/// The meta key of the password hash generated at first start (when the config has none).
const GENERATED_HASH_KEY: &str = "admin_password_hash";

/// A real argon2id hash (argon2's default parameters, the same as `hash_password`) of a random password nobody
/// kept: verified when the user name is wrong, so that costs the same time as a wrong password. A constant rather than
/// one hashed at start, which cost ~50 ms and 19 MiB of memory that the allocator then kept.
const DECOY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$E78ynXcf3cDEo/Llv4k41A$2cijmzO3XeqyR5tYt5BdUZvzJf8CIMuAdWUmrV1C3oI";

/// The longest password accepted; argon2 takes any length, but hashing megabytes per request is a cheap DoS.
const MAX_PASSWORD_BYTES: usize = 1024;

/// 32 random bytes, base64url without padding: a visitor-proof secret for cookies and generated passwords.
pub fn random_token(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buffer)
        .expect("the system random source works");
    base64url(&buffer)
}

pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut text = String::with_capacity(bytes.len() * 4 / 3 + 3);
    for chunk in bytes.chunks(3) {
        let value = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        let symbols = chunk.len() + 1;
        for index in 0..symbols {
            text.push(char::from(
                ALPHABET[(value >> (18 - 6 * index) & 63) as usize],
            ));
        }
    }
    text
}

/// Hashes a password with argon2id and a random salt (argon2's defaults: 19 MiB, 2 passes, the OWASP baseline).
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .expect("the system random source works");
    let salt = SaltString::encode_b64(&salt).expect("16 bytes make a salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes any password")
        .to_string()
}

fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Where the admin password came from, for the start-up message.
#[derive(Debug, PartialEq, Eq)]
pub enum PasswordSource {
    Config,
    Environment,
    Stored,
    /// Generated now; the plain password is printed once.
    Generated(String),
}

pub struct Auth {
    username: String,
    password_hash: String,
    session_lifetime: Duration,
    /// Failed logins per IP address; an empty bucket answers 429 with `Retry-After`.
    failures: RateLimiter<IpAddr>,
    /// A real hash to verify against when the user name is wrong, so both mistakes take the same time.
    decoy_hash: String,
}

impl Auth {
    /// Settles the admin password: the config's hash, else `NATTER_ADMIN_PASSWORD`, else one stored at an earlier
    /// start, else a new random one (stored hashed, returned so `main` can print it once).
    pub async fn new(
        config: &AdminConfig,
        environment_password: Option<&str>,
        login_failures: u32,
        store: &Store,
    ) -> anyhow::Result<(Auth, PasswordSource)> {
        let (password_hash, source) = if !config.password_hash.is_empty() {
            (config.password_hash.clone(), PasswordSource::Config)
        } else if let Some(password) = environment_password.filter(|password| !password.is_empty())
        {
            (hash_password(password), PasswordSource::Environment)
        } else if let Some(stored) = store.meta(GENERATED_HASH_KEY).map_err(store_error)? {
            (String::from_utf8(stored)?, PasswordSource::Stored)
        } else {
            let password = random_token(15);
            let hash = hash_password(&password);
            store
                .put_meta(GENERATED_HASH_KEY, hash.clone().into_bytes())
                .await
                .map_err(store_error)?;
            (hash, PasswordSource::Generated(password))
        };
        PasswordHash::new(&password_hash).map_err(|error| {
            anyhow::anyhow!("admin.password_hash is not a valid argon2id hash ({error}); run natter --init to make one")
        })?;
        let auth = Auth {
            username: config.username.clone(),
            password_hash,
            session_lifetime: Duration::from_secs(u64::from(config.session_days) * 86_400),
            failures: RateLimiter::new(login_failures, Duration::from_secs(15 * 60)),
            decoy_hash: DECOY_HASH.to_string(),
        };
        Ok((auth, source))
    }

    pub fn session_lifetime(&self) -> Duration {
        self.session_lifetime
    }

    /// Checks a login; on success answers a new session token (to put in the cookie).
    pub async fn login(
        &self,
        store: &Store,
        ip: IpAddr,
        username: &str,
        password: &str,
    ) -> Result<String, LoginError> {
        if let Err(wait) = self.failures.check(&ip) {
            return Err(LoginError::Throttled(wait));
        }
        if password.len() > MAX_PASSWORD_BYTES || username.len() > 256 {
            self.failures.take(&ip).ok();
            return Err(LoginError::Wrong);
        }
        let right_user = constant_time_eq(username.as_bytes(), self.username.as_bytes());
        let hash = if right_user {
            self.password_hash.clone()
        } else {
            self.decoy_hash.clone()
        };
        let password = password.to_string();
        let verified = tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .unwrap_or(false);
        if !(verified && right_user) {
            // Counting after the check: the attempt that empties the bucket is still answered 401.
            self.failures.take(&ip).ok();
            return Err(LoginError::Wrong);
        }
        let token = random_token(32);
        let now = timestamp::now_millis();
        let lifetime = i64::try_from(self.session_lifetime.as_millis()).unwrap_or(i64::MAX);
        let session = Session {
            username: self.username.clone(),
            created_at: now,
            expires_at: now.saturating_add(lifetime),
        };
        store
            .put_session(hash_token(&token), session)
            .await
            .map_err(LoginError::Store)?;
        Ok(token)
    }

    /// The live session a cookie header names, if any.
    pub fn session(
        &self,
        store: &Store,
        cookie_header: Option<&str>,
    ) -> Option<(TokenHash, Session)> {
        let token = session_cookie(cookie_header?)?;
        let hash = hash_token(token);
        let session = store.session(&hash).ok()??;
        (session.expires_at > timestamp::now_millis() && session.username == self.username)
            .then_some((hash, session))
    }
}

#[derive(Debug)]
pub enum LoginError {
    Wrong,
    Throttled(Duration),
    Store(StoreError),
}

impl From<LoginError> for ApiError {
    fn from(error: LoginError) -> ApiError {
        match error {
            LoginError::Wrong => ApiError::wrong_credentials(),
            LoginError::Throttled(wait) => ApiError::throttled(format!(
                "too many failed logins; try again in {} seconds",
                wait.as_secs().max(1)
            )),
            LoginError::Store(error) => error.into(),
        }
    }
}

fn store_error(error: StoreError) -> anyhow::Error {
    anyhow::anyhow!("the store failed while setting up the admin password: {error:?}")
}

/// The value of `natter_session` in a `Cookie` header. Malformed pairs are skipped, never an error.
pub fn session_cookie(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| !value.is_empty() && value.len() <= 128)
}

/// The `Set-Cookie` value for a new session.
pub fn session_cookie_header(token: &str, lifetime: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={token}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
        lifetime.as_secs()
    )
}

/// The `Set-Cookie` value that removes the cookie.
pub fn clear_cookie_header(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .fold(0u8, |difference, (x, y)| difference | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_parsing_is_forgiving_and_exact() {
        assert_eq!(session_cookie("a=1; natter_session=abc; b=2"), Some("abc"));
        assert_eq!(session_cookie("natter_session_x=abc"), None);
        assert_eq!(session_cookie("xnatter_session=abc"), None);
        assert_eq!(session_cookie("natter_session="), None);
        assert_eq!(session_cookie(";;;=;natter_session=\"q\""), Some("q"));
        assert_eq!(
            session_cookie(&format!("natter_session={}", "a".repeat(500))),
            None
        );
    }

    #[test]
    fn the_decoy_has_the_same_cost_as_a_real_hash() {
        let real = PasswordHash::new(&hash_password("x"))
            .unwrap()
            .params
            .to_string();
        assert_eq!(
            PasswordHash::new(DECOY_HASH).unwrap().params.to_string(),
            real
        );
        assert!(!verify_password(DECOY_HASH, ""));
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash_password("correct horse");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "wrong"));
        assert!(!verify_password("garbage", "x"));
    }

    #[test]
    fn base64url_matches_known_vectors() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
