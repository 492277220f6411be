//! Variable expansion the way GitLab does it, in its two places:
//!
//! - **the server** ([`expand_server`], [`expand_nested`]): `$NAME`, `${NAME}` and `%NAME%`
//!   (GitLab's `ExpandVariables`). Job variables are expanded recursively before the job is
//!   sent to a runner ("nested variable expansion"), keeping references GitLab does not know
//!   (`$CI_PROJECT_DIR` is the runner's), so the runner can still expand them; a circular
//!   reference is an error. `environment:name`/`url` are expanded once, unknown names becoming
//!   empty.
//! - **the runner** ([`expand_runner`]): Go's `os.Expand` with gitlab-runner's lookup, where
//!   `$$` is a literal `$`, `$1`..`$9`, `$*`, `$#`, ... stay as written, `${}` and an unclosed
//!   `${` are dropped, and unknown names become empty.
//!
//! `$$` is the documented escape for a literal `$`: the server leaves it alone (so the runner
//! turns it into one `$`).

use std::collections::HashMap;

/// One `variables:` entry as the server holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    /// The name.
    pub key: String,
    /// The value as written (or as read from a dotenv report).
    pub value: String,
    /// `expand: false` (or a dotenv value): never expanded itself; a reference to it inserts
    /// the value as is.
    pub raw: bool,
}

impl Var {
    /// A variable whose value is expanded.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Var {
        Var {
            key: key.into(),
            value: value.into(),
            raw: false,
        }
    }

    /// A variable whose value is taken literally.
    pub fn raw(key: impl Into<String>, value: impl Into<String>) -> Var {
        Var {
            raw: true,
            ..Var::new(key, value)
        }
    }
}

/// A reference found in a value: where it is and the name it names.
struct Reference {
    start: usize,
    end: usize,
    name: String,
}

/// The references GitLab's server expands in `value` (`$NAME`, `${NAME}`, `%NAME%`), skipping
/// `$$` escapes.
fn server_references(value: &str) -> Vec<Reference> {
    let bytes = value.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 2,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                let len = bytes[i + 2..].iter().take_while(|b| word(**b)).count();
                if len > 0 && bytes.get(i + 2 + len) == Some(&b'}') {
                    out.push(Reference {
                        start: i,
                        end: i + 3 + len,
                        name: value[i + 2..i + 2 + len].to_owned(),
                    });
                    i += 3 + len;
                } else {
                    i += 1;
                }
            }
            b'$' => {
                let len = bytes[i + 1..].iter().take_while(|b| word(**b)).count();
                if len > 0 {
                    out.push(Reference {
                        start: i,
                        end: i + 1 + len,
                        name: value[i + 1..i + 1 + len].to_owned(),
                    });
                }
                i += 1 + len;
            }
            b'%' => {
                let len = bytes[i + 1..].iter().take_while(|b| word(**b)).count();
                if len > 0 && bytes.get(i + 1 + len) == Some(&b'%') {
                    out.push(Reference {
                        start: i,
                        end: i + 2 + len,
                        name: value[i + 1..i + 1 + len].to_owned(),
                    });
                    i += 2 + len;
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// Expands `value` once, server style. `lookup` answers known names; an unknown one is kept
/// as written when `keep_undefined`, else it becomes empty.
pub fn expand_server(
    value: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    keep_undefined: bool,
) -> String {
    let mut out = String::with_capacity(value.len());
    let mut last = 0;
    for r in server_references(value) {
        out.push_str(&value[last..r.start]);
        match lookup(&r.name) {
            Some(v) => out.push_str(&v),
            None if keep_undefined => out.push_str(&value[r.start..r.end]),
            None => {}
        }
        last = r.end;
    }
    out.push_str(&value[last..]);
    out
}

/// Expands every non-raw variable recursively against the others (the last definition of a
/// name wins), keeping unknown references for the runner. Fails naming the variables of a
/// circular reference.
pub fn expand_nested(vars: &[Var]) -> Result<Vec<Var>, String> {
    let mut latest: HashMap<&str, &Var> = HashMap::new();
    for v in vars {
        latest.insert(v.key.as_str(), v);
    }
    let mut done: HashMap<String, String> = HashMap::new();
    let mut out = Vec::with_capacity(vars.len());
    for v in vars {
        let mut value = v.value.clone();
        if !v.raw {
            let mut stack = vec![v.key.clone()];
            value = resolve(&v.value, &latest, &mut done, &mut stack)?;
        }
        out.push(Var {
            key: v.key.clone(),
            value,
            raw: v.raw,
        });
    }
    Ok(out)
}

fn resolve(
    value: &str,
    latest: &HashMap<&str, &Var>,
    done: &mut HashMap<String, String>,
    stack: &mut Vec<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut last = 0;
    for r in server_references(value) {
        out.push_str(&value[last..r.start]);
        last = r.end;
        let Some(target) = latest.get(r.name.as_str()) else {
            out.push_str(&value[r.start..r.end]);
            continue;
        };
        if target.raw {
            out.push_str(&target.value);
            continue;
        }
        if let Some(v) = done.get(&r.name) {
            out.push_str(v);
            continue;
        }
        if stack.contains(&r.name) {
            stack.push(r.name.clone());
            return Err(format!(
                "circular variable reference detected: {}",
                stack.join(" -> ")
            ));
        }
        stack.push(r.name.clone());
        let expanded = resolve(&target.value, latest, done, stack)?;
        stack.pop();
        done.insert(r.name.clone(), expanded.clone());
        out.push_str(&expanded);
    }
    out.push_str(&value[last..]);
    Ok(out)
}

/// Go's `os.Expand(value, JobVariables.Get)`, as gitlab-runner expands variables.
pub fn expand_runner(value: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    const SPECIAL: &[u8] = b"*#$@!?-0123456789";
    let get = |name: &str| -> String {
        match name {
            "$" => "$".to_owned(),
            _ if name.len() == 1 && SPECIAL.contains(&name.as_bytes()[0]) => format!("${name}"),
            _ => lookup(name).unwrap_or_default(),
        }
    };
    let bytes = value.as_bytes();
    let mut out = String::with_capacity(value.len());
    let mut last = 0;
    let mut j = 0;
    while j < bytes.len() {
        if bytes[j] == b'$' && j + 1 < bytes.len() {
            out.push_str(&value[last..j]);
            let rest = &value[j + 1..];
            let (name, width) = shell_name(rest);
            match (name, width) {
                // Bad syntax (`${`, `${}`): Go drops it.
                ("", w) if w > 0 => {}
                // `$` not followed by a name stays.
                ("", _) => out.push('$'),
                (name, _) => out.push_str(&get(name)),
            }
            j += width + 1;
            last = j;
        } else {
            j += 1;
        }
    }
    out.push_str(&value[last..]);
    out
}

/// Go's `getShellName`: the name after a `$` and how many bytes it spans.
fn shell_name(s: &str) -> (&str, usize) {
    const SPECIAL: &[u8] = b"*#$@!?-0123456789";
    let bytes = s.as_bytes();
    if bytes[0] == b'{' {
        if bytes.len() > 2 && SPECIAL.contains(&bytes[1]) && bytes[2] == b'}' {
            return (&s[1..2], 3);
        }
        return match bytes.iter().skip(1).position(|b| *b == b'}') {
            Some(0) => ("", 2),
            Some(len) => (&s[1..1 + len], len + 2),
            None => ("", 1),
        };
    }
    if SPECIAL.contains(&bytes[0]) {
        return (&s[..1], 1);
    }
    let len = bytes
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
        .count();
    (&s[..len], len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn server_expands_all_three_forms_and_keeps_escapes() {
        let l = lookup(&[("A", "x"), ("B_2", "y")]);
        assert_eq!(
            expand_server("$A/${B_2}/%A%/$$A/${A", &l, false),
            "x/y/x/$$A/${A"
        );
        assert_eq!(expand_server("$NOPE-${NOPE}", &l, false), "-");
        assert_eq!(expand_server("$NOPE-${NOPE}", &l, true), "$NOPE-${NOPE}");
        // A word character ends a name only when it is not one: `$A_B` names A_B.
        assert_eq!(expand_server("$A_B $A.b 100%", &l, true), "$A_B x.b 100%");
    }

    #[test]
    fn nested_expansion_is_recursive_keeps_unknown_and_respects_raw() {
        let vars = vec![
            Var::new("REGISTRY", "123.dkr.ecr.us-east-1.amazonaws.com"),
            Var::new("IMAGE", "$REGISTRY/api:${TAG}"),
            Var::new("TAG", "$CI_COMMIT_SHORT_SHA"),
            Var::new("CI_COMMIT_SHORT_SHA", "abcd1234"),
            Var::new("OUT", "$CI_PROJECT_DIR/out"),
            Var::raw("LITERAL", "$REGISTRY"),
            Var::new("USES_LITERAL", "<$LITERAL>"),
        ];
        let out = expand_nested(&vars).unwrap();
        let get = |k: &str| out.iter().find(|v| v.key == k).unwrap().value.clone();
        assert_eq!(
            get("IMAGE"),
            "123.dkr.ecr.us-east-1.amazonaws.com/api:abcd1234"
        );
        assert_eq!(get("OUT"), "$CI_PROJECT_DIR/out");
        assert_eq!(get("LITERAL"), "$REGISTRY");
        assert_eq!(get("USES_LITERAL"), "<$REGISTRY>");
    }

    #[test]
    fn the_last_definition_of_a_name_wins() {
        let vars = vec![
            Var::new("A", "global"),
            Var::new("B", "$A"),
            Var::new("A", "job"),
        ];
        let out = expand_nested(&vars).unwrap();
        assert_eq!(out[1].value, "job");
    }

    #[test]
    fn circular_references_are_an_error_naming_the_cycle() {
        let vars = vec![Var::new("A", "$B"), Var::new("B", "x${A}")];
        let err = expand_nested(&vars).unwrap_err();
        assert!(err.contains("A -> B -> A"), "{err}");
    }

    #[test]
    fn runner_expansion_follows_go_os_expand() {
        let l = lookup(&[("A", "x")]);
        assert_eq!(expand_runner("$A-${A}-$NOPE", &l), "x-x-");
        assert_eq!(
            expand_runner("cost: $$5 and $1 and $*", &l),
            "cost: $5 and $1 and $*"
        );
        assert_eq!(expand_runner("a-${}-b", &l), "a--b");
        assert_eq!(expand_runner("tail ${", &l), "tail ");
        assert_eq!(expand_runner("trailing $", &l), "trailing $");
        assert_eq!(expand_runner("$-x $.x", &l), "$-x $.x");
    }
}
