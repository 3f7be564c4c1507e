//! Kubernetes-style label selectors (`role=web,region in (eu-1,eu-2),!canary`)
//! used to choose which hosts of the fleet an experiment may touch.
//!
//! The syntax follows Kubernetes' set-based selectors, with one addition:
//! because a bare `role=` is almost always a typo, an empty value must be
//! written explicitly as `role=""`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// Longest label name or value Kubernetes allows.
const MAX_NAME_LEN: usize = 63;
/// Longest DNS subdomain allowed as a key prefix.
const MAX_PREFIX_LEN: usize = 253;

/// A parsed label selector: a host matches when every requirement holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Selector {
    // Kept sorted and deduplicated so that equal selectors compare equal and
    // `Display` is canonical regardless of how the operator wrote them.
    requirements: Vec<Requirement>,
}

/// One comma-separated clause of a selector, such as `region in (eu-1,eu-2)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirement {
    key: String,
    operator: Operator,
}

/// The test a [`Requirement`] applies to the value of its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    /// `key=value` or `key==value`: the label is present with this value.
    Equals(String),
    /// `key!=value`: the label is absent or has another value.
    NotEquals(String),
    /// `key in (a,b)`: the label is present with one of these values.
    In(BTreeSet<String>),
    /// `key notin (a,b)`: the label is absent or has none of these values.
    NotIn(BTreeSet<String>),
    /// `key`: the label is present, with any value.
    Exists,
    /// `!key`: the label is absent.
    DoesNotExist,
}

/// Why a selector string could not be parsed, with the position to point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError {
    /// 1-based character (not byte) column where the problem was found.
    pub column: usize,
    /// What was expected and what was found instead.
    pub message: String,
    input: String,
}

impl Selector {
    /// The empty selector, which matches every host.
    pub fn everything() -> Selector {
        Selector::default()
    }

    /// Whether this is the empty selector (matches every host).
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether a host with these labels satisfies every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl Requirement {
    /// The label key this requirement tests.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The test applied to the key's value.
    pub fn operator(&self) -> &Operator {
        &self.operator
    }

    /// Whether a host with these labels satisfies this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        // As in Kubernetes, the negative operators also match hosts that do
        // not carry the key at all.
        match &self.operator {
            Operator::Equals(v) => value == Some(v),
            Operator::NotEquals(v) => value != Some(v),
            Operator::In(set) => value.is_some_and(|v| set.contains(v)),
            Operator::NotIn(set) => !value.is_some_and(|v| set.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(input: &str) -> Result<Selector, SelectorError> {
        let tokens = lex(input)?;
        let mut parser = Parser {
            tokens,
            pos: 0,
            input,
        };
        let mut requirements = parser.parse()?;
        requirements.sort();
        requirements.dedup();
        Ok(Selector { requirements })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        match &self.operator {
            Operator::Equals(v) => write!(f, "{key}={}", DisplayValue(v)),
            Operator::NotEquals(v) => write!(f, "{key}!={}", DisplayValue(v)),
            Operator::In(set) => write!(f, "{key} in ({})", DisplaySet(set)),
            Operator::NotIn(set) => write!(f, "{key} notin ({})", DisplaySet(set)),
            Operator::Exists => f.write_str(key),
            Operator::DoesNotExist => write!(f, "!{key}"),
        }
    }
}

/// Writes a value so that it parses back: the empty value needs quotes.
struct DisplayValue<'a>(&'a str);

impl fmt::Display for DisplayValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str(self.0)
        }
    }
}

/// Writes set members comma-separated, in sorted order.
struct DisplaySet<'a>(&'a BTreeSet<String>);

impl fmt::Display for DisplaySet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", DisplayValue(v))?;
        }
        Ok(())
    }
}

impl SelectorError {
    /// The selector text that failed to parse.
    pub fn input(&self) -> &str {
        &self.input
    }
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Tabs or newlines in the echoed input would shift the caret, so show
        // every whitespace character as a single space.
        let echoed: String = self
            .input
            .chars()
            .map(|c| if c.is_whitespace() { ' ' } else { c })
            .collect();
        let pad = " ".repeat(self.column.saturating_sub(1));
        write!(
            f,
            "invalid selector at column {}: {}\n  {echoed}\n  {pad}^",
            self.column, self.message
        )
    }
}

impl std::error::Error for SelectorError {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A run of characters that are neither whitespace nor punctuation;
    /// validated later so errors can say which character is wrong.
    Word(String),
    Eq,
    DoubleEq,
    NotEq,
    Bang,
    LParen,
    RParen,
    Comma,
    /// `""`, the only way to write an empty value.
    EmptyValue,
    End,
}

impl Tok {
    /// How the token is named in "found …" messages.
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("'{w}'"),
            Tok::Eq => "'='".into(),
            Tok::DoubleEq => "'=='".into(),
            Tok::NotEq => "'!='".into(),
            Tok::Bang => "'!'".into(),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::EmptyValue => "'\"\"'".into(),
            Tok::End => "end of selector".into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    column: usize,
}

fn is_punctuation(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '"')
}

fn lex(input: &str) -> Result<Vec<Token>, SelectorError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        let next = chars.get(i + 1).copied();
        let (tok, len) = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            ',' => (Tok::Comma, 1),
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            '=' if next == Some('=') => (Tok::DoubleEq, 2),
            '=' => (Tok::Eq, 1),
            '!' if next == Some('=') => (Tok::NotEq, 2),
            '!' => (Tok::Bang, 1),
            '"' if next == Some('"') => (Tok::EmptyValue, 2),
            '"' => {
                return Err(SelectorError {
                    column,
                    message: "expected a value without quotes, found '\"' \
                              (only \"\" is allowed, for the empty value)"
                        .into(),
                    input: input.into(),
                });
            }
            _ => {
                let len = chars[i..]
                    .iter()
                    .take_while(|c| !c.is_whitespace() && !is_punctuation(**c))
                    .count();
                (Tok::Word(chars[i..i + len].iter().collect()), len)
            }
        };
        tokens.push(Token { tok, column });
        i += len;
    }
    tokens.push(Token {
        tok: Tok::End,
        column: chars.len() + 1,
    });
    Ok(tokens)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    input: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos]
    }

    fn next(&mut self) -> Token {
        let token = self.tokens[self.pos].clone();
        // `End` is sticky so callers never run off the token list.
        if token.tok != Tok::End {
            self.pos += 1;
        }
        token
    }

    fn error(&self, column: usize, message: impl Into<String>) -> SelectorError {
        SelectorError {
            column,
            message: message.into(),
            input: self.input.into(),
        }
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        if self.peek().tok == Tok::End {
            return Ok(requirements);
        }
        loop {
            let requirement = self.requirement()?;
            let token = self.next();
            match token.tok {
                Tok::End => {
                    requirements.push(requirement);
                    return Ok(requirements);
                }
                Tok::Comma if self.peek().tok == Tok::End => {
                    return Err(self.error(
                        self.peek().column,
                        "expected a requirement after ',', found end of selector",
                    ));
                }
                Tok::Comma => {}
                ref other => {
                    let mut message = format!(
                        "expected ',' or end of selector, found {}",
                        other.describe()
                    );
                    // `!role=web` is a likely mix-up of `!role` and `role!=web`.
                    let is_operator = matches!(other, Tok::Eq | Tok::DoubleEq | Tok::NotEq)
                        || matches!(other, Tok::Word(w) if is_keyword(w));
                    if requirement.operator == Operator::DoesNotExist && is_operator {
                        message += &format!(
                            " ('!{0}' only checks that the label is absent; \
                             to compare its value write '{0}!=value')",
                            requirement.key
                        );
                    }
                    return Err(self.error(token.column, message));
                }
            }
            requirements.push(requirement);
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if self.peek().tok == Tok::Bang {
            self.next();
            let key = self.key("after '!'")?;
            return Ok(Requirement {
                key,
                operator: Operator::DoesNotExist,
            });
        }
        let key = self.key("")?;
        let operator = self.operator(&key)?;
        Ok(Requirement { key, operator })
    }

    fn key(&mut self, context: &str) -> Result<String, SelectorError> {
        let token = self.next();
        let sep = if context.is_empty() { "" } else { " " };
        match token.tok {
            Tok::Word(w) if is_keyword(&w) => Err(self.error(
                token.column,
                format!("expected a label key{sep}{context}, found keyword '{w}'"),
            )),
            Tok::Word(w) => match validate_key(&w) {
                Ok(()) => Ok(w),
                Err((offset, message)) => Err(self.error(token.column + offset, message)),
            },
            other => Err(self.error(
                token.column,
                format!(
                    "expected a label key{sep}{context}, found {}",
                    other.describe()
                ),
            )),
        }
    }

    fn operator(&mut self, key: &str) -> Result<Operator, SelectorError> {
        let token = self.peek().clone();
        match token.tok {
            Tok::Comma | Tok::End => Ok(Operator::Exists),
            Tok::Eq | Tok::DoubleEq => {
                self.next();
                let op = if token.tok == Tok::Eq { "'='" } else { "'=='" };
                Ok(Operator::Equals(self.value(&format!("after {op}"))?))
            }
            Tok::NotEq => {
                self.next();
                Ok(Operator::NotEquals(self.value("after '!='")?))
            }
            Tok::Word(ref w) if w == "in" => {
                self.next();
                Ok(Operator::In(self.set("in")?))
            }
            Tok::Word(ref w) if w == "notin" => {
                self.next();
                Ok(Operator::NotIn(self.set("notin")?))
            }
            other => Err(self.error(
                token.column,
                format!(
                    "expected '=', '==', '!=', 'in', 'notin', ',' or end of selector \
                     after key '{key}', found {}",
                    other.describe()
                ),
            )),
        }
    }

    /// A single value; `context` completes "expected a value …".
    fn value(&mut self, context: &str) -> Result<String, SelectorError> {
        let token = self.next();
        match token.tok {
            Tok::EmptyValue => Ok(String::new()),
            // Values are contextual, so `tier=in` is fine even though `in`
            // cannot be a key.
            Tok::Word(w) => match validate_value(&w) {
                Ok(()) => Ok(w),
                Err((offset, message)) => Err(self.error(token.column + offset, message)),
            },
            other => {
                let mut message = format!("expected a value {context}, found {}", other.describe());
                if matches!(other, Tok::Comma | Tok::End) {
                    message.push_str(" (write \"\" for the empty value)");
                }
                Err(self.error(token.column, message))
            }
        }
    }

    fn set(&mut self, keyword: &str) -> Result<BTreeSet<String>, SelectorError> {
        let open = self.next();
        if open.tok != Tok::LParen {
            return Err(self.error(
                open.column,
                format!(
                    "expected '(' after '{keyword}', found {}",
                    open.tok.describe()
                ),
            ));
        }
        let unclosed = format!("unclosed '(' opened at column {}", open.column);
        let mut values = BTreeSet::new();
        if self.peek().tok == Tok::RParen {
            return Err(self.error(
                self.peek().column,
                format!("expected at least one value in '{keyword} (…)', found ')'"),
            ));
        }
        loop {
            if self.peek().tok == Tok::End {
                return Err(self.error(
                    self.peek().column,
                    format!("{unclosed}: expected a value, found end of selector"),
                ));
            }
            values.insert(self.value(&format!("in '{keyword} (…)'"))?);
            let token = self.next();
            match token.tok {
                Tok::Comma => {}
                Tok::RParen => return Ok(values),
                Tok::End => {
                    return Err(self.error(
                        token.column,
                        format!("{unclosed}: expected ',' or ')', found end of selector"),
                    ));
                }
                other => {
                    return Err(self.error(
                        token.column,
                        format!("expected ',' or ')', found {}", other.describe()),
                    ));
                }
            }
        }
    }
}

/// `in` and `notin` are operators, so (as in Kubernetes) they cannot be keys.
fn is_keyword(word: &str) -> bool {
    word == "in" || word == "notin"
}

/// Problem found while validating a word: 0-based char offset and message.
type Invalid = (usize, String);

/// Checks `[prefix/]name` and reports the offset of the first bad character.
fn validate_key(key: &str) -> Result<(), Invalid> {
    let Some((prefix, name)) = key.split_once('/') else {
        return validate_name(key, "label key", 0);
    };
    let name_offset = prefix.chars().count() + 1;
    if prefix.is_empty() {
        return Err((
            0,
            format!("label key \"{key}\" has an empty prefix before '/'"),
        ));
    }
    validate_prefix(prefix, key)?;
    if name.is_empty() {
        return Err((
            name_offset,
            format!("label key \"{key}\" has an empty name after '/'"),
        ));
    }
    if let Some(i) = name.chars().position(|c| c == '/') {
        return Err((
            name_offset + i,
            format!("label key \"{key}\" has more than one '/'"),
        ));
    }
    validate_name(name, "label key name", name_offset)
}

/// Checks a key prefix, which must be a DNS subdomain such as `example.com`.
fn validate_prefix(prefix: &str, key: &str) -> Result<(), Invalid> {
    let len = prefix.chars().count();
    if len > MAX_PREFIX_LEN {
        return Err((
            0,
            format!("label key prefix \"{prefix}\" is longer than {MAX_PREFIX_LEN} characters"),
        ));
    }
    let mut offset = 0;
    for part in prefix.split('.') {
        let chars: Vec<char> = part.chars().collect();
        let what = format!("label key prefix of \"{key}\"");
        if chars.is_empty() {
            return Err((
                offset,
                format!("{what}: expected a letter or digit, found '.'"),
            ));
        }
        if let Some(i) = chars
            .iter()
            .position(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err((
                offset + i,
                format!(
                    "{what}: expected lowercase letters, digits, '-' or '.', found '{}'",
                    chars[i]
                ),
            ));
        }
        for i in [0, chars.len() - 1] {
            if !chars[i].is_ascii_alphanumeric() {
                return Err((
                    offset + i,
                    format!(
                        "{what}: each dot-separated part must start and end with a \
                         letter or digit, found '{}'",
                        chars[i]
                    ),
                ));
            }
        }
        if chars.len() > MAX_NAME_LEN {
            return Err((
                offset,
                format!("{what}: part \"{part}\" is longer than {MAX_NAME_LEN} characters"),
            ));
        }
        offset += chars.len() + 1;
    }
    Ok(())
}

/// Checks a label value; unlike names, values may be empty.
fn validate_value(value: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        return Ok(());
    }
    validate_name(value, "label value", 0)
}

/// Checks `[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?` of at most 63 chars.
fn validate_name(name: &str, what: &str, offset: usize) -> Result<(), Invalid> {
    let chars: Vec<char> = name.chars().collect();
    if let Some(i) = chars
        .iter()
        .position(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err((
            offset + i,
            format!(
                "invalid {what} \"{name}\": expected letters, digits, '-', '_' or '.', found '{}'",
                chars[i]
            ),
        ));
    }
    // Callers never pass an empty name, but guard so indexing cannot panic.
    let Some(last) = chars.len().checked_sub(1) else {
        return Err((offset, format!("{what} is empty")));
    };
    for i in [0, last] {
        if !chars[i].is_ascii_alphanumeric() {
            return Err((
                offset + i,
                format!(
                    "invalid {what} \"{name}\": must start and end with a letter or digit, \
                     found '{}'",
                    chars[i]
                ),
            ));
        }
    }
    if chars.len() > MAX_NAME_LEN {
        return Err((
            offset,
            format!(
                "{what} \"{name}\" is longer than {MAX_NAME_LEN} characters ({})",
                chars.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
