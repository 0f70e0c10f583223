//! Query strings: decoding a request's parameters and encoding values into the URLs pier
//! builds (the `Link` header of paginated listings).
//!
//! Decoding follows `application/x-www-form-urlencoded` as registries use it: `+` is a space,
//! `%XX` is a byte, a `%` not followed by two hex digits stays literal, and bytes that are not
//! UTF-8 become U+FFFD. Parameters keep their order; a key may repeat.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Bytes left as they are in an encoded value: RFC 3986 "unreserved" characters.
const VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// A request's decoded query parameters, in order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Decodes a query string (the part of the URI after `?`, if any).
    pub fn parse(query: Option<&str>) -> Query {
        Query(
            query
                .unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (decode(k), decode(v)),
                    None => (decode(p), String::new()),
                })
                .collect(),
        )
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all<'s>(&'s self, key: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Decodes one key or value.
fn decode(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// Encodes a value for a query string: everything but unreserved characters as `%XX`.
pub fn encode(value: &str) -> String {
    utf8_percent_encode(value, VALUE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q =
            Query::parse(Some("n=2&last=a%2Fb&artifactType=application%2Fvnd.x%2Bjson&tag=a&tag=b&bad=%zz&trail=%4"));
        assert_eq!(q.0[1], ("last".to_string(), "a/b".to_string()));
        assert_eq!(q.0[2].1, "application/vnd.x+json");
        assert_eq!(q.all("tag").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(q.0[5].1, "%zz");
        assert_eq!(q.0[6].1, "%4");
        assert_eq!(q.get("n"), Some("2"));
        assert_eq!(q.get("tag"), Some("a"), "the first of repeated values");
        assert_eq!(q.get("absent"), None);
    }

    #[test]
    fn query_decoding_edges() {
        let q = Query::parse(Some("a+b=c+d%20e&flag&&=empty&k=%41%4a%4A&x=%e2%82%ac&bad=%ff&pct=%25zz&plus=%2B"));
        assert_eq!(q.get("a b"), Some("c d e"), "+ and %20 are spaces");
        assert_eq!(q.get("flag"), Some(""), "a key without =");
        assert_eq!(q.get(""), Some("empty"), "an empty key");
        assert_eq!(q.get("k"), Some("AJJ"), "hex digits of either case");
        assert_eq!(q.get("x"), Some("€"), "UTF-8 sequences");
        assert_eq!(q.get("bad"), Some("\u{fffd}"), "invalid UTF-8 is replaced");
        assert_eq!(q.get("pct"), Some("%zz"), "an encoded % is decoded once");
        assert_eq!(q.get("plus"), Some("+"));
        assert_eq!(q.0.len(), 8, "empty pieces between && are skipped: {q:?}");
        assert_eq!(Query::parse(None), Query::default());
        assert_eq!(Query::parse(Some("")), Query::default());
    }

    #[test]
    fn value_encoding() {
        assert_eq!(encode("AZaz09-_.~"), "AZaz09-_.~");
        assert_eq!(encode("a/b c+d&e=f%"), "a%2Fb%20c%2Bd%26e%3Df%25");
        assert_eq!(encode("é"), "%C3%A9");
        for s in ["a/b c+d&e=f%", "é:x?y#z", "plain"] {
            assert_eq!(Query::parse(Some(&format!("k={}", encode(s)))).get("k"), Some(s), "round trip of {s:?}");
        }
    }
}
