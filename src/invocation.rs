//! How the reader of a message runs natter from where they are.
//!
//! natter's messages and its wizard tell the operator what to type next. After `cargo run` or `cargo build` there is
//! no `natter` on the PATH, so a message that says `natter --init` sends a new user to a command that does not exist;
//! these name this very binary as the reader can type it in their current folder.

use std::path::Path;

/// How to run this very binary from the current folder: `natter` when that name on the PATH is this binary (it
/// was installed), otherwise its path. After `cargo run` or `cargo build` there is no `natter` on the PATH, and a
/// command the reader cannot paste is worse than none.
pub fn command() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "natter".to_string();
    };
    let installed = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|folder| folder.join("natter"))
            .find(|candidate| candidate.is_file())
    });
    if installed.and_then(|path| std::fs::canonicalize(path).ok())
        == std::fs::canonicalize(&exe).ok()
    {
        return "natter".to_string();
    }
    binary()
}

/// This binary's path as the reader can type it here.
pub fn binary() -> String {
    std::env::current_exe().map_or_else(|_| "natter".to_string(), |exe| from_here(&exe))
}

/// The systemd unit in natter's source tree, found from the binary built in it (`target/release/natter`).
pub fn unit_file() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .map(|folder| folder.join("systemd/natter.service"))
                .find(|unit| unit.is_file())
        })
        .map_or_else(
            || "systemd/natter.service".to_string(),
            |unit| from_here(&unit),
        )
}

/// A path as the reader can type it in the current folder: relative when it lies below it, absolute otherwise.
fn from_here(path: &Path) -> String {
    std::env::current_dir()
        .and_then(std::fs::canonicalize)
        .ok()
        .and_then(|here| path.strip_prefix(here).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}
