//! The htpasswd file format, as the server reads it (`http::auth`) and `pier htpasswd` edits it
//! (`cli::htpasswd`).
//!
//! - A file is `user:hash` lines; `#` comments and blank lines are ignored. Only bcrypt hashes
//!   (`$2a$`, `$2b$`, `$2x$`, `$2y$`) are accepted: any other entry is an error naming its file
//!   and line, never skipped (a skipped entry would be a user silently locked out, a weaker
//!   scheme one silently let in).
//! - New entries are bcrypt `$2y$`, the variant apache2-utils writes; editing keeps every other
//!   line as it is, and a file is replaced atomically (temporary file, fsync, rename, directory
//!   fsync) with mode 0600.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    #[error("cannot read htpasswd file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line that is not `user:bcrypt-hash`.
    #[error("{}:{line}: {why}", path.display())]
    Line { path: PathBuf, line: usize, why: &'static str },
}

/// Reads and parses the file at `path`.
pub fn read(path: &Path) -> Result<HashMap<String, String>, HtpasswdError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read { path: path.to_path_buf(), source })?;
    parse(path, &text)
}

/// Parses the text of the file at `path` into user → bcrypt hash.
pub fn parse(path: &Path, text: &str) -> Result<HashMap<String, String>, HtpasswdError> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let bad = |why| HtpasswdError::Line { path: path.to_path_buf(), line: i + 1, why };
        let (user, hash) = line.split_once(':').ok_or_else(|| bad("not a user:hash line"))?;
        if user.is_empty() {
            return Err(bad("empty user name"));
        }
        if !is_bcrypt(hash) {
            return Err(bad("not a bcrypt hash (create entries with `pier htpasswd add` or `htpasswd -B`)"));
        }
        users.insert(user.to_string(), hash.to_string());
    }
    Ok(users)
}

pub fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2y$", "$2x$"].iter().any(|p| hash.starts_with(p)) && hash.len() == 60
}

/// Whether `name` can be written as an entry's user: not empty, no `:`, no white space, and no
/// `#` in front (that line would be a comment: an added user that never exists, a removal that
/// deletes comments).
pub fn is_valid_user_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('#') && !name.contains(':') && !name.contains(char::is_whitespace)
}

/// The user an entry line is for (`None` for a line without `:`).
fn line_user(line: &str) -> Option<&str> {
    line.split_once(':').map(|(u, _)| u)
}

/// A new entry line for `user` with `password`, bcrypt `$2y$` at `cost`.
pub fn new_entry(user: &str, password: &str, cost: u32) -> Result<String, bcrypt::BcryptError> {
    let hash = bcrypt::hash_with_result(password, cost)?.format_for_version(bcrypt::Version::TwoY);
    Ok(format!("{user}:{hash}"))
}

/// `text` with `entry` (a line for `user`) in place of the user's first line and without its
/// others, or appended; and whether the user was there.
pub fn with_entry<'a>(text: &'a str, user: &str, entry: &'a str) -> (Vec<&'a str>, bool) {
    let mut lines = Vec::new();
    let mut replaced = false;
    for l in text.lines() {
        if line_user(l) == Some(user) {
            if !replaced {
                lines.push(entry);
                replaced = true;
            }
        } else {
            lines.push(l);
        }
    }
    if !replaced {
        lines.push(entry);
    }
    (lines, replaced)
}

/// `text` without the lines for `user`, or `None` when there are none.
pub fn without_user<'a>(text: &'a str, user: &str) -> Option<Vec<&'a str>> {
    let kept: Vec<&str> = text.lines().filter(|l| line_user(l) != Some(user)).collect();
    (kept.len() != text.lines().count()).then_some(kept)
}

/// Replaces `path` atomically with `lines`, mode 0600 (through the project's one
/// atomic-replace, [`crate::store::write_file_atomically`]).
pub fn write(path: &Path, lines: &[&str]) -> Result<(), crate::store::StoreError> {
    let data: String = lines.iter().map(|l| format!("{l}\n")).collect();
    crate::store::write_file_atomically(path, data.as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2y$05$abcdefghijklmnopqrstuu5Xb4Y4c.5g0gF7oPz7o8zQH3uJZk2Ue";

    #[test]
    fn lines() {
        let p = Path::new("/x");
        let ok = format!("# comment\n\nalice:{HASH}\n");
        assert!(parse(p, &ok).unwrap().contains_key("alice"));
        match parse(p, &format!("a:{HASH}\nbob:$apr1$x$y\n")) {
            Err(e @ HtpasswdError::Line { line: 2, .. }) => assert!(e.to_string().starts_with("/x:2: not a bcrypt")),
            other => panic!("{other:?}"),
        }
        assert!(parse(p, "carol:{SHA}abc=\n").is_err());
        assert!(matches!(parse(p, "nocolon\n"), Err(HtpasswdError::Line { why: "not a user:hash line", .. })));
        assert!(matches!(parse(p, &format!(":{HASH}\n")), Err(HtpasswdError::Line { why: "empty user name", .. })));
        assert!(parse(p, &format!("crlf:{HASH}\r\n")).unwrap().contains_key("crlf"));
    }

    #[test]
    fn edits_keep_other_lines() {
        let text = format!("# users\nalice:{HASH}\nbob:old\nbob:older\n");
        let (lines, replaced) = with_entry(&text, "bob", "bob:new");
        assert!(replaced);
        assert_eq!(lines, ["# users", &format!("alice:{HASH}"), "bob:new"]);
        let (lines, replaced) = with_entry(&text, "carol", "carol:x");
        assert!(!replaced);
        assert_eq!(lines.last(), Some(&"carol:x"));
        assert_eq!(without_user(&text, "bob").unwrap(), ["# users", &format!("alice:{HASH}")]);
        assert_eq!(without_user(&text, "nobody"), None);
        // A user name that is a prefix of another's is not that user.
        assert_eq!(without_user("bobby:x\n", "bob"), None);
    }

    #[test]
    fn new_entries_are_bcrypt_2y_and_verify() {
        let entry = new_entry("alice", "s3cret", 4).unwrap();
        let (user, hash) = entry.split_once(':').unwrap();
        assert_eq!(user, "alice");
        assert!(hash.starts_with("$2y$04$") && is_bcrypt(hash), "{hash}");
        assert!(bcrypt::verify("s3cret", hash).unwrap());
        assert!(!bcrypt::verify("other", hash).unwrap());
    }

    #[test]
    fn user_names() {
        assert!(is_valid_user_name("alice"));
        assert!(is_valid_user_name("a#b"));
        for bad in ["", "a:b", "a b", " ", "tab\t", "#alice", "#"] {
            assert!(!is_valid_user_name(bad), "{bad:?}");
        }
    }

    /// Found by the `htpasswd` fuzz target (issue 10): `#alice` passed as a user name, so
    /// `pier htpasswd add '#alice'` wrote a line that is read as a comment (a user that never
    /// exists) and `remove '#alice'` deleted comment lines. Every valid name's entry, once
    /// written, is read back as that user's.
    #[test]
    fn a_user_name_that_would_be_a_comment_is_refused() {
        assert!(!is_valid_user_name("#alice"));
        let p = Path::new("/x");
        let text = format!("#alice:{HASH}\nbob:{HASH}\n");
        assert!(!parse(p, &text).unwrap().contains_key("#alice"), "a # line is a comment");
        for user in ["alice", "a#", "x#y", "bob"] {
            assert!(is_valid_user_name(user));
            let entry = format!("{user}:{HASH}");
            let (lines, _) = with_entry(&text, user, &entry);
            assert_eq!(parse(p, &lines.join("\n")).unwrap().get(user).map(String::as_str), Some(HASH), "{user}");
        }
    }

    #[test]
    fn written_files_are_private_and_complete() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        write(&path, &["# a", "alice:x"]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "# a\nalice:x\n");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
        write(&path, &[]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "", "the last user removed: an empty file");
    }
}
