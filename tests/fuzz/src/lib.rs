//! What the fuzz targets share: splitting an input into its parts, and reference models of the
//! grammars pier parses, written as plainly as possible (and independently of pier's code), so
//! that a target can assert that a parser accepts exactly what its grammar says.

/// `data` split at its first `\n`: the first line, and the rest (empty when there is no `\n`).
pub fn first_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// A repository name component, `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, said another way: only
/// `[a-z0-9._-]`, alphanumeric at both ends, and every run of separators one of `.`, `_`, `__`
/// or dashes only.
pub fn component_model(c: &str) -> bool {
    let b = c.as_bytes();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else { return false };
    if !is_lower_alnum(first) || !is_lower_alnum(last) {
        return false;
    }
    if !b.iter().all(|&x| is_lower_alnum(x) || matches!(x, b'.' | b'_' | b'-')) {
        return false;
    }
    c.split(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        .filter(|run| !run.is_empty())
        .all(|run| run == "." || run == "_" || run == "__" || run.bytes().all(|x| x == b'-'))
}

/// The distribution-spec repository name grammar, at most 255 bytes, with pier's rule that no
/// component after the first names an OCI image layout entry.
pub fn repo_name_model(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.split('/')
            .enumerate()
            .all(|(i, c)| component_model(c) && (i == 0 || !matches!(c, "blobs" | "index.json" | "oci-layout")))
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
pub fn tag_model(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

/// `<algorithm>:<hex>` for the three algorithms pier knows, with exactly their hex length.
pub fn digest_model(s: &str) -> bool {
    let Some((alg, hex)) = s.split_once(':') else { return false };
    let len = match alg {
        "sha256" | "blake3" => 64,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == len && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Glob matching (`*` is any run of bytes, `/` included; every other byte is itself) by
/// dynamic programming over prefixes: `row[j]` says whether the pattern read so far matches
/// `text[..j]`.
pub fn glob_model(pattern: &[u8], text: &[u8]) -> bool {
    let mut row = vec![false; text.len() + 1];
    row[0] = true;
    for &p in pattern {
        let mut next = vec![false; text.len() + 1];
        if p == b'*' {
            // `*` matches text[..j] if the pattern before it matched any text[..k], k <= j.
            let mut any = false;
            for j in 0..=text.len() {
                any |= row[j];
                next[j] = any;
            }
        } else {
            for j in 1..=text.len() {
                next[j] = row[j - 1] && text[j - 1] == p;
            }
        }
        row = next;
    }
    row[text.len()]
}

/// A Go duration's value, computed exactly (in `i128`, fractions as exact rationals), when the
/// text is well formed and every fraction is exact in its unit (`unit % 10^digits == 0`, e.g.
/// at most 9 fraction digits on seconds), so no rounding question arises. `None` when the text
/// is not a duration, `Some(None)` when it is one but the model does not decide its value.
pub fn duration_model(text: &str) -> Option<Option<i128>> {
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(Some(0));
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    let mut exact = true;
    let mut rest = rest;
    while !rest.is_empty() {
        let whole_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (whole, after) = rest.split_at(whole_len);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(f) => {
                let n = f.bytes().take_while(u8::is_ascii_digit).count();
                (Some(&f[..n]), &f[n..])
            }
            None => (None, after),
        };
        if whole.is_empty() && fraction.is_none_or(str::is_empty) {
            return None;
        }
        let unit_len = after.bytes().position(|b| b == b'.' || b.is_ascii_digit()).unwrap_or(after.len());
        let unit: i128 = match &after[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &after[unit_len..];
        // Past 20 digits the value is out of range anyway, and would overflow i128 times a unit.
        if whole.trim_start_matches('0').len() > 20 || fraction.is_some_and(|f| f.len() > 20) {
            exact = false;
            continue;
        }
        let whole: i128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
        total += whole * unit;
        if let Some(f) = fraction.filter(|f| !f.is_empty()) {
            let scale = 10i128.pow(f.len() as u32);
            if unit % scale != 0 {
                exact = false;
            } else {
                total += f.parse::<i128>().ok()? * (unit / scale);
            }
        }
    }
    Some(exact.then_some(if negative { -total } else { total }))
}

/// A size as `core::size` documents it: trimmed, decimal digits, optional spaces, an optional
/// unit (case-insensitive). `None` when not a size; the value may exceed `u64`.
pub fn size_model(text: &str) -> Option<u128> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let rest = text[digits..].trim_start().to_ascii_lowercase();
    let unit: u128 = match rest.as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => 1 << 10,
        "m" | "mi" | "mib" => 1 << 20,
        "g" | "gi" | "gib" => 1 << 30,
        "t" | "ti" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return None,
    };
    // Beyond 25 significant digits the value is over u64 whatever the unit (and would overflow
    // u128 times a unit).
    let significant = text[..digits].trim_start_matches('0');
    let number: u128 = if significant.len() > 25 { u128::MAX / (1 << 40) } else { text[..digits].parse().ok()? };
    Some(number * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_agree_with_the_grammars_on_examples() {
        assert!(repo_name_model("library/alpine") && repo_name_model("a__b/c---d.e"));
        assert!(!repo_name_model("a/blobs") && !repo_name_model("a___b") && !repo_name_model("a/"));
        assert!(tag_model("_x") && !tag_model(".x"));
        assert!(glob_model(b"a*c", b"abbbc") && glob_model(b"*", b"") && !glob_model(b"a*", b"b"));
        assert_eq!(duration_model("1h30m"), Some(Some(5_400_000_000_000)));
        assert_eq!(duration_model("-1.5s"), Some(Some(-1_500_000_000)));
        assert_eq!(duration_model("0.3333333333333333333h"), Some(None));
        assert_eq!(duration_model("1d"), None);
        assert_eq!(size_model(" 2 KiB"), Some(2048));
        assert_eq!(size_model("1.5GB"), None);
        assert_eq!(size_model(&format!("{}1B", "0".repeat(40))), Some(1));
        assert_eq!(duration_model(&format!("{}1s", "0".repeat(40))), Some(Some(1_000_000_000)));
    }
}
