//! The package inventory's facts that more than one crate speaks of: where an
//! executable no package owns lives ([`Area`]), what an unpackaged entry of a
//! systemd unit directory is ([`UnitKind`]) and how a package file differs
//! from what its package shipped ([`FileChange`]). `perimeter-inventory`
//! finds them, the `pkg` rules judge them and `perimeter-report` writes them,
//! so they are defined once here rather than mirrored in each.

use std::path::{Path, PathBuf};

/// Where an unpackaged executable lives, which sets how surprising it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Area {
    /// A PATH directory the package manager owns (/usr/bin, /usr/sbin, ...).
    System,
    UsrLocal,
    Opt,
    Srv,
    /// Anywhere else: found only because a process runs it.
    Elsewhere,
}

impl Area {
    pub fn as_str(self) -> &'static str {
        match self {
            Area::System => "system",
            Area::UsrLocal => "usr-local",
            Area::Opt => "opt",
            Area::Srv => "srv",
            Area::Elsewhere => "elsewhere",
        }
    }

    /// The area of a path inside the root, given the PATH directories of the
    /// system it belongs to.
    pub fn of(path: &Path, path_dirs: &[PathBuf]) -> Area {
        if path.starts_with("/usr/local") {
            Area::UsrLocal
        } else if path.starts_with("/opt") {
            Area::Opt
        } else if path.starts_with("/srv") {
            Area::Srv
        } else if path
            .parent()
            .is_some_and(|dir| path_dirs.iter().any(|d| d == dir))
        {
            Area::System
        } else {
            Area::Elsewhere
        }
    }
}

/// What an unpackaged entry in a unit directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitKind {
    /// A unit file.
    Unit,
    /// A `NAME.d/*.conf` drop-in changing unit NAME.
    DropIn,
    /// A symlink to a unit file outside the unit directories.
    Linked { target: PathBuf },
    /// A symlink to /dev/null.
    Masked,
    /// A dependency or alias symlink (`systemctl enable`).
    Enablement { target: Option<PathBuf> },
}

impl UnitKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            UnitKind::Unit => "unit",
            UnitKind::DropIn => "drop-in",
            UnitKind::Linked { .. } => "linked",
            UnitKind::Masked => "masked",
            UnitKind::Enablement { .. } => "enablement",
        }
    }

    /// Whether the entry is code systemd would run (a unit, a drop-in or a
    /// linked unit), as opposed to enablement state.
    pub fn is_unit(&self) -> bool {
        matches!(
            self,
            UnitKind::Unit | UnitKind::DropIn | UnitKind::Linked { .. }
        )
    }
}

/// How a package file differs from what its package shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileChange {
    Modified,
    Missing,
    /// Something other than a regular file is there (a directory, FIFO,
    /// device or socket).
    Replaced {
        kind: &'static str,
    },
}

impl FileChange {
    pub fn as_str(&self) -> &'static str {
        match self {
            FileChange::Modified => "modified",
            FileChange::Missing => "missing",
            FileChange::Replaced { .. } => "replaced",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn areas_by_path() {
        let path_dirs = vec![PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")];
        assert_eq!(Area::of(Path::new("/usr/bin/x"), &path_dirs), Area::System);
        assert_eq!(
            Area::of(Path::new("/usr/local/bin/x"), &path_dirs),
            Area::UsrLocal
        );
        assert_eq!(
            Area::of(Path::new("/optional/x"), &path_dirs),
            Area::Elsewhere
        );
        assert_eq!(Area::UsrLocal.as_str(), "usr-local");
    }

    #[test]
    fn unit_kinds_that_are_code() {
        assert!(UnitKind::DropIn.is_unit());
        assert!(
            UnitKind::Linked {
                target: PathBuf::from("/opt/app/app.service")
            }
            .is_unit()
        );
        assert!(!UnitKind::Masked.is_unit());
        assert!(!UnitKind::Enablement { target: None }.is_unit());
        assert_eq!(FileChange::Replaced { kind: "fifo" }.as_str(), "replaced");
    }
}
