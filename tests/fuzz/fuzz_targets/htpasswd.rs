//! htpasswd files (`htpasswd::parse`, `with_entry`, `without_user`, `verify`). An accepted file
//! maps each user to a hash of an accepted scheme written on one of its lines; a refused one
//! names a line of the file. Without the legacy schemes allowed a file is accepted exactly when
//! it is accepted with them and has no line with a legacy hash (even one a later line of the
//! same user overrides), and refused no later than with them.
//! Legacy entries verify without panicking, and an entry made for a password in the scheme
//! (salt) of one of the file's verifies with that password.
//! Editing an accepted file (the `pier htpasswd add/delete` paths) gives a file that is accepted
//! and says what the edit meant: the user with the new hash (or gone), everyone else unchanged.
#![no_main]

use std::collections::HashMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pier::htpasswd::{
    apr1_entry, is_valid_user_name, legacy_users, parse, scheme_of, sha_entry, verify, with_entry, without_user,
    HtpasswdError, LegacyScheme,
};

const NEW_HASH: &str = "$2y$05$abcdefghijklmnopqrstuu5Xb4Y4c.5g0gF7oPz7o8zQH3uJZk2Ue";
const ALL: &[LegacyScheme] = &LegacyScheme::ALL;

/// The line a refusal names (asserted to be a line of `text`, named with the path).
fn refused_line(e: &HtpasswdError, text: &str) -> usize {
    let line = match e {
        HtpasswdError::Line { line, .. } | HtpasswdError::NotAllowed { line, .. } => *line,
        e => panic!("parse reads and writes no file: {e}"),
    };
    assert!(line >= 1 && line <= text.lines().count(), "{e}");
    assert!(e.to_string().starts_with(&format!("/etc/pier/htpasswd:{line}: ")), "{e}");
    line
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("/etc/pier/htpasswd");
    let strict = parse(path, text, &[]);
    let users = match parse(path, text, ALL) {
        Ok(users) => users,
        Err(e) => {
            let line = refused_line(&e, text);
            assert!(matches!(e, HtpasswdError::Line { .. }), "every legacy scheme is allowed: {e}");
            let strict_line =
                refused_line(strict.as_ref().expect_err("refused with legacy schemes, not without"), text);
            assert!(strict_line <= line, "refused at {line} with legacy schemes, at {strict_line} without");
            return;
        }
    };
    // Lines with a legacy hash, a user's earlier line shadowed by a later one included.
    let legacy_lines = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.trim_end_matches('\r').split_once(':'))
        .filter(|(_, hash)| matches!(scheme_of(hash), Ok(pier::htpasswd::Scheme::Legacy(_))))
        .count();
    match &strict {
        Ok(strict_users) => {
            assert_eq!(legacy_lines, 0, "legacy entries accepted without the opt-in");
            assert_eq!(strict_users, &users);
        }
        Err(e) => {
            refused_line(e, text);
            assert!(matches!(e, HtpasswdError::NotAllowed { .. }) && legacy_lines > 0, "{e}");
        }
    }
    let legacy = legacy_users(&users);
    for (user, hash) in &users {
        assert!(!user.is_empty() && !user.contains(':') && scheme_of(hash).is_ok(), "{user:?}:{hash:?}");
        let line = format!("{user}:{hash}");
        assert!(text.lines().any(|l| l.trim_end_matches('\r') == line), "{line:?} is not a line of the file");
    }
    for (user, scheme) in legacy.iter().take(2) {
        let hash = &users[*user];
        let _ = verify(user, hash);
        let made = match scheme {
            LegacyScheme::Apr1 => {
                let salt = hash["$apr1$".len()..].split('$').next().unwrap_or_default();
                apr1_entry(user, salt)
            }
            LegacyScheme::Sha => sha_entry(user),
        };
        assert_eq!(scheme_of(&made), Ok(pier::htpasswd::Scheme::Legacy(*scheme)), "{made}");
        assert!(verify(user, &made), "{made} does not verify {user:?}");
        assert!(!verify(&format!("{user}-"), &made), "{made} verifies another password");
    }

    // Users to edit: those of the file, and any name its lines start with (a comment's too).
    let mut candidates: Vec<&str> = users.keys().map(String::as_str).take(4).collect();
    candidates.extend(text.lines().filter_map(|l| l.split_once(':').map(|(u, _)| u)).take(4));
    candidates.push("newcomer");
    for user in candidates.into_iter().filter(|u| is_valid_user_name(u)) {
        let entry = format!("{user}:{NEW_HASH}");
        let (lines, replaced) = with_entry(text, user, &entry);
        let edited = parse(path, &lines.join("\n"), ALL).unwrap_or_else(|e| panic!("adding {user:?}: {e}"));
        let mut expected = users.clone();
        let before = expected.insert(user.to_string(), NEW_HASH.to_string());
        assert_eq!(edited, expected, "adding {user:?}");
        assert_eq!(replaced, before.is_some(), "adding {user:?}: replaced");

        let mut expected: HashMap<String, String> = users.clone();
        let removed = expected.remove(user).is_some();
        match without_user(text, user) {
            Some(lines) => {
                assert!(removed, "deleting {user:?}, who has no entry, changed the file");
                let edited = parse(path, &lines.join("\n"), ALL).unwrap_or_else(|e| panic!("deleting {user:?}: {e}"));
                assert_eq!(edited, expected, "deleting {user:?}");
            }
            None => assert!(!removed, "deleting {user:?} left the file as it was"),
        }
    }
});
