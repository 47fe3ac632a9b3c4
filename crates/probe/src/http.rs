//! HTTP/1.x: the request encoder, a bounded response parser (status line,
//! headers, `Content-Length`, chunked and read-to-close bodies), `<title>` and
//! `Server` readers, and [`HttpProbe`], which identifies the web server and the
//! products that answer over HTTP: Elasticsearch, the Docker Engine API (and
//! Podman's, which speaks it), a container registry (the Distribution API,
//! `/v2/`), etcd, the Kubernetes API server and the kubelet.
//!
//! The probe asks `GET /` and follows up with at most two more requests on the
//! same connection, all of them reads: `GET /version`, then `GET /api`,
//! `GET /pods`, or etcd's `POST /v3/kv/range` with `count_only` (a range read
//! that returns a number, not keys or values); or, where the root looks like a
//! registry's (an empty `200`, or port 5000), `GET /v2/` then
//! `GET /v2/_catalog?n=100`. Requests ask for keep-alive so the
//! follow-ups can ride the same connection, except the last one, which says
//! `Connection: close`; the probe knows where each response ends from its
//! framing, so it never waits for the server to close.

use perimeter_model::{AuthState, ServiceInfo};
use serde_json::Value;
use thiserror::Error;

use crate::{Identified, Next, Probe, rules, sniff, text};

/// The longest status line plus headers accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// The most headers kept.
pub const MAX_HEADERS: usize = 100;
/// The most body bytes kept.
pub const MAX_BODY: usize = 64 * 1024;
/// The longest chunk-size line accepted (hex digits plus extensions).
const MAX_CHUNK_LINE: usize = 256;

/// The User-Agent every request carries, so operators can find our requests in
/// their logs.
pub const USER_AGENT: &str = concat!("perimeter/", env!("CARGO_PKG_VERSION"));

/// Encodes a request. `body` is `(content type, bytes)`.
pub fn request(
    method: &str,
    path: &str,
    host: &str,
    body: Option<(&str, &[u8])>,
    close: bool,
) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\nAccept: */*\r\nConnection: {}\r\n",
        if close { "close" } else { "keep-alive" }
    );
    if let Some((content_type, bytes)) = body {
        out.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            bytes.len()
        ));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if let Some((_, bytes)) = body {
        out.extend_from_slice(bytes);
    }
    out
}

/// A response, as far as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// `HTTP/1.1`
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Names as sent, values sanitised; at most [`MAX_HEADERS`].
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked, at most [`MAX_BODY`] bytes.
    pub body: Vec<u8>,
    /// False when the body was cut short (connection closed, or a cap).
    pub body_complete: bool,
}

impl Response {
    /// The first header named `name`, ignoring case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as JSON, when it is complete, valid JSON. serde_json refuses
    /// nesting deeper than 128, and the body is already capped.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    fn body_contains(&self, needle: &str) -> bool {
        text::find(&self.body, needle.as_bytes()).is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HttpError {
    #[error("not an HTTP response (starts with {start:?})")]
    NotHttp { start: String },
    #[error("malformed status line {line:?}")]
    BadStatusLine { line: String },
    #[error("response head longer than {MAX_HEAD} bytes")]
    HeadTooLong,
}

/// Parses a response. `Ok(None)`: incomplete; read more. With `at_end` (the
/// connection closed, or the read was capped) whatever arrived is returned,
/// with `body_complete` saying whether it was all there.
pub fn parse_response(buf: &[u8], at_end: bool) -> Result<Option<Response>, HttpError> {
    let prefix = b"HTTP/";
    let n = prefix.len().min(buf.len());
    if buf.get(..n) != prefix.get(..n) {
        return Err(HttpError::NotHttp {
            start: text::escape(buf.get(..16).unwrap_or(buf), 40),
        });
    }
    let window = buf.get(..MAX_HEAD).unwrap_or(buf);
    let (head, body_start) = match (text::find(window, b"\r\n\r\n"), text::find(window, b"\n\n")) {
        (Some(crlf), Some(lf)) if lf < crlf => (window.get(..lf).unwrap_or_default(), lf + 2),
        (Some(crlf), _) => (window.get(..crlf).unwrap_or_default(), crlf + 4),
        (None, Some(lf)) => (window.get(..lf).unwrap_or_default(), lf + 2),
        (None, None) if buf.len() > MAX_HEAD => return Err(HttpError::HeadTooLong),
        (None, None) if !at_end => return Ok(None),
        (None, None) => (buf, buf.len()),
    };
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, |&b| b == b' ');
    let version = text::value_bytes(parts.next().unwrap_or_default());
    let status = parts
        .next()
        .filter(|code| code.len() == 3 && code.iter().all(u8::is_ascii_digit))
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse::<u16>().ok());
    let Some(status) = status else {
        if !at_end && status_line.len() == buf.len() {
            return Ok(None);
        }
        return Err(HttpError::BadStatusLine {
            line: text::value_bytes(status_line),
        });
    };
    let reason = text::value_bytes(parts.next().unwrap_or_default());
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let name = line.get(..colon)?;
            let value = line.get(colon + 1..)?;
            Some((text::value_bytes(name), text::value_bytes(value)))
        })
        .take(MAX_HEADERS)
        .collect();
    let mut response = Response {
        version,
        status,
        reason,
        headers,
        body: Vec::new(),
        body_complete: true,
    };
    let rest = buf.get(body_start..).unwrap_or_default();
    if matches!(status, 100..=199 | 204 | 304) {
        return Ok(Some(response));
    }
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let (body, complete) = dechunk(rest);
        if !complete && !at_end && body.len() < MAX_BODY {
            return Ok(None);
        }
        response.body = body;
        response.body_complete = complete;
        return Ok(Some(response));
    }
    match response
        .header("content-length")
        .and_then(|len| len.trim().parse::<usize>().ok())
    {
        Some(len) => {
            let wanted = len.min(MAX_BODY);
            match rest.get(..wanted) {
                Some(body) => {
                    response.body = body.to_vec();
                    response.body_complete = wanted == len;
                }
                None if !at_end => return Ok(None),
                None => {
                    response.body = rest.to_vec();
                    response.body_complete = false;
                }
            }
        }
        None => {
            // No framing: the body runs to the close.
            if !at_end && rest.len() < MAX_BODY {
                return Ok(None);
            }
            response.body = rest.get(..MAX_BODY).unwrap_or(rest).to_vec();
            response.body_complete = at_end && rest.len() <= MAX_BODY;
        }
    }
    Ok(Some(response))
}

/// Decodes a chunked body: the bytes so far (at most [`MAX_BODY`]) and whether
/// the last chunk arrived.
fn dechunk(mut rest: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let window = rest.get(..MAX_CHUNK_LINE).unwrap_or(rest);
        let Some(line_end) = text::find(window, b"\r\n") else {
            return (body, false);
        };
        let size_text = window.get(..line_end).unwrap_or_default();
        let size_text = size_text.split(|&b| b == b';').next().unwrap_or_default();
        let Some(size) = std::str::from_utf8(size_text)
            .ok()
            .and_then(|hex| usize::from_str_radix(hex.trim(), 16).ok())
        else {
            return (body, false);
        };
        rest = rest.get(line_end + 2..).unwrap_or_default();
        if size == 0 {
            return (body, true);
        }
        let available = rest.len().min(size);
        let room = MAX_BODY.saturating_sub(body.len());
        body.extend_from_slice(rest.get(..available.min(room)).unwrap_or_default());
        if available < size || body.len() >= MAX_BODY {
            return (body, false);
        }
        rest = rest.get(size..).unwrap_or_default();
        rest = rest.strip_prefix(b"\r\n").unwrap_or(rest);
    }
}

/// The text of the first `<title>`, whitespace collapsed, a few entities
/// decoded, capped.
pub fn html_title(body: &[u8]) -> Option<String> {
    let open = text::find_ignore_case(body, b"<title")?;
    let after_open = body.get(open..)?;
    let start = open + after_open.iter().position(|&b| b == b'>')? + 1;
    let inner = body.get(start..)?;
    let end = text::find_ignore_case(inner, b"</title").unwrap_or(inner.len().min(1024));
    let raw = String::from_utf8_lossy(inner.get(..end)?);
    let collapsed = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    let decoded = collapsed
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    let title = text::value(&decoded);
    (!title.is_empty()).then_some(title)
}

/// Product, version and OS hint from a `Server` header.
pub fn server_product(server: &str) -> (Option<String>, Option<String>, Option<String>) {
    let first = server.split_whitespace().next().unwrap_or_default();
    if first.is_empty() {
        return (None, None, None);
    }
    let (product, version) = text::split_product_version(first, '/');
    let product = match product.as_str() {
        "Apache" => "Apache httpd".to_string(),
        "SimpleHTTP" => "SimpleHTTPServer".to_string(),
        "Microsoft-IIS" => "Microsoft IIS httpd".to_string(),
        _ => product,
    };
    let os = [
        "Debian", "Ubuntu", "CentOS", "Red Hat", "Win64", "Win32", "Unix",
    ]
    .iter()
    .find(|os| server.contains(&format!("({os})")))
    .map(|os| (*os).to_string());
    (Some(product), version, os)
}

/// Whether a plaintext response says the port wants TLS: nginx's `The plain HTTP
/// request was sent to HTTPS port`, Go's `Client sent an HTTP request to an
/// HTTPS server`, Apache's `speaking plain HTTP to an SSL-enabled server port`.
pub fn wants_tls(response: &Response) -> bool {
    response.status == 400
        && [
            "sent to HTTPS port",
            "HTTP request to an HTTPS server",
            "plain HTTP to an SSL-enabled",
        ]
        .iter()
        .any(|phrase| response.body_contains(phrase))
}

/// A generic web server's identification from one response.
pub fn service(response: &Response, raw: &[u8]) -> ServiceInfo {
    let mut service = ServiceInfo::named("http");
    service.banner = Some(text::banner(text::first_line(raw)));
    if let Some(server) = response.header("server") {
        let (product, version, os) = server_product(server);
        service.product = product;
        service.version = version;
        if let Some(os) = os {
            service.extra.insert("os".into(), os);
        }
        service.extra.insert("server".into(), text::value(server));
    }
    if let Some(title) = html_title(&response.body) {
        service.extra.insert("title".into(), title);
    }
    service
        .extra
        .insert("status".into(), response.status.to_string());
    if response.status == 401 {
        service.auth = AuthState::Required;
        if let Some(challenge) = response.header("www-authenticate") {
            service
                .extra
                .insert("www_authenticate".into(), text::value(challenge));
        }
    }
    service
}

fn json_str<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |value, key| value.get(key))?
        .as_str()
}

/// What the answer to `GET /` (and the follow-ups) has shown so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Root,
    /// `GET /version` after a Docker-looking root.
    DockerVersion,
    /// `GET /version` after a Kubernetes `Status`, a Go `404 page not found`,
    /// or another `404` (Podman's API answers `GET /` so, without headers).
    Version(VersionFor),
    /// `GET /api` after the Kubernetes API server's `/version`.
    KubernetesApi,
    /// `POST /v3/kv/range` after etcd's `/version`.
    EtcdRange,
    /// `GET /pods` after a Go server that is neither etcd nor the API server.
    KubeletPods,
    /// `GET /v2/` after a root that may be a registry's.
    Registry,
    /// `GET /v2/_catalog?n=100` after a registry that answered `/v2/`
    /// without credentials.
    RegistryCatalog,
}

/// Why the probe asked `/version`: what the root answer looked like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VersionFor {
    /// A Kubernetes `Status` object, or a root listing `/api`.
    Kubernetes,
    /// Go's default `404 page not found` (etcd, the kubelet, ...).
    Go404,
    /// Any other `404`: only a Docker-compatible API's `/version` is looked for.
    Other404,
}

/// Identifies what answers HTTP (see the module docs).
#[derive(Debug)]
pub struct HttpProbe {
    host: String,
    port_hint: Option<u16>,
    step: Step,
    /// The identification the answers so far support, returned if a follow-up
    /// fails.
    known: Option<Identified>,
    /// Whether an answer so far came from Podman (`Libpod` headers).
    libpod: bool,
}

impl HttpProbe {
    /// A probe that sends `Host: localhost`, for callers that do not know the
    /// address; prefer [`HttpProbe::with_host`].
    pub fn new() -> Self {
        HttpProbe::with_host("localhost")
    }

    /// A probe that sends `host` as the `Host` header (for an address, the
    /// literal with its port: `198.18.0.5:8080`, `[2001:db8::1]:443`).
    pub fn with_host(host: impl Into<String>) -> Self {
        HttpProbe {
            host: host.into(),
            port_hint: None,
            step: Step::Root,
            known: None,
            libpod: false,
        }
    }

    /// Tells the probe which port it talks to. Only used where an answer alone is
    /// ambiguous: a bare `401 Unauthorized` on 10250 is the kubelet.
    pub fn with_port_hint(mut self, port: u16) -> Self {
        self.port_hint = Some(port);
        self
    }

    fn get(&self, path: &str, last: bool) -> Next {
        Next::Send(request("GET", path, &self.host, None, last))
    }

    fn decide(&mut self, response: &Response, raw: &[u8]) -> Next {
        match self.step {
            Step::Root => self.after_root(response, raw),
            Step::DockerVersion => Next::Done(Some(self.docker(Some(response)))),
            Step::Version(why) => self.after_version(response, why),
            Step::KubernetesApi => Next::Done(Some(self.kubernetes_api(response))),
            Step::EtcdRange => Next::Done(Some(self.etcd_range(response))),
            Step::KubeletPods => Next::Done(self.kubelet_pods(response)),
            Step::Registry => self.after_registry(response),
            Step::RegistryCatalog => Next::Done(self.registry_catalog(response)),
        }
    }

    fn after_root(&mut self, response: &Response, raw: &[u8]) -> Next {
        if wants_tls(response) {
            return Next::Done(None);
        }
        let base = service(response, raw);
        self.known = Some(Identified {
            service: base.clone(),
            findings: Vec::new(),
        });
        let json = response.json();
        if let Some(found) = elasticsearch(response, json.as_ref(), base.clone()) {
            return Next::Done(Some(found));
        }
        if self.docker_headers(response) {
            self.step = Step::DockerVersion;
            return self.get("/version", true);
        }
        let is_status = json.as_ref().is_some_and(|j| {
            json_str(j, &["kind"]) == Some("Status") && j.get("apiVersion").is_some()
        });
        let lists_api = json
            .as_ref()
            .and_then(|j| j.get("paths"))
            .and_then(Value::as_array)
            .is_some_and(|paths| paths.iter().any(|p| p.as_str() == Some("/api")));
        if is_status || lists_api {
            self.step = Step::Version(VersionFor::Kubernetes);
            return self.get("/version", false);
        }
        if let Some(found) = kubelet_refusal(response, self.port_hint, base.clone()) {
            return Next::Done(Some(found));
        }
        // The Distribution registry answers `GET /` with an empty 200 and no
        // Server header; 5000 is its port.
        if self.port_hint == Some(5000) || (response.status == 200 && response.body.is_empty()) {
            self.step = Step::Registry;
            return self.get("/v2/", false);
        }
        if response.status == 404 {
            if response.body.starts_with(b"404 page not found") {
                // Go's default mux: etcd, the kubelet, and many others.
                self.step = Step::Version(VersionFor::Go404);
                return self.get("/version", false);
            }
            self.step = Step::Version(VersionFor::Other404);
            return self.get("/version", true);
        }
        Next::Done(self.known.take())
    }

    /// Whether `response` carries the Docker Engine API's headers (Podman's
    /// included, which it also notes).
    fn docker_headers(&mut self, response: &Response) -> bool {
        let server = response.header("server").unwrap_or_default();
        let libpod =
            response.header("libpod-api-version").is_some() || server.starts_with("Libpod/");
        self.libpod |= libpod;
        libpod || response.header("api-version").is_some() || server.starts_with("Docker/")
    }

    fn after_version(&mut self, response: &Response, why: VersionFor) -> Next {
        if self.docker_headers(response) {
            return Next::Done(Some(self.docker(Some(response))));
        }
        if why == VersionFor::Other404 {
            return Next::Done(self.known.take());
        }
        let json = response.json();
        let known = self
            .known
            .clone()
            .map(|k| k.service)
            .unwrap_or_else(|| ServiceInfo::named("http"));
        if let Some(json) = json.as_ref()
            && let Some(server_version) = json_str(json, &["etcdserver"])
        {
            let mut service = known;
            service.product = Some("etcd".into());
            service.version = Some(text::value(server_version));
            if let Some(cluster) = json_str(json, &["etcdcluster"]) {
                service
                    .extra
                    .insert("etcdcluster".into(), text::value(cluster));
            }
            self.known = Some(Identified {
                service,
                findings: Vec::new(),
            });
            self.step = Step::EtcdRange;
            // `AA==` is the empty key (base64); with range_end `AA==` too it
            // means every key. count_only makes the answer a number.
            let body = br#"{"key":"AA==","range_end":"AA==","count_only":true}"#;
            return Next::Send(request(
                "POST",
                "/v3/kv/range",
                &self.host,
                Some(("application/json", body)),
                true,
            ));
        }
        if let Some(json) = json.as_ref()
            && let Some(git_version) = json_str(json, &["gitVersion"])
        {
            let mut service = known;
            service.product = Some("Kubernetes API server".into());
            service.version = Some(text::value(git_version.trim_start_matches('v')));
            if let Some(platform) = json_str(json, &["platform"]) {
                service
                    .extra
                    .insert("platform".into(), text::value(platform));
            }
            self.known = Some(Identified {
                service,
                findings: Vec::new(),
            });
            self.step = Step::KubernetesApi;
            return self.get("/api", true);
        }
        if why == VersionFor::Go404 {
            self.step = Step::KubeletPods;
            return self.get("/pods", true);
        }
        // A Kubernetes-shaped root whose /version did not answer: still the API
        // server, with anonymous access refused.
        let mut found = self.known.take();
        if let Some(found) = found.as_mut() {
            found.service.product = Some("Kubernetes API server".into());
            found.service.auth = AuthState::Required;
        }
        Next::Done(found)
    }

    /// What the answers so far prove, when a follow-up got no usable answer.
    fn fallback(&mut self) -> Option<Identified> {
        match self.step {
            Step::DockerVersion => Some(self.docker(None)),
            Step::RegistryCatalog => {
                let mut found = self.known.take()?;
                found.findings.push(rules::registry_open(vec![
                    "GET /v2/ answered 200 without credentials".into(),
                ]));
                Some(found)
            }
            _ => self.known.take(),
        }
    }

    fn docker(&mut self, version: Option<&Response>) -> Identified {
        let mut service = self
            .known
            .take()
            .map(|k| k.service)
            .unwrap_or_else(|| ServiceInfo::named("http"));
        service.product = Some(
            if self.libpod {
                "Podman API"
            } else {
                "Docker Engine API"
            }
            .into(),
        );
        service.auth = AuthState::None;
        let mut evidence = Vec::new();
        if let Some(server) = service.extra.get("server") {
            evidence.push(format!("Server: {server}"));
        }
        let json = version.filter(|r| r.status == 200).and_then(Response::json);
        if let Some(json) = json.as_ref() {
            let engine = json_str(json, &["Version"]).map(text::value);
            let api = json_str(json, &["ApiVersion"]).map(text::value);
            if let Some(engine) = &engine {
                service.version = Some(engine.clone());
            }
            for (key, field) in [
                ("api_version", "ApiVersion"),
                ("os", "Os"),
                ("arch", "Arch"),
                ("kernel", "KernelVersion"),
            ] {
                if let Some(value) = json_str(json, &[field]) {
                    service.extra.insert(key.into(), text::value(value));
                }
            }
            evidence.push(format!(
                "GET /version answered 200 without credentials: Version {}, ApiVersion {}",
                engine.as_deref().unwrap_or("?"),
                api.as_deref().unwrap_or("?")
            ));
        } else {
            evidence.push("GET / answered with Docker API headers without credentials".into());
        }
        Identified {
            service,
            findings: vec![rules::docker_api(evidence)],
        }
    }

    /// After `GET /v2/`: the Distribution API names itself in a header on
    /// every answer, the refusal included.
    fn after_registry(&mut self, v2: &Response) -> Next {
        let distribution = v2
            .header("docker-distribution-api-version")
            .is_some_and(|v| v.starts_with("registry/2"));
        let Some(mut found) = self.known.take() else {
            return Next::Done(None);
        };
        if !distribution {
            return Next::Done(Some(found));
        }
        found.service.product = Some("Docker Registry".into());
        if let Some(api) = v2.header("docker-distribution-api-version") {
            found
                .service
                .extra
                .insert("api_version".into(), text::value(api));
        }
        match v2.status {
            200 => {
                found.service.auth = AuthState::None;
                self.known = Some(found);
                self.step = Step::RegistryCatalog;
                self.get("/v2/_catalog?n=100", true)
            }
            401 | 403 => {
                found.service.auth = AuthState::Required;
                if let Some(scheme) = v2
                    .header("www-authenticate")
                    .and_then(|v| v.split_whitespace().next())
                {
                    found
                        .service
                        .extra
                        .insert("auth_scheme".into(), text::value(scheme));
                }
                Next::Done(Some(found))
            }
            _ => Next::Done(Some(found)),
        }
    }

    /// After `GET /v2/_catalog`: the registry's repositories, listed to
    /// anyone. `/v2/` answering 200 without credentials already proved the
    /// finding; the catalogue is its evidence.
    fn registry_catalog(&mut self, catalog: &Response) -> Option<Identified> {
        let mut found = self.known.take()?;
        let mut evidence = vec!["GET /v2/ answered 200 without credentials".to_string()];
        let repositories = catalog
            .json()
            .filter(|_| catalog.status == 200)
            .and_then(|json| json.get("repositories").and_then(Value::as_array).cloned());
        match repositories {
            Some(names) => {
                let shown: Vec<String> = names
                    .iter()
                    .filter_map(Value::as_str)
                    .take(5)
                    .map(text::value)
                    .collect();
                evidence.push(format!(
                    "GET /v2/_catalog listed {}{} repositories{}",
                    names.len(),
                    if names.len() >= 100 { " or more" } else { "" },
                    if shown.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", shown.join(", "))
                    }
                ));
            }
            None => evidence.push(format!("GET /v2/_catalog answered {}", catalog.status)),
        }
        found.findings.push(rules::registry_open(evidence));
        Some(found)
    }

    fn kubernetes_api(&mut self, api: &Response) -> Identified {
        let mut found = self.known.take().unwrap_or_else(|| Identified {
            service: ServiceInfo::named("http"),
            findings: Vec::new(),
        });
        let anonymous = match api.status {
            200 if api.body_contains("APIVersions") => {
                found.service.auth = AuthState::None;
                "allowed (GET /api answered 200)".to_string()
            }
            401 | 403 => {
                found.service.auth = AuthState::Required;
                format!("refused (GET /api answered {})", api.status)
            }
            other => format!("unclear (GET /api answered {other})"),
        };
        found.service.extra.insert("anonymous".into(), anonymous);
        found
    }

    fn etcd_range(&mut self, range: &Response) -> Identified {
        let mut found = self.known.take().unwrap_or_else(|| Identified {
            service: ServiceInfo::named("http"),
            findings: Vec::new(),
        });
        let json = range.json();
        let answered =
            range.status == 200 && json.as_ref().is_some_and(|j| j.get("header").is_some());
        let refused = range.status == 401
            || range.status == 403
            || [
                "user name is empty",
                "invalid auth token",
                "permission denied",
                "authentication",
            ]
            .iter()
            .any(|phrase| range.body_contains(phrase));
        if answered {
            found.service.auth = AuthState::None;
            let count = json
                .as_ref()
                .and_then(|j| j.get("count"))
                .map(|c| {
                    c.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| c.to_string())
                })
                .unwrap_or_else(|| "0".into());
            let version = found.service.version.clone().unwrap_or_else(|| "?".into());
            found.findings.push(rules::etcd_open(vec![
                format!("GET /version answered etcdserver {version}"),
                format!(
                    "POST /v3/kv/range (count_only) answered 200 without credentials: count {}",
                    text::value(&count)
                ),
            ]));
        } else if refused {
            found.service.auth = AuthState::Required;
        }
        found
    }

    fn kubelet_pods(&mut self, pods: &Response) -> Option<Identified> {
        let mut found = self.known.take()?;
        if pods.status == 200 && pods.body_contains("\"PodList\"") {
            found.service.product = Some("kubelet".into());
            found.service.auth = AuthState::None;
            found.findings.push(rules::kubelet_open(vec![
                "GET /pods answered 200 with a PodList without credentials".into(),
            ]));
        } else if let Some(refused) = kubelet_refusal(pods, self.port_hint, found.service.clone()) {
            found = refused;
        }
        Some(found)
    }
}

impl Default for HttpProbe {
    fn default() -> Self {
        HttpProbe::new()
    }
}

/// Elasticsearch (or OpenSearch) from its root answer: a JSON object with
/// `version.number` and a `cluster_name` or the "You Know, for Search" tagline,
/// or the `X-elastic-product` header that 7.14+ puts on every response.
fn elasticsearch(
    response: &Response,
    json: Option<&Value>,
    mut service: ServiceInfo,
) -> Option<Identified> {
    let header = response
        .header("x-elastic-product")
        .is_some_and(|p| p.eq_ignore_ascii_case("Elasticsearch"));
    let json = json.filter(|j| {
        j.pointer("/version/number").is_some()
            && (j.get("cluster_name").is_some()
                || json_str(j, &["tagline"])
                    .is_some_and(|t| t.contains("for Search") || t.contains("OpenSearch")))
    });
    if !header && json.is_none() {
        // 401 from a secured cluster: `security_exception` in a JSON error.
        let secured = response.status == 401 && response.body_contains("security_exception");
        if !secured {
            return None;
        }
    }
    let opensearch =
        json.and_then(|j| json_str(j, &["version", "distribution"])) == Some("opensearch");
    service.product = Some(
        if opensearch {
            "OpenSearch"
        } else {
            "Elasticsearch"
        }
        .into(),
    );
    let mut findings = Vec::new();
    if let Some(json) = json {
        if let Some(number) = json_str(json, &["version", "number"]) {
            service.version = Some(text::value(number));
        }
        if let Some(cluster) = json_str(json, &["cluster_name"]) {
            service
                .extra
                .insert("cluster_name".into(), text::value(cluster));
        }
    }
    match response.status {
        200..=299 => {
            service.auth = AuthState::None;
            findings.push(rules::elasticsearch_open(vec![format!(
                "GET / answered {} without credentials: cluster_name {:?}, version {}",
                response.status,
                service
                    .extra
                    .get("cluster_name")
                    .map(String::as_str)
                    .unwrap_or("?"),
                service.version.as_deref().unwrap_or("?")
            )]));
        }
        401 | 403 => service.auth = AuthState::Required,
        _ => {}
    }
    Some(Identified { service, findings })
}

/// The kubelet refusing an anonymous request: `403 Forbidden (user=system:anonymous,
/// verb=get, resource=nodes, subresource=proxy)` when anonymous requests are
/// authorised by webhook, or a bare `401 Unauthorized` on its port.
fn kubelet_refusal(
    response: &Response,
    port_hint: Option<u16>,
    mut service: ServiceInfo,
) -> Option<Identified> {
    let forbidden = response.status == 403 && response.body_contains("resource=nodes");
    let unauthorized = response.status == 401
        && response.body.starts_with(b"Unauthorized")
        && port_hint == Some(10250);
    if !forbidden && !unauthorized {
        return None;
    }
    service.product = Some("kubelet".into());
    service.auth = AuthState::Required;
    service
        .extra
        .insert("status".into(), response.status.to_string());
    Some(Identified {
        service,
        findings: Vec::new(),
    })
}

impl Probe for HttpProbe {
    fn name(&self) -> &'static str {
        "http"
    }

    fn start(&mut self) -> Next {
        self.step = Step::Root;
        self.known = None;
        self.libpod = false;
        self.get("/", false)
    }

    fn on_data(&mut self, received: &[u8]) -> Next {
        let at_cap = received.len() >= self.max_response();
        match parse_response(received, at_cap) {
            Ok(Some(response)) => self.decide(&response, received),
            Ok(None) => Next::Receive,
            Err(_) if self.step == Step::Root => Next::Done(sniff(received)),
            Err(_) => Next::Done(self.fallback()),
        }
    }

    fn on_end(&mut self, received: &[u8], _timed_out: bool) -> Option<Identified> {
        match parse_response(received, true) {
            Ok(Some(response)) => match self.decide(&response, received) {
                Next::Done(found) => found,
                // It wanted a follow-up, but the connection is gone.
                Next::Send(_) | Next::Receive => self.fallback(),
            },
            _ if self.step == Step::Root => sniff(received),
            _ => self.fallback(),
        }
    }

    fn max_response(&self) -> usize {
        MAX_BODY
    }
}

#[cfg(test)]
mod tests;
