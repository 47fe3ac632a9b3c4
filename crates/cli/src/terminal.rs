//! What the terminal can do: whether stdout/stderr are TTYs and whether to
//! colour (never when NO_COLOR is set or stdout is not a TTY).

use std::io::IsTerminal;

use perimeter_report::Style;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Terminal {
    pub(crate) stdout_tty: bool,
    pub(crate) stderr_tty: bool,
    pub(crate) stdin_tty: bool,
    no_color: bool,
}

impl Terminal {
    pub(crate) fn detect() -> Self {
        Terminal {
            stdout_tty: std::io::stdout().is_terminal(),
            stderr_tty: std::io::stderr().is_terminal(),
            stdin_tty: std::io::stdin().is_terminal(),
            // https://no-color.org: any non-empty value disables colour.
            no_color: std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
        }
    }

    pub(crate) fn stdout_style(&self) -> Style {
        Style {
            color: self.stdout_tty && !self.no_color,
        }
    }
}
