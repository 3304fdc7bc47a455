//! The `Host` of a plain HTTP/1.x request, or the authority of a `CONNECT`, without allocating.
//!
//! [`parse_request_head`] takes the client's byte stream from its first byte and waits for the
//! whole request head (request line and header fields, up to the empty line), bounded by
//! [`MAX_HEAD_LEN`]. The name is then, in order of precedence (RFC 9112 3.2):
//!
//! - the authority of a `CONNECT host:port` request;
//! - the authority of an absolute-form target (`GET http://host/ HTTP/1.1`, as sent to proxies):
//!   servers must use it and ignore `Host`;
//! - the `Host` header field.
//!
//! When both a target authority and a `Host` field are present they must name the same host, and
//! several `Host` fields must agree: a server and the gateway could otherwise see different
//! names, so a disagreement is [`HttpParse::Malformed`] (fail closed). The port is stripped, the
//! name lower-cased (see [`super::validate_host_name`]); an IP literal is reported as
//! [`HttpRequestInfo::authority_ip`] instead of a name.
//!
//! Text that is not an HTTP/1.0 or HTTP/1.1 request line (another text protocol such as SMTP or
//! FTP, binary data, HTTP/2 prior knowledge, HTTP/0.9) is [`HttpParse::NotHttp`] as soon as that
//! can be told, so the policy decides by address. Once the request line is a valid HTTP/1.x one,
//! header syntax that servers are required to reject (obsolete line folding, whitespace before
//! the colon, bare CR, control bytes) is malformed.

pub mod framing;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{validate_host_name, HostName, HostNameError};

/// Largest request head accepted (request line plus header fields), matching the per-flow bound
/// on held bytes.
pub const MAX_HEAD_LEN: usize = 16 * 1024;

/// Longest method token considered (the longest registered methods are about 17 bytes).
const MAX_METHOD_LEN: usize = 20;

/// The outcome of [`parse_request_head`].
// The inline variant is large (a 253-byte name) by design: no result allocates.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpParse<'a> {
    /// A whole request head.
    Complete(HttpRequestInfo<'a>),
    /// A valid prefix of a request head: more bytes are needed.
    Incomplete,
    /// Not an HTTP/1.x request.
    NotHttp,
    /// An HTTP/1.x request head that is invalid or ambiguous: fail closed.
    Malformed(HttpError),
}

/// What the gateway learns from a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpRequestInfo<'a> {
    /// The method token.
    pub method: &'a str,
    /// The host name (normalised, without port); `None` when the request names no host or names
    /// an IP literal.
    pub host: Option<HostName<'a>>,
    /// The IP literal the request names instead of a host name.
    pub authority_ip: Option<IpAddr>,
    /// The port given with the host, if any.
    pub port: Option<u16>,
    /// HTTP minor version (0 or 1).
    pub version_minor: u8,
    /// Length of the head, up to and including the empty line.
    pub head_len: usize,
}

impl HttpRequestInfo<'_> {
    /// Whether this is a `CONNECT` request (a tunnel: what follows is another protocol).
    pub fn is_connect(&self) -> bool {
        self.method == "CONNECT"
    }
}

/// Why a request head is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The head is longer than [`MAX_HEAD_LEN`].
    #[error("request head longer than {MAX_HEAD_LEN} bytes")]
    HeadTooLong,
    /// A CR not followed by LF.
    #[error("bare CR in request head")]
    BareCr,
    /// A header line starting with whitespace (obsolete line folding, RFC 9112 5.2).
    #[error("obsolete line folding")]
    ObsFold,
    /// A header line without a colon, with an empty or invalid name, or whitespace before the
    /// colon.
    #[error("invalid header field name")]
    BadHeaderName,
    /// A control byte in a header value.
    #[error("control byte in header field value")]
    BadHeaderValue,
    /// Several `Host` fields with different values.
    #[error("conflicting Host header fields")]
    ConflictingHost,
    /// The `Host` field names another host than the request target.
    #[error("Host header does not match the request target")]
    HostMismatch,
    /// A `CONNECT` target that is not `host:port`, or an absolute-form target without authority.
    #[error("invalid request target authority")]
    BadTarget,
    /// A port that is not a number up to 65535.
    #[error("invalid port")]
    BadPort,
    /// An invalid host name.
    #[error("invalid host: {0}")]
    InvalidHost(HostNameError),
}

/// Parses the HTTP/1.x request head at the start of `stream`. See the module docs.
pub fn parse_request_head(stream: &[u8]) -> HttpParse<'_> {
    let line_end = stream.iter().position(|&b| b == b'\n');
    let line = match line_end {
        Some(e) => &stream[..e],
        None => stream,
    };
    let rl = match request_line(line, line_end.is_some()) {
        LineCheck::Valid(rl) => rl,
        LineCheck::Prefix => {
            return if stream.len() >= MAX_HEAD_LEN {
                HttpParse::Malformed(HttpError::HeadTooLong)
            } else {
                HttpParse::Incomplete
            };
        }
        LineCheck::NotHttp => return HttpParse::NotHttp,
        LineCheck::Malformed(e) => return HttpParse::Malformed(e),
    };
    let Some(line_end) = line_end else {
        return HttpParse::Incomplete;
    };
    if line_end >= MAX_HEAD_LEN {
        return HttpParse::Malformed(HttpError::HeadTooLong);
    }

    // Header fields, one line at a time, up to the empty line.
    let mut pos = line_end + 1;
    let mut host_field: Option<&[u8]> = None;
    let head_len = loop {
        let rest = &stream[pos..stream.len().min(MAX_HEAD_LEN)];
        let Some(e) = rest.iter().position(|&b| b == b'\n') else {
            return if stream.len() >= MAX_HEAD_LEN {
                HttpParse::Malformed(HttpError::HeadTooLong)
            } else {
                HttpParse::Incomplete
            };
        };
        let line = match strip_cr(&rest[..e]) {
            Ok(l) => l,
            Err(err) => return HttpParse::Malformed(err),
        };
        pos += e + 1;
        if line.is_empty() {
            break pos;
        }
        let (name, value) = match header_field(line) {
            Ok(nv) => nv,
            Err(err) => return HttpParse::Malformed(err),
        };
        if name.eq_ignore_ascii_case(b"host") {
            match host_field {
                Some(prev) if !prev.eq_ignore_ascii_case(value) => {
                    return HttpParse::Malformed(HttpError::ConflictingHost);
                }
                _ => host_field = Some(value),
            }
        }
    };

    let target_authority = match rl.form {
        TargetForm::Authority(a) | TargetForm::Absolute(a) => Some(a),
        TargetForm::Origin => None,
    };
    let authority = match (target_authority, host_field) {
        (Some(t), Some(h)) => {
            // Compare the hosts (ports may be written or omitted on either side).
            match (parse_authority(t), parse_authority(h)) {
                (Ok(a), Ok(b)) if a.same_host(&b) => Ok(a),
                (Ok(_), Ok(_)) => Err(HttpError::HostMismatch),
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
        (Some(t), None) => parse_authority(t),
        (None, Some(h)) => parse_authority(h),
        (None, None) => Ok(Authority::default()),
    };
    let authority = match authority {
        Ok(a) => a,
        Err(e) => return HttpParse::Malformed(e),
    };
    if matches!(rl.form, TargetForm::Authority(_))
        && (authority.port.is_none() || authority.is_empty())
    {
        return HttpParse::Malformed(HttpError::BadTarget);
    }
    HttpParse::Complete(HttpRequestInfo {
        method: rl.method,
        host: authority.host,
        authority_ip: authority.ip,
        port: authority.port,
        version_minor: rl.minor,
        head_len,
    })
}

enum LineCheck<'a> {
    Valid(RequestLine<'a>),
    Prefix,
    NotHttp,
    Malformed(HttpError),
}

struct RequestLine<'a> {
    method: &'a str,
    form: TargetForm<'a>,
    minor: u8,
}

enum TargetForm<'a> {
    Origin,
    Authority(&'a [u8]),
    Absolute(&'a [u8]),
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks the request line (without its LF; `complete` says whether the LF was seen).
fn request_line(line: &[u8], complete: bool) -> LineCheck<'_> {
    // A trailing CR ends a complete line, or may start the CRLF of an incomplete one.
    let line = match line.split_last() {
        Some((b'\r', l)) => l,
        _ => line,
    };
    // Method: upper-case letters (every registered method), then one space.
    let msp = line.iter().position(|&b| b == b' ');
    let method = &line[..msp.unwrap_or(line.len())];
    if method.len() > MAX_METHOD_LEN || !method.iter().all(|b| b.is_ascii_uppercase()) {
        return LineCheck::NotHttp;
    }
    let Some(msp) = msp else {
        return if complete {
            LineCheck::NotHttp
        } else {
            LineCheck::Prefix
        };
    };
    if method.is_empty() {
        return LineCheck::NotHttp;
    }
    // Target: visible ASCII, then one space.
    let after = &line[msp + 1..];
    let tsp = after.iter().position(|&b| b == b' ');
    let target = &after[..tsp.unwrap_or(after.len())];
    if !target.iter().all(|&b| (0x21..0x7f).contains(&b)) {
        return LineCheck::NotHttp;
    }
    let Some(tsp) = tsp else {
        return if complete {
            LineCheck::NotHttp
        } else {
            LineCheck::Prefix
        };
    };
    let version = &after[tsp + 1..];
    const V: &[u8] = b"HTTP/1.";
    let n = version.len().min(V.len());
    if version[..n] != V[..n] {
        return LineCheck::NotHttp;
    }
    let minor = match version.get(V.len()..) {
        None | Some([]) => {
            return if complete {
                LineCheck::NotHttp
            } else {
                LineCheck::Prefix
            };
        }
        Some([d @ (b'0' | b'1')]) => d - b'0',
        Some(_) => return LineCheck::NotHttp,
    };
    if !complete {
        return LineCheck::Prefix;
    }
    if target.is_empty() {
        return LineCheck::Malformed(HttpError::BadTarget);
    }
    // Method names were checked to be ASCII.
    let Ok(method) = std::str::from_utf8(method) else {
        return LineCheck::NotHttp;
    };
    let form = if method == "CONNECT" {
        TargetForm::Authority(target)
    } else if target[0] == b'/' || target == b"*" {
        TargetForm::Origin
    } else {
        match absolute_authority(target) {
            Some(a) => TargetForm::Absolute(a),
            None => return LineCheck::Malformed(HttpError::BadTarget),
        }
    };
    LineCheck::Valid(RequestLine {
        method,
        form,
        minor,
    })
}

/// The authority of an absolute-form target `scheme://[userinfo@]authority[/path...]`.
fn absolute_authority(target: &[u8]) -> Option<&[u8]> {
    let colon = target.iter().position(|&b| b == b':')?;
    let scheme = &target[..colon];
    if scheme.is_empty()
        || !scheme
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b))
    {
        return None;
    }
    let rest = target[colon + 1..].strip_prefix(b"//")?;
    let end = rest
        .iter()
        .position(|b| b"/?#".contains(b))
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    // userinfo@host: the host is after the last '@'.
    let host = match authority.iter().rposition(|&b| b == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    if host.is_empty() {
        return None;
    }
    Some(host)
}

fn strip_cr(line: &[u8]) -> Result<&[u8], HttpError> {
    let line = match line.split_last() {
        Some((b'\r', l)) => l,
        _ => line,
    };
    if line.contains(&b'\r') {
        return Err(HttpError::BareCr);
    }
    Ok(line)
}

/// Splits `name: value`, trimming the optional whitespace around the value.
fn header_field(line: &[u8]) -> Result<(&[u8], &[u8]), HttpError> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(HttpError::ObsFold);
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(HttpError::BadHeaderName)?;
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(HttpError::BadHeaderName);
    }
    let value = trim_ows(&line[colon + 1..]);
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(HttpError::BadHeaderValue);
    }
    Ok((name, value))
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

#[derive(Default, Clone, Copy)]
struct Authority<'a> {
    host: Option<HostName<'a>>,
    ip: Option<IpAddr>,
    port: Option<u16>,
}

impl Authority<'_> {
    fn is_empty(&self) -> bool {
        self.host.is_none() && self.ip.is_none()
    }

    fn same_host(&self, other: &Authority<'_>) -> bool {
        self.ip == other.ip
            && self.host.as_ref().map(|h| h.as_str()) == other.host.as_ref().map(|h| h.as_str())
            && (self.port.is_none() || other.port.is_none() || self.port == other.port)
    }
}

/// Parses `host`, `host:port`, `[v6]` or `[v6]:port`; an empty value names no host.
fn parse_authority(v: &[u8]) -> Result<Authority<'_>, HttpError> {
    if v.is_empty() {
        return Ok(Authority::default());
    }
    let (host, port) = if v[0] == b'[' {
        let close = v
            .iter()
            .position(|&b| b == b']')
            .ok_or(HttpError::InvalidHost(HostNameError::InvalidByte(b'[')))?;
        let port = match &v[close + 1..] {
            [] => None,
            [b':', p @ ..] => Some(p),
            _ => return Err(HttpError::BadPort),
        };
        let ip = std::str::from_utf8(&v[1..close])
            .ok()
            .and_then(|s| s.parse::<Ipv6Addr>().ok())
            .ok_or(HttpError::InvalidHost(HostNameError::InvalidByte(b'[')))?;
        return Ok(Authority {
            host: None,
            ip: Some(IpAddr::V6(ip)),
            port: parse_port(port)?,
        });
    } else {
        match v.iter().rposition(|&b| b == b':') {
            Some(c) => (&v[..c], Some(&v[c + 1..])),
            None => (v, None),
        }
    };
    let port = parse_port(port)?;
    if let Some(ip) = std::str::from_utf8(host)
        .ok()
        .and_then(|s| s.parse::<Ipv4Addr>().ok())
    {
        return Ok(Authority {
            host: None,
            ip: Some(IpAddr::V4(ip)),
            port,
        });
    }
    let name = validate_host_name(host).map_err(HttpError::InvalidHost)?;
    Ok(Authority {
        host: Some(name),
        ip: None,
        port,
    })
}

fn parse_port(p: Option<&[u8]>) -> Result<Option<u16>, HttpError> {
    match p {
        // `host:` with an empty port is allowed (RFC 3986 3.2.3).
        None | Some([]) => Ok(None),
        Some(d) if d.len() <= 5 && d.iter().all(u8::is_ascii_digit) => {
            let n = d.iter().fold(0u32, |n, &b| n * 10 + u32::from(b - b'0'));
            u16::try_from(n).map(Some).map_err(|_| HttpError::BadPort)
        }
        Some(_) => Err(HttpError::BadPort),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_of(s: &[u8]) -> Option<String> {
        match parse_request_head(s) {
            HttpParse::Complete(i) => i.host.map(|h| h.to_string()),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(s)),
        }
    }

    #[test]
    fn simple_requests() {
        let r = b"GET /index.html HTTP/1.1\r\nUser-Agent: x\r\nHost: Example.COM:8080\r\nAccept: */*\r\n\r\nbody";
        let HttpParse::Complete(i) = parse_request_head(r) else {
            panic!()
        };
        assert_eq!(i.method, "GET");
        assert_eq!(i.host.unwrap(), "example.com");
        assert_eq!(i.port, Some(8080));
        assert_eq!(i.version_minor, 1);
        assert_eq!(i.head_len, r.len() - 4);
        assert!(!i.is_connect());
        assert_eq!(
            host_of(b"POST / HTTP/1.0\nhost:\tapi.openai.com \n\n"),
            Some("api.openai.com".into())
        );
        assert_eq!(host_of(b"GET / HTTP/1.0\r\n\r\n"), None);
        assert_eq!(host_of(b"GET / HTTP/1.1\r\nHost:\r\n\r\n"), None);
        // Same Host twice (differing only in case) is fine.
        assert_eq!(
            host_of(b"GET / HTTP/1.1\r\nHost: a.example\r\nHOST: A.example\r\n\r\n"),
            Some("a.example".into())
        );
    }

    #[test]
    fn connect_and_absolute_form() {
        let HttpParse::Complete(i) = parse_request_head(
            b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n\x16\x03\x01",
        ) else {
            panic!()
        };
        assert!(i.is_connect());
        assert_eq!(i.host.unwrap(), "api.openai.com");
        assert_eq!(i.port, Some(443));
        assert_eq!(
            host_of(b"CONNECT qagpublic.qg1.apps.qualys.com:443 HTTP/1.0\r\n\r\n"),
            Some("qagpublic.qg1.apps.qualys.com".into())
        );
        let HttpParse::Complete(i) =
            parse_request_head(b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n")
        else {
            panic!()
        };
        assert_eq!(i.host, None);
        assert_eq!(i.authority_ip, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(
            parse_request_head(b"CONNECT example.com HTTP/1.1\r\n\r\n"),
            HttpParse::Malformed(HttpError::BadTarget)
        );
        assert_eq!(
            host_of(b"GET http://user@Proxy.Example.net:81/x?y HTTP/1.1\r\nHost: proxy.example.net\r\n\r\n"),
            Some("proxy.example.net".into())
        );
        assert_eq!(
            host_of(b"GET http://allowed.com@evil.com/ HTTP/1.1\r\n\r\n"),
            Some("evil.com".into())
        );
        assert_eq!(
            parse_request_head(b"GET http://evil.com/ HTTP/1.1\r\nHost: allowed.com\r\n\r\n"),
            HttpParse::Malformed(HttpError::HostMismatch)
        );
        assert_eq!(
            parse_request_head(b"CONNECT evil.com:443 HTTP/1.1\r\nHost: allowed.com:443\r\n\r\n"),
            HttpParse::Malformed(HttpError::HostMismatch)
        );
        let HttpParse::Complete(i) =
            parse_request_head(b"GET / HTTP/1.1\r\nHost: 93.184.216.34\r\n\r\n")
        else {
            panic!()
        };
        assert_eq!(i.authority_ip, Some("93.184.216.34".parse().unwrap()));
    }

    #[test]
    fn fail_closed_cases() {
        use HttpError::*;
        for (req, err) in [
            (
                &b"GET / HTTP/1.1\r\nHost: a.com\r\nHost: b.com\r\n\r\n"[..],
                ConflictingHost,
            ),
            (b"GET / HTTP/1.1\r\nHost: a.com\r\n folded\r\n\r\n", ObsFold),
            (b"GET / HTTP/1.1\r\nHost : a.com\r\n\r\n", BadHeaderName),
            (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", BadHeaderName),
            (b"GET / HTTP/1.1\r\nHost: a\rb.com\r\n\r\n", BareCr),
            (b"GET / HTTP/1.1\r\nHost: a\x00.com\r\n\r\n", BadHeaderValue),
            (b"GET / HTTP/1.1\r\nHost: a.com:99999\r\n\r\n", BadPort),
            (b"GET / HTTP/1.1\r\nHost: a.com:x\r\n\r\n", BadPort),
            (
                b"GET / HTTP/1.1\r\nHost: bad_-.com\r\n\r\n",
                InvalidHost(HostNameError::HyphenAtLabelEdge),
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
                InvalidHost(HostNameError::InvalidByte(b' ')),
            ),
            (b"GET mailto:x HTTP/1.1\r\n\r\n", BadTarget),
        ] {
            assert_eq!(
                parse_request_head(req),
                HttpParse::Malformed(err),
                "{:?}",
                String::from_utf8_lossy(req)
            );
        }
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_HEAD_LEN + 10, b'a');
        assert_eq!(parse_request_head(&long), HttpParse::Malformed(HeadTooLong));
        let mut long_line = b"GET /".to_vec();
        long_line.resize(MAX_HEAD_LEN, b'a');
        assert_eq!(
            parse_request_head(&long_line),
            HttpParse::Malformed(HeadTooLong)
        );
    }

    #[test]
    fn other_protocols() {
        for s in [
            &b"\x16\x03\x01\x02\x00"[..],
            b"EHLO mail.example.com\r\n",
            b"USER anonymous\r\n",
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET /\r\n",
            b"get / HTTP/1.1\r\n",
            b"GET / HTTP/1.2\r\n",
            b"GET / FTP/1.1\r\n",
            b"GET /\x01 HTTP/1.1\r\n",
            b"AVERYLONGMETHODNAMEABCDEF / HTTP/1.1",
            b" GET / HTTP/1.1\r\n",
            &[0u8; 512],
        ] {
            assert_eq!(
                parse_request_head(s),
                HttpParse::NotHttp,
                "{:?}",
                String::from_utf8_lossy(s)
            );
        }
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let r = b"GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\nX-Long: 1234567890\r\n\r\n";
        assert_eq!(host_of(r), Some("a.example".into()));
        for cut in 0..r.len() {
            assert_eq!(
                parse_request_head(&r[..cut]),
                HttpParse::Incomplete,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn real_requests() {
        // curl's request from testdata/, and the extra corpus's when it is there.
        let mut rows = vec![(
            "testdata:client__curl_http.bin".to_owned(),
            "api.openai.com",
            bulkhead_testkit::testdata_payload("client__curl_http.bin"),
        )];
        for row in bulkhead_testkit::payloads(&["zapret__http_"]) {
            // The manifest's note says "iana.org"; the request itself carries `Host: www.iana.org`.
            rows.push((row.label(), "www.iana.org", row.bytes()));
        }
        for (file, want, bytes) in &rows {
            let HttpParse::Complete(i) = parse_request_head(bytes) else {
                panic!("{file}: {:?}", parse_request_head(bytes))
            };
            assert_eq!(i.host.unwrap(), *want, "{file}");
            for cut in 0..i.head_len {
                assert_eq!(parse_request_head(&bytes[..cut]), HttpParse::Incomplete);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = parse_request_head(&bytes);
            let mut s = b"GET / HTTP/1.1\r\nHost: ".to_vec();
            s.extend_from_slice(&bytes);
            let _ = parse_request_head(&s);
        }
    }
}
