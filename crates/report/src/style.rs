//! Colour for human output, decided once by the CLI (TTY, `NO_COLOR`) and
//! passed down, so this crate never looks at the terminal itself. Tables are
//! coloured by comfy-table, lines by owo-colors; nothing here writes an
//! escape sequence by hand.

use comfy_table::{Cell, Color, Table};
use owo_colors::OwoColorize;
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

    /// `text` in `color` (comfy-table's colour names, so tables and lines
    /// share one palette), through owo-colors: the escapes are the 16-colour
    /// foregrounds, reset with SGR 0.
    pub(crate) fn paint(self, text: &str, color: Color) -> String {
        if !self.color {
            return text.to_owned();
        }
        let style = owo_colors::Style::new();
        let style = match color {
            Color::Red => style.red(),
            Color::Green => style.green(),
            Color::Yellow => style.yellow(),
            Color::Magenta => style.magenta(),
            Color::Cyan => style.cyan(),
            Color::Grey | Color::DarkGrey => style.bright_black(),
            // No other colour is used; unstyled rather than guessed.
            _ => style,
        };
        text.style(style).to_string()
    }

    pub(crate) fn bold(self, text: &str) -> String {
        if self.color {
            text.bold().to_string()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_the_16_colour_ones_reset_with_sgr_0() {
        let style = Style { color: true };
        assert_eq!(style.paint("!", Color::Red), "\x1b[31m!\x1b[0m");
        assert_eq!(style.paint("+", Color::Green), "\x1b[32m+\x1b[0m");
        assert_eq!(style.paint("-", Color::Yellow), "\x1b[33m-\x1b[0m");
        assert_eq!(style.paint("c", Color::Magenta), "\x1b[35mc\x1b[0m");
        assert_eq!(style.paint("l", Color::Cyan), "\x1b[36ml\x1b[0m");
        assert_eq!(style.paint("i", Color::Grey), "\x1b[90mi\x1b[0m");
        assert_eq!(style.paint("d", Color::DarkGrey), "\x1b[90md\x1b[0m");
        assert_eq!(style.bold("b"), "\x1b[1mb\x1b[0m");
        assert_eq!(Style::plain().paint("!", Color::Red), "!");
        assert_eq!(Style::plain().bold("b"), "b");
    }
}
