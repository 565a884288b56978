//! The HTTP client instant-acme talks to the CA through: hyper-util with rustls on ring, trusting the web's roots
//! (compiled in) plus `tls.acme_ca_root`, DNS through `crate::dns` (a static binary cannot use glibc's `getaddrinfo`).
//!
//! Every request has a deadline and every answer a size limit: a CA that hangs or floods must not hold the renewal
//! task forever or fill memory.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::Request;
use http_body_util::Limited;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::dns::Resolver;

/// One request (connect, TLS, request, the whole answer) must finish within this. Let's Encrypt answers in well
/// under a second; a minute covers a slow CA without letting a dead one hold the task.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer natter reads from the CA: a certificate chain is a few KB, a directory or an order less.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// A DNS lookup must finish within this.
const DNS_TIMEOUT: Duration = Duration::from_secs(10);

type Connector = HttpsConnector<HttpConnector<Resolver>>;

pub struct AcmeHttp {
    client: Client<Connector, BodyWrapper<Bytes>>,
}

impl AcmeHttp {
    /// The client for the CA; `extra_roots` is `tls.acme_ca_root` (empty: the web's roots only).
    pub fn new(extra_roots: &Path) -> anyhow::Result<AcmeHttp> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if !extra_roots.as_os_str().is_empty() {
            let certificates = CertificateDer::pem_file_iter(extra_roots)
                .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                .with_context(|| {
                    format!(
                        "tls.acme_ca_root: cannot read PEM certificates from {}",
                        extra_roots.display()
                    )
                })?;
            let (added, _) = roots.add_parsable_certificates(certificates);
            if added == 0 {
                anyhow::bail!(
                    "tls.acme_ca_root: {} holds no usable CA certificate",
                    extra_roots.display()
                );
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("ring supports rustls' default protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        // Any address will do, unlike for Web Push: a company CA may well sit on a private network.
        let dns = Resolver::new("an ACME CA", DNS_TIMEOUT, None);
        let mut http = HttpConnector::new_with_resolver(dns);
        http.enforce_http(false);
        http.set_connect_timeout(Some(REQUEST_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        Ok(AcmeHttp {
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        request: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let answer = self.client.request(request);
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
                Ok(Ok(response)) => Ok(BytesResponse::from(
                    response.map(|body| Limited::new(body, MAX_ANSWER_BYTES)),
                )),
                Ok(Err(error)) => Err(instant_acme::Error::Other(Box::new(error))),
                Err(_) => Err(instant_acme::Error::Str(
                    "the CA did not answer within a minute",
                )),
            }
        })
    }
}
