//! Query-string parameters, read where they lie: no map and no copy per request (a value is
//! percent-decoded into a new string only when it contains escapes). Viewer requests carry few
//! parameters, so looking one up is a short scan.

use std::borrow::Cow;

use axum::http::Uri;

use super::ApiError;

/// Longest query string accepted, bytes.
const MAX_QUERY_BYTES: usize = 2048;
/// Longest decoded value accepted, bytes.
pub const MAX_VALUE_BYTES: usize = 256;

/// The validated query string of one request. When a name is given more than once, the last
/// occurrence counts (as with a map built from the pairs in order).
#[derive(Debug, Clone, Copy, Default)]
pub struct Params<'a>(&'a str);

impl<'a> Params<'a> {
    /// The query of `uri`; 400 when it is too long or one of its values is.
    pub fn of(uri: &'a Uri) -> Result<Params<'a>, ApiError> {
        Params::parse(uri.query().unwrap_or(""))
    }

    /// A raw query string (without the `?`); 400 when it is too long or one of its values is.
    pub fn parse(query: &'a str) -> Result<Params<'a>, ApiError> {
        if query.len() > MAX_QUERY_BYTES {
            return Err(ApiError::BadRequest("query string too long".into()));
        }
        let params = Params(query);
        if params.pairs().any(|(_, v)| v.len() > MAX_VALUE_BYTES) {
            return Err(ApiError::BadRequest("query parameter too long".into()));
        }
        Ok(params)
    }

    fn pairs(&self) -> form_urlencoded::Parse<'a> {
        form_urlencoded::parse(self.0.as_bytes())
    }

    /// The value of `name`, if given (an empty string for `?name`).
    pub fn get(&self, name: &str) -> Option<Cow<'a, str>> {
        if self.0.is_empty() {
            // Most viewers send no query: no parser is set up for it.
            return None;
        }
        self.pairs()
            .filter(|(k, _)| k == name)
            .last()
            .map(|(_, v)| v)
    }

    /// Every parameter name given, in order (repeated names repeat).
    pub fn names(&self) -> impl Iterator<Item = Cow<'a, str>> {
        self.pairs().map(|(k, _)| k)
    }

    /// Whether `name` is given, with or without a value.
    pub fn has(&self, name: &str) -> bool {
        self.pairs().any(|(k, _)| k == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn values_are_found_decoded_and_bounded() {
        let p = Params::parse("a=1&b=x%20y&flag&a=2&c=").expect("valid");
        assert_eq!(p.get("a").as_deref(), Some("2"), "last occurrence wins");
        assert_eq!(p.get("b").as_deref(), Some("x y"));
        assert_eq!(p.get("flag").as_deref(), Some(""));
        assert!(p.has("flag") && p.has("c") && !p.has("d"));
        assert_eq!(p.get("d"), None);
        assert!(matches!(p.get("a"), Some(Cow::Borrowed(_))), "no copy");

        assert!(Params::parse(&format!("a={}", "x".repeat(MAX_VALUE_BYTES))).is_ok());
        assert!(Params::parse(&format!("a={}", "x".repeat(MAX_VALUE_BYTES + 1))).is_err());
        assert!(Params::parse(&"a=1&".repeat(1000)).is_err());
        // Malformed escapes are kept as they are, not refused.
        assert_eq!(
            Params::parse("a=%zz").expect("valid").get("a").as_deref(),
            Some("%zz")
        );
        assert!(!Params::default().has("a"));
    }

    /// A raw name or value decoded as the form encoding says, written out byte by byte: `+` is a
    /// space, `%` and two hex digits is that byte, any other `%` stays, and what is not UTF-8
    /// becomes U+FFFD.
    fn decode(raw: &str) -> String {
        let bytes = raw.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let escape = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
            match (bytes[i], escape) {
                (b'+', _) => out.push(b' '),
                (b'%', Some(hex)) => {
                    let hex = std::str::from_utf8(hex).expect("hex digits are ASCII");
                    out.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
                    i += 2;
                }
                (b, _) => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The (raw value, decoded name, decoded value) of every pair, in order: pairs are separated
    /// by `&`, empty ones skipped, and the name ends at the first `=`.
    fn reference_pairs(query: &str) -> Vec<(&str, String, String)> {
        query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (value, decode(name), decode(value))
            })
            .collect()
    }

    /// Query strings rich in what decoding has to get right: separators, `+`, escapes good and
    /// broken, multi-byte characters, escaped bytes that are not UTF-8.
    fn query() -> impl Strategy<Value = String> {
        prop_oneof![
            "([a-c]|=|&|\\+|%|[0-9A-Fa-f]|é|%[0-9a-fA-F]{2}|%[cC]3%[aA]9){0,80}",
            any::<String>(),
        ]
    }

    proptest! {
        /// Whatever the query, it is refused exactly when it or a decoded value is too long, and
        /// otherwise every name, lookup and presence test answers what the pairs say, the last
        /// occurrence of a name winning; a value without `+` or `%` is read in place.
        #[test]
        fn lookups_agree_with_the_pairs(query in query(), absent in "[a-d]") {
            let pairs = reference_pairs(&query);
            let fits = query.len() <= MAX_QUERY_BYTES
                && pairs.iter().all(|(_, _, v)| v.len() <= MAX_VALUE_BYTES);
            let Ok(params) = Params::parse(&query) else {
                prop_assert!(!fits, "refused {query:?}");
                return Ok(());
            };
            prop_assert!(fits, "accepted {query:?}");
            let names: Vec<String> = params.names().map(Cow::into_owned).collect();
            let expected: Vec<String> = pairs.iter().map(|(_, n, _)| n.clone()).collect();
            prop_assert_eq!(names, expected);
            for name in pairs.iter().map(|(_, n, _)| n.as_str()).chain([absent.as_str()]) {
                let last = pairs.iter().rev().find(|(_, n, _)| n == name);
                let got = params.get(name);
                prop_assert_eq!(got.as_deref(), last.map(|(_, _, v)| v.as_str()), "{}", name);
                prop_assert_eq!(params.has(name), last.is_some());
                if let (Some(got), Some((raw, _, _))) = (got, last) {
                    if !raw.contains(['+', '%']) {
                        prop_assert!(matches!(got, Cow::Borrowed(_)), "copied {:?}", raw);
                    }
                }
            }
        }

        /// Whatever a client encodes (any names and values, through the form encoder browsers
        /// and HTTP libraries use) reads back as it was sent, within the bounds.
        #[test]
        fn encoded_pairs_read_back(
            pairs in proptest::collection::vec(("\\PC{0,6}", "\\PC{0,16}"), 0..6),
        ) {
            let query = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&pairs)
                .finish();
            let params = Params::parse(&query).expect("short pairs fit the bounds");
            let names: Vec<String> = params.names().map(Cow::into_owned).collect();
            let sent: Vec<String> = pairs.iter().map(|(n, _)| n.clone()).collect();
            prop_assert_eq!(names, sent);
            for (name, _) in &pairs {
                let last = pairs.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
                let got = params.get(name);
                prop_assert_eq!(got.as_deref(), last);
            }
        }

        /// The bounds count the query as sent and each value as decoded, whatever the escaping.
        #[test]
        fn bounds_count_sent_and_decoded_bytes(
            values in proptest::collection::vec((0usize..300, any::<bool>()), 0..16),
        ) {
            // Three bytes sent (`%41`) or one (`A`) per decoded byte.
            let query = values
                .iter()
                .map(|&(len, escaped)| {
                    let byte = if escaped { "%41" } else { "A" };
                    format!("v={}", byte.repeat(len))
                })
                .collect::<Vec<_>>()
                .join("&");
            let fits = query.len() <= MAX_QUERY_BYTES
                && values.iter().all(|&(len, _)| len <= MAX_VALUE_BYTES);
            prop_assert_eq!(Params::parse(&query).is_ok(), fits);
        }
    }
}
