//! `pier htpasswd add|remove|list`: manage the htpasswd file without apache2-utils.
//!
//! Entries are bcrypt (`$2y$`, the variant apache2-utils writes), the file is replaced
//! atomically (write a temporary file, fsync, rename) with mode 0600, and other lines are kept as
//! they are.

use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::http::auth::parse_htpasswd;

const USAGE: &str = "\
usage:
  pier htpasswd add USER    [--file F | --config C] [--password-stdin] [--cost N]
  pier htpasswd remove USER [--file F | --config C]
  pier htpasswd list        [--file F | --config C]

The file defaults to auth.htpasswd.path of the config file. Without --password-stdin the
password is asked for twice on the terminal.
";

/// bcrypt cost of new entries: ~60 ms on a current x86 core, well under a second on a Pi 4;
/// verified credentials are cached by the server, so this is paid once per client.
const DEFAULT_COST: u32 = 10;

pub fn run(args: &[String]) -> i32 {
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

fn parse(args: &[String]) -> Result<Command, Failure> {
    let usage = |m: &str| Failure::Usage(m.to_string());
    let verb = args.first().cloned().ok_or_else(|| usage("missing subcommand"))?;
    let mut user = None;
    let (mut file, mut config, mut password_stdin, mut cost) = (None, None, false, DEFAULT_COST);
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--file" | "-f" => file = Some(PathBuf::from(it.next().ok_or_else(|| usage("--file needs a path"))?)),
            "--config" | "-c" => config = Some(PathBuf::from(it.next().ok_or_else(|| usage("--config needs a path"))?)),
            "--password-stdin" => password_stdin = true,
            "--cost" => {
                cost = it
                    .next()
                    .and_then(|c| c.parse().ok())
                    .filter(|c| (4..=31).contains(c))
                    .ok_or_else(|| usage("--cost needs a number from 4 to 31"))?
            }
            s if !s.starts_with('-') && user.is_none() => user = Some(s.to_string()),
            other => return Err(usage(&format!("unknown argument {other:?}"))),
        }
    }
    let file = match (file, config) {
        (Some(f), _) => f,
        (None, Some(c)) => {
            let cfg = Config::load(Some(&c), std::env::vars()).map_err(|e| Failure::Failed(e.to_string()))?;
            cfg.htpasswd.map(|h| h.path).ok_or_else(|| usage(&format!("{} has no auth.htpasswd.path", c.display())))?
        }
        (None, None) => return Err(usage("say which file: --file F or --config C")),
    };
    match (verb.as_str(), &user) {
        ("add" | "remove", None) => return Err(usage(&format!("{verb} needs a user name"))),
        ("add" | "remove", Some(u)) if u.contains(':') || u.trim().is_empty() || u.contains(char::is_whitespace) => {
            return Err(usage("a user name cannot be empty or contain ':' or white space"))
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
    let entry_user = |line: &str| line.split_once(':').map(|(u, _)| u.to_string());
    match cmd.verb.as_str() {
        "list" => {
            let users = parse_htpasswd(&cmd.file, &text).map_err(|e| failed(e.to_string()))?;
            let mut names: Vec<_> = users.into_keys().collect();
            names.sort();
            for n in names {
                println!("{n}");
            }
            Ok(())
        }
        "remove" => {
            let user = cmd.user.as_deref().unwrap_or_default();
            let kept: Vec<&str> = text.lines().filter(|l| entry_user(l).as_deref() != Some(user)).collect();
            if kept.len() == text.lines().count() {
                return Err(failed(format!("no user {user:?} in {}", cmd.file.display())));
            }
            write_file(&cmd.file, &kept).map_err(|e| failed(format!("cannot write {}: {e}", cmd.file.display())))
        }
        _ => {
            let user = cmd.user.as_deref().unwrap_or_default();
            let password =
                if cmd.password_stdin { password_from_stdin() } else { password_from_tty() }.map_err(failed)?;
            let hash = bcrypt::hash_with_result(&password, cmd.cost)
                .map_err(|e| failed(format!("bcrypt: {e}")))?
                .format_for_version(bcrypt::Version::TwoY);
            let entry = format!("{user}:{hash}");
            let mut lines: Vec<&str> = Vec::new();
            let mut replaced = false;
            for l in text.lines() {
                if entry_user(l).as_deref() == Some(user) {
                    if !replaced {
                        lines.push(&entry);
                        replaced = true;
                    }
                } else {
                    lines.push(l);
                }
            }
            if !replaced {
                lines.push(&entry);
            }
            write_file(&cmd.file, &lines).map_err(|e| failed(format!("cannot write {}: {e}", cmd.file.display())))?;
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

/// Replaces `path` atomically with `lines`, mode 0600.
fn write_file(path: &Path, lines: &[&str]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("htpasswd");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        for l in lines {
            writeln!(f, "{l}")?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
