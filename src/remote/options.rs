//! The command-line options of a remote source: `--from URL`, `--username USER`,
//! `--password-stdin`, `--ca FILE` (and the password from `PIER_REMOTE_PASSWORD`).
//!
//! Invariants: a password is never taken from the command line (`--password` is refused, as is
//! a URL with user info: both would show in the process list and shell history); it comes from
//! standard input (`--password-stdin`, one trailing newline dropped) or from the environment
//! variable [`PASSWORD_ENV`], and is held in a [`Secret`] from then on. Options that only make
//! sense with `--from` are refused without it.

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;

use super::{Credentials, RemoteConfig, Secret};

/// The environment variable holding the password for `--username`.
pub const PASSWORD_ENV: &str = "PIER_REMOTE_PASSWORD";

/// Longest password read from standard input.
const MAX_PASSWORD_BYTES: u64 = 64 * 1024;

/// The options' lines for a command's usage text (`pier export --help`).
pub const USAGE: &str = "  --from URL               read a remote registry instead of the local store (no pier data,
                           no daemon, no config): https://HOST[:PORT][/PREFIX], or http://...
  --username USER          authenticate as USER (Basic, or for a token where the registry asks
                           for one); the password from --password-stdin or PIER_REMOTE_PASSWORD
  --password-stdin         read the password from standard input
  --ca FILE                also trust the CA certificates in FILE (PEM), besides the system's
";

/// Takes the remote options out of `args`: the source's configuration (`None` without
/// `--from`) and the arguments left for the command. `password_env` is the value of
/// [`PASSWORD_ENV`], `stdin` where `--password-stdin` reads. `Err` is a usage message.
pub fn take_remote_options(
    args: &[OsString],
    password_env: Option<OsString>,
    stdin: &mut dyn Read,
) -> Result<(Option<RemoteConfig>, Vec<OsString>), String> {
    let mut url: Option<String> = None;
    let mut username: Option<String> = None;
    let mut password_stdin = false;
    let mut ca_files = Vec::new();
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let text = arg.to_str();
        let (name, inline) = match text.and_then(|t| t.split_once('=')) {
            Some((n, v)) if n.starts_with("--") => (Some(n), Some(v)),
            _ => (text, None),
        };
        let mut value = |flag: &str| -> Result<OsString, String> {
            match inline {
                Some(v) => Ok(OsString::from(v)),
                None => it.next().cloned().ok_or_else(|| format!("{flag} needs a value")),
            }
        };
        match name {
            Some("--from") => {
                let v = value("--from")?;
                let v = v.into_string().map_err(|_| String::from("--from needs a UTF-8 URL"))?;
                if url.replace(v).is_some() {
                    return Err(String::from("--from is given twice"));
                }
            }
            Some("--username") => {
                let v = value("--username")?.into_string().map_err(|_| String::from("--username must be UTF-8"))?;
                if v.is_empty() || v.contains(':') {
                    return Err(String::from("--username must be non-empty and hold no ':'"));
                }
                username = Some(v);
            }
            Some("--password-stdin") if inline.is_none() => password_stdin = true,
            Some("--ca") => ca_files.push(PathBuf::from(value("--ca")?)),
            Some("--password" | "-p") => {
                return Err(format!(
                    "a password is never given on the command line (it would show in the process list): use --password-stdin or {PASSWORD_ENV}"
                ))
            }
            _ => rest.push(arg.clone()),
        }
    }
    let Some(url) = url else {
        if username.is_some() || password_stdin || !ca_files.is_empty() {
            return Err(String::from("--username, --password-stdin and --ca go with --from URL"));
        }
        return Ok((None, rest));
    };
    let credentials = match (username, password_stdin) {
        (None, true) => return Err(String::from("--password-stdin needs --username")),
        (None, false) => None,
        (Some(username), true) => {
            let mut raw = Vec::new();
            stdin
                .take(MAX_PASSWORD_BYTES + 1)
                .read_to_end(&mut raw)
                .map_err(|e| format!("--password-stdin: cannot read standard input: {e}"))?;
            if raw.len() as u64 > MAX_PASSWORD_BYTES {
                return Err(format!("--password-stdin: more than {MAX_PASSWORD_BYTES} bytes on standard input"));
            }
            let mut password =
                String::from_utf8(raw).map_err(|_| String::from("--password-stdin: the password is not UTF-8"))?;
            if password.ends_with('\n') {
                password.pop();
                if password.ends_with('\r') {
                    password.pop();
                }
            }
            if password.is_empty() {
                return Err(String::from("--password-stdin: standard input holds no password"));
            }
            Some(Credentials { username, password: Secret::new(password) })
        }
        (Some(username), false) => {
            let password = password_env
                .filter(|p| !p.is_empty())
                .ok_or_else(|| format!("--username needs a password: --password-stdin or {PASSWORD_ENV}"))?
                .into_string()
                .map_err(|_| format!("{PASSWORD_ENV} is not UTF-8"))?;
            Some(Credentials { username, password: Secret::new(password) })
        }
    };
    Ok((Some(RemoteConfig { credentials, ca_files, ..RemoteConfig::new(&url) }), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn remote_options_are_taken_out_and_the_rest_left() {
        let (config, rest) = take_remote_options(
            &args(&["a:1", "--from", "https://r.example", "--ca=/x.pem", "-o", "f.tar", "--ca", "/y.pem"]),
            Some("ignored".into()),
            &mut &b""[..],
        )
        .unwrap();
        let config = config.unwrap();
        assert_eq!(config.url, "https://r.example");
        assert_eq!(config.ca_files, vec![PathBuf::from("/x.pem"), PathBuf::from("/y.pem")]);
        assert!(config.credentials.is_none());
        assert_eq!(rest, args(&["a:1", "-o", "f.tar"]));
        let (config, rest) = take_remote_options(&args(&["a:1"]), None, &mut &b""[..]).unwrap();
        assert!(config.is_none());
        assert_eq!(rest, args(&["a:1"]));
    }

    #[test]
    fn the_password_comes_from_stdin_or_the_environment_never_the_command_line() {
        let (config, _) = take_remote_options(
            &args(&["--from", "https://r", "--username", "u", "--password-stdin"]),
            Some("env".into()),
            &mut &b"s3cret\r\n"[..],
        )
        .unwrap();
        let c = config.unwrap().credentials.unwrap();
        assert_eq!((c.username.as_str(), c.password.expose()), ("u", "s3cret"));
        let (config, _) =
            take_remote_options(&args(&["--from", "https://r", "--username", "u"]), Some("env".into()), &mut &b""[..])
                .unwrap();
        assert_eq!(config.unwrap().credentials.unwrap().password.expose(), "env");
        for bad in [
            &["--from", "https://r", "--username", "u"][..],
            &["--from", "https://r", "--password-stdin"],
            &["--from", "https://r", "--username", "u", "--password", "pw"],
            &["--username", "u", "--password-stdin"],
            &["--ca", "/x"],
            &["--from"],
            &["--from", "a", "--from", "b"],
        ] {
            let e = take_remote_options(&args(bad), None, &mut &b"pw\n"[..]).unwrap_err();
            assert!(!e.contains("pw\n"), "{e}");
        }
        assert!(take_remote_options(
            &args(&["--from", "https://r", "--username", "u", "--password-stdin"]),
            None,
            &mut &b"\n"[..]
        )
        .is_err());
    }
}
