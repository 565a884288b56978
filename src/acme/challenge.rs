//! The two challenges natter answers, and the HTTP-01 answers the plain-HTTP listener serves.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use instant_acme::ChallengeType;

use crate::config::Origin;

/// Which challenge proves control of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// RFC 8737, answered on natter's TLS listener: the CA connects to port 443.
    TlsAlpn01,
    /// RFC 8555 section 8.3, answered on the plain-HTTP listener `tls.redirect_listen`: the CA connects to port 80.
    Http01,
}

impl Challenge {
    pub(super) fn name(self) -> &'static str {
        match self {
            Challenge::TlsAlpn01 => "TLS-ALPN-01",
            Challenge::Http01 => "HTTP-01",
        }
    }

    /// The port the CA connects to.
    pub(super) fn port(self) -> u16 {
        match self {
            Challenge::TlsAlpn01 => 443,
            Challenge::Http01 => 80,
        }
    }

    /// The challenges natter can answer, the likelier to work first: TLS-ALPN-01 when browsers reach natter on
    /// port 443 (so the CA will too), HTTP-01 first when the public URL names another port and a plain-HTTP
    /// listener exists.
    pub(super) fn in_order(public_origin: &Origin, redirect: Option<SocketAddr>) -> Vec<Challenge> {
        let on_443 = !public_origin
            .as_str()
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.bytes().all(|byte| byte.is_ascii_digit()));
        match (redirect.is_some(), on_443) {
            (false, _) => vec![Challenge::TlsAlpn01],
            (true, true) => vec![Challenge::TlsAlpn01, Challenge::Http01],
            (true, false) => vec![Challenge::Http01, Challenge::TlsAlpn01],
        }
    }
}

/// HTTP-01 answers by token, served on `/.well-known/acme-challenge/<token>` of the plain-HTTP listener while an
/// order runs. At most one entry per name of the certificate.
#[derive(Default)]
pub struct Http01 {
    answers: Mutex<HashMap<String, String>>,
}

impl Http01 {
    /// The key authorization for a request path, when it asks for a token of a running order.
    pub fn answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix("/.well-known/acme-challenge/")?;
        self.answers
            .lock()
            .expect("the HTTP-01 lock is never poisoned")
            .get(token)
            .cloned()
    }

    pub(super) fn insert(&self, token: &str, key_authorization: &str) {
        self.answers
            .lock()
            .expect("the HTTP-01 lock is never poisoned")
            .insert(token.to_string(), key_authorization.to_string());
    }

    pub(super) fn remove(&self, token: &str) {
        self.answers
            .lock()
            .expect("the HTTP-01 lock is never poisoned")
            .remove(token);
    }
}

impl Challenge {
    pub(super) fn acme_type(self) -> ChallengeType {
        match self {
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            Challenge::Http01 => ChallengeType::Http01,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_that_fits_the_public_url_comes_first() {
        let on_443 = Origin::parse("https://chat.example.com").unwrap();
        let elsewhere = Origin::parse("https://chat.example.com:8443").unwrap();
        let redirect = Some("0.0.0.0:80".parse().unwrap());
        assert_eq!(Challenge::in_order(&on_443, None), [Challenge::TlsAlpn01]);
        assert_eq!(
            Challenge::in_order(&on_443, redirect),
            [Challenge::TlsAlpn01, Challenge::Http01]
        );
        assert_eq!(
            Challenge::in_order(&elsewhere, redirect),
            [Challenge::Http01, Challenge::TlsAlpn01]
        );
    }

    #[test]
    fn http01_answers_only_known_tokens_under_the_well_known_path() {
        let http01 = Http01::default();
        http01.insert("token", "token.thumbprint");
        assert_eq!(
            http01
                .answer("/.well-known/acme-challenge/token")
                .as_deref(),
            Some("token.thumbprint")
        );
        assert_eq!(http01.answer("/.well-known/acme-challenge/other"), None);
        assert_eq!(http01.answer("/token"), None);
        http01.remove("token");
        assert_eq!(http01.answer("/.well-known/acme-challenge/token"), None);
    }
}
