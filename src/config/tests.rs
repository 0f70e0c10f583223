use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::core::access::Action;

fn yaml(text: &str) -> Result<Loaded, ConfigError> {
    Config::from_sources(Some(text), Vec::new())
}

fn env(vars: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    Config::from_sources(None, vars.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))))
}

/// `a.b.c` and a value as nested YAML.
fn nested_yaml(key: &str, value: &str) -> String {
    let parts: Vec<&str> = key.split('.').collect();
    let mut out = String::new();
    for (depth, part) in parts.iter().enumerate() {
        out.push_str(&"  ".repeat(depth));
        out.push_str(part);
        out.push(':');
        if depth + 1 == parts.len() {
            out.push(' ');
            out.push_str(value);
        }
        out.push('\n');
    }
    out
}

fn env_name(key: &str) -> String {
    format!("REGISTRY_{}", key.to_ascii_uppercase().replace('.', "_"))
}

type Field = fn(&Config) -> String;

/// Every scalar key, with a value that is not its default and how it shows in `Config`.
const SCALAR_KEYS: &[(&str, &str, Field, &str)] = &[
    ("storage.filesystem.rootdirectory", "/srv/x", |c| format!("{:?}", c.root), "\"/srv/x\""),
    ("storage.filesystem.reserve", "1GiB", |c| c.free_space_reserve.to_string(), "1073741824"),
    ("storage.filesystem.migrate", "false", |c| c.migrate.to_string(), "false"),
    ("storage.delete.enabled", "true", |c| c.delete_enabled.to_string(), "true"),
    ("storage.digests.blake3", "yes", |c| c.blake3.to_string(), "true"),
    ("storage.maintenance.uploadpurging.enabled", "false", |c| format!("{:?}", c.upload_purging), "None"),
    (
        "storage.maintenance.gc.enabled",
        "true",
        |c| format!("{:?}", c.gc_schedule),
        "Some(GcSchedule { interval: 86400s, grace: 3600s, untagged: false })",
    ),
    (
        "storage.maintenance.scrub.enabled",
        "true",
        |c| format!("{:?}", c.scrub_schedule),
        "Some(ScrubSchedule { interval: 604800s, rate: 8388608 })",
    ),
    (
        "storage.maintenance.uploadpurging.age",
        "2h",
        |c| format!("{:?}", c.upload_purging),
        "Some(UploadPurging { age: 7200s, interval: 86400s })",
    ),
    (
        "storage.maintenance.uploadpurging.interval",
        "10m",
        |c| format!("{:?}", c.upload_purging),
        "Some(UploadPurging { age: 604800s, interval: 600s })",
    ),
    ("storage.maintenance.readonly.enabled", "true", |c| c.read_only.to_string(), "true"),
    ("http.addr", "127.0.0.1:9", |c| c.addr.clone(), "127.0.0.1:9"),
    ("http.prefix", "registry/", |c| c.prefix.clone(), "/registry"),
    ("http.host", "https://reg.example/", |c| format!("{:?}", c.host), "Some(\"https://reg.example\")"),
    ("http.relativeurls", "true", |c| c.relative_urls.to_string(), "true"),
    ("http.draintimeout", "1m30s", |c| format!("{:?}", c.drain_timeout), "90s"),
    ("http.idletimeout", "1.5h", |c| format!("{:?}", c.idle_timeout), "5400s"),
    ("log.level", "debug", |c| c.log_level.to_string(), "DEBUG"),
    ("log.formatter", "json", |c| format!("{:?}", c.log_format), "Json"),
    ("log.accesslog.disabled", "true", |c| c.access_log.to_string(), "false"),
];

#[test]
fn every_scalar_key_from_yaml_and_from_the_environment() {
    let defaults = Config::default();
    for (key, value, field, expected) in SCALAR_KEYS {
        assert_ne!(field(&defaults), *expected, "{key}: the test value is the default");
        let text = nested_yaml(key, value);
        let from_file = yaml(&text).unwrap_or_else(|e| panic!("{key}: {e}\n{text}"));
        assert_eq!(field(&from_file.config), *expected, "{key} in\n{text}");
        assert!(from_file.warnings.is_empty(), "{key}: {:?}", from_file.warnings);
        let var = env_name(key);
        let from_env = env(&[(&var, value)]).unwrap_or_else(|e| panic!("{var}: {e}"));
        assert_eq!(field(&from_env.config), *expected, "{var}");
        assert!(from_env.warnings.is_empty(), "{var}: {:?}", from_env.warnings);
    }
}

#[test]
fn the_environment_overrides_the_file() {
    let l = Config::from_sources(
        Some("http:\n  addr: :5001\nstorage:\n  delete:\n    enabled: true\n"),
        [("REGISTRY_HTTP_ADDR".into(), "127.0.0.1:7".into()), ("PATH".into(), "/bin".into())],
    )
    .unwrap();
    assert_eq!(l.config.addr, "127.0.0.1:7");
    assert!(l.config.delete_enabled, "the file's other keys stay");
}

#[test]
fn distribution_config() {
    let text = "version: 0.1\nlog:\n  level: debug\n  fields:\n    service: registry\nstorage:\n  cache:\n    blobdescriptor: inmemory\n  filesystem:\n    rootdirectory: /var/lib/registry\n  delete:\n    enabled: true\nhttp:\n  addr: :5001\n  prefix: /registry/\n  headers:\n    X-Content-Type-Options: [nosniff]\n  bogus: 1\n";
    let Loaded { config: c, warnings } = yaml(text).unwrap();
    assert_eq!(c.root, PathBuf::from("/var/lib/registry"));
    assert!(c.delete_enabled);
    assert_eq!(c.addr, ":5001");
    assert_eq!(c.prefix, "/registry");
    assert_eq!(c.log_level, log::LevelFilter::Debug);
    assert_eq!(c.headers, vec![("X-Content-Type-Options".to_string(), "nosniff".to_string())]);
    assert_eq!(
        warnings,
        [
            "config key log.fields is not used by pier; ignored",
            "config key storage.cache is not used by pier; ignored",
            "unknown config key http.bogus; ignored",
        ]
    );
}

#[test]
fn keys_are_case_insensitive_but_header_names_are_kept() {
    let c = yaml("HTTP:\n  Addr: :5002\n  Headers:\n    X-Mixed-Case: [a, b]\n    X-One: c\n").unwrap().config;
    assert_eq!(c.addr, ":5002");
    let expected = [("X-Mixed-Case", "a"), ("X-Mixed-Case", "b"), ("X-One", "c")];
    assert_eq!(c.headers, expected.map(|(k, v)| (k.to_string(), v.to_string())));
}

#[test]
fn nothing_is_dropped_without_a_warning() {
    let text = "http:\n  headers:\n    Bad Name: [x]\n    X-Ok: [\"line\\nbreak\", fine]\n  Addr: :1\n  addr: :2\n---\nhttp: {}\n";
    let Loaded { config, warnings } = yaml(text).unwrap();
    assert_eq!(config.headers, [("X-Ok".to_string(), "fine".to_string())]);
    assert_eq!(config.addr, ":2");
    assert_eq!(
        warnings,
        [
            "the config file holds 2 YAML documents; only the first is used",
            "config key http.addr is given more than once (keys are case-insensitive); the last one is used",
            "config key http.headers.Bad Name: not a valid header name; ignored",
            "config key http.headers.X-Ok: \"line\\nbreak\" is not a valid header value; ignored",
        ]
    );
}

#[test]
fn unknown_and_ignored_keys_are_named_by_their_source() {
    let l = Config::from_sources(
        Some("http:\n  frobnicate: true\n  secret: s\nnotifications:\n  endpoints: []\n"),
        [
            ("REGISTRY_HTTP_FROBNICATE".into(), "1".into()),
            ("REGISTRY_NOPE".into(), "1".into()),
            ("REGISTRY_HEALTH_STORAGEDRIVER_ENABLED".into(), "true".into()),
            ("REGISTRY_STORAGE_S3_BUCKET".into(), "b".into()),
        ],
    )
    .unwrap();
    let mut w = l.warnings;
    w.sort();
    assert_eq!(
        w,
        [
            "config key http.secret is not used by pier; ignored",
            "config key notifications is not used by pier; ignored",
            "environment variable REGISTRY_HEALTH_STORAGEDRIVER_ENABLED is not used by pier; ignored",
            "unknown config key http.frobnicate; ignored",
            "unknown environment variable REGISTRY_HTTP_FROBNICATE; ignored",
            "unknown environment variable REGISTRY_NOPE; ignored",
            "unknown environment variable REGISTRY_STORAGE_S3_BUCKET; ignored",
        ]
    );
    // Inside a known section, in a list.
    let text = "storage:\n  maintenance:\n    uploadpurging:\n      dryrun: true\nauth:\n  htpasswd:\n    path: /h\naccess:\n  - {user: a, repos: '*', actions: pull, repo: typo}\n";
    let w = yaml(text).unwrap().warnings;
    assert_eq!(
        w,
        [
            "config key storage.maintenance.uploadpurging.dryrun is not used by pier; ignored",
            "unknown config key access.0.repo; ignored",
        ]
    );
}

#[test]
fn syntax_errors_have_line_and_column() {
    match yaml("http:\n  addr: [unclosed\n") {
        Err(ConfigError::Syntax { line, column, .. }) => assert!(line >= 2 && column >= 1, "{line}:{column}"),
        other => panic!("{other:?}"),
    }
    match yaml("a: b\n  c: d\n") {
        Err(e @ ConfigError::Syntax { line: 2, .. }) => assert!(e.to_string().contains("line 2, column"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn wrong_values_name_their_key_and_source() {
    let cases = [
        ("storage:\n  delete:\n    enabled: perhaps\n", "storage.delete.enabled"),
        ("http:\n  addr: [a, b]\n", "http.addr"),
        ("http: 5\n", "http"),
        ("http:\n  headers: [a]\n", "http.headers"),
        ("http:\n  headers:\n    X-A: {b: c}\n", "http.headers.X-A"),
        ("http:\n  tls:\n    clientcas: [{a: b}]\n", "http.tls.clientcas.0"),
        ("log:\n  level: loud\n", "log.level"),
        ("log:\n  formatter: logstash\n", "log.formatter"),
        ("http:\n  draintimeout: 1d\n", "http.draintimeout"),
        ("http:\n  idletimeout: -5s\n", "http.idletimeout"),
        (
            "storage:\n  maintenance:\n    uploadpurging:\n      interval: 0s\n",
            "storage.maintenance.uploadpurging.interval",
        ),
        ("access:\n  - user: a\n    repos: ['*']\n", "access"),
        ("access:\n  - user: a\n    repos: '*'\n    actions: [fly]\n", "access"),
        ("access:\n  - {user: {a: b}}\n", "access.0.user"),
        ("- a\n- b\n", "(top level)"),
        ("auth:\n  token:\n    realm: x\n", "auth.token"),
        ("auth:\n  htpasswd:\n    path: /x\n    bogus: 1\n", "auth.htpasswd.bogus"),
        ("auth: silly\n", "auth.silly"),
    ];
    for (text, key) in cases {
        match yaml(text) {
            Err(ConfigError::Value { key: k, variable: None, message }) => {
                assert_eq!(k, key, "{text}: {message}");
                assert!(!message.is_empty());
            }
            other => panic!("{text}: {other:?}"),
        }
    }
    let e = env(&[("REGISTRY_STORAGE_DELETE_ENABLED", "sometimes")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "environment variable REGISTRY_STORAGE_DELETE_ENABLED, config key storage.delete.enabled: \
         expected true or false, not \"sometimes\""
    );
    let e = yaml("storage:\n  delete:\n    enabled: sometimes\n").unwrap_err();
    assert_eq!(e.to_string(), "config key storage.delete.enabled: expected true or false, not \"sometimes\"");
}

#[test]
fn read_errors_name_the_file_and_keep_the_cause() {
    let e = Config::load(Some(std::path::Path::new("/nonexistent/pier.yml")), Vec::new()).unwrap_err();
    assert!(e.to_string().starts_with("cannot read config file /nonexistent/pier.yml: "), "{e}");
    let source = std::error::Error::source(&e).expect("the I/O error is the source");
    assert!(source.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound));
}

#[test]
fn durations_are_read_as_go_reads_them() {
    let drain =
        |value: &str| yaml(&format!("http:\n  draintimeout: {value}\n")).map(|l| (l.config.drain_timeout, l.warnings));
    for (value, expected) in [
        ("30s", Duration::from_secs(30)),
        ("5m", Duration::from_secs(300)),
        ("168h", Duration::from_secs(168 * 3600)),
        ("1h30m", Duration::from_secs(5400)),
        ("500ms", Duration::from_millis(500)),
        ("1.5h", Duration::from_secs(5400)),
        ("2h45m30.5s", Duration::from_millis(9_930_500)),
        ("300us", Duration::from_micros(300)),
        ("300µs", Duration::from_micros(300)),
        ("7ns", Duration::from_nanos(7)),
        ("0", Duration::ZERO),
        ("'0'", Duration::ZERO),
    ] {
        assert_eq!(drain(value).unwrap(), (expected, vec![]), "{value}");
    }
    // A bare integer is nanoseconds, as a Go time.Duration; said so, since pier once read seconds.
    let (d, w) = drain("30").unwrap();
    assert_eq!(d, Duration::from_nanos(30));
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("http.draintimeout") && w[0].contains("30 nanoseconds"), "{w:?}");
    let (d, _) = env(&[("REGISTRY_HTTP_DRAINTIMEOUT", "45")]).map(|l| (l.config.drain_timeout, l.warnings)).unwrap();
    assert_eq!(d, Duration::from_nanos(45));
    for bad in ["1.5", "5 m", "1d", "-1s", "ten", "99999999999999999999", "3000000h"] {
        assert!(drain(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_free_space_reserve_is_a_size() {
    let reserve = |value: &str| {
        yaml(&format!("storage:\n  filesystem:\n    reserve: {value}\n")).map(|l| l.config.free_space_reserve)
    };
    assert_eq!(Config::default().free_space_reserve, 256 << 20);
    for (value, expected) in
        [("0", 0), ("268435456", 256 << 20), ("256MiB", 256 << 20), ("1GB", 1_000_000_000), ("'512 M'", 512 << 20)]
    {
        assert_eq!(reserve(value).unwrap(), expected, "{value}");
    }
    let e = reserve("lots").unwrap_err().to_string();
    assert!(e.contains("storage.filesystem.reserve") && e.contains("256MiB"), "{e}");
    for bad in ["-1", "1.5GB", "1PB", "99999999999999999999"] {
        assert!(reserve(bad).is_err(), "{bad}");
    }
    let from_env = env(&[("REGISTRY_STORAGE_FILESYSTEM_RESERVE", "2GiB")]).unwrap().config.free_space_reserve;
    assert_eq!(from_env, 2 << 30);
}

#[test]
fn upload_purging() {
    let c = yaml("storage:\n  maintenance:\n    uploadpurging:\n      age: 2h\n      interval: 10m\n").unwrap().config;
    assert_eq!(
        c.upload_purging,
        Some(UploadPurging { age: Duration::from_secs(7200), interval: Duration::from_secs(600) })
    );
    let c = yaml("storage:\n  maintenance:\n    uploadpurging:\n      enabled: false\n      age: 2h\n").unwrap().config;
    assert_eq!(c.upload_purging, None);
    assert_eq!(Config::default().upload_purging, Some(DEFAULT_UPLOAD_PURGING));
}

/// `auth.htpasswd.legacyhashes` and `upgradelegacy`: off by default, a YAML list or a
/// comma-separated `REGISTRY_*` value, unknown names refused naming the key.
#[test]
fn legacy_htpasswd_hashes_are_an_explicit_opt_in() {
    use crate::htpasswd::LegacyScheme::{Apr1, Sha};
    let legacy = |c: &Config| c.htpasswd.as_ref().map(|h| (h.legacy_hashes.clone(), h.upgrade_legacy));
    let base = "auth:\n  htpasswd:\n    path: /h\n";
    assert_eq!(legacy(&yaml(base).unwrap().config), Some((vec![], false)));
    let c = yaml(&format!("{base}    legacyhashes: [sha, APR1, sha]\n    upgradelegacy: true\n")).unwrap();
    assert_eq!(legacy(&c.config), Some((vec![Apr1, Sha], true)));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(legacy(&yaml(&format!("{base}    legacyhashes: apr1\n")).unwrap().config), Some((vec![Apr1], false)));
    let c = Config::from_sources(
        Some(base),
        [
            ("REGISTRY_AUTH_HTPASSWD_LEGACYHASHES".into(), "apr1, sha".into()),
            ("REGISTRY_AUTH_HTPASSWD_UPGRADELEGACY".into(), "true".into()),
        ],
    )
    .unwrap();
    assert_eq!(legacy(&c.config), Some((vec![Apr1, Sha], true)));
    for bad in ["plain", "crypt", "md5", "bcrypt"] {
        let e = yaml(&format!("{base}    legacyhashes: [apr1, {bad}]\n")).unwrap_err();
        let message = e.to_string();
        assert!(message.starts_with("config key auth.htpasswd.legacyhashes:"), "{message}");
        assert!(message.contains("plain-text and crypt(3) DES entries are never accepted"), "{message}");
    }
    let e = env(&[("REGISTRY_AUTH_HTPASSWD_PATH", "/h"), ("REGISTRY_AUTH_HTPASSWD_LEGACYHASHES", "des")]).unwrap_err();
    assert!(e.to_string().contains("REGISTRY_AUTH_HTPASSWD_LEGACYHASHES"), "{e}");
    let c = yaml(&format!("{base}    upgradelegacy: true\n")).unwrap();
    assert!(c.warnings.iter().any(|w| w.contains("upgradelegacy: has no effect")), "{:?}", c.warnings);
}

#[test]
fn htpasswd_from_the_file_the_environment_or_both() {
    let expected = Some(HtpasswdConfig {
        realm: "env-realm".into(),
        path: PathBuf::from("/etc/pier/htpasswd"),
        legacy_hashes: vec![],
        upgrade_legacy: false,
    });
    let c = env(&[
        ("REGISTRY_AUTH_HTPASSWD_PATH", "/etc/pier/htpasswd"),
        ("REGISTRY_AUTH", "htpasswd"),
        ("REGISTRY_AUTH_HTPASSWD_REALM", "env-realm"),
    ])
    .unwrap()
    .config;
    assert_eq!(c.htpasswd, expected);
    let file = "auth:\n  htpasswd:\n    realm: env-realm\n    path: /etc/pier/htpasswd\n";
    let c = Config::from_sources(Some(file), [("REGISTRY_AUTH".into(), "htpasswd".into())]).unwrap().config;
    assert_eq!(c.htpasswd, expected, "naming the section again keeps its keys");
    let c = Config::from_sources(Some("auth: htpasswd\n"), [("REGISTRY_AUTH_HTPASSWD_PATH".into(), "/p".into())])
        .unwrap()
        .config;
    assert_eq!(
        c.htpasswd,
        Some(HtpasswdConfig {
            realm: "pier".into(),
            path: PathBuf::from("/p"),
            legacy_hashes: vec![],
            upgrade_legacy: false
        })
    );
    let e = yaml("auth:\n  htpasswd:\n    realm: x\n").unwrap_err();
    assert!(e.to_string().contains("auth.htpasswd.path"), "{e}");
    let e = env(&[("REGISTRY_AUTH", "token")]).unwrap_err();
    assert!(e.to_string().contains("REGISTRY_AUTH") && e.to_string().contains("auth.token"), "{e}");
}

#[test]
fn access_rules_and_tls() {
    let text = "auth:\n  htpasswd:\n    path: /h\naccess:\n  - user: anonymous\n    repos: 'public/*'\n    actions: pull\n  - User: ci\n    repos: [apps/*, tools/*]\n    actions: [pull, push]\nhttp:\n  tls:\n    certificate: /c.pem\n    key: /k.pem\n    clientcas: /ca.pem\n";
    let c = yaml(text).unwrap().config;
    let rules = c.access.unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(
        (rules[0].user.as_str(), rules[0].repos.clone(), rules[0].actions.clone()),
        ("anonymous", vec!["public/*".to_string()], vec![Action::Pull])
    );
    assert_eq!(rules[1].repos, ["apps/*", "tools/*"]);
    assert_eq!(rules[1].actions, [Action::Pull, Action::Push]);
    assert_eq!(
        c.tls,
        Some(TlsConfig {
            certificate: "/c.pem".into(),
            key: "/k.pem".into(),
            client_cas: vec![PathBuf::from("/ca.pem")]
        })
    );
    let e = yaml("access: []\n").unwrap_err();
    assert!(e.to_string().contains("needs authentication"), "{e}");
    let e = yaml("http:\n  tls:\n    certificate: /c.pem\n").unwrap_err();
    assert!(e.to_string().contains("http.tls: needs both certificate and key"), "{e}");
    assert_eq!(yaml("http:\n  tls: {}\n").unwrap().config.tls, None, "an empty section configures nothing");
}

#[test]
fn non_utf8_registry_variables_are_errors_and_others_are_ignored() {
    let bad = || OsString::from_vec(b"caf\xe9".to_vec());
    let e = Config::from_sources(None, [(OsString::from("REGISTRY_HTTP_ADDR"), bad())]).unwrap_err();
    assert_eq!(e.to_string(), "environment variable REGISTRY_HTTP_ADDR is not valid UTF-8");
    let name = OsString::from_vec(b"REGISTRY_HTTP_\xff".to_vec());
    let e = Config::from_sources(None, [(name, OsString::from("x"))]).unwrap_err();
    assert_eq!(e.to_string(), "environment variable REGISTRY_HTTP_\u{fffd} is not valid UTF-8");
    let l = Config::from_sources(
        None,
        [
            (OsString::from("LANG"), bad()),
            (OsString::from_vec(b"X\xff".to_vec()), bad()),
            ("REGISTRY_HTTP_ADDR".into(), ":1".into()),
        ],
    )
    .unwrap();
    assert_eq!(l.config.addr, ":1");
    assert!(l.warnings.is_empty());
}

#[test]
fn empty_and_null_documents_are_the_defaults() {
    for text in ["", "---\n", "~\n", "# only a comment\n", "storage:\nhttp: ~\n"] {
        let l = yaml(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(format!("{:?}", l.config), format!("{:?}", Config::default()), "{text:?}");
        assert!(l.warnings.is_empty(), "{text:?}: {:?}", l.warnings);
    }
}

mod reload {
    use super::*;

    fn changed(key: &str, value: &str) -> Reload {
        let new = yaml(&nested_yaml(key, value)).unwrap().config;
        Reload::plan(&Config::default(), &None, &new)
    }

    #[test]
    fn nothing_changed_nothing_to_restart() {
        let c = Config::default();
        let plan = Reload::plan(&c, &None, &c.clone());
        assert!(plan.restart_needed.is_empty());
        assert_eq!(plan.live, c.live_settings());
    }

    #[test]
    fn restart_only_keys_are_reported_by_name() {
        for (key, value, reported) in [
            ("http.addr", "127.0.0.1:1", "http.addr"),
            ("storage.filesystem.rootdirectory", "/elsewhere", "storage.filesystem.rootdirectory"),
            ("http.prefix", "/p", "http.prefix"),
            ("http.host", "https://h", "http.host"),
            ("http.relativeurls", "true", "http.relativeurls"),
            ("http.idletimeout", "1s", "http.idletimeout"),
            ("http.draintimeout", "1s", "http.draintimeout"),
            ("storage.digests.blake3", "true", "storage.digests.blake3"),
            ("log.formatter", "json", "log.formatter"),
            ("storage.maintenance.uploadpurging.enabled", "false", "storage.maintenance.uploadpurging"),
            ("storage.maintenance.uploadpurging.age", "1h", "storage.maintenance.uploadpurging"),
        ] {
            let plan = changed(key, value);
            assert_eq!(plan.restart_needed, [reported], "{key}");
            assert_eq!(plan.live, Config::default().live_settings(), "{key} is not live");
        }
        let tls = "http:\n  tls:\n    certificate: /c\n    key: /k\n";
        let plan = Reload::plan(&Config::default(), &None, &yaml(tls).unwrap().config);
        assert_eq!(plan.restart_needed, ["http.tls"]);
        let auth = "auth:\n  htpasswd:\n    path: /h\n";
        let plan = Reload::plan(&Config::default(), &None, &yaml(auth).unwrap().config);
        assert_eq!(plan.restart_needed, ["auth.htpasswd"]);
    }

    #[test]
    fn live_keys_apply_without_restart() {
        let text = "storage:\n  filesystem:\n    reserve: 64MiB\n  delete:\n    enabled: true\n  maintenance:\n    readonly:\n      enabled: true\nhttp:\n  headers:\n    X-A: [b]\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nvalidation:\n  manifests:\n    urls:\n      allow: ['^https://mcr\\.microsoft\\.com/']\nquotas:\n  - {repos: 'team/*', size: 1GiB}\nretention:\n  - {repos: '*', keep: 3}\n";
        let new = yaml(text).unwrap().config;
        let plan = Reload::plan(&Config::default(), &None, &new);
        assert!(plan.restart_needed.is_empty(), "{:?}", plan.restart_needed);
        assert_eq!(
            plan.live,
            LiveSettings {
                access: None,
                headers: vec![("X-A".into(), "b".into())],
                read_only: true,
                access_log: false,
                log_level: log::LevelFilter::Warn,
                delete_enabled: true,
                free_space_reserve: 64 << 20,
                manifest_urls: crate::config::ManifestUrls {
                    allow: vec![String::from("^https://mcr\\.microsoft\\.com/")],
                    deny: vec![],
                },
                quotas: new.quotas.clone(),
                retention: new.retention.clone(),
            }
        );
        assert_eq!((plan.live.quotas.len(), plan.live.retention.len()), (1, 1));
        // Access rules too (with the same authentication as the running configuration).
        let auth = "auth:\n  htpasswd:\n    path: /h\n";
        let running = yaml(auth).unwrap().config;
        let new = yaml(&format!("{auth}access:\n  - {{user: a, repos: '*', actions: pull}}\n")).unwrap().config;
        let plan = Reload::plan(&running, &None, &new);
        assert!(plan.restart_needed.is_empty(), "{:?}", plan.restart_needed);
        assert!(plan.refused.is_empty(), "{:?}", plan.refused);
        assert_eq!(plan.live.access.map(|r| r.len()), Some(1));
    }

    /// Authentication and authorization change together or not at all.
    #[test]
    fn access_waits_for_a_change_of_authentication_and_is_never_removed_by_a_reload() {
        let auth = "auth:\n  htpasswd:\n    path: /h\n";
        let rules = |actions: &str| format!("access:\n  - {{user: a, repos: '*', actions: [{actions}]}}\n");
        let running = yaml(&format!("{auth}{}", rules("pull"))).unwrap().config;
        let applied = running.access.clone();
        // New rules with the same authentication: applied.
        let plan = Reload::plan(&running, &applied, &yaml(&format!("{auth}{}", rules("pull, push"))).unwrap().config);
        assert_eq!(plan.live.access.as_ref().map(|r| r[0].actions.len()), Some(2));
        assert!(plan.restart_needed.is_empty() && plan.refused.is_empty(), "{plan:?}");
        // New rules with another users file: both wait for the restart.
        let other = "auth:\n  htpasswd:\n    path: /other\n";
        let plan = Reload::plan(&running, &applied, &yaml(&format!("{other}{}", rules("pull, push"))).unwrap().config);
        assert_eq!(plan.live.access, applied);
        assert_eq!(plan.restart_needed, ["auth.htpasswd", "access (changes together with auth.htpasswd)"]);
        // No auth and no access at all (an emptied file): the rules stay.
        let plan = Reload::plan(&running, &applied, &Config::default());
        assert_eq!(plan.live.access, applied);
        assert!(plan.restart_needed.contains(&"access (changes together with auth.htpasswd)"), "{plan:?}");
        // The access section removed, authentication kept: refused, the rules stay.
        let plan = Reload::plan(&running, &applied, &yaml(auth).unwrap().config);
        assert_eq!(plan.live.access, applied);
        assert_eq!(plan.refused.len(), 1, "{plan:?}");
        // What an earlier reload applied is what counts, not the start-up file.
        let reloaded = yaml(&format!("{auth}{}", rules("pull, push, delete"))).unwrap().config.access;
        let plan =
            Reload::plan(&running, &reloaded, &yaml(&format!("{auth}{}", rules("pull, push, delete"))).unwrap().config);
        assert!(plan.restart_needed.is_empty() && plan.refused.is_empty(), "{plan:?}");
        assert_eq!(plan.live.access, reloaded);
    }
}

#[test]
fn limits_and_url_patterns_are_checked() {
    let c = yaml("limits:\n  connections: 10\n  connectionsperclient: 2\n  streamsperconnection: 8\n  transfers: 3\n")
        .unwrap()
        .config;
    assert_eq!(
        c.limits,
        crate::config::Limits { connections: 10, connections_per_client: 2, streams_per_connection: 8, transfers: 3 }
    );
    let e = env(&[("REGISTRY_LIMITS_TRANSFERS", "0")]).unwrap_err().to_string();
    assert!(e.contains("limits.transfers") && e.contains("at least 1"), "{e}");
    let c = env(&[("REGISTRY_LIMITS_CONNECTIONS", "7")]).unwrap().config;
    assert_eq!(c.limits.connections, 7);
    // A pattern that does not compile stops pier: URL rules never fail open.
    let e = yaml("validation:\n  manifests:\n    urls:\n      deny: ['(']\n").unwrap_err().to_string();
    assert!(e.contains("validation.manifests.urls.deny") && e.contains("not a valid regular expression"), "{e}");
}

#[test]
fn the_background_scrub_takes_an_interval_and_a_rate() {
    let c = yaml("storage:\n  maintenance:\n    scrub:\n      enabled: true\n      interval: 24h\n      rate: 1MiB\n")
        .unwrap()
        .config;
    assert_eq!(
        c.scrub_schedule,
        Some(super::ScrubSchedule { interval: std::time::Duration::from_secs(86400), rate: 1 << 20 })
    );
    for (text, key) in [
        ("scrub:\n      enabled: true\n      rate: 0\n", "storage.maintenance.scrub.rate"),
        ("scrub:\n      enabled: true\n      rate: fast\n", "storage.maintenance.scrub.rate"),
        ("scrub:\n      interval: 0s\n", "storage.maintenance.scrub.interval"),
    ] {
        let err = yaml(&format!("storage:\n  maintenance:\n    {text}")).err().unwrap().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
}

/// The shipped configurations load without a warning; the systemd one names the unit's data
/// directory, so that the maintenance commands given it find the daemon's admin socket.
#[test]
fn the_shipped_configurations_load_cleanly() {
    let systemd = yaml(include_str!("../../systemd/config.yml")).unwrap();
    assert!(systemd.warnings.is_empty(), "{:?}", systemd.warnings);
    assert_eq!(systemd.config.root, std::path::PathBuf::from("/var/lib/pier"));
    let image = yaml(include_str!("../../images/config.yml")).unwrap();
    assert!(image.warnings.is_empty(), "{:?}", image.warnings);
    assert_eq!(image.config.root, std::path::PathBuf::from("/var/lib/registry"));
}
