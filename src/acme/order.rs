//! One certificate order (RFC 8555 section 7.4): order the names, answer each authorization's challenge, wait for
//! the CA to validate, finalize with a fresh key, download the chain. A failure comes back as one line that says
//! what went wrong and what to do about it.

use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, Identifier, NewOrder, OrderStatus, Problem, RetryPolicy,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::challenge::{Challenge, Http01};
use crate::tls::Tls;

/// How long natter polls an order while the CA validates or issues. Let's Encrypt takes seconds; a CA that takes
/// longer is asked again at the next attempt.
const POLL_TIMEOUT: Duration = Duration::from_secs(120);

/// A certificate and its key, in PEM.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

/// Why an attempt failed, in one line for the operator.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    /// The CA said to slow down (`rateLimited`): the next attempt waits longer than the usual backoff.
    pub rate_limited: bool,
    /// The CA could not validate a challenge: the next attempt tries the other challenge, when there is one.
    pub validation: bool,
    /// The CA no longer knows the stored account (a test CA restarted, or the account was deactivated): the next
    /// attempt makes a new one.
    pub account_gone: bool,
}

impl Failure {
    pub fn new(message: String) -> Failure {
        Failure {
            message,
            rate_limited: false,
            validation: false,
            account_gone: false,
        }
    }

    /// A request to the CA that failed.
    pub fn request(what: &str, directory: &str, error: instant_acme::Error) -> Failure {
        match error {
            instant_acme::Error::Api(problem) => Failure::problem(&problem, None),
            error => Failure::new(format!(
                "{what} failed: cannot talk to the ACME directory {directory}: {error}; check that this machine can reach it over HTTPS (and tls.acme_ca_root for a private CA)"
            )),
        }
    }

    /// Making the account failed. With an external account binding, `unauthorized` or `malformed` is the CA
    /// refusing the binding (not an account natter had).
    pub fn creating_account(directory: &str, error: instant_acme::Error, binding: bool) -> Failure {
        match &error {
            instant_acme::Error::Api(problem)
                if binding && matches!(kind(problem), "unauthorized" | "malformed") =>
            {
                Failure::new(format!(
                    "the CA refused natter's external account binding ({}): check tls.acme_eab_kid and tls.acme_eab_hmac_key against the credentials the CA gave you",
                    problem.detail.as_deref().unwrap_or("no detail")
                ))
            }
            _ => Failure::request("creating the account", directory, error),
        }
    }

    /// A problem document from the CA (`domain` and `challenge`: the validation it is about).
    fn problem(problem: &Problem, validation: Option<(&str, Challenge)>) -> Failure {
        let kind = kind(problem);
        let detail = problem.detail.as_deref().unwrap_or("no detail");
        let (domain, port, challenge) = match validation {
            Some((domain, challenge)) => (domain, challenge.port(), challenge.name()),
            None => ("the domain", 443, "validation"),
        };
        let message = match kind {
            "accountDoesNotExist" | "unauthorized" if validation.is_none() => format!("the CA no longer knows natter's account ({detail}); natter makes a new one at the next attempt"),
            "dns" => format!("{domain} does not resolve ({detail}): add a DNS A/AAAA record for it that points to this machine"),
            // Let's Encrypt says `connection` when nothing answers, Pebble `unauthorized`; both come to the same checks.
            "connection" | "tls" | "unauthorized" | "incorrectResponse" => format!("the CA could not validate {domain} through {challenge} on port {port} ({detail}): check that {domain} resolves to this machine, that port {port} is open from the internet, and that nothing in front of natter answers it"),
            "caa" => format!("the CAA records of {domain} forbid this CA ({detail}): add a CAA record that allows it (for Let's Encrypt: 0 issue \"letsencrypt.org\") or remove them"),
            "rateLimited" => format!("rate-limited by the CA ({detail}); natter waits before it asks again"),
            "invalidContact" | "unsupportedContact" => format!("the CA refused the contact address ({detail}): fix or empty tls.acme_email"),
            "rejectedIdentifier" => format!("the CA will not issue a certificate for these names ({detail}): check tls.acme_domains and server.public_url"),
            "externalAccountRequired" => format!("this CA requires an external account binding ({detail}): set tls.acme_eab_kid and tls.acme_eab_hmac_key to the EAB credentials from your account with the CA (for ZeroSSL: its dashboard, Developer), then restart natter"),
            "" => format!("the CA answered: {detail}"),
            other => format!("the CA answered {other}: {detail}"),
        };
        Failure {
            message,
            rate_limited: kind == "rateLimited",
            validation: validation.is_some(),
            account_gone: validation.is_none()
                && matches!(kind, "accountDoesNotExist" | "unauthorized"),
        }
    }
}

/// The problem's type without the `urn:ietf:params:acme:error:` prefix, e.g. `rateLimited`.
fn kind(problem: &Problem) -> &str {
    problem
        .r#type
        .as_deref()
        .unwrap_or("")
        .trim_start_matches("urn:ietf:params:acme:error:")
}

/// Orders a certificate for `domains`, answering with `challenge`. The challenge answers are withdrawn however the
/// attempt ends.
pub async fn obtain(
    account: &Account,
    directory: &str,
    domains: &[String],
    challenge: Challenge,
    tls: &Tls,
    http01: &Http01,
) -> Result<Issued, Failure> {
    let mut answers = Answers {
        tls,
        http01,
        domains: Vec::new(),
        tokens: Vec::new(),
    };
    let identifiers: Vec<Identifier> = domains
        .iter()
        .map(|domain| Identifier::Dns(domain.clone()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(|error| Failure::request("the new order", directory, error))?;
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization
            .map_err(|error| Failure::request("reading an authorization", directory, error))?;
        match authorization.status {
            // The CA remembers a recent validation of this name by this account.
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            status => {
                return Err(Failure::new(format!(
                    "the CA's authorization for {} is {status:?}; natter orders again at the next attempt",
                    authorization.identifier()
                )))
            }
        }
        let domain = authorization.identifier().to_string();
        let mut handle = authorization
            .challenge(challenge.acme_type())
            .ok_or_else(|| {
                Failure::new(format!(
                    "the CA does not offer {} for {domain}",
                    challenge.name()
                ))
            })?;
        let key_authorization = handle.key_authorization();
        match challenge {
            Challenge::TlsAlpn01 => {
                answers.tls_alpn(&domain, key_authorization.digest().as_ref())?
            }
            Challenge::Http01 => answers.http(&handle.token, key_authorization.as_str()),
        }
        handle
            .set_ready()
            .await
            .map_err(|error| Failure::request("answering the challenge", directory, error))?;
    }
    let retries = RetryPolicy::new().timeout(POLL_TIMEOUT);
    let status = order.poll_ready(&retries).await;
    if !matches!(status, Ok(OrderStatus::Ready)) {
        // Why: the first challenge that failed, with the CA's reason.
        let mut authorizations = order.authorizations();
        while let Some(Ok(authorization)) = authorizations.next().await {
            let domain = authorization.identifier().to_string();
            if let Some(problem) = authorization
                .challenges
                .iter()
                .find_map(|candidate| candidate.error.as_ref())
            {
                return Err(Failure::problem(problem, Some((&domain, challenge))));
            }
        }
        return Err(match status {
            Err(error) => Failure::request("validation", directory, error),
            Ok(status) => Failure::new(format!(
                "the order ended {status:?} without a reason from the CA; natter orders again at the next attempt"
            )),
        });
    }
    let key_pem = order
        .finalize()
        .await
        .map_err(|error| Failure::request("finalizing the order", directory, error))?;
    let chain_pem = order
        .poll_certificate(&retries)
        .await
        .map_err(|error| Failure::request("downloading the certificate", directory, error))?;
    Ok(Issued { chain_pem, key_pem })
}

/// The challenge answers of one attempt, withdrawn when it ends.
struct Answers<'a> {
    tls: &'a Tls,
    http01: &'a Http01,
    domains: Vec<String>,
    tokens: Vec<String>,
}

impl Answers<'_> {
    /// RFC 8737: a self-signed certificate for `domain` with the key authorization's digest in the critical
    /// `acmeIdentifier` extension, presented to handshakes that ask for `acme-tls/1`.
    fn tls_alpn(&mut self, domain: &str, digest: &[u8]) -> Result<(), Failure> {
        let certificate = || -> anyhow::Result<_> {
            let mut params = rcgen::CertificateParams::new(vec![domain.to_string()])?;
            params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
            let key = rcgen::KeyPair::generate()?;
            let certificate = params.self_signed(&key)?;
            let key = PrivateKeyDer::try_from(key.serialize_der()).map_err(anyhow::Error::msg)?;
            // Not `tls::certified_key`: its check that key and certificate match parses the certificate with webpki,
            // which refuses the critical acmeIdentifier extension it does not know.
            Ok(CertifiedKey::new(
                vec![CertificateDer::from(certificate.der().to_vec())],
                rustls::crypto::ring::sign::any_supported_type(&key)?,
            ))
        };
        let certificate = certificate().map_err(|error| {
            Failure::new(format!(
                "cannot make the TLS-ALPN-01 certificate for {domain}: {error:#}"
            ))
        })?;
        self.tls.set_challenge(domain, Some(certificate));
        self.domains.push(domain.to_string());
        Ok(())
    }

    fn http(&mut self, token: &str, key_authorization: &str) {
        self.http01.insert(token, key_authorization);
        self.tokens.push(token.to_string());
    }
}

impl Drop for Answers<'_> {
    fn drop(&mut self) {
        for domain in &self.domains {
            self.tls.set_challenge(domain, None);
        }
        for token in &self.tokens {
            self.http01.remove(token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(kind: &str, detail: &str) -> Problem {
        serde_json::from_value(serde_json::json!({
            "type": format!("urn:ietf:params:acme:error:{kind}"),
            "detail": detail,
            "status": 403,
        }))
        .unwrap()
    }

    #[test]
    fn each_failure_says_in_one_line_what_to_do() {
        let validation = Some(("chat.example.com", Challenge::TlsAlpn01));
        for (kind, validation, expected) in [
            ("dns", validation, "add a DNS A/AAAA record"),
            (
                "connection",
                validation,
                "port 443 is open from the internet",
            ),
            ("unauthorized", validation, "resolves to this machine"),
            (
                "caa",
                validation,
                "CAA records of chat.example.com forbid this CA",
            ),
            ("rateLimited", None, "rate-limited by the CA (until then)"),
            ("invalidContact", None, "fix or empty tls.acme_email"),
            ("rejectedIdentifier", None, "check tls.acme_domains"),
            ("accountDoesNotExist", None, "makes a new one"),
            (
                "externalAccountRequired",
                None,
                "set tls.acme_eab_kid and tls.acme_eab_hmac_key",
            ),
        ] {
            let failure = Failure::problem(&problem(kind, "until then"), validation);
            assert!(
                failure.message.contains(expected),
                "{kind}: {}",
                failure.message
            );
            assert!(!failure.message.contains('\n'), "{}", failure.message);
            assert_eq!(failure.rate_limited, kind == "rateLimited");
            assert_eq!(failure.account_gone, kind == "accountDoesNotExist");
        }
        let http = Failure::problem(
            &problem("connection", "refused"),
            Some(("chat.example.com", Challenge::Http01)),
        );
        assert!(
            http.message.contains("HTTP-01 on port 80"),
            "{}",
            http.message
        );
        assert!(http.validation);
    }
}
