//! Colour for human output, decided once by the CLI (TTY, `NO_COLOR`) and
//! passed down, so this crate never looks at the terminal itself.

use comfy_table::{Cell, Color, Table};
use perimeter_model::Severity;

/// Whether to colour human output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
}

impl Style {
    pub fn plain() -> Self {
        Style { color: false }
    }

    pub(crate) fn table(self) -> Table {
        let mut table = Table::new();
        table.load_style(comfy_table::presets::NOTHING);
        if self.color {
            table.enforce_styling();
        } else {
            table.force_no_tty();
        }
        table
    }

    pub(crate) fn severity_color(severity: Severity) -> Color {
        match severity {
            Severity::Critical => Color::Magenta,
            Severity::High => Color::Red,
            Severity::Medium => Color::Yellow,
            Severity::Low => Color::Cyan,
            Severity::Info => Color::Grey,
        }
    }

    pub(crate) fn paint(self, text: &str, color: Color) -> String {
        if !self.color {
            return text.to_owned();
        }
        let code = match color {
            Color::Red => "31",
            Color::Green => "32",
            Color::Yellow => "33",
            Color::Magenta => "35",
            Color::Cyan => "36",
            Color::Grey | Color::DarkGrey => "90",
            _ => "0",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    pub(crate) fn bold(self, text: &str) -> String {
        if self.color {
            format!("\x1b[1m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub(crate) fn cell(self, text: impl ToString, color: Option<Color>) -> Cell {
        let cell = Cell::new(text);
        match (self.color, color) {
            (true, Some(color)) => cell.fg(color),
            _ => cell,
        }
    }
}
