//! One module per command. Each takes its raw flags (`args`), validates them
//! into settings (`settings`, and its own checks), builds what it needs, runs
//! it (through `pipeline` when another command runs the same thing) and
//! returns the exit code.
//!
//! Architecture invariant: commands never import each other. What two
//! commands share lives in `settings` or `pipeline`; the test below reads the
//! sources and holds the layers to it.

pub(crate) mod agent;
pub(crate) mod alerts;
pub(crate) mod approvals;
pub(crate) mod approve;
pub(crate) mod audit;
pub(crate) mod audits;
pub(crate) mod check;
pub(crate) mod completions;
pub(crate) mod diff;
pub(crate) mod envs;
pub(crate) mod inventory;
pub(crate) mod man;
pub(crate) mod monitor;
pub(crate) mod rules;
pub(crate) mod scan;
pub(crate) mod scanner;
pub(crate) mod scans;
pub(crate) mod server;
pub(crate) mod verify;
pub(crate) mod watch;

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::{Path, PathBuf};

    /// Every `.rs` file under `dir` of this crate's sources, with its text.
    fn sources(dir: &str) -> Vec<(PathBuf, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
        let mut files = Vec::new();
        let mut dirs = vec![root];
        while let Some(dir) = dirs.pop() {
            for entry in fs::read_dir(&dir).expect("the crate's sources are readable") {
                let path = entry.expect("a directory entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|ext| ext == "rs") {
                    let text = fs::read_to_string(&path).expect("a source file");
                    files.push((path, text));
                }
            }
        }
        files.sort();
        assert!(!files.is_empty(), "no sources under src/{dir}");
        files
    }

    /// The lines of `files` that contain `needle`, as `file:line: text`.
    fn offending(files: &[(PathBuf, String)], needle: impl Fn(&str) -> bool) -> Vec<String> {
        let needle = &needle;
        files
            .iter()
            .flat_map(|(path, text)| {
                text.lines()
                    .enumerate()
                    .filter(move |(_, line)| !line.trim_start().starts_with("//") && needle(line))
                    .map(move |(idx, line)| {
                        format!("{}:{}: {}", path.display(), idx + 1, line.trim())
                    })
            })
            .collect()
    }

    #[test]
    fn commands_never_import_each_other() {
        // `super::` from a command module is the `commands` module, so a
        // sibling; `use super::*;` in a command's own test module is not.
        // mod.rs only declares the commands (and holds this test).
        let mut commands = sources("commands");
        commands.retain(|(path, _)| !path.ends_with("commands/mod.rs"));
        let found = offending(&commands, |line| {
            line.contains("crate::commands")
                || (line.contains("super::") && line.trim() != "use super::*;")
        });
        assert!(
            found.is_empty(),
            "commands import args, settings and pipeline, never each other:\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn args_depends_on_nothing_else_in_the_crate() {
        let found = offending(&sources("args"), |line| line.contains("crate::"));
        assert!(
            found.is_empty(),
            "args/ holds clap types only:\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn settings_and_pipeline_do_not_reach_into_commands() {
        let mut files = sources("pipeline");
        let settings = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/settings.rs");
        let text = fs::read_to_string(&settings).expect("settings.rs");
        files.push((settings, text));
        let found = offending(&files, |line| line.contains("crate::commands"));
        assert!(
            found.is_empty(),
            "settings and pipeline sit below the commands:\n{}",
            found.join("\n")
        );
    }
}
