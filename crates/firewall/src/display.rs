//! The model rendered as nft-like text, for evidence in findings and
//! problems.

use std::fmt;

use crate::ir::*;

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Payload { protocol, field } => write!(f, "{protocol} {field}"),
            Field::Meta(key) => write!(f, "meta {key}"),
            Field::Ct(key) => write!(f, "ct {key}"),
            Field::Concat(parts) => write_joined(f, parts, " . "),
            Field::Other(text) => f.write_str(text),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Number(n) => write!(f, "{n}"),
            Value::Text(text) => f.write_str(text),
            Value::Prefix { addr, len } => write!(f, "{addr}/{len}"),
            Value::Range(low, high) => write!(f, "{low}-{high}"),
            Value::Set(items) => {
                f.write_str("{ ")?;
                for (idx, item) in items.iter().enumerate() {
                    if idx > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str(" }")
            }
            Value::SetRef(name) => write!(f, "@{name}"),
            Value::Concat(parts) => write_joined(f, parts, " . "),
            Value::Other(text) => f.write_str(text),
        }
    }
}

fn write_joined(f: &mut fmt::Formatter<'_>, items: &[impl fmt::Display], sep: &str) -> fmt::Result {
    for (idx, item) in items.iter().enumerate() {
        if idx > 0 {
            f.write_str(sep)?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Match { field, op, value } => {
                let op = match op {
                    Op::Eq | Op::In => "",
                    Op::Ne => "!= ",
                    Op::Lt => "< ",
                    Op::Gt => "> ",
                    Op::Le => "<= ",
                    Op::Ge => ">= ",
                    Op::Other => "? ",
                };
                write!(f, "{field} {op}{value}")
            }
            Condition::Opaque(text) => f.write_str(text),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Reject => f.write_str("reject"),
            Verdict::Return => f.write_str("return"),
            Verdict::Continue => f.write_str("continue"),
            Verdict::Jump(chain) => write!(f, "jump {chain}"),
            Verdict::Goto(chain) => write!(f, "goto {chain}"),
            Verdict::Map(map) => write!(f, "{map}"),
            Verdict::Dnat(target) => write!(f, "dnat to {}", target.text),
            Verdict::Other(text) => f.write_str(text),
        }
    }
}

impl fmt::Display for VerdictMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} vmap ", self.key)?;
        match &self.elements {
            MapElements::Named(name) => write!(f, "@{name}"),
            MapElements::Inline(elements) => {
                f.write_str("{ ")?;
                write_joined(f, elements, ", ")?;
                f.write_str(" }")
            }
        }
    }
}

impl fmt::Display for MapElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} : {}", self.key, self.verdict)
    }
}
