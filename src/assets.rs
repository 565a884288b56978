//! The web side, compiled into the binary: widget, dashboard, demo page.
//!
//! Every file of `web/` is embedded by rust-embed (also in debug builds, so what the tests see is what ships), except
//! the sources of the widget's panel, which `build.rs` assembles into one script and one stylesheet (see
//! web/README.md); those two are served in their place. At start each file is prepared once: `widget.js` gets the widget config baked in, compressible files get a gzip copy,
//! and each gets a strong ETag. A request then costs a map lookup. Paths are looked up, never joined onto the file
//! system, so no encoding of `..` can reach outside `web/`.

use std::collections::HashMap;
use std::io::Write;

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use rust_embed::RustEmbed;
use serde_json::json;

use crate::config::Config;
use crate::http::Body;

// build.rs assembles the widget's panel with this; included here so `cargo test` checks its rules.
#[cfg(test)]
#[path = "../build/panel.rs"]
mod panel_build;

#[derive(RustEmbed)]
#[folder = "web/"]
#[exclude = "widget/panel/*"]
#[exclude = "README.md"]
struct Web;

/// The widget's panel as `build.rs` assembled it from `web/widget/panel/` and `web/shared/`.
const ASSEMBLED: [(&str, &[u8]); 2] = [
    (
        "widget/panel.js",
        include_bytes!(concat!(env!("OUT_DIR"), "/panel.js")),
    ),
    (
        "widget/panel.css",
        include_bytes!(concat!(env!("OUT_DIR"), "/panel.css")),
    ),
];

/// The text in `web/widget.js` that the server replaces with the widget's config as a JSON object.
const CONFIG_PLACEHOLDER: &str = "__NATTER_CONFIG__";

/// The dashboard's and demo page's policy: nothing inline, nothing from elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; manifest-src 'self'; worker-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'";

struct Asset {
    body: Bytes,
    gzip: Option<Bytes>,
    content_type: &'static str,
    etag: HeaderValue,
    /// The widget's files are loaded by other sites' pages.
    cross_origin: bool,
    cache: &'static str,
}

pub struct Assets {
    files: HashMap<String, Asset>,
}

impl Assets {
    /// Prepares every embedded file; `server` is the URL the widget connects back to.
    pub fn new(config: &Config, server: &str) -> Assets {
        let widget = &config.widget;
        let widget_config = json!({
            "server": server,
            "color": widget.color,
            "position": widget.position,
            "title": widget.title,
            "greeting": widget.greeting,
            "away_message": widget.away_message,
            "language": widget.language,
            // The panel offers to take the visitor's address only when natter can email.
            "email": config.email.enabled(),
        })
        .to_string();
        let embedded = Web::iter().filter_map(|path| {
            let file = Web::get(&path)?;
            Some((path.into_owned(), file.data.into_owned()))
        });
        let assembled = ASSEMBLED
            .iter()
            .map(|(path, body)| ((*path).to_string(), body.to_vec()));
        let mut files = HashMap::new();
        for (path, mut body) in embedded.chain(assembled) {
            if path == "widget.js" {
                body = String::from_utf8_lossy(&body)
                    .replacen(CONFIG_PLACEHOLDER, &widget_config, 1)
                    .into_bytes();
            }
            let content_type = content_type(&path);
            let gzip = compressible(content_type)
                .then(|| gzip(&body))
                .filter(|zipped| zipped.len() < body.len());
            let digest = ring::digest::digest(&ring::digest::SHA256, &body);
            let etag = format!("\"{}\"", crate::auth::base64url(&digest.as_ref()[..16]));
            let cache = if path.ends_with(".html") || path.ends_with("sw.js") {
                "no-cache"
            } else {
                // Revalidated after five minutes, so a config change or an upgrade reaches visitors the same day.
                "public, max-age=300"
            };
            let cross_origin = path == "widget.js" || path.starts_with("widget/");
            files.insert(
                path,
                Asset {
                    body: Bytes::from(body),
                    gzip: gzip.map(Bytes::from),
                    content_type,
                    etag: HeaderValue::from_str(&etag).expect("an etag is ASCII"),
                    cross_origin,
                    cache,
                },
            );
        }
        Assets { files }
    }

    /// The gzipped size of a file, for the benchmark report.
    pub fn gzipped_len(&self, path: &str) -> Option<usize> {
        self.files
            .get(path)
            .map(|asset| asset.gzip.as_ref().map_or(asset.body.len(), Bytes::len))
    }

    /// Answers a GET or HEAD for `path`, or `None` when there is no such file.
    pub fn serve(
        &self,
        path: &str,
        request_headers: &HeaderMap,
        head: bool,
    ) -> Option<Response<Body>> {
        let key = match path {
            "/" => "index.html",
            "/admin/" => "admin/index.html",
            other => other.strip_prefix('/')?,
        };
        let asset = self.files.get(key)?;
        let mut response = Response::builder()
            .header(header::CONTENT_TYPE, asset.content_type)
            .header(header::ETAG, asset.etag.clone())
            .header(header::CACHE_CONTROL, asset.cache)
            .header(header::VARY, "Accept-Encoding")
            .header("x-content-type-options", "nosniff");
        if asset.cross_origin {
            response = response
                .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
                .header("cross-origin-resource-policy", "cross-origin");
        } else {
            response = response
                .header(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)
                .header("x-frame-options", "DENY")
                .header("referrer-policy", "same-origin")
                .header("cross-origin-resource-policy", "same-origin");
        }
        if key == "admin/sw.js" {
            response = response.header("service-worker-allowed", "/admin/");
        }
        let not_modified = request_headers
            .get(header::IF_NONE_MATCH)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|tags| {
                tags.split(',')
                    .any(|tag| tag.trim() == asset.etag || tag.trim() == "*")
            });
        if not_modified {
            return Some(
                response
                    .status(StatusCode::NOT_MODIFIED)
                    .body(Body::default())
                    .expect("valid headers"),
            );
        }
        let accepts_gzip = request_headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                value
                    .split(',')
                    .any(|coding| coding.trim().starts_with("gzip"))
            });
        let body = match (&asset.gzip, accepts_gzip) {
            (Some(zipped), true) => {
                response = response.header(header::CONTENT_ENCODING, "gzip");
                zipped.clone()
            }
            _ => asset.body.clone(),
        };
        response = response.header(header::CONTENT_LENGTH, body.len());
        let body = if head {
            Body::default()
        } else {
            Body::new(body)
        };
        Some(
            response
                .status(StatusCode::OK)
                .body(body)
                .expect("valid headers"),
        )
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

fn compressible(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || content_type.contains("json")
        || content_type.contains("svg")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 3), Compression::best());
    encoder
        .write_all(bytes)
        .expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_in_any_encoding_and_the_panels_sources_find_nothing() {
        let assets = Assets::new(&Config::default(), "http://127.0.0.1:3100");
        for path in [
            "/../Cargo.toml",
            "/..%2fCargo.toml",
            "/%2e%2e/Cargo.toml",
            "/admin/../../src/main.rs",
            "//etc/passwd",
            "/..\\Cargo.toml",
            "/admin/%2e%2e%2f%2e%2e%2fCargo.toml",
            // Left out of the embedding: the panel's sources (served assembled) and web/'s README.
            "/widget/panel/panel.js",
            "/widget/panel/panel.css",
            "/README.md",
        ] {
            assert!(
                assets.serve(path, &HeaderMap::new(), false).is_none(),
                "{path}"
            );
        }
    }

    #[test]
    fn widget_gets_its_config_and_an_etag_revalidates() {
        let assets = Assets::new(&Config::default(), "https://chat.example.com");
        let mut headers = HeaderMap::new();
        let response = assets
            .serve("/widget.js", &headers, false)
            .expect("widget.js is embedded");
        assert_eq!(response.status(), StatusCode::OK);
        let etag = response.headers()[header::ETAG].clone();
        headers.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(
            assets
                .serve("/widget.js", &headers, false)
                .unwrap()
                .status(),
            StatusCode::NOT_MODIFIED
        );
        let widget = &assets.files["widget.js"].body;
        let text = std::str::from_utf8(widget).unwrap();
        assert!(text.contains("https://chat.example.com"));
        assert!(!text.contains(CONFIG_PLACEHOLDER));
    }

    /// The panel is one classic script on other sites' pages: its ES-module sources must not leak through as such.
    #[test]
    fn widget_panel_is_served_assembled() {
        let assets = Assets::new(&Config::default(), "https://chat.example.com");
        let script = std::str::from_utf8(&assets.files["widget/panel.js"].body).unwrap();
        assert!(
            script.contains("function connectCable("),
            "the shared cable client is in"
        );
        assert!(script.trim_end().ends_with("})();"));
        for line in script.lines() {
            assert!(
                !line.starts_with("import ") && !line.starts_with("export "),
                "{line}"
            );
        }
        let sheet = std::str::from_utf8(&assets.files["widget/panel.css"].body).unwrap();
        assert!(sheet.contains(".icon-button {"), "the shared rules are in");
        assert!(!sheet.contains("@import"));
        let panel = assets
            .serve("/widget/panel.js", &HeaderMap::new(), false)
            .expect("the assembled panel is served");
        assert_eq!(
            panel.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "*",
            "other sites' pages load it"
        );
    }
}
