//! SCIM attribute paths (RFC 7644 §3.5.2 PATCH `path`, §3.10 attribute notation) and the normal
//! form guardrails compare: attribute and sub-attribute, case-folded, the schema URN resolved.
//!
//! ```text
//! PATH      = attrPath / valuePath [subAttr]
//! attrPath  = [URI ":"] ATTRNAME *1subAttr
//! valuePath = attrPath "[" valFilter "]"
//! valFilter = attrExp / logExp / *1"not" "(" valFilter ")"
//! ```
//! A URN prefix of a schema scimgate knows (core User and Group, enterprise User) is resolved
//! exactly; any other URN is read both as `schema:attribute` and as a schema of its own, so a
//! name cannot hide behind an extension scimgate has not heard of. Whatever does not parse with
//! certainty is refused (`InvalidPath`), never read as "no attribute".

use std::fmt;

/// The schemas whose URNs are resolved exactly; members of their objects are attributes.
const KNOWN_SCHEMAS: [&str; 3] = [
    "urn:ietf:params:scim:schemas:core:2.0:User",
    "urn:ietf:params:scim:schemas:core:2.0:Group",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
];

/// Why a path (or a body member name read as one) cannot be judged. For logs only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid attribute path: {0}")]
pub struct InvalidPath(pub &'static str);

/// An attribute and optionally one of its sub-attributes, lowercase (RFC 7643 §2.1: attribute
/// names are case-insensitive). `*` stands for every attribute (a whole schema removed).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttrPath {
    attr: Box<str>,
    sub: Option<Box<str>>,
}

impl AttrPath {
    pub(crate) fn new(attr: &str, sub: Option<&str>) -> Self {
        Self {
            attr: attr.to_ascii_lowercase().into(),
            sub: sub.map(|s| s.to_ascii_lowercase().into()),
        }
    }

    /// Every attribute: what removing a whole schema extension touches.
    pub(crate) fn any() -> Self {
        Self {
            attr: "*".into(),
            sub: None,
        }
    }

    pub fn attr(&self) -> &str {
        &self.attr
    }

    pub fn sub(&self) -> Option<&str> {
        self.sub.as_deref()
    }

    /// Whether this names `attr` itself (no sub-attribute).
    pub(crate) fn is(&self, attr: &str) -> bool {
        self.sub.is_none() && self.attr.eq_ignore_ascii_case(attr)
    }

    pub(crate) fn with_sub(&self, sub: &str) -> Self {
        Self::new(&self.attr, Some(sub))
    }

    /// Whether a write to `touched` may change what `self` (a denied attribute) names: the same
    /// attribute, a sub-attribute of a denied attribute (`name` covers `name.givenname`), or the
    /// whole attribute when a sub-attribute is denied (`emails.value` covers a write to `emails`:
    /// removing or replacing the whole list changes its values). `*` is touched by everything.
    pub fn covers(&self, touched: &AttrPath) -> bool {
        if &*touched.attr == "*" {
            return true;
        }
        if self.attr != touched.attr {
            return false;
        }
        match (&self.sub, &touched.sub) {
            (None, _) | (Some(_), None) => true,
            (Some(denied), Some(sub)) => denied == sub,
        }
    }

    /// A configured attribute name (`deny_attributes`): an attrPath, optionally URN-prefixed,
    /// without a filter, naming an attribute rather than a whole schema.
    pub fn parse_name(text: &str) -> Result<Self, InvalidPath> {
        match parse_path(text)? {
            Target::Schema => Err(InvalidPath(
                "names a whole schema; list its attributes instead",
            )),
            Target::Attribute {
                filter: Some(_), ..
            } => Err(InvalidPath(
                "a filter selects values; name the attribute without it",
            )),
            Target::Attribute { path, .. } => Ok(path),
        }
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.attr)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// What a PATCH `path` (or a body member name) addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A known schema as a whole (`urn:…:enterprise:2.0:User`): its value's members are
    /// attributes, and removing it removes all of them.
    Schema,
    Attribute {
        path: AttrPath,
        /// `Some(n)`: a valuePath filter with `n` comparisons selects the values.
        filter: Option<u32>,
        /// The name had an unknown URN prefix, which may itself be a schema: judge an object
        /// value's members as attributes too.
        maybe_schema: bool,
    },
}

/// Parses a PATCH `path` per the grammar in the module docs.
pub fn parse_path(text: &str) -> Result<Target, InvalidPath> {
    let (rest, maybe_schema) = if starts_with_ci(text, "urn:") {
        let head = text.find('[').map_or(text, |b| &text[..b]);
        match KNOWN_SCHEMAS.iter().find(|k| starts_with_ci(head, k)) {
            Some(k) if head.len() == k.len() => {
                return if head.len() == text.len() {
                    Ok(Target::Schema)
                } else {
                    Err(InvalidPath("a filter on a schema"))
                };
            }
            Some(k) if head.as_bytes()[k.len()] == b':' => (&text[k.len() + 1..], false),
            _ => {
                let colon = head.rfind(':').ok_or(InvalidPath("URN"))?;
                let urn = &head[..colon];
                let well_formed = urn.split(':').count() >= 3
                    && urn.split(':').all(|s| !s.is_empty())
                    && urn.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'.' | b'_')
                    });
                if !well_formed {
                    return Err(InvalidPath("URN"));
                }
                (&text[colon + 1..], true)
            }
        }
    } else {
        (text, false)
    };
    let (attr, after) = split_name(rest);
    if !is_attr_name(attr) {
        return Err(InvalidPath("attribute name"));
    }
    let (filter, after) = match after.strip_prefix('[') {
        Some(inside) => {
            let (terms, used) = filter(inside)?;
            (Some(terms), &inside[used..])
        }
        None => (None, after),
    };
    let sub = match after.strip_prefix('.') {
        Some(sub) if is_sub_name(sub) => Some(sub),
        Some(_) => return Err(InvalidPath("sub-attribute name")),
        None if after.is_empty() => None,
        None => return Err(InvalidPath("trailing characters")),
    };
    Ok(Target::Attribute {
        path: AttrPath::new(attr, sub),
        filter,
        maybe_schema,
    })
}

/// The leading run of name characters, and what follows.
fn split_name(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .unwrap_or(text.len());
    text.split_at(end)
}

/// RFC 7643 §2.1 ATTRNAME: `ALPHA *(ALPHA / DIGIT / "-" / "_")`.
pub(crate) fn is_attr_name(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A sub-attribute name: ATTRNAME, or `$ref` (RFC 7643 §2.3.7).
pub(crate) fn is_sub_name(text: &str) -> bool {
    is_attr_name(text) || text.eq_ignore_ascii_case("$ref")
}

fn starts_with_ci(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// One token of a valFilter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'t> {
    Open,
    Close,
    Word(&'t str),
    Str,
}

/// Reads a valFilter up to its closing `]`: the number of comparisons, and the bytes consumed
/// (the `]` included). Strings are JSON strings, so a `]` inside one does not end the filter.
fn filter(text: &str) -> Result<(u32, usize), InvalidPath> {
    let (tokens, used) = tokens(text)?;
    let mut parser = Filter {
        tokens: &tokens,
        at: 0,
        terms: 0,
    };
    parser.or()?;
    if parser.at != tokens.len() {
        return Err(InvalidPath("filter"));
    }
    Ok((parser.terms, used))
}

fn tokens(text: &str) -> Result<(Vec<Token<'_>>, usize), InvalidPath> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    // Words and strings must be apart: `eq"x"` or `"x"and` is not the grammar's SP.
    let mut spaced = true;
    while let Some(&b) = bytes.get(i) {
        let start = i;
        let token = match b {
            b' ' => {
                i += 1;
                spaced = true;
                continue;
            }
            b']' => return Ok((out, i + 1)),
            b'(' => Token::Open,
            b')' => Token::Close,
            b'"' => {
                i += 1;
                while let Some(&c) = bytes.get(i) {
                    match c {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                let literal = text
                    .get(start..=i)
                    .ok_or(InvalidPath("unterminated string"))?;
                serde_json::from_str::<String>(literal).map_err(|_| InvalidPath("string"))?;
                Token::Str
            }
            _ => {
                let end = text[i..]
                    .find([' ', '(', ')', '[', ']', '"'])
                    .map_or(text.len(), |n| i + n);
                let word = &text[i..end];
                if word.is_empty()
                    || word.chars().any(char::is_control)
                    || bytes.get(end) == Some(&b'[')
                {
                    return Err(InvalidPath("filter"));
                }
                i = end - 1;
                Token::Word(word)
            }
        };
        let wordlike = matches!(token, Token::Word(_) | Token::Str);
        let previous_wordlike = matches!(out.last(), Some(Token::Word(_) | Token::Str));
        if wordlike && previous_wordlike && !spaced {
            return Err(InvalidPath("filter tokens not separated"));
        }
        out.push(token);
        spaced = false;
        i += 1;
    }
    Err(InvalidPath("filter without ]"))
}

/// Recursive descent over a valFilter's tokens; `and` binds tighter than `or` (RFC 7644
/// §3.4.2.2), which matters only for certainty here: what is selected is the backend's call.
struct Filter<'t> {
    tokens: &'t [Token<'t>],
    at: usize,
    terms: u32,
}

const COMPARE: [&str; 9] = ["eq", "ne", "co", "sw", "ew", "gt", "lt", "ge", "le"];

impl<'t> Filter<'t> {
    fn next(&mut self) -> Option<Token<'t>> {
        let token = self.tokens.get(self.at).copied();
        self.at += 1;
        token
    }

    fn keyword(&mut self, word: &str) -> bool {
        let hit = matches!(self.tokens.get(self.at), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word));
        if hit {
            self.at += 1;
        }
        hit
    }

    fn or(&mut self) -> Result<(), InvalidPath> {
        self.and()?;
        while self.keyword("or") {
            self.and()?;
        }
        Ok(())
    }

    fn and(&mut self) -> Result<(), InvalidPath> {
        self.unary()?;
        while self.keyword("and") {
            self.unary()?;
        }
        Ok(())
    }

    fn unary(&mut self) -> Result<(), InvalidPath> {
        let negated =
            matches!(self.tokens.get(self.at + 1), Some(Token::Open)) && self.keyword("not");
        if negated || self.tokens.get(self.at) == Some(&Token::Open) {
            if !negated {
                self.at += 1;
            } else if self.next() != Some(Token::Open) {
                return Err(InvalidPath("filter"));
            }
            self.or()?;
            return match self.next() {
                Some(Token::Close) => Ok(()),
                _ => Err(InvalidPath("filter: unbalanced parentheses")),
            };
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<(), InvalidPath> {
        let Some(Token::Word(attr)) = self.next() else {
            return Err(InvalidPath("filter: attribute expected"));
        };
        match parse_path(attr)? {
            Target::Attribute { filter: None, .. } => {}
            Target::Attribute { .. } | Target::Schema => {
                return Err(InvalidPath("filter: attribute"));
            }
        }
        let Some(Token::Word(op)) = self.next() else {
            return Err(InvalidPath("filter: operator expected"));
        };
        self.terms = self.terms.saturating_add(1);
        if op.eq_ignore_ascii_case("pr") {
            return Ok(());
        }
        if !COMPARE.iter().any(|c| c.eq_ignore_ascii_case(op)) {
            return Err(InvalidPath("filter: unknown operator"));
        }
        match self.next() {
            Some(Token::Str) => Ok(()),
            Some(Token::Word(w))
                if ["true", "false", "null"]
                    .iter()
                    .any(|l| l.eq_ignore_ascii_case(w))
                    || serde_json::from_str::<serde_json::Number>(w).is_ok() =>
            {
                Ok(())
            }
            _ => Err(InvalidPath("filter: value")),
        }
    }
}

#[cfg(test)]
mod tests;
