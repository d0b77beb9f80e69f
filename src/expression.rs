//! The ECS cluster query language used by `memberOf` placement constraints:
//! `subject operator [argument]` clauses joined with `and`, `or`, `not` and
//! parentheses, e.g. `attribute:zone in [a, b] and not attribute:pool == spot`.
//!
//! Parsing is pure and total: any input yields an expression or an error
//! with the character offset where the expression stops making sense.

use std::fmt;

/// What a clause looks at on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `attribute:NAME`
    Attribute(String),
    /// `instanceId` / `ec2InstanceId`: the node's name.
    InstanceId,
    /// `agentConnected`: `true` while the node heartbeats.
    AgentConnected,
    /// `agentVersion`
    AgentVersion,
    /// `registeredAt`: RFC 3339 registration time.
    RegisteredAt,
    /// `runningTasksCount`
    RunningTasksCount,
    /// `task:group`: the group of tasks already on the node, `service:NAME`.
    TaskGroup,
}

/// Comparison of a clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Exists,
    NotExists,
    In,
    NotIn,
    Matches,
    NotMatches,
}

/// A compiled `=~`/`!~` pattern, anchored to the whole value. Compiled
/// once at parse time: the scheduler evaluates expressions per node.
#[derive(Debug, Clone)]
pub struct Pattern(regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Clause {
        subject: Subject,
        op: Op,
        args: Vec<String>,
        /// The compiled pattern of `=~` and `!~`.
        pattern: Option<Pattern>,
    },
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
}

/// Why an expression does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Character offset in the expression.
    pub at: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at character {})", self.message, self.at + 1)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Op(Op),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
}

fn lex(input: &str) -> Result<Vec<(usize, Tok)>, ParseError> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                i += 1;
                continue;
            }
            '(' => out.push((start, Tok::LParen)),
            ')' => out.push((start, Tok::RParen)),
            '[' => out.push((start, Tok::LBracket)),
            ']' => out.push((start, Tok::RBracket)),
            ',' => out.push((start, Tok::Comma)),
            '=' | '!' | '<' | '>' => {
                let next = chars.get(i + 1).copied();
                let (op, len) = match (c, next) {
                    ('=', Some('=')) => (Op::Eq, 2),
                    ('=', Some('~')) => (Op::Matches, 2),
                    ('!', Some('=')) => (Op::Ne, 2),
                    ('!', Some('~')) => (Op::NotMatches, 2),
                    ('<', Some('=')) => (Op::Le, 2),
                    ('>', Some('=')) => (Op::Ge, 2),
                    ('<', _) => (Op::Lt, 1),
                    ('>', _) => (Op::Gt, 1),
                    ('!', _) => {
                        // `!exists` / `!in`
                        let rest: String = chars[i + 1..]
                            .iter()
                            .take_while(|c| c.is_ascii_alphabetic())
                            .collect();
                        match rest.as_str() {
                            "exists" => (Op::NotExists, 7),
                            "in" => (Op::NotIn, 3),
                            _ => {
                                return Err(ParseError {
                                    at: start,
                                    message: "expected `!=`, `!~`, `!exists` or `!in`".into(),
                                })
                            }
                        }
                    }
                    _ => {
                        return Err(ParseError {
                            at: start,
                            message: "expected `==` or `=~`".into(),
                        })
                    }
                };
                out.push((start, Tok::Op(op)));
                i += len;
                continue;
            }
            '"' | '\'' => {
                let quote = c;
                let mut s = String::new();
                i += 1;
                while i < chars.len() && chars[i] != quote {
                    s.push(chars[i]);
                    i += 1;
                }
                if i == chars.len() {
                    return Err(ParseError {
                        at: start,
                        message: "unterminated quoted value".into(),
                    });
                }
                out.push((start, Tok::Word(s)));
            }
            _ => {
                let mut s = String::new();
                while i < chars.len()
                    && !matches!(
                        chars[i],
                        ' ' | '\t'
                            | '\n'
                            | '\r'
                            | '('
                            | ')'
                            | '['
                            | ']'
                            | ','
                            | '='
                            | '!'
                            | '<'
                            | '>'
                    )
                {
                    s.push(chars[i]);
                    i += 1;
                }
                out.push((start, Tok::Word(s)));
                continue;
            }
        }
        i += 1;
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    len: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }
    fn at(&self) -> usize {
        self.toks.get(self.pos).map_or(self.len, |(a, _)| *a)
    }
    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            at: self.at(),
            message: message.into(),
        })
    }
    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(k))
    }

    fn or(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut left = self.and(depth)?;
        while self.keyword("or") {
            self.pos += 1;
            let right = self.and(depth)?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut left = self.unary(depth)?;
        while self.keyword("and") {
            self.pos += 1;
            let right = self.unary(depth)?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, ParseError> {
        if depth > 32 {
            return self.err("expression is nested too deeply");
        }
        if self.keyword("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary(depth + 1)?)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let e = self.or(depth + 1)?;
            if self.peek() != Some(&Tok::RParen) {
                return self.err("expected `)`");
            }
            self.pos += 1;
            return Ok(e);
        }
        self.clause()
    }

    fn clause(&mut self) -> Result<Expr, ParseError> {
        let subject = match self.peek() {
            Some(Tok::Word(w)) => match parse_subject(w) {
                Some(s) => s,
                None => {
                    return self.err(format!(
                        "unknown subject `{w}`; expected attribute:NAME, instanceId, agentConnected, agentVersion, registeredAt, runningTasksCount or task:group"
                    ))
                }
            },
            _ => return self.err("expected a subject such as `attribute:zone`"),
        };
        self.pos += 1;
        let op = match self.peek() {
            Some(Tok::Op(op)) => *op,
            Some(Tok::Word(w)) if w == "exists" => Op::Exists,
            Some(Tok::Word(w)) if w == "in" => Op::In,
            _ => {
                return self
                    .err("expected an operator: == != > >= < <= exists !exists in !in =~ !~")
            }
        };
        self.pos += 1;
        let args = match op {
            Op::Exists | Op::NotExists => Vec::new(),
            Op::In | Op::NotIn => self.list()?,
            _ => vec![self.value()?],
        };
        let pattern = if matches!(op, Op::Matches | Op::NotMatches) {
            match regex::Regex::new(&format!("^(?:{})$", args[0])) {
                Ok(r) => Some(Pattern(r)),
                Err(e) => return self.err(format!("invalid pattern `{}`: {e}", args[0])),
            }
        } else {
            None
        };
        Ok(Expr::Clause {
            subject,
            op,
            args,
            pattern,
        })
    }

    fn value(&mut self) -> Result<String, ParseError> {
        match self.peek() {
            Some(Tok::Word(w)) if !is_keyword(w) => {
                let w = w.clone();
                self.pos += 1;
                Ok(w)
            }
            _ => self.err("expected a value"),
        }
    }

    fn list(&mut self) -> Result<Vec<String>, ParseError> {
        if self.peek() != Some(&Tok::LBracket) {
            return self.err("expected `[` starting a list of values");
        }
        self.pos += 1;
        let mut out = vec![self.value()?];
        loop {
            match self.peek() {
                Some(Tok::Comma) => {
                    self.pos += 1;
                    out.push(self.value()?);
                }
                Some(Tok::RBracket) => {
                    self.pos += 1;
                    return Ok(out);
                }
                _ => return self.err("expected `,` or `]`"),
            }
        }
    }
}

fn is_keyword(w: &str) -> bool {
    ["and", "or", "not"]
        .iter()
        .any(|k| w.eq_ignore_ascii_case(k))
}

fn parse_subject(w: &str) -> Option<Subject> {
    if let Some(name) = w.strip_prefix("attribute:") {
        return (!name.is_empty()).then(|| Subject::Attribute(name.to_string()));
    }
    Some(match w {
        "instanceId" | "ec2InstanceId" => Subject::InstanceId,
        "agentConnected" => Subject::AgentConnected,
        "agentVersion" => Subject::AgentVersion,
        "registeredAt" => Subject::RegisteredAt,
        "runningTasksCount" => Subject::RunningTasksCount,
        "task:group" => Subject::TaskGroup,
        _ => return None,
    })
}

/// Parse a `memberOf` expression.
pub fn parse(input: &str) -> Result<Expr, ParseError> {
    let toks = lex(input)?;
    let mut p = Parser {
        toks,
        pos: 0,
        len: input.chars().count(),
    };
    if p.toks.is_empty() {
        return p.err("expression is empty");
    }
    let e = p.or(0)?;
    if p.pos != p.toks.len() {
        return p.err("unexpected text after the expression; join clauses with `and` or `or`");
    }
    Ok(e)
}

/// What an expression can ask of a node.
pub trait NodeFacts {
    fn attribute(&self, name: &str) -> Option<&str>;
    fn instance_id(&self) -> &str;
    fn agent_connected(&self) -> bool;
    fn agent_version(&self) -> &str;
    fn registered_at(&self) -> &str;
    fn running_tasks(&self) -> usize;
    /// Whether a task of `group` (e.g. `service:web`) runs on the node.
    fn has_task_group(&self, group: &str) -> bool;
}

fn compare(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
        _ => a.cmp(b),
    }
}

impl Expr {
    /// Whether a node satisfies the expression.
    pub fn matches(&self, node: &dyn NodeFacts) -> bool {
        match self {
            Expr::And(a, b) => a.matches(node) && b.matches(node),
            Expr::Or(a, b) => a.matches(node) || b.matches(node),
            Expr::Not(a) => !a.matches(node),
            Expr::Clause {
                subject,
                op,
                args,
                pattern,
            } => {
                if let Subject::TaskGroup = subject {
                    let any = args.iter().any(|g| node.has_task_group(g));
                    return match op {
                        Op::Eq | Op::In => any,
                        Op::Ne | Op::NotIn => !any,
                        Op::Exists => node.running_tasks() > 0,
                        Op::NotExists => node.running_tasks() == 0,
                        _ => false,
                    };
                }
                let owned;
                let value: Option<&str> = match subject {
                    Subject::Attribute(n) => node.attribute(n),
                    Subject::InstanceId => Some(node.instance_id()),
                    Subject::AgentConnected => Some(if node.agent_connected() {
                        "true"
                    } else {
                        "false"
                    }),
                    Subject::AgentVersion => Some(node.agent_version()),
                    Subject::RegisteredAt => Some(node.registered_at()),
                    Subject::RunningTasksCount => {
                        owned = node.running_tasks().to_string();
                        Some(owned.as_str())
                    }
                    Subject::TaskGroup => unreachable!("handled above"),
                };
                match (op, value) {
                    (Op::Exists, v) => v.is_some(),
                    (Op::NotExists, v) => v.is_none(),
                    (Op::Ne, None) | (Op::NotIn, None) | (Op::NotMatches, None) => true,
                    (_, None) => false,
                    (Op::Eq, Some(v)) => v == args[0],
                    (Op::Ne, Some(v)) => v != args[0],
                    (Op::Gt, Some(v)) => compare(v, &args[0]).is_gt(),
                    (Op::Ge, Some(v)) => compare(v, &args[0]).is_ge(),
                    (Op::Lt, Some(v)) => compare(v, &args[0]).is_lt(),
                    (Op::Le, Some(v)) => compare(v, &args[0]).is_le(),
                    (Op::In, Some(v)) => args.iter().any(|a| a == v),
                    (Op::NotIn, Some(v)) => !args.iter().any(|a| a == v),
                    (Op::Matches, Some(v)) => pattern.as_ref().is_some_and(|p| p.0.is_match(v)),
                    (Op::NotMatches, Some(v)) => !pattern.as_ref().is_some_and(|p| p.0.is_match(v)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct N(BTreeMap<&'static str, &'static str>, usize);
    impl NodeFacts for N {
        fn attribute(&self, name: &str) -> Option<&str> {
            self.0.get(name).copied()
        }
        fn instance_id(&self) -> &str {
            "node-1"
        }
        fn agent_connected(&self) -> bool {
            true
        }
        fn agent_version(&self) -> &str {
            "0.1.0"
        }
        fn registered_at(&self) -> &str {
            "2026-01-01T00:00:00Z"
        }
        fn running_tasks(&self) -> usize {
            self.1
        }
        fn has_task_group(&self, g: &str) -> bool {
            g == "service:web"
        }
    }

    fn node() -> N {
        N(
            BTreeMap::from([
                ("zone", "a"),
                ("pool", "spot"),
                ("ecs.instance-type", "t3.large"),
            ]),
            2,
        )
    }

    #[test]
    fn evaluates_ecs_examples() {
        let n = node();
        for (e, want) in [
            ("attribute:zone in [a, b]", true),
            ("attribute:zone !in [a, b]", false),
            ("attribute:pool != spot", false),
            ("attribute:ecs.instance-type =~ t3.*", true),
            ("attribute:ecs.instance-type !~ t2.*", true),
            ("attribute:gpu exists", false),
            ("attribute:gpu !exists", true),
            ("not (attribute:zone == b) and runningTasksCount < 3", true),
            ("attribute:zone == b or task:group == service:web", true),
            ("instanceId == node-1", true),
            ("runningTasksCount >= 10", false),
        ] {
            assert_eq!(parse(e).unwrap().matches(&n), want, "{e}");
        }
    }

    #[test]
    fn errors_say_where() {
        let e = parse("attribute:zone in a, b").unwrap_err();
        assert_eq!(e.at, 18);
        assert!(e.message.contains('['));
        assert!(parse("").is_err());
        assert!(parse("zone == a")
            .unwrap_err()
            .message
            .contains("unknown subject"));
        assert!(parse("attribute:zone == a attribute:pool == b").is_err());
        assert!(parse("attribute:x =~ (").is_err());
        assert!(parse(&"(".repeat(100)).is_err());
    }
}
