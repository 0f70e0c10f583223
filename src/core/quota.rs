//! Per-repository size quotas (`quotas:` in config.yml, pier): which limit applies to a
//! repository. The first rule whose glob matches the repository's name applies; a repository
//! no rule matches has no quota.

use alloc::string::String;

use super::access::glob_match;

/// At most `bytes` in the repositories whose names match `repos` (each counted alone: the
/// bytes it links, shared blobs included, as `pier du` shows them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaRule {
    pub repos: String,
    pub bytes: u64,
}

/// The rule for `repo`: the first that matches.
pub fn quota_for<'a>(rules: &'a [QuotaRule], repo: &str) -> Option<&'a QuotaRule> {
    rules.iter().find(|r| glob_match(&r.repos, repo))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    #[test]
    fn the_first_matching_rule_applies() {
        let rules =
            vec![QuotaRule { repos: "big/*".to_string(), bytes: 100 }, QuotaRule { repos: "*".to_string(), bytes: 10 }];
        assert_eq!(quota_for(&rules, "big/x").map(|r| r.bytes), Some(100));
        assert_eq!(quota_for(&rules, "small").map(|r| r.bytes), Some(10));
        assert_eq!(quota_for(&rules[..1], "small"), None);
    }
}
