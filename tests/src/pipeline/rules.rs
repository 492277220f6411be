//! `rules:if` expressions, the subset GitLab documents: variables (`$NAME`, true when defined
//! and not empty), `"string"`/`'string'` literals, `null`, `==` and `!=`, `=~` and `!~` with a
//! `/regex/` (flag `i`; or a variable holding `/regex/`), `&&` (binding tighter than `||`),
//! and parentheses.
//!
//! Semantics follow GitLab's lexemes: an undefined variable is `null`, which differs from
//! the empty string; `=~` matches anywhere in the text (an undefined variable is matched as
//! ""), with RE2 syntax (GitLab's `UntrustedRegexp`; the `regex` crate is RE2-like).
//!
//! No crate implements GitLab's expression language, so this is a small recursive-descent
//! parser over a tokenizer.

use regex::Regex;

/// A parsed `rules:if` expression.
#[derive(Debug, Clone)]
pub struct Expr(Node);

#[derive(Debug, Clone)]
enum Node {
    Or(Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    /// A lone operand: true when its value is present and not empty.
    Truthy(Operand),
    Equals(Operand, Operand, bool),
    Matches(Operand, Operand, bool),
}

#[derive(Debug, Clone)]
enum Operand {
    Variable(String),
    Str(String),
    Null,
    Regex(Regex),
}

#[derive(Debug, Clone)]
enum Token {
    Variable(String),
    Str(String),
    Null,
    Regex(Regex),
    Eq,
    Ne,
    Match,
    NoMatch,
    And,
    Or,
    Open,
    Close,
}

/// A regex from its `/pattern/flags` text; `\/` in the pattern is a `/`.
fn regex_from(pattern: &str, flags: &str) -> Result<Regex, String> {
    let mut prefix = String::new();
    for flag in flags.chars() {
        match flag {
            'i' => prefix.push_str("(?i)"),
            other => return Err(format!("regex flag {other:?} is not supported (only i)")),
        }
    }
    let pattern = pattern.replace("\\/", "/");
    Regex::new(&format!("{prefix}{pattern}")).map_err(|e| format!("bad regex /{pattern}/: {e}"))
}

/// `/pattern/flags` as a variable may hold it.
fn regex_literal(text: &str) -> Option<Result<Regex, String>> {
    let rest = text.strip_prefix('/')?;
    let end = rest.rfind('/')?;
    Some(regex_from(&rest[..end], &rest[end + 1..]))
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let at = i + 1;
        match c {
            ' ' | '\t' | '\n' => i += 1,
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            '=' | '!' => {
                let token = match (c, next) {
                    ('=', Some('=')) => Token::Eq,
                    ('!', Some('=')) => Token::Ne,
                    ('=', Some('~')) => Token::Match,
                    ('!', Some('~')) => Token::NoMatch,
                    _ => return Err(format!("unknown operator at column {at}")),
                };
                out.push(token);
                i += 2;
            }
            '&' | '|' => {
                if next != Some(c) {
                    return Err(format!("expected {c}{c} at column {at}"));
                }
                out.push(if c == '&' { Token::And } else { Token::Or });
                i += 2;
            }
            '"' | '\'' => {
                let len = chars[i + 1..]
                    .iter()
                    .position(|x| *x == c)
                    .ok_or_else(|| format!("unterminated string at column {at}"))?;
                out.push(Token::Str(chars[i + 1..i + 1 + len].iter().collect()));
                i += len + 2;
            }
            '/' => {
                let mut j = i + 1;
                while j < chars.len() && chars[j] != '/' {
                    j += if chars[j] == '\\' { 2 } else { 1 };
                }
                if j >= chars.len() {
                    return Err(format!("unterminated regex at column {at}"));
                }
                let pattern: String = chars[i + 1..j].iter().collect();
                let flags_len = chars[j + 1..]
                    .iter()
                    .take_while(|x| x.is_alphabetic())
                    .count();
                let flags: String = chars[j + 1..j + 1 + flags_len].iter().collect();
                out.push(Token::Regex(regex_from(&pattern, &flags)?));
                i = j + 1 + flags_len;
            }
            '$' => {
                let braced = next == Some('{');
                let start = if braced { i + 2 } else { i + 1 };
                let len = chars[start.min(chars.len())..]
                    .iter()
                    .take_while(|x| word(**x))
                    .count();
                if len == 0 || (braced && chars.get(start + len) != Some(&'}')) {
                    return Err(format!("bad variable name at column {at}"));
                }
                out.push(Token::Variable(chars[start..start + len].iter().collect()));
                i = start + len + usize::from(braced);
            }
            _ if chars[i..].starts_with(&['n', 'u', 'l', 'l'])
                && !chars.get(i + 4).is_some_and(|x| word(*x)) =>
            {
                out.push(Token::Null);
                i += 4;
            }
            _ => return Err(format!("unexpected {c:?} at column {at}")),
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn or(&mut self) -> Result<Node, String> {
        let mut left = self.and()?;
        while matches!(self.peek(), Some(Token::Or)) {
            self.pos += 1;
            left = Node::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Node, String> {
        let mut left = self.primary()?;
        while matches!(self.peek(), Some(Token::And)) {
            self.pos += 1;
            left = Node::And(Box::new(left), Box::new(self.primary()?));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Node, String> {
        if matches!(self.peek(), Some(Token::Open)) {
            self.pos += 1;
            let inner = self.or()?;
            if !matches!(self.peek(), Some(Token::Close)) {
                return Err("missing )".to_owned());
            }
            self.pos += 1;
            return Ok(inner);
        }
        let left = self.operand()?;
        let node = match self.peek() {
            Some(Token::Eq | Token::Ne) => {
                let negated = matches!(self.peek(), Some(Token::Ne));
                self.pos += 1;
                Node::Equals(left, self.operand()?, negated)
            }
            Some(Token::Match | Token::NoMatch) => {
                let negated = matches!(self.peek(), Some(Token::NoMatch));
                self.pos += 1;
                let right = self.operand()?;
                if !matches!(right, Operand::Regex(_) | Operand::Variable(_)) {
                    return Err("the right side of =~ and !~ must be a /regex/".to_owned());
                }
                Node::Matches(left, right, negated)
            }
            _ => {
                if matches!(left, Operand::Regex(_)) {
                    return Err("a /regex/ needs =~ or !~".to_owned());
                }
                Node::Truthy(left)
            }
        };
        Ok(node)
    }

    fn operand(&mut self) -> Result<Operand, String> {
        let operand = match self.peek() {
            Some(Token::Variable(name)) => Operand::Variable(name.clone()),
            Some(Token::Str(s)) => Operand::Str(s.clone()),
            Some(Token::Null) => Operand::Null,
            Some(Token::Regex(r)) => Operand::Regex(r.clone()),
            Some(other) => return Err(format!("expected a value, found {other:?}")),
            None => return Err("unexpected end of expression".to_owned()),
        };
        self.pos += 1;
        Ok(operand)
    }
}

impl Expr {
    /// Parses an expression; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<Expr, String> {
        let tokens = tokenize(text)?;
        let mut parser = Parser { tokens, pos: 0 };
        let node = parser.or()?;
        if let Some(extra) = parser.peek() {
            return Err(format!("unexpected {extra:?} after a complete expression"));
        }
        Ok(Expr(node))
    }

    /// Evaluates against `vars` (a variable's value, `None` when it is not defined).
    pub fn eval(&self, vars: &dyn Fn(&str) -> Option<String>) -> bool {
        eval(&self.0, vars)
    }
}

fn value(operand: &Operand, vars: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    match operand {
        Operand::Variable(name) => vars(name),
        Operand::Str(s) => Some(s.clone()),
        Operand::Null => None,
        Operand::Regex(r) => Some(r.as_str().to_owned()),
    }
}

fn eval(node: &Node, vars: &dyn Fn(&str) -> Option<String>) -> bool {
    match node {
        Node::Or(a, b) => eval(a, vars) || eval(b, vars),
        Node::And(a, b) => eval(a, vars) && eval(b, vars),
        Node::Truthy(operand) => value(operand, vars).is_some_and(|v| !v.is_empty()),
        Node::Equals(a, b, negated) => (value(a, vars) == value(b, vars)) != *negated,
        Node::Matches(text, pattern, negated) => {
            let regex = match pattern {
                Operand::Regex(r) => Some(r.clone()),
                // A variable on the right must hold `/pattern/flags`; anything else matches
                // nothing.
                other => value(other, vars)
                    .and_then(|v| regex_literal(&v))
                    .and_then(Result::ok),
            };
            let matched = regex.is_some_and(|r| r.is_match(&value(text, vars).unwrap_or_default()));
            matched != *negated
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval_with(text: &str, pairs: &[(&str, &str)]) -> bool {
        let expr = Expr::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        expr.eval(&|name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    const PUSH_MAIN: &[(&str, &str)] = &[
        ("CI_PIPELINE_SOURCE", "push"),
        ("CI_COMMIT_BRANCH", "main"),
        ("CI_DEFAULT_BRANCH", "main"),
        ("EMPTY", ""),
    ];
    const MR: &[(&str, &str)] = &[
        ("CI_PIPELINE_SOURCE", "merge_request_event"),
        ("CI_MERGE_REQUEST_IID", "17"),
        ("CI_DEFAULT_BRANCH", "main"),
        ("CI_COMMIT_REF_NAME", "feature/Better"),
    ];

    #[test]
    fn comparisons_of_variables_and_strings() {
        assert!(eval_with(
            "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH",
            PUSH_MAIN
        ));
        assert!(!eval_with("$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH", MR));
        assert!(eval_with(
            r#"$CI_PIPELINE_SOURCE == "merge_request_event""#,
            MR
        ));
        assert!(eval_with(
            "$CI_PIPELINE_SOURCE != 'merge_request_event'",
            PUSH_MAIN
        ));
        assert!(eval_with(r#""push" == $CI_PIPELINE_SOURCE"#, PUSH_MAIN));
    }

    #[test]
    fn presence_null_and_empty_differ() {
        assert!(eval_with("$CI_MERGE_REQUEST_IID", MR));
        assert!(!eval_with("$CI_MERGE_REQUEST_IID", PUSH_MAIN));
        // Defined but empty: not present, and not null either.
        assert!(!eval_with("$EMPTY", PUSH_MAIN));
        assert!(!eval_with("$EMPTY == null", PUSH_MAIN));
        assert!(eval_with("$EMPTY == ''", PUSH_MAIN));
        assert!(eval_with("$UNDEFINED == null", PUSH_MAIN));
        assert!(!eval_with("$UNDEFINED == ''", PUSH_MAIN));
        assert!(eval_with("$UNDEFINED != 'x'", PUSH_MAIN));
    }

    #[test]
    fn regex_matches_anywhere_with_the_i_flag_and_from_variables() {
        assert!(eval_with("$CI_COMMIT_REF_NAME =~ /^feature\\//", MR));
        assert!(!eval_with("$CI_COMMIT_REF_NAME =~ /better/", MR));
        assert!(eval_with("$CI_COMMIT_REF_NAME =~ /better/i", MR));
        assert!(eval_with("$CI_COMMIT_REF_NAME !~ /^release/", MR));
        // An undefined variable is matched as the empty string.
        assert!(eval_with("$UNDEFINED =~ /^$/", MR));
        assert!(eval_with("$UNDEFINED !~ /x/", MR));
        assert!(eval_with(
            "$REF =~ $PATTERN",
            &[("REF", "v1.2"), ("PATTERN", "/^v[0-9]/")]
        ));
        assert!(!eval_with(
            "$REF =~ $PATTERN",
            &[("REF", "v1.2"), ("PATTERN", "v")]
        ));
    }

    #[test]
    fn and_binds_tighter_than_or_and_parentheses_group() {
        let vars = &[("A", "1")];
        // true || (false && false)
        assert!(eval_with("$A || $B && $C", vars));
        // (true || false) && false
        assert!(!eval_with("($A || $B) && $C", vars));
        assert!(eval_with(
            "($CI_PIPELINE_SOURCE == 'push' && $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH) || $CI_MERGE_REQUEST_IID",
            MR
        ));
    }

    #[test]
    fn syntax_errors_say_what_is_wrong() {
        for (text, needle) in [
            ("$A = 'x'", "unknown operator"),
            ("$A & $B", "expected &&"),
            ("'open", "unterminated string"),
            ("$A =~ 'x'", "must be a /regex/"),
            ("($A", "missing )"),
            ("$A $B", "after a complete expression"),
            ("$A =~ /x/g", "flag 'g'"),
            ("$A ==", "unexpected end"),
            ("/x/", "needs =~"),
        ] {
            let err = Expr::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
