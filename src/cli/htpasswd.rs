//! `pier htpasswd add|remove|list`: manage the htpasswd file without apache2-utils. The
//! command line and the password prompt live here; the file format is [`crate::htpasswd`].

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use crate::config::Config;
use crate::htpasswd;

const USAGE: &str = "\
usage:
  pier htpasswd add USER    [--file F | --config C] [--password-stdin] [--cost N]
  pier htpasswd remove USER [--file F | --config C]
  pier htpasswd list        [--file F | --config C]

The file defaults to auth.htpasswd.path of the config file. Without --password-stdin the
password is asked for twice on the terminal. New entries are bcrypt; `add` on an existing
user re-sets its password as bcrypt (the way off MD5-apr1 and {SHA} entries, which `list`
marks as legacy).
";

/// bcrypt cost of new entries: ~60 ms on a current x86 core, well under a second on a Pi 4;
/// verified credentials are cached by the server, so this is paid once per client.
const DEFAULT_COST: u32 = 10;

pub fn run(args: &[OsString]) -> i32 {
    match parse(args).and_then(|cmd| execute(&cmd)) {
        Ok(()) => 0,
        Err(Failure::Usage(e)) => {
            eprintln!("pier htpasswd: {e}\n\n{USAGE}");
            super::EXIT_USAGE
        }
        Err(Failure::Failed(e)) => {
            eprintln!("pier htpasswd: {e}");
            1
        }
    }
}

enum Failure {
    Usage(String),
    Failed(String),
}

struct Command {
    verb: String,
    user: Option<String>,
    file: PathBuf,
    password_stdin: bool,
    cost: u32,
}

fn parse(args: &[OsString]) -> Result<Command, Failure> {
    let usage = |m: &str| Failure::Usage(m.to_string());
    let verb = args.first().ok_or_else(|| usage("missing subcommand"))?;
    let verb = verb.to_str().ok_or_else(|| usage(&format!("unknown subcommand {verb:?}")))?.to_string();
    let mut user = None;
    let (mut file, mut config, mut password_stdin, mut cost) = (None, None, false, DEFAULT_COST);
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--file" | "-f") => file = Some(PathBuf::from(it.next().ok_or_else(|| usage("--file needs a path"))?)),
            Some("--config" | "-c") => {
                config = Some(PathBuf::from(it.next().ok_or_else(|| usage("--config needs a path"))?))
            }
            Some("--password-stdin") => password_stdin = true,
            Some("--cost") => {
                cost = it
                    .next()
                    .and_then(|c| c.to_str()?.parse().ok())
                    .filter(|c| (4..=31).contains(c))
                    .ok_or_else(|| usage("--cost needs a number from 4 to 31"))?
            }
            Some(s) if !s.starts_with('-') && user.is_none() => user = Some(s.to_string()),
            None if !a.as_encoded_bytes().starts_with(b"-") && user.is_none() => {
                return Err(usage(&format!("the user name {a:?} is not valid UTF-8")))
            }
            _ => return Err(usage(&format!("unknown argument {a:?}"))),
        }
    }
    let file = match (file, config) {
        (Some(f), _) => f,
        (None, Some(c)) => {
            let loaded = Config::load(Some(&c), std::env::vars_os()).map_err(|e| Failure::Failed(e.to_string()))?;
            loaded
                .config
                .htpasswd
                .map(|h| h.path)
                .ok_or_else(|| usage(&format!("{} has no auth.htpasswd.path", c.display())))?
        }
        (None, None) => return Err(usage("say which file: --file F or --config C")),
    };
    match (verb.as_str(), &user) {
        ("add" | "remove", None) => return Err(usage(&format!("{verb} needs a user name"))),
        ("add" | "remove", Some(u)) if !htpasswd::is_valid_user_name(u) => {
            return Err(usage("a user name cannot be empty, start with '#' or contain ':' or white space"))
        }
        ("add" | "remove" | "list", _) => {}
        _ => return Err(usage(&format!("unknown subcommand {verb:?}"))),
    }
    Ok(Command { verb, user, file, password_stdin, cost })
}

fn execute(cmd: &Command) -> Result<(), Failure> {
    let failed = |m: String| Failure::Failed(m);
    let text = match std::fs::read_to_string(&cmd.file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && cmd.verb == "add" => String::new(),
        Err(e) => return Err(failed(format!("cannot read {}: {e}", cmd.file.display()))),
    };
    match cmd.verb.as_str() {
        "list" => {
            // Every scheme pier can read, legacy ones marked, whatever the config allows.
            let users =
                htpasswd::parse(&cmd.file, &text, &htpasswd::LegacyScheme::ALL).map_err(|e| failed(e.to_string()))?;
            let legacy: HashMap<&str, htpasswd::LegacyScheme> = htpasswd::legacy_users(&users).into_iter().collect();
            let mut names: Vec<&str> = users.keys().map(String::as_str).collect();
            names.sort_unstable();
            for n in names {
                match legacy.get(n) {
                    Some(scheme) => println!(
                        "{n}\t{scheme} (legacy: accepted only with auth.htpasswd.legacyhashes; `pier htpasswd add {n}` re-sets it as bcrypt)"
                    ),
                    None => println!("{n}"),
                }
            }
            Ok(())
        }
        "remove" => {
            let user = cmd.user.as_deref().unwrap_or_default();
            let kept = htpasswd::without_user(&text, user)
                .ok_or_else(|| failed(format!("no user {user:?} in {}", cmd.file.display())))?;
            htpasswd::write(&cmd.file, &kept).map_err(|e| failed(format!("cannot write {}: {e}", cmd.file.display())))
        }
        _ => {
            let user = cmd.user.as_deref().unwrap_or_default();
            let password =
                if cmd.password_stdin { password_from_stdin() } else { password_from_tty() }.map_err(failed)?;
            let entry = htpasswd::new_entry(user, &password, cmd.cost).map_err(|e| failed(format!("bcrypt: {e}")))?;
            let (lines, replaced) = htpasswd::with_entry(&text, user, &entry);
            htpasswd::write(&cmd.file, &lines)
                .map_err(|e| failed(format!("cannot write {}: {e}", cmd.file.display())))?;
            eprintln!("{} user {user:?} in {}", if replaced { "updated" } else { "added" }, cmd.file.display());
            Ok(())
        }
    }
}

fn password_from_stdin() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| format!("reading the password: {e}"))?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err("empty password on standard input".into());
    }
    Ok(password)
}

/// Asks twice on the terminal with echo off.
fn password_from_tty() -> Result<String, String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| "no terminal to ask for the password: use --password-stdin".to_string())?;
    let saved = tcgetattr(&tty).map_err(|e| format!("terminal: {e}"))?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    let ask = |prompt: &str| -> Result<String, String> {
        let mut out = &tty;
        let _ = write!(out, "{prompt}");
        tcsetattr(&tty, SetArg::TCSANOW, &quiet).map_err(|e| format!("terminal: {e}"))?;
        let mut line = String::new();
        let read = std::io::BufReader::new(&tty).read_line(&mut line);
        let _ = tcsetattr(&tty, SetArg::TCSANOW, &saved);
        let _ = writeln!(out);
        read.map_err(|e| format!("reading the password: {e}"))?;
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    };
    let first = ask("Password: ")?;
    if first.is_empty() {
        return Err("empty password".into());
    }
    if ask("Again: ")? != first {
        return Err("the passwords differ".into());
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStringExt;

    use super::*;

    fn os(args: &[&[u8]]) -> Vec<OsString> {
        args.iter().map(|a| OsString::from_vec(a.to_vec())).collect()
    }

    fn usage_message(args: &[&[u8]]) -> String {
        match parse(&os(args)) {
            Err(Failure::Usage(m)) => m,
            Err(Failure::Failed(m)) => panic!("{args:?}: failed, not a usage error: {m}"),
            Ok(_) => panic!("{args:?} accepted"),
        }
    }

    #[test]
    fn strings_must_be_utf8_and_paths_need_not() {
        let cmd = parse(&os(&[b"add", b"alice", b"--file", b"/tmp/caf\xe9"])).unwrap_or_else(|_| panic!("refused"));
        assert_eq!(cmd.file, PathBuf::from(OsString::from_vec(b"/tmp/caf\xe9".to_vec())));
        assert_eq!(cmd.user.as_deref(), Some("alice"));
        assert_eq!(
            usage_message(&[b"add", b"al\xefce", b"--file", b"f"]),
            "the user name \"al\\xEFce\" is not valid UTF-8"
        );
        assert_eq!(usage_message(&[b"l\xefst", b"--file", b"f"]), "unknown subcommand \"l\\xEFst\"");
        assert_eq!(
            usage_message(&[b"add", b"a", b"--cost", b"1\xff", b"--file", b"f"]),
            "--cost needs a number from 4 to 31"
        );
        assert_eq!(
            usage_message(&[b"add", b"a b", b"--file", b"f"]),
            "a user name cannot be empty, start with '#' or contain ':' or white space"
        );
        assert_eq!(
            usage_message(&[b"add", b"#a", b"--file", b"f"]),
            "a user name cannot be empty, start with '#' or contain ':' or white space"
        );
        assert_eq!(usage_message(&[b"list", b"--fr\xffb"]), "unknown argument \"--fr\\xFFb\"");
    }
}
