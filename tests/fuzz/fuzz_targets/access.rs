//! Access rules (`core::access`). Input: a repository glob on the first line, a repository on
//! the rest. `glob_match` agrees with a dynamic-programming model of the glob; a rule made of the
//! glob grants exactly the matching repositories, only the action it names, and only to its user.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pier::core::access::{glob_match, AccessPolicy, AccessRule, Action, Identity};
use pier_fuzz::{first_line, glob_model};

fuzz_target!(|data: &[u8]| {
    let (pattern, repo) = first_line(data);
    let (Ok(pattern), Ok(repo)) = (std::str::from_utf8(pattern), std::str::from_utf8(repo)) else { return };

    let matched = glob_match(pattern, repo);
    // The model is quadratic: keep it to inputs where that costs little.
    if pattern.len() * repo.len() <= 1 << 16 {
        assert_eq!(matched, glob_model(pattern.as_bytes(), repo.as_bytes()), "{pattern:?} ~ {repo:?}");
    }
    assert!(glob_match(repo, repo), "a text without `*` matches itself, `*` included");
    assert!(glob_match("*", repo));

    let rule = AccessRule { user: "ci".to_string(), repos: vec![pattern.to_string()], actions: vec![Action::Pull] };
    let policy = AccessPolicy::Rules(vec![rule]);
    let ci = Identity::User("ci".to_string());
    assert_eq!(policy.allows(&ci, Action::Pull, repo), matched);
    assert!(!policy.allows(&ci, Action::Push, repo));
    assert!(!policy.allows(&Identity::User("bob".to_string()), Action::Pull, repo));
    assert!(!policy.allows(&Identity::Anonymous, Action::Pull, repo));
    assert!(policy.may_pull_somewhere(&ci) && !policy.may_pull_somewhere(&Identity::Anonymous));
    for action in ["pull", "push", "delete"] {
        assert!(Action::parse(action).is_some());
    }
    assert_eq!(Action::parse(repo).is_some(), matches!(repo, "pull" | "push" | "delete"));
});
