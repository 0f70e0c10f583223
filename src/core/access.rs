//! Access rules: which user may do what to which repositories.
//!
//! A rule names a user (`anonymous` for every request, with or without credentials; `*` for any
//! authenticated user), repository globs (`*` matches any run of characters, `/` included) and
//! actions. Rules only grant: a request is allowed when any rule grants its action.

use alloc::string::String;
use alloc::vec::Vec;

/// What a request does to a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }
}

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    Anonymous,
    User(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRule {
    /// `anonymous`, `*` (any authenticated user) or a user name.
    pub user: String,
    pub repos: Vec<String>,
    pub actions: Vec<Action>,
}

impl AccessRule {
    fn applies_to(&self, who: &Identity) -> bool {
        match who {
            Identity::Anonymous => self.user == "anonymous",
            // What anonymous requests may do, authenticated ones may do too.
            Identity::User(u) => self.user == "anonymous" || self.user == "*" || self.user == *u,
        }
    }

    fn grants(&self, who: &Identity, action: Action, repo: &str) -> bool {
        self.applies_to(who) && self.actions.contains(&action) && self.repos.iter().any(|g| glob_match(g, repo))
    }
}

/// The access policy of the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessPolicy {
    /// No authentication configured: everything is allowed.
    Open,
    /// Authentication without an `access` section: any authenticated user may do anything;
    /// anonymous requests may do nothing.
    AuthenticatedOnly,
    Rules(Vec<AccessRule>),
}

impl AccessPolicy {
    /// The configured `access` rules, if the policy is made of them.
    pub fn rules(&self) -> Option<&[AccessRule]> {
        match self {
            AccessPolicy::Rules(rules) => Some(rules),
            AccessPolicy::Open | AccessPolicy::AuthenticatedOnly => None,
        }
    }

    pub fn allows(&self, who: &Identity, action: Action, repo: &str) -> bool {
        match self {
            AccessPolicy::Open => true,
            AccessPolicy::AuthenticatedOnly => matches!(who, Identity::User(_)),
            AccessPolicy::Rules(rules) => rules.iter().any(|r| r.grants(who, action, repo)),
        }
    }

    /// Whether `who` may pull anything at all (decides between a filtered catalog and 401).
    pub fn may_pull_somewhere(&self, who: &Identity) -> bool {
        match self {
            AccessPolicy::Open => true,
            AccessPolicy::AuthenticatedOnly => matches!(who, Identity::User(_)),
            AccessPolicy::Rules(rules) => rules.iter().any(|r| r.applies_to(who) && r.actions.contains(&Action::Pull)),
        }
    }
}

/// Glob match where `*` matches any (possibly empty) run of characters, `/` included, and
/// every other character matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((bp, bt)) = backtrack {
            pi = bp + 1;
            ti = bt + 1;
            backtrack = Some((bp, bt + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything/at/all"));
        assert!(glob_match("public/*", "public/a"));
        assert!(glob_match("public/*", "public/a/b"));
        assert!(!glob_match("public/*", "public"));
        assert!(!glob_match("public/*", "publicity/a"));
        assert!(glob_match("a*c", "abbbc"));
        assert!(glob_match("*/x", "a/b/x"));
        assert!(!glob_match("*/x", "a/b/y"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
    }

    #[test]
    fn policies() {
        let rules = AccessPolicy::Rules(vec![
            AccessRule {
                user: "anonymous".to_string(),
                repos: vec!["public/*".to_string()],
                actions: vec![Action::Pull],
            },
            AccessRule {
                user: "ci".to_string(),
                repos: vec!["apps/*".to_string()],
                actions: vec![Action::Pull, Action::Push],
            },
            AccessRule { user: "*".to_string(), repos: vec!["shared".to_string()], actions: vec![Action::Pull] },
        ]);
        let anon = Identity::Anonymous;
        let ci = Identity::User("ci".to_string());
        let bob = Identity::User("bob".to_string());
        assert!(rules.allows(&anon, Action::Pull, "public/x"));
        assert!(!rules.allows(&anon, Action::Push, "public/x"));
        assert!(!rules.allows(&anon, Action::Pull, "shared"));
        assert!(rules.allows(&ci, Action::Push, "apps/web"));
        assert!(!rules.allows(&ci, Action::Delete, "apps/web"));
        assert!(rules.allows(&ci, Action::Pull, "public/x"), "what anonymous may do, users may do");
        assert!(rules.allows(&bob, Action::Pull, "shared"));
        assert!(!rules.allows(&bob, Action::Pull, "apps/web"));
        assert!(rules.may_pull_somewhere(&anon));
        assert!(!AccessPolicy::AuthenticatedOnly.may_pull_somewhere(&anon));
        assert!(AccessPolicy::AuthenticatedOnly.allows(&bob, Action::Delete, "x"));
        assert!(AccessPolicy::Open.allows(&anon, Action::Delete, "x"));
    }
}
