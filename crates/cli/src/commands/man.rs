//! `perimeter man`: manual pages generated from the clap definitions in
//! `args` (clap_mangen): the main page on stdout, or with `--dir` every page,
//! one per command and subcommand, as the Debian package ships them.

use anyhow::{Context, Result, bail};
use clap::CommandFactory;
use clap_mangen::Man;
use std::io::Write;

use crate::args::{Cli, ManArgs};
use crate::exit_codes::ExitCode;
use crate::output::Stdout;

pub(crate) fn run(args: ManArgs) -> Result<ExitCode> {
    let pages = pages()?;
    let Some(dir) = args.dir else {
        // The first page is the main one.
        let (_, main) = pages.first().context("no manual page was rendered")?;
        // A failed write is said once by `main`, as every failed output.
        Stdout.write_all(main)?;
        return Ok(ExitCode::Clean);
    };
    // Like every file perimeter writes, the pages go into a directory that
    // exists: a typo in its name is an error, not a new tree.
    if !dir.is_dir() {
        bail!("{}: not an existing directory", dir.display());
    }
    for (file_name, page) in &pages {
        let path = dir.join(file_name);
        perimeter_files::write_atomic(&path, page, 0o644)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    outln!("wrote {} manual pages to {}", pages.len(), dir.display());
    Ok(ExitCode::Clean)
}

/// Every manual page as (file name, roff text): `perimeter.1` first, then
/// one page per visible command, depth first (`perimeter-inventory.1`,
/// `perimeter-inventory-export.1`, ...).
fn pages() -> Result<Vec<(String, Vec<u8>)>> {
    // No page for clap's `help` pseudo-command; building gives each
    // subcommand its display name (`perimeter-audit`), which names its page.
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    let mut pages = Vec::new();
    render(command, &mut pages)?;
    Ok(pages)
}

fn render(command: clap::Command, pages: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    let subcommands: Vec<clap::Command> = command
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .cloned()
        .collect();
    let man = Man::new(command);
    let mut page = Vec::new();
    man.render(&mut page)
        .context("cannot render a manual page")?;
    pages.push((man.get_filename(), page));
    for sub in subcommands {
        render(sub, pages)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_per_command_named_after_it() {
        let pages = pages().expect("pages render");
        let names: Vec<&str> = pages.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names[0], "perimeter.1");
        for expected in [
            "perimeter-audit.1",
            "perimeter-inventory.1",
            "perimeter-inventory-export.1",
            "perimeter-completions.1",
            "perimeter-man.1",
        ] {
            assert!(names.contains(&expected), "no {expected} in {names:?}");
        }
        assert!(!names.iter().any(|name| name.contains("help")), "{names:?}");
        assert!(
            names
                .iter()
                .all(|name| name.starts_with("perimeter") && name.ends_with(".1"))
        );
        let main = String::from_utf8(pages[0].1.clone()).expect("roff is UTF-8");
        assert!(main.starts_with(".ie \\n(.g .ds Aq"), "{main}");
        assert!(main.contains(".TH perimeter 1"), "{main}");
        assert!(main.contains("perimeter\\-audit(1)"), "{main}");
    }
}
