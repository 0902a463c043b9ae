//! NATS subject syntax: dot-separated tokens; in subscriptions `*` matches one
//! token and a final `>` matches one or more.

use crate::BusError;

pub fn validate_subject(subject: &str, allow_wildcards: bool) -> Result<(), BusError> {
    let bad = |reason| Err(BusError::InvalidSubject { subject: subject.to_string(), reason });
    if subject.is_empty() {
        return bad("empty");
    }
    if subject.chars().any(|c| c.is_whitespace()) {
        return bad("contains whitespace");
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return bad("empty token");
        }
        let wild = *t == "*" || *t == ">";
        if wild && !allow_wildcards {
            return bad("wildcards are only allowed in subscriptions");
        }
        if *t == ">" && i + 1 != tokens.len() {
            return bad("'>' must be the last token");
        }
        if !wild && (t.contains('*') || t.contains('>')) {
            return bad("'*' and '>' must be whole tokens");
        }
    }
    Ok(())
}

/// A parsed subscription pattern.
#[derive(Debug, Clone)]
pub struct SubjectPattern {
    tokens: Vec<String>,
    has_wildcard: bool,
}

impl SubjectPattern {
    pub fn parse(pattern: &str) -> Result<Self, BusError> {
        validate_subject(pattern, true)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        let p = |s| SubjectPattern::parse(s).unwrap();
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
            assert!(validate_subject(bad, true).is_err(), "{bad:?}");
        }
        assert!(validate_subject("a.*", false).is_err());
        assert!(validate_subject("a.*", true).is_ok());
    }
}
