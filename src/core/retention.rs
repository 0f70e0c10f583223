//! Tag retention (`retention:` in config.yml, pier): which tags of a repository a policy drops.
//! Pure: the store supplies the tags with the time each was last set, and removes what
//! [`tags_to_drop`] names; garbage collection then frees what only those tags kept alive.
//!
//! A policy applies to the repositories its `repos` glob matches (the first matching policy
//! applies). Among the tags no `protect` pattern matches, it keeps the `keep` most recently set
//! ones and drops the rest, and drops any older than `max_age_secs`. A protect pattern is a glob
//! (`latest`, `v*`, `release-*`) or the word `semver`, which matches tags such as `1.2.3`,
//! `v1.2`, `2.0.0-rc.1`. A tag that names a signature or attestation of a digest in cosign's
//! scheme (`sha256-<hex>.sig`, `.att`, `.sbom`) goes with its subject: it is kept while a kept
//! tag points at that digest, and is never counted against `keep`.

use alloc::string::String;
use alloc::vec::Vec;

use super::access::glob_match;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub repos: String,
    /// Keep at most this many unprotected tags (the most recently set).
    pub keep: Option<u64>,
    /// Drop unprotected tags set longer ago than this.
    pub max_age_secs: Option<u64>,
    pub protect: Vec<String>,
}

/// A tag as the store knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagInfo {
    pub tag: String,
    /// The manifest digest it points at.
    pub digest: String,
    /// Unix seconds when it was last set.
    pub set_at: u64,
}

/// The policy for `repo`: the first that matches.
pub fn policy_for<'a>(policies: &'a [RetentionPolicy], repo: &str) -> Option<&'a RetentionPolicy> {
    policies.iter().find(|p| glob_match(&p.repos, repo))
}

/// Whether `tag` looks like a semantic version (`1.2.3`, `v1.2`, `2.0.0-rc.1`, `1.0.0+build`).
pub fn is_semver(tag: &str) -> bool {
    let t = tag.strip_prefix('v').unwrap_or(tag);
    let core = t.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    (2..=3).contains(&parts.len()) && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn protected(policy: &RetentionPolicy, tag: &str) -> bool {
    policy.protect.iter().any(|p| if p == "semver" { is_semver(tag) } else { glob_match(p, tag) })
}

/// The subject digest (`sha256:<hex>`) a cosign-style tag (`sha256-<hex>.sig`) belongs to.
fn cosign_subject(tag: &str) -> Option<String> {
    let (alg, rest) = tag.split_once('-')?;
    let (hex, kind) = rest.rsplit_once('.')?;
    let known = matches!(kind, "sig" | "att" | "sbom");
    let hex_ok = !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit());
    (known && hex_ok && matches!(alg, "sha256" | "sha512")).then(|| alloc::format!("{alg}:{hex}"))
}

/// The tags `policy` drops from a repository holding `tags`, at time `now`.
pub fn tags_to_drop(policy: &RetentionPolicy, tags: &[TagInfo], now: u64) -> Vec<String> {
    let mut candidates: Vec<&TagInfo> =
        tags.iter().filter(|t| !protected(policy, &t.tag) && cosign_subject(&t.tag).is_none()).collect();
    // Most recently set first; tags set in the same second by name, the greater first (`t10`
    // after `t09`), so that the outcome does not depend on order.
    candidates.sort_by(|a, b| b.set_at.cmp(&a.set_at).then_with(|| b.tag.cmp(&a.tag)));
    let mut drop: Vec<&TagInfo> = Vec::new();
    for (i, t) in candidates.iter().enumerate() {
        let over_count = policy.keep.is_some_and(|k| i as u64 >= k);
        let too_old = policy.max_age_secs.is_some_and(|age| now.saturating_sub(t.set_at) > age);
        if over_count || too_old {
            drop.push(t);
        }
    }
    let dropped: Vec<&str> = drop.iter().map(|t| t.tag.as_str()).collect();
    // A cosign tag goes when no kept tag points at its subject any more.
    let kept_digests: Vec<&str> = tags
        .iter()
        .filter(|t| !dropped.contains(&t.tag.as_str()) && cosign_subject(&t.tag).is_none())
        .map(|t| t.digest.as_str())
        .collect();
    let mut out: Vec<String> = drop.iter().map(|t| t.tag.clone()).collect();
    for t in tags {
        if let Some(subject) = cosign_subject(&t.tag) {
            if !kept_digests.contains(&subject.as_str()) && !protected(policy, &t.tag) {
                out.push(t.tag.clone());
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn tag(name: &str, digest: &str, set_at: u64) -> TagInfo {
        TagInfo { tag: name.to_string(), digest: digest.to_string(), set_at }
    }

    #[test]
    fn keeps_the_newest_and_the_protected_and_drops_the_old() {
        let policy = RetentionPolicy {
            repos: "*".to_string(),
            keep: Some(2),
            max_age_secs: Some(100),
            protect: vec!["latest".to_string(), "semver".to_string()],
        };
        let tags = vec![
            tag("latest", "sha256:a", 0),
            tag("1.2.3", "sha256:b", 0),
            tag("nightly-3", "sha256:c", 990),
            tag("nightly-2", "sha256:d", 980),
            tag("nightly-1", "sha256:e", 970),
            tag("old-but-few", "sha256:f", 0),
            tag("sha256-c.sig", "sha256:s1", 995),
            tag("sha256-e.sig", "sha256:s2", 975),
        ];
        let dropped = tags_to_drop(&policy, &tags, 1000);
        assert_eq!(dropped, vec!["nightly-1", "old-but-few", "sha256-e.sig"]);
    }

    #[test]
    fn semver_and_cosign_shapes() {
        for t in ["1.2.3", "v1.2", "2.0.0-rc.1", "1.0.0+build.5"] {
            assert!(is_semver(t), "{t}");
        }
        for t in ["latest", "1", "v", "1.x.3", "1.2.3.4", "", "-1.2"] {
            assert!(!is_semver(t), "{t}");
        }
        assert_eq!(cosign_subject("sha256-abc.sig").as_deref(), Some("sha256:abc"));
        assert_eq!(cosign_subject("sha256-xyz.sig"), None);
        assert_eq!(cosign_subject("sha256-abc.tar"), None);
    }

    #[test]
    fn no_limits_drop_nothing() {
        let policy = RetentionPolicy { repos: "*".to_string(), keep: None, max_age_secs: None, protect: vec![] };
        assert!(tags_to_drop(&policy, &[tag("a", "sha256:a", 0)], 10_000).is_empty());
    }
}
