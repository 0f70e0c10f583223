//! htpasswd files (`htpasswd::parse`, `with_entry`, `without_user`). An accepted file maps each
//! user to a bcrypt hash written on one of its lines; a refused one names a line of the file.
//! Editing an accepted file (the `pier htpasswd add/delete` paths) gives a file that is accepted
//! and says what the edit meant: the user with the new hash (or gone), everyone else unchanged.
#![no_main]

use std::collections::HashMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pier::htpasswd::{is_bcrypt, is_valid_user_name, parse, with_entry, without_user, HtpasswdError};

const NEW_HASH: &str = "$2y$05$abcdefghijklmnopqrstuu5Xb4Y4c.5g0gF7oPz7o8zQH3uJZk2Ue";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("/etc/pier/htpasswd");
    let users = match parse(path, text) {
        Ok(users) => users,
        Err(e @ HtpasswdError::Line { line, .. }) => {
            assert!(line >= 1 && line <= text.lines().count(), "{e}");
            assert!(e.to_string().starts_with(&format!("/etc/pier/htpasswd:{line}: ")));
            return;
        }
        Err(e) => panic!("parse reads no file: {e}"),
    };
    for (user, hash) in &users {
        assert!(!user.is_empty() && !user.contains(':') && is_bcrypt(hash), "{user:?}:{hash:?}");
        let line = format!("{user}:{hash}");
        assert!(text.lines().any(|l| l.trim_end_matches('\r') == line), "{line:?} is not a line of the file");
    }

    // Users to edit: those of the file, and any name its lines start with (a comment's too).
    let mut candidates: Vec<&str> = users.keys().map(String::as_str).take(4).collect();
    candidates.extend(text.lines().filter_map(|l| l.split_once(':').map(|(u, _)| u)).take(4));
    candidates.push("newcomer");
    for user in candidates.into_iter().filter(|u| is_valid_user_name(u)) {
        let entry = format!("{user}:{NEW_HASH}");
        let (lines, replaced) = with_entry(text, user, &entry);
        let edited = parse(path, &lines.join("\n")).unwrap_or_else(|e| panic!("adding {user:?}: {e}"));
        let mut expected = users.clone();
        let before = expected.insert(user.to_string(), NEW_HASH.to_string());
        assert_eq!(edited, expected, "adding {user:?}");
        assert_eq!(replaced, before.is_some(), "adding {user:?}: replaced");

        let mut expected: HashMap<String, String> = users.clone();
        let removed = expected.remove(user).is_some();
        match without_user(text, user) {
            Some(lines) => {
                assert!(removed, "deleting {user:?}, who has no entry, changed the file");
                let edited = parse(path, &lines.join("\n")).unwrap_or_else(|e| panic!("deleting {user:?}: {e}"));
                assert_eq!(edited, expected, "deleting {user:?}");
            }
            None => assert!(!removed, "deleting {user:?} left the file as it was"),
        }
    }
});
