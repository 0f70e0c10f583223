//! htpasswd files as users have them from nginx `auth_basic` setups, made by apache2-utils'
//! real `htpasswd`: `-c` (MD5-apr1, its default) and `-s` (`{SHA}`) entries, accepted only with
//! `auth.htpasswd.legacyhashes` (or `REGISTRY_AUTH_HTPASSWD_LEGACYHASHES`), warned about per user
//! without secrets, moved to bcrypt at login with `auth.htpasswd.upgradelegacy` or by
//! `pier htpasswd add`, and marked by `pier htpasswd list`. Plain-text and crypt(3) entries stay
//! refused. Logins go through curl and skopeo against the real binary; apache2-utils is required
//! (tests fail, never skip, without it).

use crate::harness::*;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const ALICE_PW: &str = "alice-Apr1.pw!7";
const BOB_PW: &str = "bob-Sha1.pw#3";
const CAROL_PW: &str = "carol-Bcrypt.pw%5";

/// A password file written the way an nginx guide does it: `htpasswd -c -b -m` for the first
/// user (MD5-apr1), `-b -s` for the second (`{SHA}`), `-b -B -C 4` for a bcrypt one, with a
/// comment line added by hand.
struct NginxUsers {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl NginxUsers {
    fn new() -> NginxUsers {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.password");
        let f = path.to_str().unwrap();
        run(Command::new("htpasswd").args(["-c", "-b", "-m", f, "alice", ALICE_PW]));
        run(Command::new("htpasswd").args(["-b", "-s", f, "bob", BOB_PW]));
        run(Command::new("htpasswd").args(["-b", "-B", "-C", "4", f, "carol", CAROL_PW]));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("# registry users\n{text}")).unwrap();
        let users = NginxUsers { _dir: dir, path };
        let text = users.text();
        assert!(users.hash_of("alice").starts_with("$apr1$"), "{text}");
        assert!(users.hash_of("bob").starts_with("{SHA}"), "{text}");
        assert!(users.hash_of("carol").starts_with("$2y$04$"), "{text}");
        users
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap()
    }

    fn hash_of(&self, user: &str) -> String {
        let text = self.text();
        let prefix = format!("{user}:");
        let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {user} in:\n{text}"));
        line[prefix.len()..].to_string()
    }
}

/// `auth.htpasswd` on `path`, with `more` keys indented under it.
fn auth_yaml(path: &Path, more: &[&str]) -> String {
    let mut yaml = format!("auth:\n  htpasswd:\n    realm: legacy\n    path: {}\n", path.display());
    for line in more {
        yaml.push_str(&format!("    {line}\n"));
    }
    yaml
}

fn pier_with(path: &Path, more: &[&str], env: &[(&str, &str)]) -> Pier {
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Pier::new(Options { extra_yaml: auth_yaml(path, more), env, ..Default::default() })
}

/// The status of `GET /v2/` with curl's `-u user:password`.
fn curl_login(p: &Pier, user: &str, password: &str) -> u16 {
    let out = run(Command::new("curl").args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-u",
        &format!("{user}:{password}"),
        &format!("http://{}/v2/", p.host()),
    ]));
    out.trim().parse().unwrap_or_else(|_| panic!("curl printed {out:?}"))
}

#[track_caller]
fn assert_login(p: &Pier, user: &str, password: &str, status: u16) {
    let got = curl_login(p, user, password);
    assert_eq!(got, status, "login of {user:?}; log:\n{}", p.log_tail());
}

/// Neither the passwords nor the hashes of the file appear in `text`.
#[track_caller]
fn assert_no_secrets(text: &str, users: &[(&str, &str)], what: &str) {
    for (hash, password) in users {
        assert!(!text.contains(password), "{what} shows a password:\n{text}");
        assert!(!text.contains(hash), "{what} shows a hash:\n{text}");
        // Not even the salt of an apr1 hash, nor the digest part.
        for part in hash.split('$').filter(|s| s.len() >= 8) {
            assert!(!text.contains(part), "{what} shows part of a hash ({part}):\n{text}");
        }
    }
}

/// `pier htpasswd ARGS` → (success, stdout, stderr); `stdin` is written to its input.
fn pier_htpasswd(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(PIER)
        .arg("htpasswd")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const APR1_WARNING: &str = "htpasswd: user \"alice\" uses MD5-apr1 (weak)";
const SHA_WARNING: &str = "htpasswd: user \"bob\" uses SHA-1 (weak)";

// ---------------------------------------------------------------------------------------------

/// Without the opt-in a file from `htpasswd -c` stops pier, and the error names the line, the
/// user and the option; allowing only apr1 stops it at the `{SHA}` line; allowing both serves
/// every user (curl), refuses wrong passwords and unknown names (401), and warns once per
/// legacy user at start and again on SIGHUP, without secrets.
#[test]
fn htpasswd_c_files_work_only_with_the_opt_in() {
    let users = NginxUsers::new();
    let secrets = [(users.hash_of("alice"), ALICE_PW), (users.hash_of("bob"), BOB_PW)];
    let secrets: Vec<(&str, &str)> = secrets.iter().map(|(h, p)| (h.as_str(), *p)).collect();

    let stderr = pier_with(&users.path, &[], &[]).expect_refusal("an MD5-apr1 entry and no legacyhashes");
    let line = format!("{}:2: user \"alice\" has an MD5-apr1 hash", users.path.display());
    assert!(stderr.contains(&line), "no {line:?} in:\n{stderr}");
    assert!(stderr.contains("auth.htpasswd.legacyhashes: [apr1]"), "the option is not named:\n{stderr}");
    assert!(stderr.contains("REGISTRY_AUTH_HTPASSWD_LEGACYHASHES=apr1"), "the variable is not named:\n{stderr}");
    assert_no_secrets(&stderr, &secrets, "the refusal");

    let stderr = pier_with(&users.path, &["legacyhashes: [apr1]"], &[]).expect_refusal("a {SHA} entry, apr1 allowed");
    let line = format!("{}:3: user \"bob\" has an SHA-1 hash", users.path.display());
    assert!(stderr.contains(&line), "no {line:?} in:\n{stderr}");
    assert!(stderr.contains("auth.htpasswd.legacyhashes: [sha]"), "{stderr}");

    let mut p = pier_with(&users.path, &["legacyhashes: [apr1, sha]"], &[]);
    p.serve(&[]);
    assert_login(&p, "alice", ALICE_PW, 200);
    assert_login(&p, "bob", BOB_PW, 200);
    assert_login(&p, "carol", CAROL_PW, 200);
    assert_login(&p, "alice", "wrong", 401);
    assert_login(&p, "bob", ALICE_PW, 401);
    assert_login(&p, "alice", BOB_PW, 401);
    assert_login(&p, "nobody", ALICE_PW, 401);
    // Cached credentials still answer 200 (and a wrong one after a right one is still 401).
    assert_login(&p, "alice", ALICE_PW, 200);
    assert_login(&p, "bob", &format!("{BOB_PW}x"), 401);

    assert_eq!(p.log_count(APR1_WARNING), 1, "{}", p.run_log());
    assert_eq!(p.log_count(SHA_WARNING), 1, "{}", p.run_log());
    assert!(!p.run_log().contains("user \"carol\" uses"), "bcrypt users are not warned about:\n{}", p.run_log());
    assert!(p.run_log().contains("`pier htpasswd add alice`"), "the warning says how to move:\n{}", p.run_log());
    // SIGHUP: every legacy user once more.
    p.signal("HUP");
    p.wait_log_count(APR1_WARNING, 2, Duration::from_secs(10));
    p.wait_log_count(SHA_WARNING, 2, Duration::from_secs(10));
    assert_login(&p, "alice", ALICE_PW, 200);
    assert_eq!(p.log_count(APR1_WARNING), 2, "{}", p.run_log());
    assert_no_secrets(&p.log(), &secrets, "the log");
    assert!(users.text().contains(secrets[0].0), "without upgradelegacy the file is not rewritten");
}

/// skopeo logs in with an MD5-apr1 user (push) and a `{SHA}` one (pull), the opt-in set through
/// the environment as in a compose file; wrong passwords fail.
#[test]
fn skopeo_with_legacy_users_and_the_environment_opt_in() {
    let users = NginxUsers::new();
    let mut p = Pier::new(Options {
        env: vec![
            ("REGISTRY_AUTH".into(), "htpasswd".into()),
            ("REGISTRY_AUTH_HTPASSWD_REALM".into(), "Registry".into()),
            ("REGISTRY_AUTH_HTPASSWD_PATH".into(), users.path.display().to_string()),
            ("REGISTRY_AUTH_HTPASSWD_LEGACYHASHES".into(), "apr1,sha".into()),
        ],
        ..Default::default()
    });
    p.serve(&[]);
    let home = tempfile::tempdir().unwrap();
    let skopeo = |args: &[&str]| {
        output(
            Command::new("skopeo")
                .arg("--insecure-policy")
                .args(args)
                .env("REGISTRY_AUTH_FILE", home.path().join("auth.json"))
                .env("DOCKER_CONFIG", home.path()),
        )
    };
    let img = Image::new("legacy-auth", "amd64", &[10_000], 21);
    let src = tempfile::tempdir().unwrap();
    write_image_layout(src.path(), "v1", &img);
    let oci_src = format!("oci:{}:v1", src.path().display());
    let dest = format!("docker://{}/team/app:v1", p.host());
    let alice = format!("alice:{ALICE_PW}");
    let bob = format!("bob:{BOB_PW}");

    let out = skopeo(&["copy", "--dest-tls-verify=false", "--dest-creds", "alice:wrong", &oci_src, &dest]);
    assert!(!out.status.success(), "a push with a wrong password worked");
    let out =
        skopeo(&["copy", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", &alice, &oci_src, &dest]);
    assert!(
        out.status.success(),
        "push as alice (apr1): {}\n{}",
        describe_failure(&Command::new("skopeo"), &out),
        p.log_tail()
    );
    let out = skopeo(&["inspect", "--tls-verify=false", "--creds", &bob, &dest]);
    assert!(out.status.success(), "inspect as bob ({{SHA}}): {}", describe_failure(&Command::new("skopeo"), &out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Digest"], img.digest(), "{v}");
    let out = skopeo(&["inspect", "--tls-verify=false", "--creds", "bob:wrong", &dest]);
    assert!(!out.status.success(), "an inspect with a wrong password worked");
    // skopeo login stores the credentials after checking them against /v2/.
    let out = skopeo(&["login", "--tls-verify=false", "-u", "alice", "-p", ALICE_PW, &p.host()]);
    assert!(out.status.success(), "skopeo login as alice: {}", describe_failure(&Command::new("skopeo"), &out));
    let out = skopeo(&["login", "--tls-verify=false", "-u", "bob", "-p", "wrong", &p.host()]);
    assert!(!out.status.success(), "skopeo login with a wrong password worked");
}

/// With `upgradelegacy`, a successful login rewrites the user's entry as bcrypt `$2y$` (every
/// other line byte for byte as it was, mode 0600), a failed one rewrites nothing; the same
/// passwords then work after a restart without any legacy option.
#[test]
fn a_login_moves_a_legacy_entry_to_bcrypt_which_works_without_the_opt_in() {
    let users = NginxUsers::new();
    let before = users.text();
    let secrets = [(users.hash_of("alice"), ALICE_PW), (users.hash_of("bob"), BOB_PW)];
    let secrets: Vec<(&str, &str)> = secrets.iter().map(|(h, p)| (h.as_str(), *p)).collect();
    let mut p = pier_with(&users.path, &["legacyhashes: [apr1, sha]", "upgradelegacy: true"], &[]);
    p.serve(&[]);
    assert!(p.run_log().contains("re-hashed as bcrypt at its next successful login"), "{}", p.run_log());

    assert_login(&p, "alice", "wrong", 401);
    assert_login(&p, "bob", ALICE_PW, 401);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(users.text(), before, "a failed login rewrote the file");

    assert_login(&p, "alice", ALICE_PW, 200);
    p.wait_log("htpasswd: user \"alice\" moved from MD5-apr1 to bcrypt", Duration::from_secs(20));
    let expected = before.replace(secrets[0].0, &users.hash_of("alice"));
    assert_eq!(users.text(), expected, "only alice's line changed");
    assert!(users.hash_of("alice").starts_with("$2y$"), "{}", users.text());
    assert_eq!(std::fs::metadata(&users.path).unwrap().permissions().mode() & 0o777, 0o600);

    assert_login(&p, "bob", BOB_PW, 200);
    p.wait_log("htpasswd: user \"bob\" moved from SHA-1 to bcrypt", Duration::from_secs(20));
    assert!(users.hash_of("bob").starts_with("$2y$"), "{}", users.text());
    let (_, list, _) = pier_htpasswd(&["list", "--file", users.path.to_str().unwrap()], "");
    assert_eq!(list, "alice\nbob\ncarol\n", "no legacy entry is left");
    let text = users.text();
    assert!(text.starts_with("# registry users\n") && text.contains(&format!("carol:{}", users.hash_of("carol"))));
    // Served from the reloaded file: bcrypt now, the same passwords.
    assert_login(&p, "alice", ALICE_PW, 200);
    assert_login(&p, "bob", BOB_PW, 200);
    assert_login(&p, "alice", "wrong", 401);
    assert_eq!(p.log_count("moved from"), 2, "each user is moved once:\n{}", p.run_log());
    assert_no_secrets(&p.log(), &secrets, "the log");
    assert!(!p.log().contains(&users.hash_of("alice")), "the new hash is not logged");

    // Restart without any legacy option: the rewritten file is bcrypt only.
    p.stop();
    p.opts.extra_yaml = auth_yaml(&users.path, &[]);
    p.write_config();
    p.serve(&[]);
    assert_login(&p, "alice", ALICE_PW, 200);
    assert_login(&p, "bob", BOB_PW, 200);
    assert_login(&p, "carol", CAROL_PW, 200);
    assert_login(&p, "alice", "wrong", 401);
    assert!(!p.run_log().contains("(weak)"), "{}", p.run_log());
}

/// `pier htpasswd list` marks the legacy entries; `pier htpasswd add` re-sets one as bcrypt,
/// leaving the other lines alone; once none is left pier starts without the opt-in.
#[test]
fn pier_htpasswd_list_marks_legacy_entries_and_add_resets_them() {
    let users = NginxUsers::new();
    let f = users.path.to_str().unwrap();
    let (ok, list, stderr) = pier_htpasswd(&["list", "--file", f], "");
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(lines[0].starts_with("alice\tMD5-apr1 (legacy"), "{list}");
    assert!(lines[1].starts_with("bob\tSHA-1 (legacy"), "{list}");
    assert!(lines[0].contains("`pier htpasswd add alice`"), "{list}");
    assert_eq!(lines[2], "carol");

    let before = users.text();
    let bob_line = format!("bob:{}", users.hash_of("bob"));
    let (ok, _, stderr) =
        pier_htpasswd(&["add", "alice", "--file", f, "--password-stdin", "--cost", "4"], "new-alice-pw\n");
    assert!(ok, "{stderr}");
    assert!(users.hash_of("alice").starts_with("$2y$04$"), "{}", users.text());
    let changed: Vec<(&str, String)> =
        before.lines().zip(users.text().lines().map(str::to_string)).filter(|(a, b)| a != b).collect();
    assert_eq!(changed.len(), 1, "only alice's line changed: {changed:?}");
    let (_, list, _) = pier_htpasswd(&["list", "--file", f], "");
    assert!(list.starts_with("alice\nbob\tSHA-1 (legacy"), "{list}");

    // bob is still {SHA}: refused without the opt-in.
    let stderr = pier_with(&users.path, &[], &[]).expect_refusal("a {SHA} entry left");
    assert!(stderr.contains(&format!("{f}:3: user \"bob\" has an SHA-1 hash")), "{stderr}");
    assert!(users.text().contains(&bob_line));
    let (ok, _, stderr) =
        pier_htpasswd(&["add", "bob", "--file", f, "--password-stdin", "--cost", "4"], "new-bob-pw\n");
    assert!(ok, "{stderr}");
    let mut p = pier_with(&users.path, &[], &[]);
    p.serve(&[]);
    assert_login(&p, "alice", "new-alice-pw", 200);
    assert_login(&p, "bob", "new-bob-pw", 200);
    assert_login(&p, "alice", ALICE_PW, 401);
    assert_login(&p, "carol", CAROL_PW, 200);
}

/// Plain-text, crypt(3) DES and SHA-256/512-crypt entries (all written by the real `htpasswd`)
/// are refused even with every legacy scheme allowed, naming the line; `list` refuses them too.
/// A scheme name pier does not know is a config error naming the key.
#[test]
fn plain_text_and_crypt_entries_are_refused_even_with_the_opt_in() {
    let dir = tempfile::tempdir().unwrap();
    let good = run(Command::new("htpasswd").args(["-nbm", "alice", ALICE_PW])).trim().to_string();
    for (kind, flag, why) in [
        ("plain", "-nbp", "plain-text and crypt(3) DES entries are never accepted"),
        ("crypt", "-nbd", "plain-text and crypt(3) DES entries are never accepted"),
        ("SHA-512-crypt", "-nb5", "SHA-256/512-crypt"),
    ] {
        let bad = run(Command::new("htpasswd").args([flag, "bob", "pw-b"])).trim().to_string();
        let file = dir.path().join(format!("{kind}.htpasswd"));
        std::fs::write(&file, format!("{good}\n{bad}\n")).unwrap();
        let stderr = pier_with(&file, &["legacyhashes: [apr1, sha]"], &[]).expect_refusal(kind);
        let line = format!("{}:2: ", file.display());
        assert!(stderr.contains(&line) && stderr.contains(why), "{kind}: no {line:?} ... {why:?} in:\n{stderr}");
        assert!(!stderr.contains("pw-b"), "{kind}: {stderr}");
        let (ok, _, stderr) = pier_htpasswd(&["list", "--file", file.to_str().unwrap()], "");
        assert!(!ok && stderr.contains(&line), "{kind}: list: {stderr}");
    }
    let file = dir.path().join("ok.htpasswd");
    std::fs::write(&file, format!("{good}\n")).unwrap();
    let stderr = pier_with(&file, &["legacyhashes: [apr1, plain]"], &[]).expect_refusal("legacyhashes: plain");
    assert!(stderr.contains("config key auth.htpasswd.legacyhashes: \"plain\""), "{stderr}");
}
