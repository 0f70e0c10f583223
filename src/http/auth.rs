//! Credential verification for HTTP Basic authentication against an htpasswd file (bcrypt, and
//! the legacy schemes `auth.htpasswd.legacyhashes` allows). Turning a request into an identity
//! is `authn`; what an identity may do is `authz`, with the rules in `core::access`.
//!
//! - The htpasswd file is the source of truth; it is re-read when it changes (polled) and on
//!   SIGHUP. bcrypt entries are accepted, MD5-apr1 and SHA-1 ones only where allowed: any other
//!   line is refused with its line number (see `crate::htpasswd`). Each user with a legacy hash
//!   is warned about once at start, on SIGHUP, and when a reload brings a new legacy entry.
//! - With `auth.htpasswd.upgradelegacy`, a successful login with a legacy hash rewrites that
//!   entry as bcrypt (on a blocking thread, after the answer is decided; only while the entry is
//!   still the one that matched; every other line kept), then reloads the file. A user whose
//!   rewrite failed is not retried until the file changes.
//! - bcrypt is deliberately slow (tens of ms, much more on a Raspberry Pi) and clients send
//!   credentials with every request, so successful verifications are cached for a few minutes,
//!   keyed by a keyed BLAKE3 hash of user and password (the password itself is never stored).
//!   The cache is bounded (oldest entry out first) and cleared whenever the file changes.
//! - Password guessing is bounded *before* bcrypt runs: each attempt that needs bcrypt reserves
//!   one of `ATTEMPTS_ALLOWED` per client address (an IPv6 client per /64) and window; a success
//!   gives it back. Past the limit, requests that need bcrypt are refused at once (429 with
//!   `Retry-After`), however many connections the client opens. The table is bounded (oldest
//!   window out first). At most one bcrypt runs per core (`bcrypt_slots`).
//! - Every check costs the same whatever the name and its scheme: one bcrypt (the user's own
//!   entry, or a dummy hash at the cost most entries use) plus one check of each legacy scheme
//!   the file holds (the user's own entry, or a dummy of that scheme). So the answer's timing
//!   does not tell which names exist, nor which of them have a weak hash.
//! - Logs name the user and address, never the password.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;

use crate::config::HtpasswdConfig;
use crate::htpasswd::{self, HtpasswdError, LegacyScheme, Scheme};

/// How long a verified credential is trusted without running bcrypt again.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// Most cached credentials (a full cache drops its oldest entry).
const CACHE_MAX: usize = 1024;
/// Failed attempts (each one bcrypt run, or a malformed header) allowed per client address in
/// `ATTEMPT_WINDOW`.
pub const ATTEMPTS_ALLOWED: u32 = 10;
const ATTEMPT_WINDOW: Duration = Duration::from_secs(60);
/// Most client addresses tracked (a full table drops its oldest window).
const ATTEMPT_TABLE_MAX: usize = 4096;
/// The bcrypt cost unknown names are checked at when the file has no entry to copy it from.
const DEFAULT_COST: u32 = 10;

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
    /// Too many failed attempts from this address: refused without checking, for this long.
    Throttled(Duration),
}

/// One version of the users file.
struct Users {
    map: HashMap<String, String>,
    stamp: Option<(SystemTime, u64, u64)>,
    /// A hash of a random password at the cost most entries use (checked for unknown names).
    dummy: String,
    /// For each legacy scheme the file holds, a hash of a random password in it (checked for
    /// every name whose own entry is not of that scheme).
    legacy_dummies: Vec<(LegacyScheme, String)>,
}

impl Users {
    fn new(map: HashMap<String, String>, stamp: Option<(SystemTime, u64, u64)>, previous: Option<&Users>) -> Users {
        let cost = usual_cost(&map);
        let dummy = match previous.filter(|p| bcrypt_cost(&p.dummy) == Some(cost)) {
            Some(p) => p.dummy.clone(),
            None => bcrypt::hash(random_secret(), cost).unwrap_or_default(),
        };
        let mut schemes: Vec<LegacyScheme> = htpasswd::legacy_users(&map).into_iter().map(|(_, s)| s).collect();
        schemes.sort_unstable();
        schemes.dedup();
        let legacy_dummies = schemes
            .into_iter()
            .map(|scheme| {
                let hash = match scheme {
                    LegacyScheme::Apr1 => htpasswd::apr1_entry(&random_secret(), &random_secret()),
                    LegacyScheme::Sha => htpasswd::sha_entry(&random_secret()),
                };
                (scheme, hash)
            })
            .collect();
        Users { map, stamp, dummy, legacy_dummies }
    }
}

/// A random string for dummy hashes (32 hexadecimal digits).
fn random_secret() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The cost of a `$2y$NN$...` hash.
fn bcrypt_cost(hash: &str) -> Option<u32> {
    hash.split('$').nth(2)?.parse().ok()
}

/// The cost most entries of `map` use.
fn usual_cost(map: &HashMap<String, String>) -> u32 {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for cost in map.values().filter_map(|h| bcrypt_cost(h)) {
        *counts.entry(cost).or_default() += 1;
    }
    counts.into_iter().max_by_key(|&(cost, n)| (n, cost)).map_or(DEFAULT_COST, |(cost, _)| cost)
}

/// Where attempts are counted: the address, or an IPv6 client's /64 (one host gets a whole /64).
pub fn attempt_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// Failed attempts of one address in the current window.
#[derive(Clone, Copy, Debug)]
struct Attempts {
    since: Instant,
    count: u32,
}

/// Inserts into a bounded map, dropping the entry `age` says is oldest when it is full.
fn insert_bounded<K: Hash + Eq + Clone, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    key: K,
    value: V,
    age: impl Fn(&V) -> Instant,
) {
    if map.len() >= max && !map.contains_key(&key) {
        if let Some(oldest) = map.iter().min_by_key(|(_, v)| age(v)).map(|(k, _)| k.clone()) {
            map.remove(&oldest);
        }
    }
    map.insert(key, value);
}

pub struct Authenticator {
    pub realm: String,
    path: PathBuf,
    /// `auth.htpasswd.legacyhashes`: the weak schemes accepted besides bcrypt.
    legacy_hashes: Vec<LegacyScheme>,
    /// `auth.htpasswd.upgradelegacy`: rewrite legacy entries as bcrypt at a successful login.
    upgrade_legacy: bool,
    /// Users whose entry is being rewritten as bcrypt, or whose rewrite failed (not retried
    /// until the file changes).
    rehashing: Mutex<HashSet<String>>,
    users: RwLock<Arc<Users>>,
    /// keyed hash of (user, password) → (user, verified at)
    cache: Mutex<HashMap<[u8; 32], (String, Instant)>>,
    cache_key: [u8; 32],
    attempts: Mutex<HashMap<IpAddr, Attempts>>,
    /// Verifications in progress, by cache key: requests with the same credentials wait for the
    /// first one's bcrypt (then find the cache filled) instead of each running bcrypt and each
    /// counting as an attempt (a client opening 32 connections with the right password at once).
    in_flight: Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>,
    /// One bcrypt at a time per core: a flood of attempts from many addresses queues here (as
    /// parked tasks) instead of taking every core and blocking thread.
    pub bcrypt_slots: tokio::sync::Semaphore,
}

impl Authenticator {
    pub fn load(cfg: &HtpasswdConfig) -> Result<Authenticator, HtpasswdError> {
        let stamp = file_stamp(&cfg.path);
        let map = htpasswd::read(&cfg.path, &cfg.legacy_hashes)?;
        let mut cache_key = [0u8; 32];
        cache_key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        cache_key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let auth = Authenticator {
            realm: cfg.realm.clone(),
            path: cfg.path.clone(),
            legacy_hashes: cfg.legacy_hashes.clone(),
            upgrade_legacy: cfg.upgrade_legacy,
            rehashing: Mutex::new(HashSet::new()),
            users: RwLock::new(Arc::new(Users::new(map, stamp, None))),
            cache: Mutex::new(HashMap::new()),
            cache_key,
            attempts: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            bcrypt_slots: tokio::sync::Semaphore::new(cores),
        };
        if let Ok(users) = auth.users.read() {
            auth.warn_legacy(&users.map, None);
        }
        Ok(auth)
    }

    /// One warning per user of `map` with a legacy hash (never the hash), leaving out those
    /// whose entry is as it was in `previous`.
    fn warn_legacy(&self, map: &HashMap<String, String>, previous: Option<&HashMap<String, String>>) {
        for (user, scheme) in htpasswd::legacy_users(map) {
            if previous.is_some_and(|p| p.get(user) == map.get(user)) {
                continue;
            }
            if self.upgrade_legacy {
                log::warn!(
                    "htpasswd: user {user:?} uses {scheme} (weak); it is re-hashed as bcrypt at its next successful \
                     login (auth.htpasswd.upgradelegacy)"
                );
            } else {
                log::warn!(
                    "htpasswd: user {user:?} uses {scheme} (weak); re-set the password as bcrypt with \
                     `pier htpasswd add {user}`, or set auth.htpasswd.upgradelegacy: true to re-hash it at its next login"
                );
            }
        }
    }

    /// The bcrypt cost unknown user names are checked at (the one most entries use).
    pub fn dummy_cost(&self) -> u32 {
        self.users.read().ok().and_then(|u| bcrypt_cost(&u.dummy)).unwrap_or(DEFAULT_COST)
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
        match htpasswd::read(&self.path, &self.legacy_hashes) {
            Ok(map) => {
                log::info!("htpasswd file {} reloaded: {} user(s)", self.path.display(), map.len());
                if let Ok(mut users) = self.users.write() {
                    // On SIGHUP every legacy user again; otherwise only new or changed entries.
                    self.warn_legacy(&map, (!force).then_some(&users.map));
                    *users = Arc::new(Users::new(map, stamp, Some(&users)));
                }
                if let Ok(mut cache) = self.cache.lock() {
                    cache.clear();
                }
                if let Ok(mut rehashing) = self.rehashing.lock() {
                    rehashing.clear();
                }
                true
            }
            Err(e) => {
                log::error!("htpasswd file not reloaded, keeping the previous users: {e}");
                // Do not retry the same broken version on every poll.
                if let Ok(mut users) = self.users.write() {
                    let (map, dummy, legacy_dummies) =
                        (users.map.clone(), users.dummy.clone(), users.legacy_dummies.clone());
                    *users = Arc::new(Users { map, stamp, dummy, legacy_dummies });
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

    /// Checks an `Authorization` header, running bcrypt (slow, blocking) on a cache miss. A
    /// legacy entry that matches is rewritten as bcrypt afterwards when `upgradelegacy` is set
    /// (on another blocking thread when called inside the runtime, at once otherwise).
    pub fn verify_blocking(self: &Arc<Self>, header: Option<&[u8]>) -> Verdict {
        if let Some(v) = self.verify_fast(header) {
            return v;
        }
        let Some((user, password)) = header.and_then(parse_basic) else { return Verdict::Invalid };
        let key = self.cache_key(&user, &password);
        let users = match self.users.read() {
            Ok(u) => u.clone(),
            Err(_) => return Verdict::Invalid,
        };
        // One bcrypt and one check per legacy scheme of the file, whatever the name: its own
        // entry where it is of that scheme, a dummy otherwise (timing tells nothing of names).
        let own = users.map.get(&user).and_then(|h| Some((h.as_str(), htpasswd::scheme_of(h).ok()?)));
        let check = |scheme: Scheme, dummy: &str| match own {
            Some((hash, s)) if s == scheme => htpasswd::verify(&password, hash),
            _ => {
                let _ = htpasswd::verify(&password, dummy);
                false
            }
        };
        let mut ok = check(Scheme::Bcrypt, &users.dummy);
        for (scheme, dummy) in &users.legacy_dummies {
            ok |= check(Scheme::Legacy(*scheme), dummy);
        }
        if !ok {
            return Verdict::Invalid;
        }
        if let Some((hash, Scheme::Legacy(scheme))) = own {
            if self.upgrade_legacy {
                self.schedule_rehash(user.clone(), password, hash.to_string(), scheme);
            }
        }
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
            insert_bounded(&mut cache, CACHE_MAX, key, (user.clone(), Instant::now()), |(_, at)| *at);
        }
        Verdict::User(user)
    }

    /// Rewrites `user`'s legacy entry (`old_hash`, which `password` matched) as bcrypt: on a
    /// blocking thread of the runtime, or at once outside one. Once per user until the file
    /// changes.
    fn schedule_rehash(self: &Arc<Self>, user: String, password: String, old_hash: String, scheme: LegacyScheme) {
        let first = self.rehashing.lock().is_ok_and(|mut rehashing| rehashing.insert(user.clone()));
        if !first {
            return;
        }
        let auth = self.clone();
        let job = move || auth.rehash(&user, &password, &old_hash, scheme);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(job)),
            Err(_) => job(),
        }
    }

    /// See [`Self::schedule_rehash`]. The new hash is computed before the file is read, so the
    /// read-check-replace takes milliseconds; then the file is reloaded.
    fn rehash(&self, user: &str, password: &str, old_hash: &str, scheme: LegacyScheme) {
        let cost = self.dummy_cost();
        let done = htpasswd::new_entry(user, password, cost).map_err(|e| format!("bcrypt: {e}")).and_then(|entry| {
            htpasswd::replace_if_unchanged(&self.path, user, old_hash, &entry, &self.legacy_hashes)
                .map_err(|e| e.to_string())
        });
        match done {
            Ok(true) => {
                log::info!(
                    "htpasswd: user {user:?} moved from {scheme} to bcrypt (cost {cost}) in {}",
                    self.path.display()
                );
                self.reload(false);
            }
            Ok(false) => {
                log::info!("htpasswd: user {user:?} not re-hashed: the entry changed in the file meanwhile");
                if let Ok(mut rehashing) = self.rehashing.lock() {
                    rehashing.remove(user);
                }
            }
            Err(e) => log::warn!(
                "htpasswd: user {user:?} keeps its {scheme} hash: rewriting it as bcrypt failed ({e}); not retried \
                 until the file changes"
            ),
        }
    }

    /// Waits for the turn to verify the credentials of `header` (others with the same ones go
    /// first). `None` for headers that need no bcrypt.
    pub async fn verification_turn(self: &Arc<Self>, header: &[u8]) -> Option<VerificationTurn> {
        let (user, password) = parse_basic(header)?;
        let key = self.cache_key(&user, &password);
        let gate = {
            let mut in_flight = self.in_flight.lock().ok()?;
            in_flight.entry(key).or_default().clone()
        };
        let guard = gate.clone().lock_owned().await;
        Some(VerificationTurn { auth: self.clone(), key, gate, _guard: guard })
    }

    /// Reserves one failed attempt for `ip` before bcrypt runs (or for a malformed header).
    /// Refused, with how long until the window ends, when the address has used them all;
    /// [`Self::refund_attempt`] gives one back after a success. Returns whether this is the
    /// first refusal of the window (worth one log line).
    pub fn reserve_attempt(&self, ip: IpAddr) -> Result<(), (Duration, bool)> {
        let Ok(mut table) = self.attempts.lock() else { return Ok(()) };
        let key = attempt_key(ip);
        let now = Instant::now();
        let mut entry = match table.get(&key) {
            Some(a) if now.duration_since(a.since) < ATTEMPT_WINDOW => *a,
            _ => Attempts { since: now, count: 0 },
        };
        if entry.count >= ATTEMPTS_ALLOWED {
            let first = entry.count == ATTEMPTS_ALLOWED;
            entry.count = ATTEMPTS_ALLOWED + 1;
            table.insert(key, entry);
            return Err((ATTEMPT_WINDOW.saturating_sub(now.duration_since(entry.since)), first));
        }
        entry.count += 1;
        insert_bounded(&mut table, ATTEMPT_TABLE_MAX, key, entry, |a| a.since);
        Ok(())
    }

    /// Gives back an attempt reserved by [`Self::reserve_attempt`] (the credentials were right).
    pub fn refund_attempt(&self, ip: IpAddr) {
        if let Ok(mut table) = self.attempts.lock() {
            if let Some(a) = table.get_mut(&attempt_key(ip)) {
                a.count = a.count.saturating_sub(1).min(ATTEMPTS_ALLOWED - 1);
            }
        }
    }
}

/// The turn to verify one set of credentials; the last one out removes the entry.
pub struct VerificationTurn {
    auth: Arc<Authenticator>,
    key: [u8; 32],
    gate: Arc<tokio::sync::Mutex<()>>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for VerificationTurn {
    fn drop(&mut self) {
        if let Ok(mut in_flight) = self.auth.in_flight.lock() {
            // Held by the map, this turn and its guard: nobody else waits.
            if Arc::strong_count(&self.gate) <= 3 {
                in_flight.remove(&self.key);
            }
        }
    }
}

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
    fn unknown_names_are_checked_at_the_usual_cost() {
        let entries = |costs: &[u32]| -> HashMap<String, String> {
            costs.iter().enumerate().map(|(i, c)| (format!("u{i}"), format!("$2y${c:02}$abc"))).collect()
        };
        assert_eq!(usual_cost(&entries(&[5, 5, 12])), 5);
        assert_eq!(usual_cost(&entries(&[])), DEFAULT_COST);
        let users = Users::new(entries(&[4, 4]), None, None);
        assert_eq!(bcrypt_cost(&users.dummy), Some(4));
        assert!(htpasswd::is_bcrypt(&users.dummy));
        // A reload at the same cost keeps the dummy (no bcrypt hash computed per reload).
        let again = Users::new(entries(&[4]), None, Some(&users));
        assert_eq!(again.dummy, users.dummy);
    }

    #[test]
    fn attempts_are_counted_per_address_and_per_ipv6_64() {
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(attempt_key(v6("2001:db8:1:2:aaaa::1")), attempt_key(v6("2001:db8:1:2:ffff::9")));
        assert_ne!(attempt_key(v6("2001:db8:1:2::1")), attempt_key(v6("2001:db8:1:3::1")));
        assert_eq!(attempt_key(v6("::ffff:192.0.2.1")), v6("192.0.2.1"));
        assert_eq!(attempt_key(v6("192.0.2.1")), v6("192.0.2.1"));
    }

    #[test]
    fn attempts_are_limited_before_bcrypt_and_successes_are_refunded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, "").unwrap();
        let auth = Authenticator::load(&HtpasswdConfig {
            realm: "r".into(),
            path,
            legacy_hashes: vec![],
            upgrade_legacy: false,
        })
        .unwrap();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..ATTEMPTS_ALLOWED {
            assert!(auth.reserve_attempt(a).is_ok());
        }
        let (retry, first) = auth.reserve_attempt(a).unwrap_err();
        assert!(first && retry <= ATTEMPT_WINDOW && retry > Duration::ZERO);
        assert!(!auth.reserve_attempt(a).unwrap_err().1, "only the first refusal is worth a log line");
        assert!(auth.reserve_attempt(b).is_ok(), "another address is not affected");
        // A success gives its attempt back.
        auth.refund_attempt(b);
        for _ in 0..ATTEMPTS_ALLOWED {
            assert!(auth.reserve_attempt(b).is_ok());
        }
    }

    fn header(user: &str, password: &str) -> Vec<u8> {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))).into_bytes()
    }

    /// Legacy entries verify when allowed; with `upgradelegacy` a success rewrites the entry as
    /// bcrypt (at once here: no runtime) and the reloaded file verifies the same password.
    #[test]
    fn legacy_entries_verify_and_are_rewritten_as_bcrypt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let alice = htpasswd::new_entry("alice", "a-pw", 4).unwrap();
        let bob = format!("bob:{}", htpasswd::apr1_entry("b-pw", "saltsalt"));
        let carol = format!("carol:{}", htpasswd::sha_entry("c-pw"));
        std::fs::write(&path, format!("# team\n{alice}\n{bob}\n{carol}\n")).unwrap();
        let cfg = HtpasswdConfig {
            realm: "r".into(),
            path: path.clone(),
            legacy_hashes: LegacyScheme::ALL.to_vec(),
            upgrade_legacy: false,
        };
        let auth = Arc::new(Authenticator::load(&cfg).unwrap());
        let schemes: Vec<LegacyScheme> = auth.users.read().unwrap().legacy_dummies.iter().map(|(s, _)| *s).collect();
        assert_eq!(schemes, LegacyScheme::ALL, "one dummy per legacy scheme of the file");
        for (user, password) in [("alice", "a-pw"), ("bob", "b-pw"), ("carol", "c-pw")] {
            assert_eq!(auth.verify_blocking(Some(&header(user, password))), Verdict::User(user.into()));
            assert_eq!(auth.verify_blocking(Some(&header(user, "wrong"))), Verdict::Invalid, "{user}");
        }
        // Another user's password, or a name not in the file, is refused whatever the scheme.
        assert_eq!(auth.verify_blocking(Some(&header("bob", "c-pw"))), Verdict::Invalid);
        assert_eq!(auth.verify_blocking(Some(&header("dave", "b-pw"))), Verdict::Invalid);
        assert!(std::fs::read_to_string(&path).unwrap().contains(&bob), "no rewrite without upgradelegacy");

        let auth = Arc::new(Authenticator::load(&HtpasswdConfig { upgrade_legacy: true, ..cfg.clone() }).unwrap());
        assert_eq!(auth.verify_blocking(Some(&header("bob", "wrong"))), Verdict::Invalid);
        assert!(std::fs::read_to_string(&path).unwrap().contains(&bob), "a failed login rewrites nothing");
        assert_eq!(auth.verify_blocking(Some(&header("bob", "b-pw"))), Verdict::User("bob".into()));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[..2], ["# team", alice.as_str()]);
        assert_eq!(lines[3], carol, "other lines stay");
        let new = lines[2].strip_prefix("bob:").unwrap();
        assert!(new.starts_with("$2y$04$") && bcrypt::verify("b-pw", new).unwrap(), "{new}");
        // Reloaded: bob is bcrypt now (the cache was cleared: this runs bcrypt).
        assert_eq!(auth.users.read().unwrap().map.get("bob").map(String::as_str), Some(new));
        assert_eq!(auth.verify_blocking(Some(&header("bob", "b-pw"))), Verdict::User("bob".into()));
        // The file as written by the rewrite loads without the opt-in for bob's scheme.
        let only_sha = HtpasswdConfig { legacy_hashes: vec![LegacyScheme::Sha], ..cfg };
        assert!(Authenticator::load(&only_sha).is_ok());
    }

    #[test]
    fn bounded_maps_drop_their_oldest_entry() {
        let t0 = Instant::now();
        let mut map: HashMap<u32, Instant> = HashMap::new();
        for i in 0..4 {
            insert_bounded(&mut map, 4, i, t0 + Duration::from_secs(u64::from(10 - i)), |t| *t);
        }
        insert_bounded(&mut map, 4, 9, t0 + Duration::from_secs(20), |t| *t);
        assert_eq!(map.len(), 4);
        assert!(!map.contains_key(&3), "the oldest (3) goes: {map:?}");
        insert_bounded(&mut map, 4, 0, t0, |t| *t);
        assert_eq!(map.len(), 4, "an update of a present key drops nothing");
    }
}
