//! One read-only conversation with a listener that might be Redis, without
//! I/O: the bytes to send, the bytes received fed in, and what the listener
//! turned out to be.
//!
//! The conversation asks `PING` first. Only a listener that answers it as
//! Redis does (`+PONG`) is asked more, in one pipelined write: `INFO server`,
//! `CONFIG GET protected-mode` and `CONFIG GET bind`. Every command it can send
//! is in [`READ_ONLY_COMMANDS`]; none writes, and `requirepass` is never asked
//! (the answer would be the secret itself). Every reply goes through
//! `perimeter_probe::redis`'s bounded RESP parser, and the bytes held are
//! capped at [`MAX_REPLY`].

use std::net::SocketAddr;

use perimeter_model::RedisAuth;
use perimeter_probe::redis::{Reply, command, parse_info, parse_reply};

use super::RedisAnswer;

/// The most bytes held for the replies not yet parsed (INFO server is about
/// 1.5 KiB; a PING reply a few bytes).
pub const MAX_REPLY: usize = 64 * 1024;

/// Every command a conversation sends, by name and arguments: the read-only
/// invariant in one place, checked by the tests.
pub const READ_ONLY_COMMANDS: [&[&[u8]]; 4] = [
    PING,
    INFO_SERVER,
    CONFIG_GET_PROTECTED_MODE,
    CONFIG_GET_BIND,
];

const PING: &[&[u8]] = &[b"PING"];
const INFO_SERVER: &[&[u8]] = &[b"INFO", b"server"];
const CONFIG_GET_PROTECTED_MODE: &[&[u8]] = &[b"CONFIG", b"GET", b"protected-mode"];
const CONFIG_GET_BIND: &[&[u8]] = &[b"CONFIG", b"GET", b"bind"];

/// The questions asked of a confirmed Redis, in the order their replies come.
const DETAILS: [&[&[u8]]; 3] = [INFO_SERVER, CONFIG_GET_PROTECTED_MODE, CONFIG_GET_BIND];

/// What to do after feeding bytes in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes, then read.
    Send(Vec<u8>),
    /// Read more.
    Read,
    /// The conversation is over.
    Done,
}

/// Where a conversation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// PING sent, its reply awaited.
    Ping,
    /// PONG received; the replies to [`DETAILS`] awaited, this many read.
    Details(usize),
    Done,
}

/// One conversation with one listener.
#[derive(Debug)]
pub struct Conversation {
    answer: RedisAnswer,
    stage: Stage,
    /// Bytes received and not yet parsed.
    pending: Vec<u8>,
}

impl Conversation {
    /// A conversation with the listener reached at `probed`, and the bytes to
    /// send first.
    pub fn start(probed: SocketAddr) -> (Conversation, Vec<u8>) {
        let conversation = Conversation {
            answer: RedisAnswer {
                probed,
                auth: RedisAuth::Unreachable(format!("no answer to PING from {probed}")),
                version: None,
                config_file: None,
                protected_mode: None,
                bind: None,
            },
            stage: Stage::Ping,
            pending: Vec::new(),
        };
        (conversation, command(PING))
    }

    /// Whether the listener has answered PING as Redis does: a confirmed
    /// Redis is worth waiting longer for.
    pub fn confirmed(&self) -> bool {
        matches!(self.stage, Stage::Details(_))
            || (self.stage == Stage::Done && self.answer.auth.is_confirmed())
    }

    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Bytes received from the listener.
    pub fn received(&mut self, bytes: &[u8]) -> Step {
        if self.stage == Stage::Done {
            return Step::Done;
        }
        let room = MAX_REPLY.saturating_sub(self.pending.len());
        let kept = bytes.get(..room).unwrap_or(bytes);
        self.pending.extend_from_slice(kept);
        let step = self.parse();
        if step == Step::Read && self.pending.len() >= MAX_REPLY {
            return self.give_up("a reply longer than 64 KiB");
        }
        step
    }

    /// The listener closed the connection (or it failed) after what was fed.
    pub fn closed(&mut self, why: &str) {
        if self.stage == Stage::Ping {
            let probed = self.answer.probed;
            self.answer.auth = if self.pending.is_empty() {
                RedisAuth::Unreachable(format!("{probed} {why} without answering PING"))
            } else {
                RedisAuth::Unreachable(format!("{probed} {why} in the middle of a reply to PING"))
            };
        }
        self.stage = Stage::Done;
    }

    /// No more time: what was learnt so far is the answer.
    pub fn timed_out(&mut self, waited: std::time::Duration) {
        if self.stage == Stage::Ping {
            let probed = self.answer.probed;
            self.answer.auth = RedisAuth::Unreachable(format!(
                "no answer to PING from {probed} within {} ms",
                waited.as_millis()
            ));
        }
        self.stage = Stage::Done;
    }

    /// The connection could not be made.
    pub fn not_connected(&mut self, why: &str) {
        let probed = self.answer.probed;
        self.answer.auth = RedisAuth::Unreachable(format!("cannot connect to {probed}: {why}"));
        self.stage = Stage::Done;
    }

    pub fn into_answer(self) -> RedisAnswer {
        self.answer
    }

    fn give_up(&mut self, what: &str) -> Step {
        if self.stage == Stage::Ping {
            self.answer.auth =
                RedisAuth::NotRedis(format!("its answer to PING is {what}, not Redis's"));
        }
        self.stage = Stage::Done;
        Step::Done
    }

    /// Parses every complete reply held.
    fn parse(&mut self) -> Step {
        loop {
            let (reply, used) = match parse_reply(&self.pending) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return Step::Read,
                Err(err) => {
                    // Bytes that are not RESP: not Redis, whatever the port.
                    if self.stage == Stage::Ping {
                        self.answer.auth = RedisAuth::NotRedis(format!(
                            "its answer to PING is not a RESP reply ({err})"
                        ));
                    }
                    self.stage = Stage::Done;
                    return Step::Done;
                }
            };
            self.pending.drain(..used.min(self.pending.len()));
            match self.stage {
                Stage::Ping => {
                    self.answer.auth = classify_ping(&reply);
                    if self.answer.auth != RedisAuth::Open {
                        self.stage = Stage::Done;
                        return Step::Done;
                    }
                    self.stage = Stage::Details(0);
                    // Anything after PONG before we asked is not Redis's way;
                    // it would be taken for the replies to come.
                    if !self.pending.is_empty() {
                        self.stage = Stage::Done;
                        return Step::Done;
                    }
                    let mut request = Vec::new();
                    for question in DETAILS {
                        request.extend_from_slice(&command(question));
                    }
                    return Step::Send(request);
                }
                Stage::Details(n_read) => {
                    self.record_detail(n_read, &reply);
                    if n_read + 1 == DETAILS.len() {
                        self.stage = Stage::Done;
                        return Step::Done;
                    }
                    self.stage = Stage::Details(n_read + 1);
                }
                Stage::Done => return Step::Done,
            }
        }
    }

    fn record_detail(&mut self, idx: usize, reply: &Reply) {
        match idx {
            0 => {
                if let Reply::Bulk(bytes) = reply {
                    let info = parse_info(&String::from_utf8_lossy(bytes));
                    self.answer.version = info.get("redis_version").cloned();
                    // Present and empty: started without a config file. Absent:
                    // unknown, which is not the same thing.
                    self.answer.config_file = info.get("config_file").cloned();
                }
            }
            // CONFIG may be renamed or ACL-restricted; then these stay unknown.
            1 => self.answer.protected_mode = config_value(reply).map(|v| v == "yes"),
            _ => self.answer.bind = config_value(reply),
        }
    }
}

/// How Redis treated an unauthenticated PING.
pub fn classify_ping(reply: &Reply) -> RedisAuth {
    match reply {
        Reply::Simple(text) if text == "PONG" => RedisAuth::Open,
        // RESP3 clients get PONG as a bulk string in some versions.
        Reply::Bulk(bytes) if bytes == b"PONG" => RedisAuth::Open,
        Reply::Error(text) => {
            let upper = text.to_ascii_uppercase();
            if upper.starts_with("NOAUTH")
                || upper.starts_with("WRONGPASS")
                || upper.contains("AUTH")
            {
                RedisAuth::Required
            } else if upper.starts_with("DENIED") {
                RedisAuth::ProtectedMode
            } else {
                RedisAuth::NotRedis(format!("PING answered -{}", truncate(text)))
            }
        }
        other => RedisAuth::NotRedis(format!("PING answered {}", truncate(&format!("{other:?}")))),
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(80).collect()
}

/// The value of a `CONFIG GET key` reply (RESP2 array or RESP3 map).
fn config_value(reply: &Reply) -> Option<String> {
    let value = match reply {
        Reply::Array(items) => items.get(1)?,
        Reply::Map(pairs) => &pairs.first()?.1,
        _ => return None,
    };
    match value {
        Reply::Bulk(value) => Some(String::from_utf8_lossy(value).into_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    fn probed() -> SocketAddr {
        "127.0.0.1:6379".parse().expect("address")
    }

    /// Runs a conversation over `replies` (one chunk per read) and renders
    /// what was sent and what was learnt.
    fn check(replies: &[&[u8]], end: Option<&str>, expect: Expect) {
        let (mut conversation, first) = Conversation::start(probed());
        let mut sent = vec![first];
        for chunk in replies {
            match conversation.received(chunk) {
                Step::Send(bytes) => sent.push(bytes),
                Step::Read | Step::Done => {}
            }
        }
        if let Some(why) = end {
            conversation.closed(why);
        } else if !conversation.is_done() {
            conversation.timed_out(std::time::Duration::from_millis(300));
        }
        let confirmed = conversation.confirmed();
        let answer = conversation.into_answer();
        let sent: Vec<String> = sent
            .iter()
            .map(|bytes| String::from_utf8_lossy(bytes).escape_debug().to_string())
            .collect();
        let text = format!(
            "sent: {}\nconfirmed: {confirmed}\nauth: {:?}\nversion: {:?}\nconfig_file: {:?}\nprotected_mode: {:?}\nbind: {:?}\n",
            sent.join(" | "),
            answer.auth,
            answer.version,
            answer.config_file,
            answer.protected_mode,
            answer.bind
        );
        expect.assert_eq(&text);
    }

    /// A RESP bulk string holding `text`.
    fn bulk(text: &str) -> Vec<u8> {
        format!("${}\r\n{text}\r\n", text.len()).into_bytes()
    }

    fn info() -> Vec<u8> {
        bulk("# Server\r\nredis_version:7.0.15\r\nconfig_file:\r\ntcp_port:6379\r\n")
    }

    #[test]
    fn an_open_redis_is_asked_its_details_in_one_write() {
        check(
            &[
                b"+PONG\r\n",
                &info(),
                b"*2\r\n$14\r\nprotected-mode\r\n$2\r\nno\r\n",
                b"*2\r\n$4\r\nbind\r\n$6\r\n* -::*\r\n",
            ],
            None,
            expect![[r#"
                sent: *1\r\n$4\r\nPING\r\n | *2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$14\r\nprotected-mode\r\n*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nbind\r\n
                confirmed: true
                auth: Open
                version: Some("7.0.15")
                config_file: Some("")
                protected_mode: Some(false)
                bind: Some("* -::*")
            "#]],
        );
    }

    #[test]
    fn replies_split_and_joined_anyhow_read_the_same() {
        check(
            &[
                b"+PO",
                b"NG\r\n",
                &[
                    info(),
                    b"*2\r\n$14\r\nprotected-mode\r\n$3\r\nyes\r\n*2\r".to_vec(),
                ]
                .concat(),
                b"\n$4\r\nbind\r\n$9\r\n127.0.0.1\r\n",
            ],
            None,
            expect![[r#"
                sent: *1\r\n$4\r\nPING\r\n | *2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$14\r\nprotected-mode\r\n*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nbind\r\n
                confirmed: true
                auth: Open
                version: Some("7.0.15")
                config_file: Some("")
                protected_mode: Some(true)
                bind: Some("127.0.0.1")
            "#]],
        );
    }

    #[test]
    fn config_refused_and_info_without_config_file_stay_unknown() {
        check(
            &[
                b"+PONG\r\n",
                &bulk("# Server\r\nredis_version:6.2.1\r\n"),
                b"-ERR unknown command 'CONFIG'\r\n",
                b"-ERR unknown command 'CONFIG'\r\n",
            ],
            None,
            expect![[r#"
                sent: *1\r\n$4\r\nPING\r\n | *2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$14\r\nprotected-mode\r\n*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nbind\r\n
                confirmed: true
                auth: Open
                version: Some("6.2.1")
                config_file: None
                protected_mode: None
                bind: None
            "#]],
        );
    }

    #[test]
    fn a_password_is_asked_nothing_more() {
        check(
            &[b"-NOAUTH Authentication required.\r\n"],
            None,
            expect![[r#"
                sent: *1\r\n$4\r\nPING\r\n
                confirmed: true
                auth: Required
                version: None
                config_file: None
                protected_mode: None
                bind: None
            "#]],
        );
    }

    #[test]
    fn an_answer_that_is_not_resp_is_not_redis() {
        check(
            &[b"HTTP/1.1 400 Bad Request\r\n\r\n"],
            None,
            expect![[r#"
                sent: *1\r\n$4\r\nPING\r\n
                confirmed: false
                auth: NotRedis("its answer to PING is not a RESP reply (unknown reply type byte 0x48 at offset 0)")
                version: None
                config_file: None
                protected_mode: None
                bind: None
            "#]],
        );
    }

    #[test]
    fn silence_and_a_closed_connection_are_unreachable_not_redis() {
        check(
            &[],
            None,
            expect![[r#"
                sent: *1\r\n$4\r\nPING\r\n
                confirmed: false
                auth: Unreachable("no answer to PING from 127.0.0.1:6379 within 300 ms")
                version: None
                config_file: None
                protected_mode: None
                bind: None
            "#]],
        );
        check(
            &[],
            Some("closed the connection"),
            expect![[r#"
                sent: *1\r\n$4\r\nPING\r\n
                confirmed: false
                auth: Unreachable("127.0.0.1:6379 closed the connection without answering PING")
                version: None
                config_file: None
                protected_mode: None
                bind: None
            "#]],
        );
    }

    #[test]
    fn an_endless_reply_is_cut_at_the_cap() {
        // A bulk string of 1 MiB announced, 64 KiB sent: never complete.
        let mut flood = b"$1048576\r\n".to_vec();
        flood.resize(MAX_REPLY + 10, b'x');
        check(
            &[&flood],
            None,
            expect![[r#"
                sent: *1\r\n$4\r\nPING\r\n
                confirmed: false
                auth: NotRedis("its answer to PING is a reply longer than 64 KiB, not Redis's")
                version: None
                config_file: None
                protected_mode: None
                bind: None
            "#]],
        );
    }

    #[test]
    fn every_command_sent_is_read_only() {
        // The invariant, by name: nothing that writes, and never requirepass.
        for question in READ_ONLY_COMMANDS {
            let name = String::from_utf8_lossy(question[0]).to_ascii_uppercase();
            match name.as_str() {
                "PING" => assert_eq!(question.len(), 1),
                "INFO" => assert_eq!(question, INFO_SERVER),
                "CONFIG" => {
                    assert_eq!(question.get(1), Some(&&b"GET"[..]));
                    assert!(
                        !question
                            .iter()
                            .any(|a| a.eq_ignore_ascii_case(b"requirepass"))
                    );
                }
                other => panic!("{other} is not a read-only question"),
            }
        }
        // And every byte a conversation sends is one of those commands.
        let allowed: Vec<Vec<u8>> = READ_ONLY_COMMANDS.iter().map(|c| command(c)).collect();
        let (mut conversation, first) = Conversation::start(probed());
        let Step::Send(details) = conversation.received(b"+PONG\r\n") else {
            panic!("a PONG is asked more");
        };
        let mut rest = [first, details].concat();
        while !rest.is_empty() {
            let known = allowed
                .iter()
                .find(|c| rest.starts_with(c))
                .unwrap_or_else(|| panic!("unknown bytes sent: {rest:?}"));
            rest.drain(..known.len());
        }
    }

    #[test]
    fn classifies_ping_answers() {
        assert_eq!(
            classify_ping(&Reply::Simple("PONG".into())),
            RedisAuth::Open
        );
        assert_eq!(
            classify_ping(&Reply::Error("NOAUTH Authentication required.".into())),
            RedisAuth::Required
        );
        assert_eq!(
            classify_ping(&Reply::Error(
                "DENIED Redis is running in protected mode because protected mode is enabled"
                    .into()
            )),
            RedisAuth::ProtectedMode
        );
        assert!(matches!(
            classify_ping(&Reply::Error("ERR unknown command".into())),
            RedisAuth::NotRedis(_)
        ));
    }
}
