//! Which URLs the layers of a pushed manifest may name (Distribution's
//! `validation.manifests.urls`): non-distributable ("foreign") layers are fetched by clients from
//! their URLs, so those URLs are policy.
//!
//! A URL passes when it is absolute `http` or `https` without a fragment, matches one `allow`
//! pattern (or `allow` is empty) and matches no `deny` pattern. Distribution refuses every URL
//! when `allow` is unset; pier accepts them, so that Windows images push out of the box, and an
//! operator restricts them with the same keys.

use crate::config::ManifestUrls;

/// Compiled `validation.manifests.urls`.
#[derive(Debug, Default)]
pub struct UrlRules {
    allow: Vec<regex_lite::Regex>,
    deny: Vec<regex_lite::Regex>,
    /// A pattern did not compile: every URL is refused (never fail open).
    deny_all: bool,
}

impl UrlRules {
    /// Compiles the patterns (the configuration checked them when it was read).
    pub fn new(urls: &ManifestUrls) -> UrlRules {
        let compile =
            |patterns: &[String]| patterns.iter().map(|p| regex_lite::Regex::new(p)).collect::<Result<Vec<_>, _>>();
        match (compile(&urls.allow), compile(&urls.deny)) {
            (Ok(allow), Ok(deny)) => UrlRules { allow, deny, deny_all: false },
            _ => UrlRules { deny_all: true, ..UrlRules::default() },
        }
    }

    /// Why `url` may not be named by a layer, if it may not.
    pub fn refusal(&self, url: &str) -> Option<&'static str> {
        if self.deny_all {
            return Some("the URL rules could not be compiled");
        }
        let Some((scheme, rest)) = url.split_once("://") else { return Some("it is not an absolute URL") };
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Some("only http and https URLs are allowed");
        }
        if rest.is_empty() || rest.starts_with('/') {
            return Some("it names no host");
        }
        if url.contains('#') {
            return Some("it has a fragment");
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|r| r.is_match(url)) {
            return Some("it matches no validation.manifests.urls.allow pattern");
        }
        if self.deny.iter().any(|r| r.is_match(url)) {
            return Some("it matches a validation.manifests.urls.deny pattern");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> UrlRules {
        UrlRules::new(&ManifestUrls {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn urls_follow_allow_and_deny() {
        let open = rules(&[], &[]);
        assert_eq!(open.refusal("https://mcr.microsoft.com/v2/x/blobs/sha256:1"), None);
        assert!(open.refusal("ftp://example.com/x").is_some());
        assert!(open.refusal("https:///nohost").is_some());
        assert!(open.refusal("https://example.com/x#frag").is_some());
        assert!(open.refusal("/relative").is_some());
        let strict = rules(&["^https://mcr\\.microsoft\\.com/"], &["/private/"]);
        assert_eq!(strict.refusal("https://mcr.microsoft.com/v2/x"), None);
        assert!(strict.refusal("https://evil.example/v2/x").is_some());
        assert!(strict.refusal("https://mcr.microsoft.com/private/x").is_some());
    }

    #[test]
    fn a_pattern_that_does_not_compile_denies_everything() {
        let broken = rules(&["("], &[]);
        assert!(broken.refusal("https://mcr.microsoft.com/v2/x").is_some());
    }
}
