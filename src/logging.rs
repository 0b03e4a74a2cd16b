//! Logging: `tracing` events filtered by `RUST_LOG` (else `log.filter`), written as text or JSON,
//! and unable to carry a secret at any level.
//!
//! Secrets are shown once to whoever minted them and then exist only as hashes, so a log line
//! holding one is a leak. Two guards, because a single missed event is enough:
//!
//! 1. **Targets that log whole messages are silenced below INFO, whatever the filter says.**
//!    rmcp logs every JSON-RPC request and result it handles at DEBUG and TRACE
//!    (`rmcp::service` "received request" / "response message" / "new event",
//!    `rmcp::transport::streamable_http_server::tower`): the enrollment tokens that
//!    `create_enrollment_token` and `create_private_cluster` show once, the invite passed to
//!    `subscribe_to_cluster`. Its INFO and above (session start and end, failures) stay.
//! 2. **Whatever is written is scrubbed** ([`scrub`]): Foghorn's secrets have a recognisable
//!    shape (`fhk_`, `enroll_`, `nc_`, `sk_`, `inv_`, `fpc_` + 48 hex digits), which is cut after
//!    its public lookup part, and PEM private keys are cut whole. This catches a secret echoed
//!    by any other crate or by a future log line of our own.
//!
//! What else was checked: hyper logs nothing unless built with `hyper_unstable_tracing`; h2 and
//! tonic log frame kinds and sizes, never header values (`authorization`) or message bodies;
//! sqlx logs statements without their bound values; our own events name nodes, streams and
//! peers, never tokens or credentials. `tests/binary.rs` runs every flow that mints or carries a
//! secret against the real binary at `trace` and finds none in its output.

use std::io::{self, Write};

use tracing::Level;
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt as _};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

use crate::config::LogFormat;
use crate::secret::SecretKind;

/// Whether log lines written to `stream` may carry ANSI colours: only on a terminal, and not
/// when `NO_COLOR` is set (no-color.org). A file, a pipe or a log collector gets plain text.
pub fn colours(stream: &impl std::io::IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the process-wide subscriber writing to `writer` (with ANSI colours when `ansi`):
/// `RUST_LOG` if set and valid, else `filter`, else `info`; plus the guards of the module docs.
/// A second call does nothing.
pub fn init<W>(filter: &str, format: LogFormat, writer: W, ansi: bool)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let mut directives = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // hickory-server logs every DNS query it answers at INFO: a line per query, at up to
    // 100,000 a second, unless asked for by name.
    let asked = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_string());
    if !asked.contains("hickory") {
        if let Ok(quiet) = "hickory_server=warn".parse() {
            directives = directives.add_directive(quiet);
        }
    }
    let filter = directives.and(filter_fn(|meta| !carries_messages(meta)));
    let writer = Scrubbed(writer);
    let layer = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    };
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// Events and spans that would print whole protocol messages (see the module docs).
fn carries_messages(meta: &tracing::Metadata<'_>) -> bool {
    let target = meta.target();
    (target == "rmcp" || target.starts_with("rmcp::")) && *meta.level() > Level::INFO
}

/// A writer whose output passes [`scrub`].
struct Scrubbed<M>(M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Scrubbed<M> {
    type Writer = ScrubbedWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbedWriter(self.0.make_writer())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        ScrubbedWriter(self.0.make_writer_for(meta))
    }
}

/// One event's writer. The formatter hands it each event whole, in one `write`.
struct ScrubbedWriter<W>(W);

impl<W: Write> Write for ScrubbedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match scrub(buf) {
            Some(clean) => self.0.write_all(&clean)?,
            None => self.0.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Hex digits of a secret's random part, of which the first [`LOOKUP_HEX`] are public.
const SECRET_HEX: usize = 48;
const LOOKUP_HEX: usize = 8;
const PEM_BEGIN: &[u8] = b"-----BEGIN ";
const PEM_KEY_END: &[u8] = b"PRIVATE KEY-----";
const PEM_END: &[u8] = b"-----END ";

/// `text` with every secret cut after its public lookup part (`enroll_1a2b3c4d…`) and every PEM
/// private key replaced; `None` when there was nothing to cut, which is nearly always.
pub fn scrub(text: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < text.len() {
        if let Some(end) = secret_at(text, i) {
            let keep = i + LOOKUP_HEX;
            let out = out.get_or_insert_with(|| Vec::with_capacity(text.len()));
            out.extend_from_slice(&text[copied..keep]);
            out.extend_from_slice("…".as_bytes());
            copied = end;
            i = end;
        } else if let Some(end) = private_key_at(text, i) {
            let out = out.get_or_insert_with(|| Vec::with_capacity(text.len()));
            out.extend_from_slice(&text[copied..i]);
            out.extend_from_slice(b"[private key redacted]");
            copied = end;
            i = end;
        } else {
            i += 1;
        }
    }
    let mut out = out?;
    out.extend_from_slice(&text[copied..]);
    Some(out)
}

/// Where the secret whose random part starts at `at` ends, if one does: `at` follows one of the
/// prefixes (not inside a longer word) and starts 48 hex digits.
fn secret_at(text: &[u8], at: usize) -> Option<usize> {
    if at == 0 || text[at - 1] != b'_' {
        return None;
    }
    let hex = text[at..]
        .iter()
        .take_while(|b| b.is_ascii_hexdigit())
        .count();
    if hex < SECRET_HEX {
        return None;
    }
    let before = &text[..at];
    let prefixed = SecretKind::ALL.iter().any(|kind| {
        let prefix = kind.prefix().as_bytes();
        before.ends_with(prefix)
            && before
                .len()
                .checked_sub(prefix.len() + 1)
                .is_none_or(|j| !before[j].is_ascii_alphanumeric())
    });
    prefixed.then_some(at + hex)
}

/// Where the PEM private key starting at `at` ends (its END line, else the end of `text`).
fn private_key_at(text: &[u8], at: usize) -> Option<usize> {
    let rest = &text[at..];
    if !rest.starts_with(PEM_BEGIN) {
        return None;
    }
    let label_end = find(rest, b"-----", PEM_BEGIN.len())?;
    let label = &rest[..label_end + 5];
    if !label.ends_with(PEM_KEY_END) {
        return None;
    }
    Some(match find(rest, PEM_END, label.len()) {
        Some(end) => match find(rest, b"-----", end + PEM_END.len()) {
            Some(close) => at + close + 5,
            None => text.len(),
        },
        None => text.len(),
    })
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// A URL with its password replaced, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::mint;

    fn scrubbed(text: &str) -> String {
        String::from_utf8(scrub(text.as_bytes()).unwrap_or_else(|| text.as_bytes().to_vec()))
            .expect("UTF-8 in, UTF-8 out")
    }

    #[test]
    fn secrets_are_cut_after_their_lookup_part() {
        for kind in SecretKind::ALL {
            let secret = mint(kind);
            let line = format!(
                "result=CallToolResult {{ text: \"{{\\\"token\\\":\\\"{}\\\"}}\" }} and rtmp://x/live/{}\n",
                secret.plain, secret.plain
            );
            let clean = scrubbed(&line);
            assert!(!clean.contains(&secret.plain), "{clean}");
            assert!(
                !clean.contains(&secret.plain[secret.lookup.len()..]),
                "{clean}"
            );
            assert_eq!(
                clean.matches(&format!("{}…", secret.lookup)).count(),
                2,
                "{clean}"
            );
        }
    }

    proptest::proptest! {
        /// Whatever surrounds it (short of a word character glued to its prefix), a minted secret
        /// leaves the log with its lookup part only; and any text is scrubbed without panicking.
        #[test]
        fn no_secret_survives_in_any_text(
            kind in 0..SecretKind::ALL.len(),
            before in "(.{0,40}[ \"=:/,{(])?",
            after in ".{0,40}",
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            let secret = mint(SecretKind::ALL[kind]);
            let clean = scrubbed(&format!("{before}{}{after}", secret.plain));
            proptest::prop_assert!(!clean.contains(&secret.plain[secret.lookup.len()..]), "{}", clean);
            let _ = scrub(&noise);
        }
    }

    #[test]
    fn private_keys_are_cut_whole() {
        let pem = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";
        let escaped = pem.replace('\n', "\\n");
        for text in [
            format!("tls: {pem} done"),
            format!("private_key_pem: \"{escaped}\", expires: 1"),
            "key: -----BEGIN EC PRIVATE KEY-----\\nMIGHAgEAMBMG (cut short)".to_string(),
        ] {
            let clean = scrubbed(&text);
            assert!(!clean.contains("MIGHAgEAMBMG"), "{clean}");
            assert!(clean.contains("[private key redacted]"), "{clean}");
        }
        let clean = scrubbed(&format!("tls: {pem} done"));
        assert!(clean.ends_with(" done"), "{clean}");
    }

    #[test]
    fn everything_else_is_left_alone() {
        for text in [
            "INFO foghorn::grpc::helmsman: edge enrolled node_id=0a1b2c3d4e5f\n",
            "task_0123456789abcdef0123456789abcdef0123456789abcdef is not a stream key\n",
            "sk_1234 is too short; fhk_ alone; enroll_xyz\n",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        ] {
            assert_eq!(scrub(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            super::redact("sqlite://./data/f.db"),
            "sqlite://./data/f.db"
        );
        assert_eq!(super::redact("redis://h:6379/"), "redis://h:6379/");
    }
}
