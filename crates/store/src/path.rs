//! Where the history lives by default, following the XDG base directory
//! specification. Pure: the CLI reads the environment and passes the values in.

use std::path::{Path, PathBuf};

/// The file name of the history database inside its directory.
pub const DB_FILE_NAME: &str = "perimeter.db";

/// `$XDG_DATA_HOME/perimeter/perimeter.db`, else
/// `$HOME/.local/share/perimeter/perimeter.db`; `None` when neither is usable.
///
/// The XDG specification says a relative `XDG_DATA_HOME` is invalid and must be
/// ignored, and an empty one counts as unset; the same holds for `HOME` here,
/// since a relative history path would move with the working directory.
pub fn default_db_path(xdg_data_home: Option<&Path>, home: Option<&Path>) -> Option<PathBuf> {
    let usable = |dir: &&Path| dir.is_absolute();
    if let Some(data_home) = xdg_data_home.filter(usable) {
        return Some(data_home.join("perimeter").join(DB_FILE_NAME));
    }
    home.filter(usable)
        .map(|home| home.join(".local/share/perimeter").join(DB_FILE_NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(xdg: Option<&str>, home: Option<&str>, expect: Option<&str>) {
        let got = default_db_path(xdg.map(Path::new), home.map(Path::new));
        assert_eq!(
            got.as_deref(),
            expect.map(Path::new),
            "xdg={xdg:?} home={home:?}"
        );
    }

    #[test]
    fn xdg_data_home_wins() {
        check(
            Some("/srv/data"),
            Some("/home/op"),
            Some("/srv/data/perimeter/perimeter.db"),
        );
    }

    #[test]
    fn falls_back_to_home() {
        check(
            None,
            Some("/home/op"),
            Some("/home/op/.local/share/perimeter/perimeter.db"),
        );
    }

    #[test]
    fn relative_or_empty_values_are_ignored() {
        check(
            Some(""),
            Some("/root"),
            Some("/root/.local/share/perimeter/perimeter.db"),
        );
        check(
            Some("data"),
            Some("/root"),
            Some("/root/.local/share/perimeter/perimeter.db"),
        );
        check(None, Some("relative/home"), None);
        check(None, Some(""), None);
        check(None, None, None);
    }
}
