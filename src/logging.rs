//! Logging: to the systemd journal when stderr is connected to it (structured fields), else to
//! stderr as text (`LEVEL target: message key=value ...`) or JSON lines (`log.formatter: json`).
//!
//! Request lines carry key-value pairs (method, path, status, duration_ms, bytes, remote_addr,
//! user, repository, digest) that become journal fields or JSON members. Nothing logged here
//! ever contains a password or an `Authorization` header.

use std::io::Write;

use log::kv::{Key, Value, VisitSource};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

struct StderrLogger {
    format: Format,
}

/// Collects a record's key-value pairs.
struct Pairs(Vec<(String, String)>);

impl<'kvs> VisitSource<'kvs> for Pairs {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        self.0.push((key.to_string(), value.to_string()));
        Ok(())
    }
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut pairs = Pairs(Vec::new());
        let _ = record.key_values().visit(&mut pairs);
        let line = match self.format {
            Format::Text => format!("{:<5} {}: {}", record.level(), record.target(), record.args()),
            Format::Json => {
                let mut obj = serde_json::Map::new();
                obj.insert("time".into(), serde_json::json!(rfc3339_now()));
                obj.insert("level".into(), serde_json::json!(record.level().as_str().to_ascii_lowercase()));
                obj.insert("target".into(), serde_json::json!(record.target()));
                obj.insert("msg".into(), serde_json::json!(record.args().to_string()));
                for (k, v) in pairs.0 {
                    // Numbers stay numbers; empty values (a field that does not apply) are left out.
                    let value = if let Ok(i) = v.parse::<i64>() {
                        serde_json::Value::from(i)
                    } else if let Some(f) = v.parse::<f64>().ok().filter(|f| f.is_finite()) {
                        serde_json::Value::from(f)
                    } else if v.is_empty() {
                        continue;
                    } else {
                        serde_json::Value::String(v)
                    };
                    obj.insert(k, value);
                }
                serde_json::Value::Object(obj).to_string()
            }
        };
        // One write per line, so that lines from concurrent threads never interleave.
        let mut line = line;
        line.push('\n');
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// UTC time as RFC 3339 with milliseconds, `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn rfc3339_now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Installs the logger: the journal when stderr is connected to it and journald answers, else
/// stderr in `format`. Returns a note to log once the logger is up (e.g. a fallback).
pub fn init(level: log::LevelFilter, format: Format) -> Option<String> {
    log::set_max_level(level);
    let mut note = None;
    if systemd_journal_logger::connected_to_journal() {
        match systemd_journal_logger::JournalLog::new() {
            Ok(journal) => {
                if journal.install().is_ok() {
                    return None;
                }
            }
            Err(e) => {
                note = Some(format!("stderr is the journal but journald is not reachable ({e}); logging to stderr"))
            }
        }
    }
    let _ = log::set_boxed_logger(Box::new(StderrLogger { format }));
    note
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_look_right() {
        let t = super::rfc3339_now();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z') && &t[10..11] == "T", "{t}");
    }
}
