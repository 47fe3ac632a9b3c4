//! The running sshd's effective authentication settings, and the classes of
//! client source address for which they hold.
//!
//! Three layers:
//! - a parser for sshd_config(5) ([`parse_sshd_config`], [`load_sshd_config`])
//!   that follows OpenSSH's own tokenizer (`strdelim`, `argv_split`), resolves
//!   `Include` through the [`ConfigFiles`] trait, and keeps every directive;
//! - an evaluator ([`evaluate()`]) that replays servconf.c's two passes: the
//!   start-up pass (global lines and `Match All`, first value wins), then the
//!   per-connection pass over `Match` blocks only, whose values (first matching
//!   block wins) override the start-up ones;
//! - [`inspect_sshd`], which asks the daemon itself (`sshd -T -C ...`) for each
//!   class of source address derived from the `Match Address` blocks, and falls
//!   back to the evaluator, saying why, when `sshd -T` cannot run.
//!
//! One file per part: `config.rs` (the parsed configuration's types),
//! `parse.rs` (tokenizers, parser, `Include`), `matching.rs` (`Match`
//! criteria and OpenSSH's pattern lists), `evaluate.rs` (the two passes),
//! `classes.rs` (source classes), `sshd_t.rs` (running `sshd -T -C`) and
//! `inspect.rs` (the running daemon, joining the others). The public names
//! are all re-exported here.

mod classes;
mod config;
mod evaluate;
mod inspect;
mod matching;
mod parse;
mod sshd_t;

pub use classes::{SourceClass, source_classes};
pub use config::{
    Criterion, CriterionKind, Directive, Include, Item, MatchLine, PermitRootLogin, Setting,
    SshdConfig, SshdConfigError, SshdConfigErrorKind,
};
pub use evaluate::{AuthSettings, evaluate, global_value};
pub use inspect::{
    DEFAULT_CONFIG, OTHER_USER, SshdArgs, groups_of, inspect_sshd, inspect_sshd_listening,
    parse_sshd_cmdline, users_to_evaluate,
};
pub use matching::{Connection, addr_match_list, match_pattern, match_pattern_list};
pub use parse::{
    ConfigFiles, RealFiles, load_sshd_config, parse_command_line_option, parse_sshd_config,
};
pub use sshd_t::{parse_sshd_t, run_sshd_t};
