//! The config loader (`Config::from_file_contents`: what `Config::load` does with the file's
//! bytes). Input: the file, then optionally a NUL byte and `REGISTRY_*` overrides, one `KEY=VALUE`
//! per line (`REGISTRY_` is prepended to KEY; values may be any bytes). Loading never panics, and
//! a loaded configuration keeps the invariants the server relies on: a normalised prefix and
//! host, valid HTTP headers, non-zero limits and purge interval, access rules only with
//! authentication, complete TLS and htpasswd settings, manifest URL patterns that compile.
//! Loading is deterministic.
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pier::config::{Config, Loaded};

fuzz_target!(|data: &[u8]| {
    let (file, env) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let env: Vec<(OsString, OsString)> = env
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let eq = line.iter().position(|&b| b == b'=')?;
            let mut name = b"REGISTRY_".to_vec();
            name.extend_from_slice(&line[..eq]);
            Some((OsString::from_vec(name), OsString::from_vec(line[eq + 1..].to_vec())))
        })
        .collect();
    let path = Path::new("/etc/pier/config.yml");

    let loaded = Config::from_file_contents(path, file, env.clone());
    let again = Config::from_file_contents(path, file, env);
    assert_eq!(format!("{loaded:?}"), format!("{again:?}"), "loading is deterministic");
    let Loaded { config: c, warnings } = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };

    assert!(c.prefix.is_empty() || (c.prefix.starts_with('/') && !c.prefix.ends_with('/')), "{:?}", c.prefix);
    assert!(c.host.as_ref().is_none_or(|h| !h.is_empty() && !h.ends_with('/')), "{:?}", c.host);
    for (name, value) in &c.headers {
        assert!(http::HeaderName::from_bytes(name.as_bytes()).is_ok(), "header name {name:?}");
        assert!(http::HeaderValue::from_str(value).is_ok(), "header value {value:?}");
    }
    let l = c.limits;
    assert!(l.connections >= 1 && l.connections_per_client >= 1 && l.streams_per_connection >= 1 && l.transfers >= 1);
    assert!(c.upload_purging.is_none_or(|p| !p.interval.is_zero()));
    assert!(c.access.is_none() || c.htpasswd.is_some(), "access rules without authentication");
    assert!(c.htpasswd.as_ref().is_none_or(|h| !h.path.as_os_str().is_empty()));
    assert!(c.tls.as_ref().is_none_or(|t| !t.certificate.as_os_str().is_empty() && !t.key.as_os_str().is_empty()));
    for pattern in c.manifest_urls.allow.iter().chain(&c.manifest_urls.deny) {
        assert!(regex_lite::Regex::new(pattern).is_ok(), "URL pattern {pattern:?} was accepted but does not compile");
    }
    assert!(warnings.iter().all(|w| !w.is_empty()));
});
