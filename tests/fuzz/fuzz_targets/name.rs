//! Repository names, tags and manifest references (`core::name`): each parser accepts exactly
//! what its grammar (a model in `pier_fuzz`) accepts; what it accepts it keeps byte for byte
//! (text, `Display`, re-parse equal); a repository name is a safe relative path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pier::core::{Digest, Reference, RepoName, Tag};
use pier_fuzz::{repo_name_model, tag_model};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };

    let name = RepoName::parse(s);
    assert_eq!(name.is_ok(), repo_name_model(s), "RepoName::parse({s:?}) = {name:?}");
    if let Ok(name) = name {
        assert_eq!(name.as_str(), s);
        assert_eq!(name.to_string(), s);
        assert_eq!(RepoName::parse(name.as_str()), Ok(name.clone()));
        // Joined to the data directory it stays inside it.
        assert!(!s.starts_with('/') && s.split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
    }

    let tag = Tag::parse(s);
    assert_eq!(tag.is_ok(), tag_model(s), "Tag::parse({s:?}) = {tag:?}");
    if let Ok(tag) = &tag {
        assert_eq!(tag.as_str(), s);
        assert_eq!(tag.to_string(), s);
        assert_eq!(Tag::parse(tag.as_str()).as_ref(), Ok(tag));
    }

    match Reference::parse(s) {
        Ok(reference) => {
            assert_eq!(reference.to_string(), s);
            match &reference {
                Reference::Tag(t) => assert_eq!(Ok(t), tag.as_ref()),
                Reference::Digest(d) => assert_eq!(Digest::parse(s).as_ref(), Ok(d)),
            }
            assert_eq!(Reference::parse(&reference.to_string()), Ok(reference));
        }
        // A reference is a digest when it has a `:` (which no tag can have), else a tag.
        Err(_) => assert!(if s.contains(':') { Digest::parse(s).is_err() } else { tag.is_err() }),
    }
});
