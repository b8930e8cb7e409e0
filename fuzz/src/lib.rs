//! What kvitto's fuzz targets share: the demo integrations they check
//! signatures with, and how one fuzz input is read as a webhook.
//!
//! An input is laid out so that seeds stay readable and can be written by
//! hand:
//!
//! ```text
//! <one byte: the provider, modulo the number of providers>
//! name: value            one header per line
//! ?order_id=...          a line starting with `?` is the query string
//!                        a blank line ends the headers
//! <body: every byte after the blank line>
//! ```
//!
//! Without a blank line there are no headers and everything after the first
//! byte is the body. Header lines that HTTP could not carry (a name that is
//! not a token, a value with control characters) are dropped, as the HTTP
//! server would have refused them before kvitto saw the request.

use std::sync::LazyLock;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use chrono::{DateTime, Utc};
use kvitto::config::{Config, IntegrationConfig};
use kvitto::providers::{KEPT_HEADERS, ProviderKind, RawDelivery, WebhookRequest};

/// The shipped demo configuration: one integration per provider, with the
/// secrets the seeds are signed with.
const DEMO_CONFIG: &str = include_str!("../../config/kvitto.toml");

/// The instant the signature target checks timestamps against; the seeds
/// are signed at it.
pub const NOW_UNIX_SECS: i64 = 1_767_225_600;

static CONFIG: LazyLock<Config> =
    LazyLock::new(|| Config::from_toml(DEMO_CONFIG).expect("the demo config is valid"));

/// The demo integration of `provider`.
pub fn integration(provider: ProviderKind) -> &'static IntegrationConfig {
    CONFIG
        .integrations
        .iter()
        .find(|integration| integration.provider == provider)
        .expect("the demo config has an integration per provider")
}

pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(NOW_UNIX_SECS, 0).expect("a valid instant")
}

/// One fuzz input read as a webhook request.
pub struct Input<'a> {
    pub provider: ProviderKind,
    pub headers: HeaderMap,
    pub query: String,
    pub body: &'a [u8],
}

impl<'a> Input<'a> {
    /// `None` for the empty input, which names no provider.
    pub fn parse(data: &'a [u8]) -> Option<Input<'a>> {
        let (&selector, rest) = data.split_first()?;
        let provider = ProviderKind::ALL[usize::from(selector) % ProviderKind::ALL.len()];
        let (head, body) = match find(rest, b"\n\n") {
            Some(at) => (&rest[..at], &rest[at + 2..]),
            None => (&rest[..0], rest),
        };

        let mut headers = HeaderMap::new();
        let mut query = String::new();
        for line in head.split(|&b| b == b'\n') {
            if let Some(text) = line.strip_prefix(b"?") {
                query = String::from_utf8_lossy(text).into_owned();
            } else if let Some((name, value)) = header(line) {
                headers.append(name, value);
            }
        }
        Some(Input {
            provider,
            headers,
            query,
            body,
        })
    }

    pub fn request(&self) -> WebhookRequest<'_> {
        WebhookRequest {
            headers: &self.headers,
            body: self.body,
            query: &self.query,
        }
    }

    /// The headers ingress keeps on the bus message, as processing reads
    /// them back.
    pub fn kept_headers(&self) -> Vec<(String, String)> {
        KEPT_HEADERS
            .iter()
            .filter_map(|name| {
                let value = self.headers.get(*name)?.to_str().ok()?;
                Some((name.to_string(), value.to_string()))
            })
            .collect()
    }

    pub fn delivery<'b>(&'b self, kept_headers: &'b [(String, String)]) -> RawDelivery<'b> {
        RawDelivery {
            body: self.body,
            headers: kept_headers,
            query: &self.query,
        }
    }
}

fn header(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = HeaderName::from_bytes(line[..colon].trim_ascii()).ok()?;
    // HTTP servers strip the whitespace around a value.
    let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
    Some((name, value))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Writes `provider`, `headers`, `query` and `body` in the input layout;
/// the inverse of [`Input::parse`], for making seeds.
pub fn encode(
    provider: ProviderKind,
    headers: &[(String, String)],
    query: &str,
    body: &[u8],
) -> Vec<u8> {
    let selector = ProviderKind::ALL
        .iter()
        .position(|kind| *kind == provider)
        .expect("every provider is in ALL");
    let mut out = vec![u8::try_from(selector).expect("fewer than 256 providers")];
    out.push(b'\n');
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\n").as_bytes());
    }
    if !query.is_empty() {
        out.extend_from_slice(format!("?{query}\n").as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}
