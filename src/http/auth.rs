//! Credential verification for HTTP Basic authentication against an htpasswd file (bcrypt).
//! Turning a request into an identity is `authn`; what an identity may do is `authz`, with the
//! rules in `core::access`.
//!
//! - The htpasswd file is the source of truth; it is re-read when it changes (polled) and on
//!   SIGHUP. Only bcrypt entries are accepted: any other line is refused with its line number.
//! - bcrypt is deliberately slow (tens of ms, much more on a Raspberry Pi) and clients send
//!   credentials with every request, so successful verifications are cached for a few minutes,
//!   keyed by a keyed BLAKE3 hash of user and password (the password itself is never stored).
//!   The cache is bounded and cleared whenever the file changes.
//! - Failed attempts are counted per client address (bounded table); past a threshold, further
//!   failures are answered slowly. Logs name the user and address, never the password.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;

use crate::config::HtpasswdConfig;
use crate::htpasswd::{self, HtpasswdError};

/// How long a verified credential is trusted without running bcrypt again.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// Most cached credentials (a full cache drops its expired entries, then everything).
const CACHE_MAX: usize = 1024;
/// Failed attempts allowed per address within `FAILURE_WINDOW` before answers slow down.
const FAILURES_ALLOWED: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Delay added to each failed attempt past the threshold.
pub const FAILURE_DELAY: Duration = Duration::from_secs(1);
/// Most addresses tracked for failures.
const FAILURE_TABLE_MAX: usize = 4096;

/// The identity of a file's version: a change in any of these means "re-read it".
fn file_stamp(path: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// The result of checking a request's credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Anonymous,
    User(String),
    /// Credentials were sent but are wrong or malformed.
    Invalid,
}

struct Users {
    map: HashMap<String, String>,
    stamp: Option<(SystemTime, u64, u64)>,
}

pub struct Authenticator {
    pub realm: String,
    path: PathBuf,
    users: RwLock<Arc<Users>>,
    /// keyed hash of (user, password) → (user, verified at)
    cache: Mutex<HashMap<[u8; 32], (String, Instant)>>,
    cache_key: [u8; 32],
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Authenticator {
    pub fn load(cfg: &HtpasswdConfig) -> Result<Authenticator, HtpasswdError> {
        let stamp = file_stamp(&cfg.path);
        let map = htpasswd::read(&cfg.path)?;
        let mut cache_key = [0u8; 32];
        cache_key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        cache_key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Ok(Authenticator {
            realm: cfg.realm.clone(),
            path: cfg.path.clone(),
            users: RwLock::new(Arc::new(Users { map, stamp })),
            cache: Mutex::new(HashMap::new()),
            cache_key,
            failures: Mutex::new(HashMap::new()),
        })
    }

    pub fn user_count(&self) -> usize {
        self.users.read().map(|u| u.map.len()).unwrap_or(0)
    }

    /// Re-reads the file if it changed (or always, with `force`). A broken file is logged and
    /// the previous users stay in force. Returns whether new users were loaded.
    pub fn reload(&self, force: bool) -> bool {
        let stamp = file_stamp(&self.path);
        let current = self.users.read().map(|u| u.stamp).unwrap_or(None);
        if !force && stamp == current {
            return false;
        }
        match htpasswd::read(&self.path) {
            Ok(map) => {
                log::info!("htpasswd file {} reloaded: {} user(s)", self.path.display(), map.len());
                if let Ok(mut users) = self.users.write() {
                    *users = Arc::new(Users { map, stamp });
                }
                if let Ok(mut cache) = self.cache.lock() {
                    cache.clear();
                }
                true
            }
            Err(e) => {
                log::error!("htpasswd file not reloaded, keeping the previous users: {e}");
                // Do not retry the same broken version on every poll.
                if let Ok(mut users) = self.users.write() {
                    let map = users.map.clone();
                    *users = Arc::new(Users { map, stamp });
                }
                false
            }
        }
    }

    fn cache_key(&self, user: &str, password: &str) -> [u8; 32] {
        *blake3::keyed_hash(&self.cache_key, &[user.as_bytes(), b"\0", password.as_bytes()].concat()).as_bytes()
    }

    /// Decides without running bcrypt when it can: no header, a malformed one, or credentials
    /// verified recently. `None` means bcrypt is needed: call [`Self::verify_blocking`].
    pub fn verify_fast(&self, header: Option<&[u8]>) -> Option<Verdict> {
        let Some(header) = header else { return Some(Verdict::Anonymous) };
        if is_empty_basic(header) {
            // skopeo/containers-image answer a challenge with `Basic Og==` (":") when told to
            // use no credentials: that is an anonymous request, not a failed login.
            return Some(Verdict::Anonymous);
        }
        let Some((user, password)) = parse_basic(header) else { return Some(Verdict::Invalid) };
        let key = self.cache_key(&user, &password);
        let cache = self.cache.lock().ok()?;
        match cache.get(&key) {
            Some((u, at)) if at.elapsed() < CACHE_TTL && *u == user => Some(Verdict::User(user)),
            _ => None,
        }
    }

    /// Checks an `Authorization` header, running bcrypt (slow, blocking) on a cache miss.
    pub fn verify_blocking(&self, header: Option<&[u8]>) -> Verdict {
        if let Some(v) = self.verify_fast(header) {
            return v;
        }
        let Some((user, password)) = header.and_then(parse_basic) else { return Verdict::Invalid };
        let key = self.cache_key(&user, &password);
        let users = match self.users.read() {
            Ok(u) => u.clone(),
            Err(_) => return Verdict::Invalid,
        };
        let ok = match users.map.get(&user) {
            Some(hash) => bcrypt::verify(&password, hash).unwrap_or(false),
            None => {
                // Spend the same time as for a known user, so timing does not reveal names.
                let _ = bcrypt::verify(&password, DUMMY_HASH);
                false
            }
        };
        if !ok {
            return Verdict::Invalid;
        }
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX {
                cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(key, (user.clone(), Instant::now()));
        }
        Verdict::User(user)
    }

    /// Records a failed attempt from `ip`; returns how long to wait before answering.
    pub fn record_failure(&self, ip: IpAddr) -> Duration {
        let Ok(mut table) = self.failures.lock() else { return Duration::ZERO };
        if table.len() >= FAILURE_TABLE_MAX && !table.contains_key(&ip) {
            table.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
            if table.len() >= FAILURE_TABLE_MAX {
                table.clear();
            }
        }
        let entry = table.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
        if entry.0 > FAILURES_ALLOWED {
            FAILURE_DELAY
        } else {
            Duration::ZERO
        }
    }
}

/// A valid bcrypt hash (cost 10) of a random string, verified against for unknown users.
const DUMMY_HASH: &str = "$2y$10$bhJfJV4m4zkcez/zJ1kpbe7NyS43dBtXFdrU7jDiYYTxyTKWjm3yS";

/// `Basic base64(user:password)` → (user, password).
pub fn parse_basic(header: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, rest) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    if user.is_empty() {
        return None;
    }
    Some((user.to_string(), password.to_string()))
}

/// `Basic` with an empty user and an empty password.
fn is_empty_basic(header: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(header) else { return false };
    let Some((scheme, rest)) = text.trim().split_once(' ') else { return false };
    scheme.eq_ignore_ascii_case("basic")
        && base64::engine::general_purpose::STANDARD.decode(rest.trim()).is_ok_and(|d| d == b":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header() {
        let h = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:s3:cr3t"));
        assert_eq!(parse_basic(h.as_bytes()), Some(("alice".into(), "s3:cr3t".into())));
        assert_eq!(parse_basic(b"Bearer abc"), None);
        assert_eq!(parse_basic(b"Basic !!!"), None);
        assert_eq!(parse_basic(b"Basic"), None);
        let no_colon = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice"));
        assert_eq!(parse_basic(no_colon.as_bytes()), None);
    }

    #[test]
    fn dummy_hash_is_valid_bcrypt() {
        assert!(htpasswd::is_bcrypt(DUMMY_HASH));
        assert_eq!(bcrypt::verify("x", DUMMY_HASH).ok(), Some(false));
    }
}
