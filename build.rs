//! Build facts for `natter --version`: the build date, the target and its linkage, the compiler, the commit, and the
//! features compiled in. No dependencies: the date comes from `SOURCE_DATE_EPOCH` (reproducible builds) or the clock.

use std::process::Command;

// The run-time date code, shared rather than copied (it uses only std); the build script needs one function of it.
#[allow(dead_code)]
#[path = "src/timestamp.rs"]
mod timestamp;

fn main() {
    // Rerun when the sources change, so the date and commit describe the build that made the binary; the crate is
    // recompiled then anyway.
    for path in ["build.rs", "Cargo.toml", "Cargo.lock", "src", "web"] {
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
            "web-push (web-push-native)",
            "embedded web assets",
        ]
        .map(String::from),
    );
    println!(
        "cargo:rustc-env=NATTER_BUILD_FEATURES={}",
        features.join(", ")
    );
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
