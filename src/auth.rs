//! The owner's authentication: argon2id passwords, server-side sessions behind an HttpOnly cookie, and the login
//! throttle.
//!
//! A session token is 32 random bytes; the browser holds it in `natter_session` and the store holds only its SHA-256,
//! so a copy of the data dir does not let anyone in. Logging out deletes the session and closes its sockets.

use std::net::IpAddr;
use std::time::Duration;

use argon2::password_hash::PasswordHash;
use ring::rand::{SecureRandom, SystemRandom};

use crate::config::AdminConfig;
use crate::error::ApiError;
use crate::password::{self, Busy, Gate};
use crate::store::{hash_token, Session, Store, StoreError, TokenHash};
use crate::throttle::{Network, RateLimiter};
use crate::timestamp;

pub const SESSION_COOKIE: &str = "natter_session";
/// The session cookie's name over HTTPS: with the `__Host-` prefix a browser takes it only from a secure origin,
/// for the whole host and no other, so a sibling site (`blog.example.com` beside `chat.example.com`) cannot plant or
/// overwrite it.
pub const SECURE_SESSION_COOKIE: &str = "__Host-natter_session";

/// The meta key of the password hash generated at first start (when the config has none).
const GENERATED_HASH_KEY: &str = "admin_password_hash";

/// The meta key of the password hash the stored sessions were made under: when the password changes, they end.
const SESSIONS_HASH_KEY: &str = "sessions_password_hash";

/// A real argon2id hash (argon2's default parameters, the same as `password::hash`) of a random password nobody
/// kept: verified when the user name is wrong, so that costs the same time as a wrong password. A constant rather than
/// one hashed at start, which cost ~50 ms and 19 MiB of memory that the allocator then kept.
const DECOY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$E78ynXcf3cDEo/Llv4k41A$2cijmzO3XeqyR5tYt5BdUZvzJf8CIMuAdWUmrV1C3oI";

/// How long a login turned away as busy is told to wait (`Retry-After`): a few computations' time.
pub const LOGIN_BUSY_RETRY: Duration = Duration::from_secs(2);

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
    /// Served over HTTPS: the cookie is `Secure` and named `SECURE_SESSION_COOKIE`.
    secure: bool,
    /// Failed logins per network (an IPv4 address, an IPv6 /64); an empty bucket answers 429 with `Retry-After`.
    /// A login takes its token before the password is checked and gives it back when the password was right, so a
    /// burst sent at once gets no more tries than the same logins one by one.
    failures: RateLimiter<Network>,
    /// The argon2 computations in flight, bounded in number (see `password`).
    hashing: Gate,
}

impl Auth {
    /// Settles the admin password: the config's hash, else `NATTER_ADMIN_PASSWORD`, else one stored at an earlier
    /// start, else a new random one (stored hashed, returned so `main` can print it once).
    pub async fn new(
        config: &AdminConfig,
        environment_password: Option<&str>,
        login_failures: u32,
        secure: bool,
        store: &Store,
    ) -> anyhow::Result<(Auth, PasswordSource)> {
        let sessions_hash = store
            .meta(SESSIONS_HASH_KEY)
            .map_err(store_error)?
            .and_then(|hash| String::from_utf8(hash).ok());
        let (password_hash, source) = if !config.password_hash.is_empty() {
            (config.password_hash.clone(), PasswordSource::Config)
        } else if let Some(password) = environment_password.filter(|password| !password.is_empty())
        {
            // The same password as last time keeps its hash (a new salt each start would end every session).
            let hash = match sessions_hash {
                Some(ref hash) if password::verify(hash, password) => hash.clone(),
                _ => password::hash(password),
            };
            (hash, PasswordSource::Environment)
        } else if let Some(stored) = store.meta(GENERATED_HASH_KEY).map_err(store_error)? {
            (String::from_utf8(stored)?, PasswordSource::Stored)
        } else {
            let password = random_token(15);
            let hash = password::hash(&password);
            store
                .put_meta(GENERATED_HASH_KEY, hash.clone().into_bytes())
                .await
                .map_err(store_error)?;
            (hash, PasswordSource::Generated(password))
        };
        PasswordHash::new(&password_hash).map_err(|error| {
            anyhow::anyhow!("admin.password_hash is not a valid argon2id hash ({error}); run natter --init to make one")
        })?;
        if sessions_hash.as_deref() != Some(password_hash.as_str()) {
            // A new password: whoever logged in with the old one is logged out (a stolen cookie dies with it).
            store
                .delete_sessions_of(&config.username)
                .await
                .map_err(store_error)?;
            store
                .put_meta(SESSIONS_HASH_KEY, password_hash.clone().into_bytes())
                .await
                .map_err(store_error)?;
        }
        let auth = Auth {
            username: config.username.clone(),
            password_hash,
            session_lifetime: Duration::from_secs(u64::from(config.session_days) * 86_400),
            secure,
            failures: RateLimiter::new(login_failures, Duration::from_secs(15 * 60)),
            hashing: Gate::default(),
        };
        Ok((auth, source))
    }

    fn cookie_name(&self) -> &'static str {
        if self.secure {
            SECURE_SESSION_COOKIE
        } else {
            SESSION_COOKIE
        }
    }

    /// The `Set-Cookie` value for a new session.
    pub fn session_cookie(&self, token: &str) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{}={token}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
            self.cookie_name(),
            self.session_lifetime.as_secs()
        )
    }

    /// The `Set-Cookie` value that removes the cookie.
    pub fn clear_cookie(&self) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}",
            self.cookie_name()
        )
    }

    /// Checks a login; on success answers a new session token (to put in the cookie).
    pub async fn login(
        &self,
        store: &Store,
        ip: IpAddr,
        username: &str,
        password: &str,
    ) -> Result<String, LoginError> {
        let network = Network::of(ip);
        self.failures
            .take(&network)
            .map_err(LoginError::Throttled)?;
        if password.len() > MAX_PASSWORD_BYTES || username.len() > 256 {
            return Err(LoginError::Wrong);
        }
        let right_user = constant_time_eq(username.as_bytes(), self.username.as_bytes());
        // A wrong user name is checked against a decoy hash, so both mistakes take the same time.
        let hash = if right_user {
            self.password_hash.clone()
        } else {
            DECOY_HASH.to_string()
        };
        let password = password.to_string();
        let verified = match self
            .hashing
            .run(move || password::verify(&hash, &password))
            .await
        {
            Ok(verified) => verified && right_user,
            Err(Busy) => {
                // Nothing was checked: the try is not counted.
                self.failures.give_back(&network);
                return Err(LoginError::Busy);
            }
        };
        if !verified {
            return Err(LoginError::Wrong);
        }
        self.failures.give_back(&network);
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
        let token = cookie_value(cookie_header?, self.cookie_name())?;
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
    /// As many logins as natter checks at once are already waiting.
    Busy,
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
            LoginError::Busy => ApiError::unavailable(format!(
                "too many logins at once; try again in {} seconds",
                LOGIN_BUSY_RETRY.as_secs()
            )),
            LoginError::Store(error) => error.into(),
        }
    }
}

fn store_error(error: StoreError) -> anyhow::Error {
    anyhow::anyhow!("the store failed while setting up the admin password: {error:?}")
}

/// The value of the cookie `name` in a `Cookie` header. Malformed pairs are skipped, never an error. Public for the
/// fuzz target `session_cookie`.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(pair_name, _)| *pair_name == name)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| !value.is_empty() && value.len() <= 128)
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
        let name = SESSION_COOKIE;
        assert_eq!(
            cookie_value("a=1; natter_session=abc; b=2", name),
            Some("abc")
        );
        assert_eq!(cookie_value("natter_session_x=abc", name), None);
        assert_eq!(cookie_value("xnatter_session=abc", name), None);
        assert_eq!(cookie_value("natter_session=", name), None);
        assert_eq!(cookie_value(";;;=;natter_session=\"q\"", name), Some("q"));
        assert_eq!(
            cookie_value(&format!("natter_session={}", "a".repeat(500)), name),
            None
        );
        // Over HTTPS only the prefixed cookie counts: a plain one may have been planted by a sibling site.
        let secure = SECURE_SESSION_COOKIE;
        assert_eq!(cookie_value("natter_session=abc", secure), None);
        assert_eq!(
            cookie_value("natter_session=abc; __Host-natter_session=def", secure),
            Some("def")
        );
    }

    #[test]
    fn the_decoy_has_the_same_cost_as_a_real_hash() {
        let real = PasswordHash::new(&password::hash("x"))
            .unwrap()
            .params
            .to_string();
        assert_eq!(
            PasswordHash::new(DECOY_HASH).unwrap().params.to_string(),
            real
        );
        assert!(!password::verify(DECOY_HASH, ""));
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
