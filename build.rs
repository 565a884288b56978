//! Build facts for `natter --version`: the build date, the target and its linkage, the compiler, the commit, and the
//! features compiled in. No dependencies: the date comes from `SOURCE_DATE_EPOCH` (reproducible builds) or the clock.
//!
//! It also assembles the widget's panel (`build/panel.rs`): the dashboard loads ES modules and the panel is one
//! classic script on foreign pages, yet both use the same ActionCable client, DOM helpers and CSS rules, kept once in
//! `web/shared/`. The results land in `OUT_DIR`, and `src/assets.rs` serves them as `/widget/panel.js` and
//! `/widget/panel.css`; everything else in `web/` is served as it is. See web/README.md.

use std::path::{Path, PathBuf};
use std::process::Command;

// `src/assets.rs` includes it too, so `cargo test` checks its rules.
#[path = "build/panel.rs"]
mod panel;

// The run-time date code, shared rather than copied (it uses only std); the build script needs one function of it.
#[allow(dead_code)]
#[path = "src/timestamp.rs"]
mod timestamp;

fn main() {
    // Rerun when the sources change, so the date and commit describe the build that made the binary; the crate is
    // recompiled then anyway.
    for path in [
        "build.rs",
        "build",
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "web",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");

    let seconds = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|value| value.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(0))
        });
    println!("cargo:rustc-env=NATTER_BUILD_DATE={}", date(seconds));

    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=NATTER_BUILD_TARGET={target}");
    let target_features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let linkage = if target_features
        .split(',')
        .any(|feature| feature == "crt-static")
    {
        "static"
    } else {
        "dynamic"
    };
    println!("cargo:rustc-env=NATTER_BUILD_LINKAGE={linkage}");

    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = output(Command::new(rustc).arg("--version"))
        .unwrap_or_else(|| "rustc (unknown version)".into());
    println!("cargo:rustc-env=NATTER_BUILD_RUSTC={rustc_version}");
    let commit = output(Command::new("git").args(["rev-parse", "--short=10", "HEAD"]))
        .map(|commit| format!(", commit {commit}"))
        .unwrap_or_default();
    println!("cargo:rustc-env=NATTER_BUILD_COMMIT={commit}");

    // Cargo features (none are optional today) and what every natter binary carries.
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(name, _)| {
            name.strip_prefix("CARGO_FEATURE_")
                .map(|feature| feature.to_lowercase().replace('_', "-"))
        })
        .filter(|feature| feature != "default")
        .collect();
    features.sort();
    features.splice(
        0..0,
        [
            "tls (rustls, ring; TLS 1.2/1.3)",
            "self-signed certificates (rcgen)",
            "acme certificates (instant-acme; TLS-ALPN-01, HTTP-01)",
            "web-push (web-push-native)",
            "embedded web assets",
        ]
        .map(String::from),
    );
    println!(
        "cargo:rustc-env=NATTER_BUILD_FEATURES={}",
        features.join(", ")
    );

    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let sources = Path::new("web/widget/panel");
    write(
        &out.join("panel.js"),
        &panel::assemble_script(&sources.join("panel.js")),
    );
    write(
        &out.join("panel.css"),
        &panel::assemble_stylesheet(&sources.join("panel.css")),
    );
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text)
        .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
}

fn output(command: &mut Command) -> Option<String> {
    let output = command.output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

/// `YYYY-MM-DD` (UTC) from Unix seconds, with the same date arithmetic natter uses at run time.
fn date(seconds: i64) -> String {
    timestamp::rfc3339(seconds.saturating_mul(1000))[..10].to_string()
}
