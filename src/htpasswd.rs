//! The htpasswd file format, as the server reads it (`http::auth`) and `pier htpasswd` edits it
//! (`cli::htpasswd`), and the hash schemes its entries are checked with.
//!
//! - A file is `user:hash` lines; `#` comments and blank lines are ignored. bcrypt hashes
//!   (`$2a$`, `$2b$`, `$2x$`, `$2y$`) are always accepted. The weak schemes apache2-utils also
//!   writes, MD5-apr1 (`$apr1$`, `htpasswd -m`, its default) and SHA-1 (`{SHA}`, `htpasswd -s`),
//!   are accepted only when the caller allows them ([`LegacyScheme`], from
//!   `auth.htpasswd.legacyhashes`). Any other entry (plain text, crypt(3) DES, MD5-crypt,
//!   SHA-256/512-crypt, a malformed hash) is an error naming its file and line, never skipped (a
//!   skipped entry would be a user silently locked out, a weaker scheme one silently let in).
//! - [`verify`] checks a password against any accepted hash; the legacy schemes compare in
//!   constant time.
//! - New entries are bcrypt `$2y$`, the variant apache2-utils writes; editing keeps every other
//!   line as it is, and a file is replaced atomically (temporary file, fsync, rename, directory
//!   fsync) with mode 0600.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use md5::{Digest as _, Md5};
use sha1::Sha1;
use subtle::ConstantTimeEq as _;

#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    #[error("cannot read htpasswd file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line that is not `user:hash` with a hash of a scheme pier accepts.
    #[error("{}:{line}: {why}", path.display())]
    Line { path: PathBuf, line: usize, why: &'static str },
    /// An entry of a legacy scheme the configuration does not allow.
    #[error(
        "{}:{line}: user {user:?} has an {scheme} hash (weak), refused unless allowed: re-set the password as bcrypt \
         (`pier htpasswd add {user}` or `htpasswd -B`), or allow such entries with \
         `auth.htpasswd.legacyhashes: [{}]` (environment: REGISTRY_AUTH_HTPASSWD_LEGACYHASHES={})",
        path.display(), scheme.config_name(), scheme.config_name()
    )]
    NotAllowed { path: PathBuf, line: usize, user: String, scheme: LegacyScheme },
    #[error("cannot write htpasswd file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: crate::store::StoreError,
    },
}

/// A weak scheme of existing htpasswd files, accepted only when `auth.htpasswd.legacyhashes`
/// names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LegacyScheme {
    /// `$apr1$salt$hash`: Apache's MD5-crypt, 1000 rounds of MD5 (`htpasswd -m`, the default).
    Apr1,
    /// `{SHA}base64(sha1(password))`: one unsalted SHA-1 (`htpasswd -s`).
    Sha,
}

impl LegacyScheme {
    pub const ALL: [LegacyScheme; 2] = [LegacyScheme::Apr1, LegacyScheme::Sha];

    /// The name in `auth.htpasswd.legacyhashes`.
    pub fn config_name(self) -> &'static str {
        match self {
            LegacyScheme::Apr1 => "apr1",
            LegacyScheme::Sha => "sha",
        }
    }

    /// The scheme `auth.htpasswd.legacyhashes` names `name` (any case).
    pub fn from_config_name(name: &str) -> Option<LegacyScheme> {
        LegacyScheme::ALL.into_iter().find(|s| s.config_name().eq_ignore_ascii_case(name))
    }
}

impl std::fmt::Display for LegacyScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LegacyScheme::Apr1 => "MD5-apr1",
            LegacyScheme::Sha => "SHA-1",
        })
    }
}

/// The scheme of an accepted hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Bcrypt,
    Legacy(LegacyScheme),
}

/// Why a hash is refused whatever the configuration says.
const NOT_ACCEPTED: &str = "not a bcrypt hash (create entries with `pier htpasswd add` or `htpasswd -B`; MD5-apr1 \
     `$apr1$` and SHA-1 `{SHA}` entries can be allowed with auth.htpasswd.legacyhashes; plain-text and crypt(3) DES \
     entries are never accepted)";

/// The scheme of `hash`, or why it is never accepted.
pub fn scheme_of(hash: &str) -> Result<Scheme, &'static str> {
    if let Some(rest) = hash.strip_prefix("$apr1$") {
        return if is_apr1(rest) { Ok(Scheme::Legacy(LegacyScheme::Apr1)) } else { Err("a malformed MD5-apr1 hash") };
    }
    if let Some(rest) = hash.strip_prefix("{SHA}") {
        return if sha_digest(rest).is_some() {
            Ok(Scheme::Legacy(LegacyScheme::Sha))
        } else {
            Err("a malformed {SHA} hash")
        };
    }
    if is_bcrypt(hash) {
        return Ok(Scheme::Bcrypt);
    }
    Err(if hash.starts_with("$2") {
        "a malformed bcrypt hash"
    } else if hash.starts_with("$1$") {
        "an MD5-crypt (`$1$`) hash, which pier does not accept (re-set the password with `pier htpasswd add` or `htpasswd -B`)"
    } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
        "a SHA-256/512-crypt (`$5$`/`$6$`) hash, which pier does not accept (re-set the password with `pier htpasswd add` or `htpasswd -B`)"
    } else {
        NOT_ACCEPTED
    })
}

/// Reads and parses the file at `path`, accepting the `allowed` legacy schemes besides bcrypt.
pub fn read(path: &Path, allowed: &[LegacyScheme]) -> Result<HashMap<String, String>, HtpasswdError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read { path: path.to_path_buf(), source })?;
    parse(path, &text, allowed)
}

/// Parses the text of the file at `path` into user → hash: bcrypt, or of a scheme in `allowed`.
pub fn parse(path: &Path, text: &str, allowed: &[LegacyScheme]) -> Result<HashMap<String, String>, HtpasswdError> {
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
        match scheme_of(hash).map_err(bad)? {
            Scheme::Bcrypt => {}
            Scheme::Legacy(scheme) if allowed.contains(&scheme) => {}
            Scheme::Legacy(scheme) => {
                return Err(HtpasswdError::NotAllowed {
                    path: path.to_path_buf(),
                    line: i + 1,
                    user: user.to_string(),
                    scheme,
                })
            }
        }
        users.insert(user.to_string(), hash.to_string());
    }
    Ok(users)
}

/// The users of `users` whose hash is of a legacy scheme, by name.
pub fn legacy_users(users: &HashMap<String, String>) -> Vec<(&str, LegacyScheme)> {
    let mut legacy: Vec<_> = users
        .iter()
        .filter_map(|(u, h)| match scheme_of(h) {
            Ok(Scheme::Legacy(s)) => Some((u.as_str(), s)),
            _ => None,
        })
        .collect();
    legacy.sort_unstable();
    legacy
}

/// Whether `password` matches `hash` (any accepted scheme; `false` for anything else). bcrypt
/// compares as the `bcrypt` crate does; MD5-apr1 and SHA-1 compare in constant time.
pub fn verify(password: &str, hash: &str) -> bool {
    match scheme_of(hash) {
        Ok(Scheme::Bcrypt) => bcrypt::verify(password, hash).unwrap_or(false),
        Ok(Scheme::Legacy(LegacyScheme::Apr1)) => {
            let Some((salt, expected)) = hash.strip_prefix("$apr1$").and_then(|r| r.split_once('$')) else {
                return false;
            };
            apr1_hash(password.as_bytes(), salt.as_bytes()).as_bytes().ct_eq(expected.as_bytes()).into()
        }
        Ok(Scheme::Legacy(LegacyScheme::Sha)) => {
            let Some(expected) = hash.strip_prefix("{SHA}").and_then(sha_digest) else { return false };
            Sha1::digest(password.as_bytes()).as_slice().ct_eq(&expected).into()
        }
        Err(_) => false,
    }
}

/// A `$apr1$salt$hash` entry for `password` (`salt`: up to 8 characters of `./0-9A-Za-z`). pier
/// never writes these; they are the dummies unknown names are checked against.
pub fn apr1_entry(password: &str, salt: &str) -> String {
    let salt: String = salt.chars().take(8).collect();
    format!("$apr1${salt}${}", apr1_hash(password.as_bytes(), salt.as_bytes()))
}

/// A `{SHA}` entry for `password` (never written by pier; dummies, as [`apr1_entry`]).
pub fn sha_entry(password: &str) -> String {
    format!("{{SHA}}{}", base64::engine::general_purpose::STANDARD.encode(Sha1::digest(password.as_bytes())))
}

/// The alphabet of crypt(3) hashes and salts.
const CRYPT64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `salt$hash` after `$apr1$`: a salt of 1 to 8 characters without `$`, a 22-character hash.
fn is_apr1(rest: &str) -> bool {
    let Some((salt, hash)) = rest.split_once('$') else { return false };
    (1..=8).contains(&salt.len()) && hash.len() == 22 && hash.bytes().all(|b| CRYPT64.contains(&b))
}

/// The 20-byte digest of a `{SHA}` entry's base64.
fn sha_digest(b64: &str) -> Option<[u8; 20]> {
    base64::engine::general_purpose::STANDARD.decode(b64).ok()?.try_into().ok()
}

/// Apache's MD5-crypt (`apr_md5_encode`, the FreeBSD MD5-crypt with the magic `$apr1$`): the
/// 22-character hash of `password` with `salt` (at most 8 bytes; longer salts are cut, as
/// Apache does).
fn apr1_hash(password: &[u8], salt: &[u8]) -> String {
    const MAGIC: &[u8] = b"$apr1$";
    let salt = &salt[..salt.len().min(8)];
    let alternate = Md5::new().chain_update(password).chain_update(salt).chain_update(password).finalize();
    let mut ctx = Md5::new().chain_update(password).chain_update(MAGIC).chain_update(salt);
    for chunk in password.chunks(16) {
        ctx.update(&alternate[..chunk.len()]);
    }
    let mut n = password.len();
    while n > 0 {
        if n & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        n >>= 1;
    }
    let mut digest = ctx.finalize();
    for round in 0..1000 {
        let mut ctx = Md5::new();
        if round & 1 == 1 {
            ctx.update(password);
        } else {
            ctx.update(digest);
        }
        if round % 3 != 0 {
            ctx.update(salt);
        }
        if round % 7 != 0 {
            ctx.update(password);
        }
        if round & 1 == 1 {
            ctx.update(digest);
        } else {
            ctx.update(password);
        }
        digest = ctx.finalize();
    }
    let d = digest;
    let mut out = String::with_capacity(22);
    let mut put = |mut value: u32, chars: usize| {
        for _ in 0..chars {
            out.push(char::from(CRYPT64[(value & 0x3f) as usize]));
            value >>= 6;
        }
    };
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        put(u32::from(d[a]) << 16 | u32::from(d[b]) << 8 | u32::from(d[c]), 4);
    }
    put(u32::from(d[11]), 2);
    out
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

/// Replaces `user`'s entry in the file at `path` with `entry` if it still holds `old_hash`
/// (the file is read again: an entry changed since, by `pier htpasswd` or an editor, is left
/// alone). Every other line stays as it is; the file is replaced atomically. Returns whether it
/// was rewritten.
pub fn replace_if_unchanged(
    path: &Path,
    user: &str,
    old_hash: &str,
    entry: &str,
    allowed: &[LegacyScheme],
) -> Result<bool, HtpasswdError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read { path: path.to_path_buf(), source })?;
    if parse(path, &text, allowed)?.get(user).map(String::as_str) != Some(old_hash) {
        return Ok(false);
    }
    let (lines, _) = with_entry(&text, user, entry);
    write(path, &lines).map_err(|source| HtpasswdError::Write { path: path.to_path_buf(), source })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2y$05$abcdefghijklmnopqrstuu5Xb4Y4c.5g0gF7oPz7o8zQH3uJZk2Ue";

    #[test]
    fn lines() {
        let p = Path::new("/x");
        let ok = format!("# comment\n\nalice:{HASH}\n");
        assert!(parse(p, &ok, &[]).unwrap().contains_key("alice"));
        assert!(matches!(parse(p, "nocolon\n", &[]), Err(HtpasswdError::Line { why: "not a user:hash line", .. })));
        assert!(matches!(
            parse(p, &format!(":{HASH}\n"), &[]),
            Err(HtpasswdError::Line { why: "empty user name", .. })
        ));
        assert!(parse(p, &format!("crlf:{HASH}\r\n"), &[]).unwrap().contains_key("crlf"));
    }

    /// Fixed vectors: `htpasswd -nbm`/`-nbs` output (apache2-utils 2.4) and the example of
    /// Apache's documentation.
    const APR1: &[(&str, &str)] = &[
        ("p@ss w0rd", "$apr1$IbDGhcqV$IzThR9WbpNaaf1787RVtn."),
        ("password", "$apr1$RandSalt$PgCXHRrkpSt4cbyC2C6bm/"),
        ("password", "$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00"),
        ("myPassword", "$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/"),
    ];
    const SHA: &[(&str, &str)] =
        &[("secret", "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="), ("password", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=")];

    #[test]
    fn legacy_entries_are_refused_unless_allowed_naming_the_option() {
        let p = Path::new("/x");
        let text = format!("a:{HASH}\nbob:{}\ncarol:{}\n", APR1[0].1, SHA[0].1);
        let e = parse(p, &text, &[]).unwrap_err();
        assert!(matches!(e, HtpasswdError::NotAllowed { line: 2, scheme: LegacyScheme::Apr1, .. }), "{e:?}");
        let message = e.to_string();
        assert!(message.starts_with("/x:2: user \"bob\" has an MD5-apr1 hash"), "{message}");
        assert!(message.contains("auth.htpasswd.legacyhashes: [apr1]"), "{message}");
        assert!(message.contains("REGISTRY_AUTH_HTPASSWD_LEGACYHASHES=apr1"), "{message}");
        assert!(!message.contains(APR1[0].1), "the hash is not shown: {message}");
        let e = parse(p, &text, &[LegacyScheme::Apr1]).unwrap_err();
        assert!(matches!(e, HtpasswdError::NotAllowed { line: 3, scheme: LegacyScheme::Sha, .. }), "{e:?}");
        assert!(e.to_string().contains("auth.htpasswd.legacyhashes: [sha]"), "{e}");
        let users = parse(p, &text, &LegacyScheme::ALL).unwrap();
        assert_eq!(legacy_users(&users), [("bob", LegacyScheme::Apr1), ("carol", LegacyScheme::Sha)]);
        // A legacy line is refused even when a later line of the same user overrides it (found
        // by the fuzz target's model, which had counted only the entries that take effect).
        let shadowed = format!("bob:{}\nbob:{HASH}\n", SHA[0].1);
        assert!(matches!(parse(p, &shadowed, &[]), Err(HtpasswdError::NotAllowed { line: 1, .. })));
        assert!(legacy_users(&parse(p, &shadowed, &LegacyScheme::ALL).unwrap()).is_empty());
    }

    #[test]
    fn plain_text_and_crypt_entries_are_never_accepted() {
        let p = Path::new("/x");
        // htpasswd -nbp (plain), -nbd (crypt DES), openssl passwd -1, htpasswd -nb5, malformed.
        for (hash, why) in [
            ("secret", NOT_ACCEPTED),
            ("mcJcV2t4Gv0c.", NOT_ACCEPTED),
            ("$1$abcdefgh$cHJi5PXp/ki/ktXzqlk6I1", "an MD5-crypt"),
            ("$6$rounds=5000$abc$def", "a SHA-256/512-crypt"),
            ("$apr1$x$y", "a malformed MD5-apr1 hash"),
            ("$apr1$toolongsalt$IzThR9WbpNaaf1787RVtn.", "a malformed MD5-apr1 hash"),
            ("{SHA}abc=", "a malformed {SHA} hash"),
            ("$2y$05$short", "a malformed bcrypt hash"),
        ] {
            match parse(p, &format!("a:{HASH}\nbob:{hash}\n"), &LegacyScheme::ALL) {
                Err(HtpasswdError::Line { line: 2, why: w, .. }) => assert!(w.starts_with(why), "{hash}: {w}"),
                other => panic!("{hash}: {other:?}"),
            }
            assert!(!verify("secret", hash), "{hash}");
        }
        assert!(NOT_ACCEPTED.contains("plain-text and crypt(3) DES entries are never accepted"));
    }

    #[test]
    fn apr1_and_sha_verify_known_vectors() {
        for (password, hash) in APR1.iter().chain(SHA) {
            assert!(verify(password, hash), "{password:?} {hash}");
            assert!(!verify(&format!("{password}x"), hash), "{hash}");
            assert!(!verify("", hash), "{hash}");
            assert!(scheme_of(hash).is_ok(), "{hash}");
        }
        // The hash is computed from the salt as written, cut at 8 bytes as Apache does.
        let (salt, _) = APR1[1].1["$apr1$".len()..].split_once('$').unwrap();
        assert_eq!(apr1_entry("password", salt), APR1[1].1);
        assert_eq!(apr1_entry("password", "RandSaltAndMore"), APR1[1].1);
        assert_eq!(sha_entry("secret"), SHA[0].1);
        // Passwords longer than one MD5 block, and empty ones, go through every branch.
        let long = "x".repeat(40);
        assert!(verify(&long, &apr1_entry(&long, "abcdefgh")));
        assert!(verify("", &apr1_entry("", "s")));
        assert!(!verify("y", &apr1_entry("", "s")));
    }

    #[test]
    fn a_legacy_entry_is_replaced_only_while_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let text = format!("# team\nalice:{HASH}\nbob:{}\n\n# end\n", APR1[0].1);
        std::fs::write(&path, &text).unwrap();
        let all = &LegacyScheme::ALL;
        assert!(!replace_if_unchanged(&path, "bob", SHA[0].1, &format!("bob:{HASH}"), all).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "a changed entry is left alone");
        assert!(replace_if_unchanged(&path, "bob", APR1[0].1, &format!("bob:{HASH}"), all).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("# team\nalice:{HASH}\nbob:{HASH}\n\n# end\n"));
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
        assert!(!parse(p, &text, &[]).unwrap().contains_key("#alice"), "a # line is a comment");
        for user in ["alice", "a#", "x#y", "bob"] {
            assert!(is_valid_user_name(user));
            let entry = format!("{user}:{HASH}");
            let (lines, _) = with_entry(&text, user, &entry);
            assert_eq!(parse(p, &lines.join("\n"), &[]).unwrap().get(user).map(String::as_str), Some(HASH), "{user}");
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
