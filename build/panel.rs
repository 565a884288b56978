//! The widget's panel, assembled from ES modules into one classic script and one stylesheet, without a bundler.
//!
//! The panel's sources are ES modules (`web/widget/panel/`, entry `panel.js`), written like the dashboard's and
//! importing the same `web/shared/` modules. [`assemble_script`] follows their one-line `import { a, b } from
//! "./x.js";` lines, puts each module once, dependencies first, drops the imports and the `export` keywords, and wraps
//! the lot in one function scope, so every top-level name must be unique across the modules (checked here, as are
//! imports of names a module does not export). [`assemble_stylesheet`] inlines the `@import "x.css";` lines of
//! `panel.css`. Both leave out blank lines and lines that hold only a comment: a visitor's browser needs none of them.
//! Whatever breaks these rules stops the build with a message naming the file and line.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

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
pub fn assemble_script(entry: &Path) -> String {
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
pub fn assemble_stylesheet(path: &Path) -> String {
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

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `files` (path, text) under a temporary folder and returns it.
    fn sources(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn modules_come_once_dependencies_first_without_imports_exports_or_comments() {
        let dir = sources(&[
            (
                "panel/panel.js",
                "/* The entry.\n * Two lines. */\nimport { b } from \"./b.js\";\nimport { a } from \"../shared/a.js\";\n\n// Starts it.\nfunction start() { return a() + b(); }\n",
            ),
            (
                "panel/b.js",
                "import { a } from \"../shared/a.js\";\nexport function b() {\n  // twice\n  return a() * 2; // inline comments stay\n}\n",
            ),
            (
                "shared/a.js",
                "export const url = \"http://example.com\";\nexport function a() { /* one */ return 1; }\n",
            ),
        ]);
        let script = assemble_script(&dir.path().join("panel/panel.js"));
        assert!(
            !script.contains("export"),
            "no export keyword left: {script}"
        );
        assert!(!script.contains("import "), "{script}");
        assert!(
            !script.contains("Two lines")
                && !script.contains("// Starts it")
                && !script.contains("// twice")
        );
        assert!(
            script.contains("const url = \"http://example.com\";"),
            "a `//` inside a string is code"
        );
        assert!(script.contains("return a() * 2; // inline comments stay"));
        assert!(
            script.contains("function a() { /* one */ return 1; }"),
            "a line that starts as code stays"
        );
        let a = script.find("function a()").unwrap();
        let b = script.find("function b()").unwrap();
        let start = script.find("function start()").unwrap();
        assert!(a < b && b < start, "dependencies first: {script}");
        assert_eq!(
            script.matches("function a()").count(),
            1,
            "imported twice, put once"
        );
        assert!(script.contains("(() => {\n\"use strict\";\n"));
        assert!(script.ends_with("})();\n"));
        assert!(!script.contains("\n\n"), "no blank lines");
    }

    type Sources = &'static [(&'static str, &'static str)];

    /// Each way of breaking the rules stops the build with a message that says which rule.
    #[test]
    fn breaking_a_rule_stops_the_build_and_says_which() {
        let cases: [(&str, Sources, &str); 7] = [
            (
                "a name declared in two modules",
                &[
                    (
                        "panel.js",
                        "import { x } from \"./x.js\";\nconst state = x;\n",
                    ),
                    ("x.js", "let state = 1;\nexport const x = state;\n"),
                ],
                "`state` is declared at the top level of both",
            ),
            (
                "an import of a name the module does not export",
                &[
                    ("panel.js", "import { x, y } from \"./x.js\";\n"),
                    ("x.js", "export const x = 1;\nfunction y() {}\n"),
                ],
                "imports `y`, which",
            ),
            (
                "an import over several lines",
                &[("panel.js", "import {\n  x,\n} from \"./x.js\";\n")],
                "write imports as",
            ),
            (
                "a renamed import",
                &[("panel.js", "import { x as y } from \"./x.js\";\n")],
                "import plain names",
            ),
            (
                "an export list",
                &[("panel.js", "const x = 1;\nexport { x };\n")],
                "export declarations only",
            ),
            (
                "an import circle",
                &[
                    (
                        "panel.js",
                        "import { x } from \"./x.js\";\nexport const p = x;\n",
                    ),
                    (
                        "x.js",
                        "import { p } from \"./panel.js\";\nexport const x = 1;\n",
                    ),
                ],
                "import circle",
            ),
            (
                "a template literal over several lines",
                &[("panel.js", "const t = `one\n// two\n`;\n")],
                "template literal",
            ),
        ];
        for (case, files, expected) in cases {
            let dir = sources(files);
            let entry = dir.path().join("panel.js");
            let panic = std::panic::catch_unwind(|| assemble_script(&entry)).expect_err(case);
            let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
            assert!(message.contains(expected), "{case}: {message}");
        }
    }

    #[test]
    fn a_stylesheet_gets_its_imports_inlined_and_its_comments_dropped() {
        let dir = sources(&[
            (
                "panel/panel.css",
                "/* The panel. */\n@import \"../shared/button.css\";\n.panel { color: red; }\n",
            ),
            (
                "shared/button.css",
                "/* A button,\n   shared. */\n.button { background: url(//example.com/b.png); }\n",
            ),
        ]);
        let sheet = assemble_stylesheet(&dir.path().join("panel/panel.css"));
        assert_eq!(
            sheet,
            ".button { background: url(//example.com/b.png); }\n.panel { color: red; }\n"
        );
    }
}
