//! The parser of sshd_config(5): OpenSSH's own tokenizers (`strdelim`,
//! `argv_split`), one line at a time as servconf.c reads it, `-o` options
//! from sshd's command line, and `Include` resolved through [`ConfigFiles`]
//! (the real file system, possibly through a process's root, or literals in
//! tests).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::config::{
    Criterion, CriterionKind, Directive, Include, Item, MatchLine, PermitRootLogin, Setting,
    SshdConfig, SshdConfigError, SshdConfigErrorKind,
};
use super::matching::addr_match_list;

/// Where relative `Include` paths are resolved, as OpenSSH's `SSHDIR`.
const SSHDIR: &str = "/etc/ssh";

/// OpenSSH's `SERVCONF_MAX_DEPTH`: includes nested deeper are fatal.
pub(super) const MAX_INCLUDE_DEPTH: usize = 16;

/// A config file larger than this is not read: real ones are a few KiB.
const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

const WHITESPACE: &[char] = &[' ', '\t', '\r', '\n'];

/// OpenSSH's `strdelim`: the next word of `s`, split at whitespace or at most
/// one `=`, with a "double-quoted" word taken whole. Returns the word and the
/// rest (`None` at the end of the line); `Err` for an unterminated quote.
fn strdelim(s: &str) -> Result<(String, Option<&str>), SshdConfigErrorKind> {
    let Some(pos) = s.find(|c: char| WHITESPACE.contains(&c) || c == '"' || c == '=') else {
        return Ok((s.to_owned(), None));
    };
    let (head, tail) = s.split_at(pos);
    if let Some(after_quote) = tail.strip_prefix('"') {
        let close = after_quote
            .find('"')
            .ok_or(SshdConfigErrorKind::UnterminatedQuote)?;
        let (quoted, rest) = after_quote.split_at(close);
        let rest = rest.get(1..).unwrap_or("").trim_start_matches(WHITESPACE);
        return Ok((format!("{head}{quoted}"), Some(rest)));
    }
    let was_equals = tail.starts_with('=');
    let mut rest = tail.get(1..).unwrap_or("").trim_start_matches(WHITESPACE);
    if !was_equals && let Some(after) = rest.strip_prefix('=') {
        rest = after.trim_start_matches(WHITESPACE);
    }
    Ok((head.to_owned(), Some(rest)))
}

/// OpenSSH's `argv_split` with `terminate_on_comment`: words split at spaces
/// and tabs, 'single' or "double" quotes, backslash escapes of quotes,
/// backslashes and (outside quotes) spaces, and a `#` starting a word ends the
/// line.
fn argv_split(s: &str) -> Result<Vec<String>, SshdConfigErrorKind> {
    let chars: Vec<char> = s.chars().collect();
    let mut args = Vec::new();
    let mut idx = 0;
    while idx < chars.len() {
        let c = chars[idx];
        if c == ' ' || c == '\t' {
            idx += 1;
            continue;
        }
        if c == '#' {
            break;
        }
        let mut arg = String::new();
        let mut quote: Option<char> = None;
        while let Some(&c) = chars.get(idx) {
            match c {
                '\\' => {
                    let next = chars.get(idx + 1).copied();
                    match next {
                        Some(n)
                            if n == '\''
                                || n == '"'
                                || n == '\\'
                                || (quote.is_none() && n == ' ') =>
                        {
                            arg.push(n);
                            idx += 1;
                        }
                        _ => arg.push('\\'),
                    }
                }
                ' ' | '\t' if quote.is_none() => break,
                '"' | '\'' if quote.is_none() => quote = Some(c),
                c if Some(c) == quote => quote = None,
                c => arg.push(c),
            }
            idx += 1;
        }
        if quote.is_some() {
            return Err(SshdConfigErrorKind::UnterminatedQuote);
        }
        args.push(arg);
    }
    Ok(args)
}

/// One file of sshd_config(5), without following its `Include`s (their
/// `files` are empty). `file` names the file in errors and in the result.
pub fn parse_sshd_config(text: &str, file: &Path) -> Result<SshdConfig, SshdConfigError> {
    let mut items = Vec::new();
    for (line_idx, raw) in text.split('\n').enumerate() {
        let line = line_idx + 1;
        let error = |kind| SshdConfigError {
            file: file.to_owned(),
            line,
            kind,
        };
        if let Some(item) = parse_line(raw, line).map_err(error)? {
            items.push(item);
        }
    }
    Ok(SshdConfig {
        file: file.to_owned(),
        items,
    })
}

/// One line, as servconf.c's `process_server_config_line_depth` reads it.
fn parse_line(raw: &str, line: usize) -> Result<Option<Item>, SshdConfigErrorKind> {
    // load_server_config strips leading blanks; the line parser strips
    // trailing whitespace and form feeds.
    let text = raw
        .trim_start_matches([' ', '\t', '\r'])
        .trim_end_matches([' ', '\t', '\r', '\n', '\u{c}']);
    if text.is_empty() {
        return Ok(None);
    }
    let (mut keyword, mut rest) = strdelim(text)?;
    if keyword.is_empty()
        && let Some(after) = rest
    {
        (keyword, rest) = strdelim(after)?;
    }
    if keyword.is_empty() || keyword.starts_with('#') {
        return Ok(None);
    }
    let rest = match rest {
        Some(rest) if !rest.is_empty() => rest,
        _ => return Err(SshdConfigErrorKind::MissingArgument(keyword)),
    };
    let args = argv_split(rest)?;
    let lower = keyword.to_ascii_lowercase();
    match lower.as_str() {
        "match" => Ok(Some(Item::Match(MatchLine {
            line,
            criteria: parse_match(rest)?,
        }))),
        "include" => {
            let patterns: Vec<String> = args
                .iter()
                .filter(|a| !a.is_empty())
                .map(|a| {
                    if a.starts_with('/') || a.starts_with('~') {
                        a.clone()
                    } else {
                        format!("{SSHDIR}/{a}")
                    }
                })
                .collect();
            if patterns.is_empty() {
                return Err(SshdConfigErrorKind::MissingArgument(keyword));
            }
            Ok(Some(Item::Include(Include {
                line,
                patterns,
                files: Vec::new(),
            })))
        }
        _ => {
            let setting = parse_setting(&lower, &keyword, &args)?;
            Ok(Some(Item::Directive(Directive {
                line,
                keyword: lower,
                args,
                setting,
            })))
        }
    }
}

/// The typed value of one of the evaluated settings; `None` for any other
/// keyword. Values are checked as sshd checks them (case-insensitive, one
/// argument), since a bad one stops sshd from starting.
pub(super) fn parse_setting(
    lower: &str,
    keyword: &str,
    args: &[String],
) -> Result<Option<Setting>, SshdConfigErrorKind> {
    let is_evaluated = matches!(
        lower,
        "permitrootlogin"
            | "passwordauthentication"
            | "kbdinteractiveauthentication"
            | "challengeresponseauthentication"
            | "permitemptypasswords"
    );
    if !is_evaluated {
        return Ok(None);
    }
    let [value] = args else {
        return match args {
            [] => Err(SshdConfigErrorKind::MissingArgument(keyword.to_owned())),
            _ => Err(SshdConfigErrorKind::ExtraArguments(keyword.to_owned())),
        };
    };
    let bad = || SshdConfigErrorKind::BadValue {
        keyword: keyword.to_owned(),
        value: value.clone(),
    };
    let flag = || match value.to_ascii_lowercase().as_str() {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(bad()),
    };
    let setting = match lower {
        "permitrootlogin" => {
            Setting::PermitRootLogin(PermitRootLogin::parse(value).ok_or_else(bad)?)
        }
        "passwordauthentication" => Setting::PasswordAuthentication(flag()?),
        "permitemptypasswords" => Setting::PermitEmptyPasswords(flag()?),
        _ => Setting::KbdInteractiveAuthentication(flag()?),
    };
    Ok(Some(setting))
}

/// The criteria after `Match`, as servconf.c's `match_cfg_line` reads them
/// (with `strdelim`, so `User=root` and quoted lists work).
fn parse_match(text: &str) -> Result<Vec<Criterion>, SshdConfigErrorKind> {
    let mut criteria = Vec::new();
    let mut rest = Some(text);
    let mut n_attributes = 0;
    while let Some(current) = rest {
        let (attribute, after) = strdelim(current)?;
        rest = after;
        if attribute.is_empty() {
            if rest.is_none_or(str::is_empty) {
                break;
            }
            continue;
        }
        if attribute.starts_with('#') {
            break;
        }
        n_attributes += 1;
        if attribute.eq_ignore_ascii_case("all") {
            let trailing = match rest {
                Some(after) if !after.is_empty() => Some(strdelim(after)?.0),
                _ => None,
            };
            let trailing_words = trailing.is_some_and(|w| !w.is_empty() && !w.starts_with('#'));
            if n_attributes > 1 || trailing_words {
                return Err(SshdConfigErrorKind::AllCombined);
            }
            return Ok(Vec::new());
        }
        let value = match rest {
            Some(after) if !after.is_empty() => {
                let (value, after) = strdelim(after)?;
                rest = after;
                value
            }
            _ => String::new(),
        };
        if value.is_empty() || value.starts_with('#') {
            return Err(SshdConfigErrorKind::MissingCriterionValue(attribute));
        }
        let kind = CriterionKind::parse(&attribute)
            .ok_or(SshdConfigErrorKind::UnknownCriterion(attribute))?;
        match kind {
            CriterionKind::Address | CriterionKind::LocalAddress
                if addr_match_list(None, &value) == -2 =>
            {
                return Err(SshdConfigErrorKind::BadAddressList(value));
            }
            CriterionKind::LocalPort => {
                value
                    .parse::<u16>()
                    .map_err(|_| SshdConfigErrorKind::BadPort(value.clone()))?;
            }
            _ => {}
        }
        criteria.push(Criterion {
            kind,
            patterns: value,
        });
    }
    if n_attributes == 0 {
        return Err(SshdConfigErrorKind::MissingArgument("Match".to_owned()));
    }
    Ok(criteria)
}

/// A `-o Keyword=value` option from sshd's command line, which sets a value
/// before the file is read (so it wins over the file's global lines, but not
/// over a matching `Match` block).
pub fn parse_command_line_option(text: &str) -> Result<Directive, SshdConfigError> {
    let error = |kind| SshdConfigError {
        file: PathBuf::from("command-line"),
        line: 0,
        kind,
    };
    match parse_line(text, 0).map_err(error)? {
        Some(Item::Directive(directive)) => Ok(directive),
        Some(Item::Match(_)) => Err(error(SshdConfigErrorKind::NotOnCommandLine(
            "Match".to_owned(),
        ))),
        Some(Item::Include(_)) => Err(error(SshdConfigErrorKind::NotOnCommandLine(
            "Include".to_owned(),
        ))),
        None => Err(error(SshdConfigErrorKind::MissingArgument(text.to_owned()))),
    }
}

/// How the parser reaches files, so tests can feed literals.
pub trait ConfigFiles {
    fn read(&self, path: &Path) -> io::Result<String>;
    /// The files matching a glob pattern, in the order glob(3) returns them
    /// (sorted). No match is an empty list, not an error.
    fn glob(&self, pattern: &str) -> Vec<PathBuf>;
}

/// The real file system, optionally seen through a process's root
/// (`/proc/PID/root`) so a containerised sshd's files are the ones read.
#[derive(Debug, Clone, Default)]
pub struct RealFiles {
    pub root: Option<PathBuf>,
}

impl RealFiles {
    fn on_disk(&self, path: &Path) -> PathBuf {
        match &self.root {
            Some(root) => root.join(path.strip_prefix("/").unwrap_or(path)),
            None => path.to_owned(),
        }
    }
}

impl ConfigFiles for RealFiles {
    fn read(&self, path: &Path) -> io::Result<String> {
        let file = fs::File::open(self.on_disk(path))?;
        let mut text = String::new();
        // Bounded: a config file is small; a huge one is not read whole.
        io::Read::read_to_string(&mut io::Read::take(file, MAX_CONFIG_BYTES), &mut text)?;
        Ok(text)
    }

    fn glob(&self, pattern: &str) -> Vec<PathBuf> {
        let (full, prefix) = match &self.root {
            Some(root) => {
                let escaped = glob::Pattern::escape(&root.to_string_lossy());
                (format!("{escaped}{pattern}"), Some(root.as_path()))
            }
            None => (pattern.to_owned(), None),
        };
        let Ok(paths) = glob::glob(&full) else {
            return Vec::new();
        };
        let mut found: Vec<PathBuf> = paths
            .filter_map(Result::ok)
            .map(|path| match prefix {
                Some(root) => path
                    .strip_prefix(root)
                    .map(|inside| Path::new("/").join(inside))
                    .unwrap_or(path),
                None => path,
            })
            .collect();
        found.sort();
        found
    }
}

/// A config file and every file it includes, parsed. Include loops and
/// nesting deeper than sshd allows are errors naming the `Include` line.
pub fn load_sshd_config(
    file: &Path,
    files: &dyn ConfigFiles,
) -> Result<SshdConfig, SshdConfigError> {
    let mut chain = Vec::new();
    load_depth(file, files, &mut chain)
}

fn load_depth(
    file: &Path,
    files: &dyn ConfigFiles,
    chain: &mut Vec<PathBuf>,
) -> Result<SshdConfig, SshdConfigError> {
    let text = files.read(file).map_err(|source| SshdConfigError {
        file: file.to_owned(),
        line: 0,
        kind: SshdConfigErrorKind::Read {
            path: file.to_owned(),
            source,
        },
    })?;
    let mut config = parse_sshd_config(&text, file)?;
    chain.push(file.to_owned());
    for item in &mut config.items {
        let Item::Include(include) = item else {
            continue;
        };
        let error = |kind| SshdConfigError {
            file: file.to_owned(),
            line: include.line,
            kind,
        };
        for pattern in &include.patterns {
            for path in files.glob(pattern) {
                if chain.contains(&path) {
                    return Err(error(SshdConfigErrorKind::IncludeLoop(path)));
                }
                if chain.len() > MAX_INCLUDE_DEPTH {
                    return Err(error(SshdConfigErrorKind::IncludeTooDeep));
                }
                match load_depth(&path, files, chain) {
                    Ok(included) => include.files.push(included),
                    Err(SshdConfigError {
                        line: 0,
                        kind: SshdConfigErrorKind::Read { path, source },
                        ..
                    }) => return Err(error(SshdConfigErrorKind::Read { path, source })),
                    Err(other) => return Err(other),
                }
            }
        }
    }
    chain.pop();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strdelim_like_openssh() {
        assert_eq!(
            strdelim("PermitRootLogin no").ok(),
            Some(("PermitRootLogin".into(), Some("no")))
        );
        assert_eq!(
            strdelim("PermitRootLogin=no").ok(),
            Some(("PermitRootLogin".into(), Some("no")))
        );
        assert_eq!(
            strdelim("PermitRootLogin = no").ok(),
            Some(("PermitRootLogin".into(), Some("no")))
        );
        assert_eq!(strdelim("Keyword").ok(), Some(("Keyword".into(), None)));
        assert_eq!(strdelim("\"a b\" c").ok(), Some(("a b".into(), Some("c"))));
        assert!(strdelim("\"a b").is_err());
    }

    #[test]
    fn argv_split_like_openssh() {
        assert_eq!(argv_split("no # comment").ok(), Some(vec!["no".to_owned()]));
        assert_eq!(
            argv_split("\"a b\" 'c d' e\\ f").ok(),
            Some(vec!["a b".to_owned(), "c d".to_owned(), "e f".to_owned()])
        );
        assert_eq!(argv_split("a#b").ok(), Some(vec!["a#b".to_owned()]));
        assert!(matches!(
            argv_split("\"yes"),
            Err(SshdConfigErrorKind::UnterminatedQuote)
        ));
    }
}
