//! The relay: one SMTP client built from `[email]` (STARTTLS, TLS or plain on loopback; rustls with ring, the public
//! web roots plus `smtp_ca_root`; AUTH when a user name is set), what its failures mean, and `natter email-test`.
//!
//! DNS goes through `crate::dns`, because a statically linked glibc binary cannot load the NSS modules `getaddrinfo`
//! needs: lettre is handed the relay's IP address (which tokio parses without asking glibc), and the TLS name is
//! still the configured host.

use std::net::IpAddr;
use std::time::Duration;

use lettre::address::Envelope;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{EmailConfig, SmtpSecurity};
use crate::dns::Resolver;

/// How long one SMTP conversation may take (connect, TLS, AUTH, the message). Relays answer in seconds; a minute covers
/// a slow greeting (some relays delay it on purpose) without holding the queue for long.
const SMTP_TIMEOUT: Duration = Duration::from_secs(60);
/// A DNS lookup of the relay must finish within this.
const DNS_TIMEOUT: Duration = Duration::from_secs(10);

/// What became of one attempt.
#[derive(Debug)]
pub enum Failure {
    /// Try again later: a 4xx answer, no connection, TLS or DNS trouble, a timeout.
    Temporary(String),
    /// The relay refused for good (5xx): sending again would be refused again.
    Permanent(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Temporary(reason) | Failure::Permanent(reason) => formatter.write_str(reason),
        }
    }
}

pub struct Relay {
    host: String,
    port: u16,
    tls: Option<TlsParameters>,
    security: SmtpSecurity,
    credentials: Option<Credentials>,
    /// The name natter greets the relay with (EHLO): its public host.
    hello: String,
    /// Any address will do: a relay on the local network is common.
    dns: Resolver,
}

impl Relay {
    /// Reads `smtp_ca_root` and sets the client up; errors speak to the operator.
    pub fn new(config: &EmailConfig, hello: &str) -> anyhow::Result<Relay> {
        let tls = match config.smtp_security {
            SmtpSecurity::None => None,
            SmtpSecurity::Starttls | SmtpSecurity::Tls => {
                let mut builder = TlsParameters::builder(config.smtp_host.clone());
                if !config.smtp_ca_root.as_os_str().is_empty() {
                    let pem = std::fs::read(&config.smtp_ca_root).map_err(|error| {
                        anyhow::anyhow!(
                            "cannot read email.smtp_ca_root {}: {error}",
                            config.smtp_ca_root.display()
                        )
                    })?;
                    let certificate = Certificate::from_pem(&pem).map_err(|error| {
                        anyhow::anyhow!(
                            "email.smtp_ca_root {} is not a PEM certificate: {error}",
                            config.smtp_ca_root.display()
                        )
                    })?;
                    builder = builder.add_root_certificate(certificate);
                }
                Some(builder.build_rustls().map_err(|error| {
                    anyhow::anyhow!("cannot set up TLS for the SMTP relay: {error}")
                })?)
            }
        };
        let credentials = (!config.smtp_username.is_empty()).then(|| {
            Credentials::new(config.smtp_username.clone(), config.smtp_password.0.clone())
        });
        Ok(Relay {
            host: config.smtp_host.clone(),
            port: config.smtp_port,
            tls,
            security: config.smtp_security,
            credentials,
            hello: hello.to_string(),
            dns: Resolver::new("the SMTP relay", DNS_TIMEOUT, None),
        })
    }

    /// The relay's address: the host itself when it is an IP address, else its first DNS answer.
    async fn address(&self) -> Result<IpAddr, Failure> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        if host == "localhost" {
            return Ok(IpAddr::from([127, 0, 0, 1]));
        }
        let addresses = self
            .dns
            .addresses(host)
            .await
            .map_err(|reason| Failure::Temporary(format!("DNS: {reason}")))?;
        Ok(addresses[0])
    }

    async fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, Failure> {
        let address = self.address().await?;
        let tls = match (&self.tls, self.security) {
            (Some(parameters), SmtpSecurity::Starttls) => Tls::Required(parameters.clone()),
            (Some(parameters), SmtpSecurity::Tls) => Tls::Wrapper(parameters.clone()),
            _ => Tls::None,
        };
        let hello = match self.hello.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => ClientId::Ipv4(ip),
            Ok(IpAddr::V6(ip)) => ClientId::Ipv6(ip),
            Err(_) => ClientId::Domain(self.hello.clone()),
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(address.to_string())
                .port(self.port)
                .tls(tls)
                .hello_name(hello)
                .timeout(Some(SMTP_TIMEOUT));
        if let Some(credentials) = &self.credentials {
            builder = builder.credentials(credentials.clone());
        }
        Ok(builder.build())
    }

    /// Sends one email; the relay's answer on success (`250 ...`).
    pub async fn send(&self, email: &Message) -> Result<String, Failure> {
        let transport = self.transport().await?;
        let envelope: &Envelope = email.envelope();
        match transport.send_raw(envelope, &email.formatted()).await {
            Ok(response) => Ok(format!(
                "{} {}",
                response.code(),
                response.message().collect::<Vec<_>>().join(" ")
            )),
            Err(error) => Err(classify(&error, &self.host, self.port)),
        }
    }
}

/// What an SMTP error means, in words an operator can act on.
fn classify(error: &lettre::transport::smtp::Error, host: &str, port: u16) -> Failure {
    let detail = error.to_string();
    if error.is_permanent() {
        let hint = match error.status().map(|code| code.to_string()) {
            Some(code) if code.starts_with("53") => {
                " (authentication: check email.smtp_username and the password)"
            }
            Some(code) if code.starts_with("55") => {
                " (a refused sender or recipient: check email.from and the address)"
            }
            _ => "",
        };
        return Failure::Permanent(format!("the relay refused: {detail}{hint}"));
    }
    if error.is_transient() {
        return Failure::Temporary(format!("the relay said to try later: {detail}"));
    }
    if error.is_tls() {
        return Failure::Temporary(format!(
            "TLS with {host}:{port} failed: {detail} (the relay's certificate must be valid for {host}; a private CA \
             goes in email.smtp_ca_root)"
        ));
    }
    if error.is_timeout() {
        return Failure::Temporary(format!("{host}:{port} did not answer in time: {detail}"));
    }
    Failure::Temporary(format!("cannot talk to {host}:{port}: {detail}"))
}

/// `natter email-test ADDRESS`: sends one email through the configured relay and says what happened.
pub async fn test(config: &EmailConfig, hello: &str, address: &str) -> anyhow::Result<String> {
    if !config.enabled() {
        anyhow::bail!("email is off: set email.smtp_host (and email.from) in the config first");
    }
    let to: Mailbox = address
        .parse()
        .map_err(|error| anyhow::anyhow!("{address:?} is not an email address: {error}"))?;
    let from: Mailbox = config
        .from
        .parse()
        .map_err(|error| anyhow::anyhow!("email.from: {error}"))?;
    let email = Message::builder()
        .from(from)
        .to(to)
        .subject("natter: a test email")
        .raw_header(lettre::message::header::HeaderValue::new(
            lettre::message::header::HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".into(),
        ))
        .body(String::from(
            "natter can send email: replies will reach visitors who left their address, and news of conversations \
             will reach you.\n",
        ))
        .map_err(|error| anyhow::anyhow!("cannot build the test email: {error}"))?;
    let relay = Relay::new(config, hello)?;
    relay
        .send(&email)
        .await
        .map(|answer| {
            format!(
                "sent; {}:{} answered: {answer}",
                config.smtp_host, config.smtp_port
            )
        })
        .map_err(|failure| anyhow::anyhow!("not sent: {failure}"))
}
