//! Edge base URLs: where Foghorn sends viewers and publishers, so the start of every `Location` it
//! answers.
//!
//! A redirect is the base URL followed by a path Foghorn builds from url-safe tokens and
//! `?fh_sid=...`. It is a valid URI whatever the request exactly when the base is an absolute
//! `http`/`https` URL with a host, no user info, no query and no fragment (a path appended after a
//! `#` would land in the fragment), written only with the characters a URI may contain. That is
//! checked once, where a base URL enters (an edge's `Register`, a peer's summary), so the viewer
//! hot path only concatenates.

use url::Url;

/// Why a base URL was refused; the text is sent to the edge as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BaseUrlError {
    #[error(
        "must be written in ASCII without spaces, quotes or control characters (percent-encode \
         the path, punycode an international host)"
    )]
    Characters,
    #[error("has a % not followed by two hex digits")]
    Escape,
    #[error("is not an absolute URL: {0}")]
    Parse(url::ParseError),
    #[error("must use http:// or https://")]
    Scheme,
    #[error("must name a host")]
    Host,
    #[error("must name a host by letters, digits, '-', '_' and '.', or an IP address")]
    HostName,
    #[error("must not carry a user name or password")]
    UserInfo,
    #[error("must not have port 0")]
    Port,
    #[error("must not have a query or a fragment: paths are appended to it")]
    QueryOrFragment,
}

/// Bytes that may appear in a URI (RFC 3986: unreserved, reserved and `%`).
fn uri_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b':'
                | b'/'
                | b'?'
                | b'#'
                | b'['
                | b']'
                | b'@'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b'%'
        )
}

/// Checks `text` as an edge base URL and returns its normal form, without a trailing `/`
/// (`https://Edge.Example.net:443/` gives `https://edge.example.net`). The normal form passes
/// again unchanged.
pub fn check_base_url(text: &str) -> Result<String, BaseUrlError> {
    // The URL parser would quietly drop tabs and newlines and percent-encode spaces and
    // non-ASCII: what the edge wrote must already be a URI, or it is a typo to report.
    if !text.bytes().all(uri_byte) {
        return Err(BaseUrlError::Characters);
    }
    let bytes = text.as_bytes();
    for (i, _) in text.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3);
        if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
            return Err(BaseUrlError::Escape);
        }
    }
    let url = Url::parse(text).map_err(|e| match e {
        url::ParseError::EmptyHost => BaseUrlError::Host,
        other => BaseUrlError::Parse(other),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(BaseUrlError::Scheme);
    }
    // The parser is lenient like browsers: `https:edge.example.net` and `https:///edge` parse,
    // but are no absolute URL as written.
    match text[url.scheme().len()..].strip_prefix("://") {
        None => return Err(BaseUrlError::Parse(url::ParseError::RelativeUrlWithoutBase)),
        Some(rest) if rest.starts_with('/') => return Err(BaseUrlError::Host),
        Some(_) => {}
    }
    match url.host() {
        None => return Err(BaseUrlError::Host),
        Some(url::Host::Domain("")) => return Err(BaseUrlError::Host),
        // The parser decodes escapes in a host (`http://%60` names the host "`"), which no
        // `Location` could carry: a host name is written plainly.
        Some(url::Host::Domain(name))
            if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) =>
        {
            return Err(BaseUrlError::HostName)
        }
        Some(_) => {}
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(BaseUrlError::UserInfo);
    }
    if url.port() == Some(0) {
        return Err(BaseUrlError::Port);
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(BaseUrlError::QueryOrFragment);
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_urls_found_accepted_are_refused() {
        for (bad, why) in [
            ("https://edge one.example.net", BaseUrlError::Characters),
            ("https://edge.example.net/my path", BaseUrlError::Characters),
            ("https://édge.example.net", BaseUrlError::Characters),
            ("https://edge.example.net/é", BaseUrlError::Characters),
            ("https://edge.example.net/\u{1}", BaseUrlError::Characters),
            ("https://edge.exa\tmple.net", BaseUrlError::Characters),
            ("https://edge.example.net\r\nX: y", BaseUrlError::Characters),
            ("https://edge.example.net/\"x\"", BaseUrlError::Characters),
            ("https://edge.example.net/a%zz", BaseUrlError::Escape),
            ("https://edge.example.net/a%2", BaseUrlError::Escape),
            ("https://", BaseUrlError::Host),
            ("https:///hls", BaseUrlError::Host),
            ("http://%60", BaseUrlError::HostName),
            ("https://ed!ge.example.net", BaseUrlError::HostName),
            (
                "https://edge.example.net?x=1",
                BaseUrlError::QueryOrFragment,
            ),
            (
                "https://edge.example.net/#frag",
                BaseUrlError::QueryOrFragment,
            ),
            ("https://edge.example.net?", BaseUrlError::QueryOrFragment),
            ("https://user:pw@edge.example.net", BaseUrlError::UserInfo),
            ("https://user@edge.example.net", BaseUrlError::UserInfo),
            ("https://edge.example.net:0", BaseUrlError::Port),
            ("ftp://edge.example.net", BaseUrlError::Scheme),
            ("dtsc://edge.example.net", BaseUrlError::Scheme),
            (
                "https:edge.example.net",
                BaseUrlError::Parse(url::ParseError::RelativeUrlWithoutBase),
            ),
            (
                "edge.example.net",
                BaseUrlError::Parse(url::ParseError::RelativeUrlWithoutBase),
            ),
        ] {
            assert_eq!(check_base_url(bad), Err(why), "{bad:?}");
        }
        assert!(matches!(
            check_base_url("https://edge.example.net:99999"),
            Err(BaseUrlError::Parse(url::ParseError::InvalidPort))
        ));
        assert!(matches!(
            check_base_url("https://[::1"),
            Err(BaseUrlError::Parse(_))
        ));
    }

    #[test]
    fn good_urls_come_out_in_normal_form() {
        for (good, normal) in [
            ("https://edge.example.net", "https://edge.example.net"),
            ("https://Edge.Example.NET:443/", "https://edge.example.net"),
            ("http://10.0.0.7:8080", "http://10.0.0.7:8080"),
            (
                "https://[2001:db8::1]:8443/mist/",
                "https://[2001:db8::1]:8443/mist",
            ),
            (
                "https://xn--dge-9oa.example.net",
                "https://xn--dge-9oa.example.net",
            ),
            (
                "https://edge.example.net/a%20b",
                "https://edge.example.net/a%20b",
            ),
        ] {
            assert_eq!(check_base_url(good).as_deref(), Ok(normal), "{good}");
            assert_eq!(check_base_url(normal).as_deref(), Ok(normal), "idempotent");
        }
    }

    proptest! {
        /// Whatever an edge sends, what is accepted is an absolute http(s) URL with a host and
        /// neither query nor fragment, in a normal form that passes again unchanged.
        #[test]
        fn what_is_accepted_is_a_clean_absolute_url(
            scheme in "(https?|ftp|)(://|:/|:)?",
            host in "[a-z0-9.-]{0,12}|[a-zA-Z0-9.\\-_ é%\\[\\]:@]{0,12}",
            port in proptest::option::of(0u32..100_000),
            path in "(/[a-z0-9._~%-]{0,6}){0,3}|[a-zA-Z0-9/ .%?#é\\t]{0,12}",
        ) {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let text = format!("{scheme}{host}{port}{path}");
            if let Ok(base) = check_base_url(&text) {
                let parsed = Url::parse(&base).expect("a URL");
                prop_assert!(matches!(parsed.scheme(), "http" | "https"));
                prop_assert!(parsed.host_str().is_some_and(|h| !h.is_empty()));
                prop_assert!(parsed.query().is_none() && parsed.fragment().is_none());
                prop_assert!(base.bytes().all(uri_byte) && !base.ends_with('/'));
                prop_assert_eq!(check_base_url(&base), Ok(base.clone()));
            }
        }

        /// Arbitrary text never panics the check, and whatever passes is an http(s) URL whose
        /// normal form passes again unchanged.
        #[test]
        fn arbitrary_text_is_refused_or_a_stable_url(
            text in prop_oneof![
                any::<String>(),
                "[ -~]{0,40}",
                "(https?://)?[a-zA-Z0-9._~:/?#\\[\\]@!$&'()*+,;=%-]{0,40}",
                "https?://[a-z0-9.:%\\[\\]@]{0,16}(/[a-zA-Z0-9.%/-]{0,12})?",
            ],
        ) {
            if let Ok(base) = check_base_url(&text) {
                prop_assert!(base.starts_with("http://") || base.starts_with("https://"));
                prop_assert_eq!(check_base_url(&base), Ok(base.clone()), "from {:?}", text);
            }
        }

        /// Every clean URL (http or https, a DNS name in any case, any port but 0, a path of
        /// url-safe segments) is accepted, and comes out as written but for the case of the host,
        /// a default port and a trailing `/`.
        #[test]
        fn clean_urls_are_accepted_as_written(
            https in any::<bool>(),
            labels in proptest::collection::vec("[a-zA-Z][a-zA-Z0-9]{0,9}", 1..4),
            port in proptest::option::of(1u16..),
            segments in proptest::collection::vec("[a-zA-Z0-9_~-][a-zA-Z0-9._~-]{0,7}", 0..4),
            slash in any::<bool>(),
        ) {
            let scheme = if https { "https" } else { "http" };
            let host = labels.join(".");
            let path: String = segments.iter().map(|s| format!("/{s}")).collect();
            let port_text = port.map(|p| format!(":{p}")).unwrap_or_default();
            let slash = if slash { "/" } else { "" };
            let text = format!("{scheme}://{host}{port_text}{path}{slash}");
            let default = if https { 443 } else { 80 };
            let normal_port = port
                .filter(|&p| p != default)
                .map(|p| format!(":{p}"))
                .unwrap_or_default();
            let normal = format!("{scheme}://{}{normal_port}{path}", host.to_ascii_lowercase());
            prop_assert_eq!(check_base_url(&text), Ok(normal));
        }
    }
}
