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
}
