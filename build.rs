//! Build facts for `natter --version`: the build date, the target and its linkage, the compiler, the commit, and the
//! features compiled in. No dependencies: the date comes from `SOURCE_DATE_EPOCH` (reproducible builds) or the clock.
//!
//! It also assembles the widget's panel. The dashboard loads ES modules and the widget's panel is one classic script
//! on foreign pages, yet both use the same ActionCable client, DOM helpers and CSS rules, kept once in `web/shared/`.
//! The panel's sources are ES modules too (`web/widget/panel/`, entry `panel.js`); [`assemble_script`] follows their
//! one-line `import { a, b } from "./x.js";` lines, puts each module once, dependencies first, drops the imports and
//! the `export` keywords, and wraps the lot in one function scope, so every top-level name must be unique across the
//! modules (checked here). [`assemble_stylesheet`] inlines the `@import "x.css";` lines of `panel.css`. Both leave out
//! the lines that hold only a comment, and blank lines: a visitor's browser needs none of them. The results
//! land in `OUT_DIR` and `src/assets.rs` serves them as `/widget/panel.js` and `/widget/panel.css`; everything else
//! in `web/` is served as it is. See web/README.md.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
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

    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let panel = Path::new("web/widget/panel");
    write(
        &out.join("panel.js"),
        &assemble_script(&panel.join("panel.js")),
    );
    write(
        &out.join("panel.css"),
        &assemble_stylesheet(&panel.join("panel.css")),
    );
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text)
        .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

/// One ES module of the panel: its source and what its `import` lines and top-level declarations say.
struct Module {
    path: PathBuf,
    text: String,
    /// (module, names) per import line.
    imports: Vec<(PathBuf, Vec<String>)>,
    /// Every name declared at the top level, exported or not, and whether it is exported.
    declared: Vec<(String, bool)>,
}

/// The modules `entry` reaches, each once, dependencies first, as one classic script.
fn assemble_script(entry: &Path) -> String {
    let mut order = Vec::new();
    visit(entry.to_path_buf(), &mut Vec::new(), &mut order);
    let mut owners: HashMap<&str, &Path> = HashMap::new();
    let exports: HashMap<&Path, HashSet<&str>> = order
        .iter()
        .map(|module| {
            let names = module.declared.iter().filter(|(_, exported)| *exported);
            (
                module.path.as_path(),
                names.map(|(name, _)| name.as_str()).collect(),
            )
        })
        .collect();
    let mut script = format!(
        "/* natter's chat panel, assembled by build.rs from {} and the modules it imports: edit those. */\n\
         (() => {{\n\"use strict\";\n",
        entry.display()
    );
    for module in &order {
        for (name, _) in &module.declared {
            if let Some(other) = owners.insert(name, &module.path) {
                panic!(
                    "`{name}` is declared at the top level of both {} and {}: the widget's panel puts its modules \
                     in one scope, so rename one",
                    other.display(),
                    module.path.display()
                );
            }
        }
        for (from, names) in &module.imports {
            for name in names {
                assert!(
                    exports[from.as_path()].contains(name.as_str()),
                    "{} imports `{name}`, which {} does not export",
                    module.path.display(),
                    from.display()
                );
            }
        }
        script.push_str(&format!("// ---- {} ----\n", module.path.display()));
        for line in code_lines(&module.text) {
            if line.starts_with("import ") {
                continue;
            }
            script.push_str(line.strip_prefix("export ").unwrap_or(line));
            script.push('\n');
        }
    }
    script.push_str("})();\n");
    script
}

/// The lines of a script or stylesheet but those that are blank or hold only a comment (`// …`, or `/* … */` over one
/// or more lines). A line that only starts with a comment stays.
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut in_comment = false;
    text.lines().filter(move |line| {
        let line = line.trim();
        if in_comment {
            in_comment = !line.ends_with("*/");
            return false;
        }
        if line.starts_with("/*") {
            // A comment that ends before the end of the line is followed by code: keep the line.
            if line.contains("*/") && !line.ends_with("*/") {
                return true;
            }
            in_comment = !line.ends_with("*/");
            return false;
        }
        !line.is_empty() && !line.starts_with("//")
    })
}

/// Adds `path` and, before it, everything it imports to `order`; `path`'s importers are on `stack`.
fn visit(path: PathBuf, stack: &mut Vec<PathBuf>, order: &mut Vec<Module>) {
    if order.iter().any(|module| module.path == path) {
        return;
    }
    assert!(
        !stack.contains(&path),
        "{} imports itself through {:?}: the widget's panel cannot be assembled from an import circle",
        path.display(),
        stack
    );
    let module = parse(&path);
    stack.push(path);
    for (from, _) in &module.imports {
        visit(from.clone(), stack, order);
    }
    stack.pop();
    order.push(module);
}

fn parse(path: &Path) -> Module {
    let text = read(path);
    let mut imports = Vec::new();
    let mut declared = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let place = || format!("{}:{}", path.display(), number + 1);
        // Comment lines are left out of the panel; inside a template literal they would be text.
        assert!(
            line.matches('`').count() % 2 == 0,
            "{}: a template literal over several lines would lose the lines that look like comments; keep it on one",
            place()
        );
        if let Some(rest) = line.strip_prefix("import ") {
            let parsed = rest
                .strip_prefix("{ ")
                .and_then(|rest| rest.strip_suffix("\";"))
                .and_then(|rest| rest.split_once(" } from \""));
            let Some((names, from)) = parsed else {
                panic!(
                    "{}: write imports as `import {{ a, b }} from \"./x.js\";` on one line",
                    place()
                );
            };
            let names: Vec<String> = names.split(", ").map(str::to_string).collect();
            assert!(
                names.iter().all(|name| is_name(name)),
                "{}: import plain names (no `as`, no default import)",
                place()
            );
            let from = path.parent().expect("a file has a folder").join(from);
            imports.push((normalize(&from), names));
            continue;
        }
        let (exported, rest) = match line.strip_prefix("export ") {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let rest = rest.strip_prefix("async ").unwrap_or(rest);
        let name = ["function ", "class ", "const ", "let "]
            .iter()
            .find_map(|keyword| rest.strip_prefix(keyword))
            .map(|rest| {
                rest.split(|c: char| !c.is_alphanumeric() && c != '_' && c != '$')
                    .next()
                    .unwrap_or("")
            });
        match name {
            Some(name) if is_name(name) => declared.push((name.to_string(), exported)),
            _ => assert!(
                !exported,
                "{}: export declarations only (`export function f`, `export const x`), one name each",
                place()
            ),
        }
    }
    Module {
        path: path.to_path_buf(),
        text,
        imports,
        declared,
    }
}

fn is_name(text: &str) -> bool {
    !text.is_empty()
        && !text.starts_with(|c: char| c.is_ascii_digit())
        && text
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
}

/// `web/widget/panel/../../shared/x.js` → `web/shared/x.js`, so each module has one name.
fn normalize(path: &Path) -> PathBuf {
    let mut parts: Vec<std::path::Component> = Vec::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir
                if parts
                    .last()
                    .is_some_and(|last| matches!(last, std::path::Component::Normal(_))) =>
            {
                parts.pop();
            }
            std::path::Component::CurDir => {}
            other => parts.push(other),
        }
    }
    parts.iter().collect()
}

/// `path` with each of its `@import "x.css";` lines replaced by that file.
fn assemble_stylesheet(path: &Path) -> String {
    let mut sheet = String::new();
    for line in code_lines(&read(path)) {
        match line
            .strip_prefix("@import \"")
            .and_then(|rest| rest.strip_suffix("\";"))
        {
            Some(from) => {
                let from = normalize(&path.parent().expect("a file has a folder").join(from));
                sheet.push_str(&assemble_stylesheet(&from));
            }
            None => {
                sheet.push_str(line);
                sheet.push('\n');
            }
        }
    }
    sheet
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
