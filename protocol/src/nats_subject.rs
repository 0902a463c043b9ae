//! NATS subject syntax, shared by the buses and the event log: dot-separated
//! tokens; in patterns `*` matches one token and a final `>` matches one or
//! more. Also the rules for the subjects users publish events on and
//! trigger functions with.

/// Checks subject syntax; the error is the reason.
pub fn check(subject: &str, allow_wildcards: bool) -> Result<(), &'static str> {
    if subject.is_empty() {
        return Err("empty");
    }
    if subject.chars().any(|c| c.is_whitespace()) {
        return Err("contains whitespace");
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return Err("empty token");
        }
        let wild = *t == "*" || *t == ">";
        if wild && !allow_wildcards {
            return Err("wildcards are only allowed in subscriptions");
        }
        if *t == ">" && i + 1 != tokens.len() {
            return Err("'>' must be the last token");
        }
        if !wild && (t.contains('*') || t.contains('>')) {
            return Err("'*' and '>' must be whole tokens");
        }
    }
    Ok(())
}

/// A parsed subscription pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectPattern {
    tokens: Vec<String>,
    has_wildcard: bool,
}

impl SubjectPattern {
    pub fn parse(pattern: &str) -> Result<Self, &'static str> {
        check(pattern, true)?;
        let tokens: Vec<String> = pattern.split('.').map(str::to_string).collect();
        let has_wildcard = tokens.iter().any(|t| t == "*" || t == ">");
        Ok(SubjectPattern { tokens, has_wildcard })
    }

    pub fn has_wildcard(&self) -> bool {
        self.has_wildcard
    }

    pub fn matches(&self, subject: &str) -> bool {
        let mut parts = subject.split('.');
        for (i, t) in self.tokens.iter().enumerate() {
            match parts.next() {
                None => return false,
                Some(_) if t == ">" => return i + 1 == self.tokens.len(),
                Some(_) if t == "*" => {}
                Some(p) if p == t => {}
                Some(_) => return false,
            }
        }
        parts.next().is_none()
    }

    /// Whether every subject `other` matches, this matches too.
    pub fn covers(&self, other: &SubjectPattern) -> bool {
        for (i, mine) in self.tokens.iter().enumerate() {
            if mine == ">" {
                return other.tokens.len() > i;
            }
            match other.tokens.get(i).map(String::as_str) {
                None | Some(">") => return false,
                Some("*") if mine != "*" => return false,
                Some(t) if mine != "*" && mine != t => return false,
                Some(_) => {}
            }
        }
        other.tokens.len() == self.tokens.len()
    }
}

impl std::fmt::Display for SubjectPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.tokens.join("."))
    }
}

/// Subjects Tern keeps for itself; users can neither publish nor trigger
/// on them (a trigger on `tern.>` would capture Tern's own traffic).
const RESERVED: &[&str] = &["tern", "_INBOX"];

fn check_event(subject: &str, wildcards: bool) -> Result<(), String> {
    check(subject, wildcards).map_err(|r| format!("event subject {subject:?} is not valid: {r}"))?;
    let first = subject.split('.').next().unwrap_or_default();
    if first == "*" || first == ">" {
        return Err(format!(
            "event subject {subject:?} is not valid: the first token must be a name, not a wildcard \
             (it would also match other systems' traffic on the same NATS server)"
        ));
    }
    if RESERVED.contains(&first) || first.starts_with('$') {
        return Err(format!(
            "event subject {subject:?} is reserved: subjects under {first:?} are Tern's or NATS's own"
        ));
    }
    Ok(())
}

/// A subject an event is published on: no wildcards, not reserved.
pub fn check_event_subject(subject: &str) -> Result<(), String> {
    check_event(subject, false)
}

/// A trigger's pattern: wildcards allowed after a literal first token.
pub fn check_trigger(pattern: &str) -> Result<(), String> {
    check_event(pattern, true)
}

/// The fewest patterns that match everything `patterns` match: drops
/// duplicates and patterns another one covers. (A JetStream stream refuses
/// overlapping subjects.)
pub fn minimal_cover(patterns: &[String]) -> Vec<String> {
    let parsed: Vec<SubjectPattern> = patterns.iter().filter_map(|p| SubjectPattern::parse(p).ok()).collect();
    let mut kept: Vec<SubjectPattern> = Vec::new();
    for (i, p) in parsed.iter().enumerate() {
        let covered = parsed.iter().enumerate().any(|(j, q)| {
            // Of two equal patterns, keep the first.
            j != i && q.covers(p) && (!p.covers(q) || j < i)
        });
        if !covered && !kept.contains(p) {
            kept.push(p.clone());
        }
    }
    let mut out: Vec<String> = kept.iter().map(|p| p.to_string()).collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> SubjectPattern {
        SubjectPattern::parse(s).unwrap()
    }

    #[test]
    fn wildcards() {
        assert!(p("a.b").matches("a.b"));
        assert!(!p("a.b").matches("a.b.c"));
        assert!(p("a.*").matches("a.b"));
        assert!(!p("a.*").matches("a.b.c"));
        assert!(!p("a.*").matches("a"));
        assert!(p("a.>").matches("a.b.c"));
        assert!(!p("a.>").matches("a"));
        assert!(p("*.b.>").matches("x.b.y.z"));
    }

    #[test]
    fn invalid_subjects() {
        for bad in ["", "a..b", "a.>.b", "a b", "a*", ".a", "a."] {
            assert!(check(bad, true).is_err(), "{bad:?}");
        }
        assert!(check("a.*", false).is_err());
        assert!(check("a.*", true).is_ok());
    }

    #[test]
    fn covers() {
        assert!(p("a.>").covers(&p("a.b")));
        assert!(p("a.>").covers(&p("a.*.c")));
        assert!(p("a.>").covers(&p("a.>")));
        assert!(!p("a.>").covers(&p("a")));
        assert!(p("a.*").covers(&p("a.b")));
        assert!(!p("a.*").covers(&p("a.>")));
        assert!(!p("a.b").covers(&p("a.*")));
        assert!(!p("a.*").covers(&p("a.b.c")));
        assert!(p("*.b").covers(&p("x.b")));
    }

    #[test]
    fn minimal_cover_drops_what_is_covered() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            minimal_cover(&v(&["orders.created", "orders.>", "users.*", "users.*"])),
            v(&["orders.>", "users.*"])
        );
        assert_eq!(minimal_cover(&v(&["a.b", "a.c"])), v(&["a.b", "a.c"]));
    }

    #[test]
    fn event_subjects() {
        assert!(check_event_subject("orders.created").is_ok());
        assert!(check_event_subject("orders.*").unwrap_err().contains("wildcards"));
        assert!(check_trigger("orders.*").is_ok());
        assert!(check_trigger(">").unwrap_err().contains("first token"));
        assert!(check_trigger("*.created").unwrap_err().contains("first token"));
        assert!(check_trigger("tern.v1.invoke.x").unwrap_err().contains("reserved"));
        assert!(check_event_subject("$JS.API.x").unwrap_err().contains("reserved"));
        assert!(check_event_subject("a b").is_err());
    }
}
