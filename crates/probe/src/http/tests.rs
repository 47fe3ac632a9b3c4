//! HTTP parser and probe tests. Python's http.server and etcd 3.4 answers are
//! captured from the real servers (tests/fixtures); Elasticsearch, Docker,
//! Kubernetes and kubelet answers are written from their documented responses,
//! as none of those servers can run on the build machine.

use super::*;
use perimeter_model::Severity;

const PYTHON_200: &[u8] = include_bytes!("../../tests/fixtures/http-python-200.bin");
const PYTHON_404: &[u8] = include_bytes!("../../tests/fixtures/http-python-404.bin");
const ETCD_ROOT: &[u8] = include_bytes!("../../tests/fixtures/http-etcd-root-404.bin");
const ETCD_VERSION: &[u8] = include_bytes!("../../tests/fixtures/http-etcd-version.bin");
const ETCD_RANGE_OPEN: &[u8] = include_bytes!("../../tests/fixtures/http-etcd-range-open.bin");
const ETCD_RANGE_AUTH: &[u8] = include_bytes!("../../tests/fixtures/http-etcd-range-auth.bin");

fn http(status_line: &str, headers: &[&str], body: &str) -> Vec<u8> {
    let mut out = format!("{status_line}\r\n");
    for header in headers {
        out.push_str(header);
        out.push_str("\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out.into_bytes()
}

fn parsed(bytes: &[u8]) -> Response {
    match parse_response(bytes, false) {
        Ok(Some(response)) => response,
        other => panic!("response parses: {other:?}"),
    }
}

/// Plays a conversation and returns the identification and the requests sent.
fn converse(mut probe: HttpProbe, answers: &[&[u8]]) -> (Option<Identified>, Vec<String>) {
    let mut requests = Vec::new();
    let mut next = probe.start();
    for answer in answers {
        match next {
            Next::Send(bytes) => requests.push(String::from_utf8_lossy(&bytes).into_owned()),
            other => panic!("expected a request, got {other:?}"),
        }
        next = probe.on_data(answer);
    }
    match next {
        Next::Done(found) => (found, requests),
        other => panic!("expected the probe to finish, got {other:?}"),
    }
}

#[test]
fn request_layout() {
    let request = request("GET", "/", "198.18.0.5:8080", None, false);
    assert_eq!(
        String::from_utf8_lossy(&request),
        format!(
            "GET / HTTP/1.1\r\nHost: 198.18.0.5:8080\r\nUser-Agent: {USER_AGENT}\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n"
        )
    );
    let post = request_with_body();
    assert!(post.ends_with("Content-Length: 2\r\n\r\n{}"));
    assert!(post.contains("Connection: close\r\n"));
}

fn request_with_body() -> String {
    String::from_utf8_lossy(&request(
        "POST",
        "/x",
        "h",
        Some(("application/json", b"{}")),
        true,
    ))
    .into_owned()
}

#[test]
fn parses_captured_python_answers() {
    let response = parsed(PYTHON_200);
    assert_eq!(response.version, "HTTP/1.0");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("server"),
        Some("SimpleHTTP/0.6 Python/3.11.7")
    );
    assert_eq!(response.header("CONTENT-TYPE"), Some("text/html"));
    assert!(response.body_complete);
    assert_eq!(
        html_title(&response.body).as_deref(),
        Some("Lab page & test")
    );
    let service = service(&response, PYTHON_200);
    assert_eq!(service.name, "http");
    assert_eq!(service.product.as_deref(), Some("SimpleHTTPServer"));
    assert_eq!(service.version.as_deref(), Some("0.6"));
    assert_eq!(service.banner.as_deref(), Some("HTTP/1.0 200 OK"));
    assert_eq!(parsed(PYTHON_404).status, 404);
    // Every cut of a framed response is incomplete, never an error.
    for cut in 0..PYTHON_200.len() {
        assert_eq!(
            parse_response(&PYTHON_200[..cut], false),
            Ok(None),
            "cut at {cut}"
        );
    }
}

#[test]
fn chunked_bodies_and_trailers() {
    let response = parsed(ETCD_RANGE_AUTH);
    assert_eq!(response.status, 400);
    assert!(response.body_complete);
    assert_eq!(
        response.body,
        br#"{"error":"etcdserver: user name is empty","message":"etcdserver: user name is empty","code":3}"#
    );
    let (body, complete) = dechunk(b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n");
    assert_eq!((body.as_slice(), complete), (&b"abcde"[..], true));
    assert_eq!(dechunk(b"3\r\nab"), (b"ab".to_vec(), false));
    assert_eq!(dechunk(b"zz\r\n"), (Vec::new(), false));
    assert_eq!(
        parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
            false
        ),
        Ok(None)
    );
}

#[test]
fn bodies_without_framing_run_to_close() {
    let bytes = b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\n<title>t</title>";
    assert_eq!(parse_response(bytes, false), Ok(None));
    let Ok(Some(response)) = parse_response(bytes, true) else {
        panic!("parses at end");
    };
    assert_eq!(response.body, b"<title>t</title>");
    let cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort";
    let Ok(Some(response)) = parse_response(cut, true) else {
        panic!("parses at end");
    };
    assert!(!response.body_complete);
}

#[test]
fn hostile_heads_are_refused() {
    assert!(matches!(
        parse_response(b"SSH-2.0-x", false),
        Err(HttpError::NotHttp { .. })
    ));
    assert!(matches!(
        parse_response(b"HTTP/1.1 2x0 OK\r\n\r\n", false),
        Err(HttpError::BadStatusLine { .. })
    ));
    let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
    huge.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
    assert_eq!(parse_response(&huge, false), Err(HttpError::HeadTooLong));
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for idx in 0..500 {
        many.extend_from_slice(format!("X-{idx}: y\r\n").as_bytes());
    }
    many.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    if let Ok(Some(response)) = parse_response(&many, false) {
        assert_eq!(response.headers.len(), MAX_HEADERS);
    }
    assert_eq!(parse_response(b"HTT", false), Ok(None));
}

#[test]
fn server_headers() {
    assert_eq!(
        server_product("nginx/1.22.1"),
        (Some("nginx".into()), Some("1.22.1".into()), None)
    );
    assert_eq!(
        server_product("Apache/2.4.57 (Debian)"),
        (
            Some("Apache httpd".into()),
            Some("2.4.57".into()),
            Some("Debian".into())
        )
    );
    assert_eq!(
        server_product("cloudflare"),
        (Some("cloudflare".into()), None, None)
    );
    assert_eq!(server_product(""), (None, None, None));
}

#[test]
fn plain_http_to_a_tls_port_is_left_to_the_tls_probe() {
    let nginx = http(
        "HTTP/1.1 400 Bad Request",
        &["Server: nginx/1.22.1", "Content-Type: text/html"],
        "<html><head><title>400 The plain HTTP request was sent to HTTPS port</title></head></html>",
    );
    let (found, _) = converse(HttpProbe::new(), &[&nginx]);
    assert_eq!(found, None);
}

#[test]
fn generic_server_in_one_request() {
    let (found, requests) = converse(HttpProbe::with_host("127.0.0.1:8000"), &[PYTHON_200]);
    assert_eq!(requests.len(), 1);
    assert!(
        requests
            .first()
            .is_some_and(|r| r.starts_with("GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"))
    );
    let Some(found) = found else {
        panic!("identified")
    };
    assert_eq!(
        found.service.extra.get("title").map(String::as_str),
        Some("Lab page & test")
    );
    assert!(found.findings.is_empty());
}

#[test]
fn etcd_open_from_captured_answers() {
    let (found, requests) = converse(
        HttpProbe::new(),
        &[ETCD_ROOT, ETCD_VERSION, ETCD_RANGE_OPEN],
    );
    assert_eq!(requests.len(), 3);
    assert!(
        requests
            .get(1)
            .is_some_and(|r| r.starts_with("GET /version "))
    );
    assert!(
        requests.get(2).is_some_and(
            |r| r.starts_with("POST /v3/kv/range ") && r.contains("\"count_only\":true")
        )
    );
    let Some(found) = found else {
        panic!("identified")
    };
    assert_eq!(found.service.product.as_deref(), Some("etcd"));
    assert_eq!(found.service.version.as_deref(), Some("3.4.23"));
    assert_eq!(found.service.auth, AuthState::None);
    let [finding] = found.findings.as_slice() else {
        panic!("one finding")
    };
    assert_eq!(finding.rule, rules::ETCD_OPEN);
    assert_eq!(finding.severity, Severity::Critical);
    assert_eq!(
        finding.evidence,
        vec![
            "GET /version answered etcdserver 3.4.23".to_string(),
            "POST /v3/kv/range (count_only) answered 200 without credentials: count 0".into()
        ]
    );
}

#[test]
fn etcd_with_auth_from_captured_answers() {
    let (found, _) = converse(
        HttpProbe::new(),
        &[ETCD_ROOT, ETCD_VERSION, ETCD_RANGE_AUTH],
    );
    let Some(found) = found else {
        panic!("identified")
    };
    assert_eq!(found.service.product.as_deref(), Some("etcd"));
    assert_eq!(found.service.auth, AuthState::Required);
    assert!(found.findings.is_empty());
}

/// Elasticsearch 8's documented `GET /` answer.
const ES_ROOT: &str = r#"{
  "name" : "node-1",
  "cluster_name" : "lab-cluster",
  "cluster_uuid" : "5QaxoN0pRZuOmWSxstBBwQ",
  "version" : {
    "number" : "8.11.1",
    "build_flavor" : "default",
    "lucene_version" : "9.8.0"
  },
  "tagline" : "You Know, for Search"
}"#;

#[test]
fn elasticsearch_open_and_secured() {
    let root = http(
        "HTTP/1.1 200 OK",
        &[
            "X-elastic-product: Elasticsearch",
            "content-type: application/json",
        ],
        ES_ROOT,
    );
    let (found, requests) = converse(HttpProbe::new(), &[&root]);
    assert_eq!(requests.len(), 1);
    let Some(found) = found else {
        panic!("identified")
    };
    assert_eq!(found.service.product.as_deref(), Some("Elasticsearch"));
    assert_eq!(found.service.version.as_deref(), Some("8.11.1"));
    assert_eq!(found.service.auth, AuthState::None);
    let [finding] = found.findings.as_slice() else {
        panic!("one finding")
    };
    assert_eq!(finding.rule, rules::ELASTICSEARCH_OPEN);
    assert_eq!(finding.severity, Severity::High);
    assert_eq!(
        finding.evidence,
        vec![
            "GET / answered 200 without credentials: cluster_name \"lab-cluster\", version 8.11.1"
                .to_string()
        ]
    );
    let secured = http(
        "HTTP/1.1 401 Unauthorized",
        &[
            "WWW-Authenticate: Basic realm=\"security\" charset=\"UTF-8\"",
            "content-type: application/json",
        ],
        r#"{"error":{"root_cause":[{"type":"security_exception","reason":"missing authentication credentials for REST request [/]"}],"type":"security_exception"},"status":401}"#,
    );
    let (found, _) = converse(HttpProbe::new(), &[&secured]);
    let Some(found) = found else {
        panic!("identified")
    };
    assert_eq!(found.service.product.as_deref(), Some("Elasticsearch"));
    assert_eq!(found.service.auth, AuthState::Required);
    assert!(found.findings.is_empty());
}

#[test]
fn docker_api_from_headers_then_version() {
    let root = http(
        "HTTP/1.1 404 Not Found",
        &[
            "Api-Version: 1.43",
            "Content-Type: application/json",
            "Docker-Experimental: false",
            "Ostype: linux",
            "Server: Docker/24.0.5 (linux)",
        ],
        "{\"message\":\"page not found\"}\n",
    );
    let version = http(
        "HTTP/1.1 200 OK",
        &[
            "Api-Version: 1.43",
            "Content-Type: application/json",
            "Server: Docker/24.0.5 (linux)",
        ],
        r#"{"Platform":{"Name":"Docker Engine - Community"},"Version":"24.0.5","ApiVersion":"1.43","MinAPIVersion":"1.12","Os":"linux","Arch":"amd64","KernelVersion":"6.1.0-13-amd64"}"#,
    );
    let (found, requests) = converse(HttpProbe::new(), &[&root, &version]);
    assert!(
        requests
            .get(1)
            .is_some_and(|r| r.starts_with("GET /version ") && r.contains("Connection: close"))
    );
    let Some(found) = found else {
        panic!("identified")
    };
    assert_eq!(found.service.product.as_deref(), Some("Docker Engine API"));
    assert_eq!(found.service.version.as_deref(), Some("24.0.5"));
    assert_eq!(
        found.service.extra.get("api_version").map(String::as_str),
        Some("1.43")
    );
    let [finding] = found.findings.as_slice() else {
        panic!("one finding")
    };
    assert_eq!(finding.rule, rules::DOCKER_API);
    assert_eq!(finding.severity, Severity::Critical);
    assert_eq!(
        finding.evidence.get(1).map(String::as_str),
        Some("GET /version answered 200 without credentials: Version 24.0.5, ApiVersion 1.43")
    );
    // The connection closed before /version: the headers alone still prove it.
    let mut probe = HttpProbe::new();
    probe.start();
    assert!(matches!(probe.on_data(&root), Next::Send(_)));
    let Some(found) = probe.on_end(b"", false) else {
        panic!("identified")
    };
    assert_eq!(
        found.findings.first().map(|f| f.rule.as_str()),
        Some(rules::DOCKER_API)
    );
}

#[test]
fn kubernetes_api_server_anonymous_refused() {
    let root = http(
        "HTTP/1.1 403 Forbidden",
        &["Content-Type: application/json"],
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"forbidden: User \"system:anonymous\" cannot get path \"/\"","reason":"Forbidden","details":{},"code":403}"#,
    );
    let version = http(
        "HTTP/1.1 200 OK",
        &["Content-Type: application/json"],
        r#"{"major":"1","minor":"29","gitVersion":"v1.29.2","gitCommit":"4b8e819355d791d96b7e9d9efe4cbafae2311c88","platform":"linux/amd64"}"#,
    );
    let api = http(
        "HTTP/1.1 403 Forbidden",
        &["Content-Type: application/json"],
        r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403}"#,
    );
    let (found, requests) = converse(HttpProbe::new(), &[&root, &version, &api]);
    assert!(requests.get(2).is_some_and(|r| r.starts_with("GET /api ")));
    let Some(found) = found else {
        panic!("identified")
    };
    assert_eq!(
        found.service.product.as_deref(),
        Some("Kubernetes API server")
    );
    assert_eq!(found.service.version.as_deref(), Some("1.29.2"));
    assert_eq!(found.service.auth, AuthState::Required);
    assert_eq!(
        found.service.extra.get("anonymous").map(String::as_str),
        Some("refused (GET /api answered 403)")
    );
    assert!(found.findings.is_empty());
}

#[test]
fn kubelet_open_and_refusing() {
    let not_found = http(
        "HTTP/1.1 404 Not Found",
        &[
            "Content-Type: text/plain; charset=utf-8",
            "X-Content-Type-Options: nosniff",
        ],
        "404 page not found\n",
    );
    let pods = http(
        "HTTP/1.1 200 OK",
        &["Content-Type: application/json"],
        r#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[]}"#,
    );
    let (found, requests) = converse(
        HttpProbe::new().with_port_hint(10250),
        &[&not_found, &not_found, &pods],
    );
    assert!(requests.get(2).is_some_and(|r| r.starts_with("GET /pods ")));
    let Some(found) = found else {
        panic!("identified")
    };
    assert_eq!(found.service.product.as_deref(), Some("kubelet"));
    assert_eq!(found.service.auth, AuthState::None);
    assert_eq!(
        found.findings.first().map(|f| f.rule.as_str()),
        Some(rules::KUBELET_OPEN)
    );

    let forbidden = http(
        "HTTP/1.1 403 Forbidden",
        &["Content-Type: text/plain; charset=utf-8"],
        "Forbidden (user=system:anonymous, verb=get, resource=nodes, subresource=proxy)",
    );
    let (found, _) = converse(HttpProbe::new(), &[&forbidden]);
    let Some(found) = found else {
        panic!("identified")
    };
    assert_eq!(found.service.product.as_deref(), Some("kubelet"));
    assert_eq!(found.service.auth, AuthState::Required);

    let unauthorized = http(
        "HTTP/1.1 401 Unauthorized",
        &["Content-Type: text/plain; charset=utf-8"],
        "Unauthorized\n",
    );
    let (found, _) = converse(HttpProbe::new().with_port_hint(10250), &[&unauthorized]);
    assert_eq!(
        found.and_then(|f| f.service.product),
        Some("kubelet".into())
    );
    // Elsewhere a bare 401 is just a web server asking for credentials.
    let (found, _) = converse(HttpProbe::new().with_port_hint(8080), &[&unauthorized]);
    let Some(found) = found else {
        panic!("identified")
    };
    assert_eq!(found.service.product, None);
    assert_eq!(found.service.auth, AuthState::Required);
}

#[test]
fn non_http_answers_are_sniffed() {
    let (found, _) = converse(
        HttpProbe::new(),
        &[b"-ERR wrong number of arguments for 'get' command\r\n"],
    );
    assert_eq!(found.map(|f| f.service.name), Some("redis".into()));
    let mut probe = HttpProbe::new();
    probe.start();
    assert_eq!(probe.on_end(b"", false), None);
}

/// Podman 4.3's API (`podman system service tcp:...`) answers `GET /` with
/// a bare 404 and no Docker headers (as captured from the real service); its
/// `/version` carries them.
#[test]
fn podman_api_from_a_bare_404_then_version() {
    let root = http(
        "HTTP/1.1 404 Not Found",
        &[
            "Content-Type: text/plain; charset=utf-8",
            "X-Content-Type-Options: nosniff",
        ],
        "Not Found\n",
    );
    let version = http(
        "HTTP/1.1 200 OK",
        &[
            "Api-Version: 1.41",
            "Content-Type: application/json",
            "Libpod-Api-Version: 4.3.1",
            "Server: Libpod/4.3.1 (linux)",
        ],
        r#"{"Platform":{"Name":"linux/amd64/debian-12"},"Version":"4.3.1","ApiVersion":"1.41","MinAPIVersion":"1.24","Os":"linux","Arch":"amd64","KernelVersion":"6.1.0"}"#,
    );
    let (found, requests) = converse(HttpProbe::new(), &[&root, &version]);
    assert!(
        requests
            .get(1)
            .is_some_and(|r| r.starts_with("GET /version ") && r.contains("Connection: close")),
        "{requests:?}"
    );
    let Some(found) = found else {
        panic!("identified")
    };
    assert_eq!(found.service.product.as_deref(), Some("Podman API"));
    assert_eq!(found.service.version.as_deref(), Some("4.3.1"));
    assert_eq!(found.service.auth, AuthState::None);
    assert_eq!(
        found.findings.first().map(|f| f.rule.as_str()),
        Some(rules::DOCKER_API)
    );
}

/// A plain 404 whose `/version` is another 404 stays a web server: no
/// `/pods`, no Kubernetes guess.
#[test]
fn a_plain_404_asks_version_once_and_stays_http() {
    let root = http(
        "HTTP/1.1 404 Not Found",
        &["Server: nginx/1.22.1", "Content-Type: text/html"],
        "<html><head><title>404 Not Found</title></head></html>",
    );
    let again = root.clone();
    let (found, requests) = converse(HttpProbe::new(), &[&root, &again]);
    assert_eq!(requests.len(), 2, "{requests:?}");
    let Some(found) = found else {
        panic!("identified")
    };
    assert_eq!(found.service.name, "http");
    assert_eq!(found.service.product.as_deref(), Some("nginx"));
    assert!(found.findings.is_empty());
}

/// The Distribution registry (docker-registry 2.8, as captured): an empty
/// 200 at the root, `{}` at `/v2/` with its header, and the catalogue.
#[test]
fn an_open_registry_is_named_and_flagged() {
    let root = http("HTTP/1.1 200 OK", &["Cache-Control: no-cache"], "");
    let v2 = http(
        "HTTP/1.1 200 OK",
        &[
            "Content-Type: application/json; charset=utf-8",
            "Docker-Distribution-Api-Version: registry/2.0",
        ],
        "{}",
    );
    let catalog = http(
        "HTTP/1.1 200 OK",
        &[
            "Content-Type: application/json; charset=utf-8",
            "Docker-Distribution-Api-Version: registry/2.0",
        ],
        r#"{"repositories":["app/api","app/<script>"]}"#,
    );
    let (found, requests) = converse(HttpProbe::new(), &[&root, &v2, &catalog]);
    assert!(requests.get(1).is_some_and(|r| r.starts_with("GET /v2/ ")));
    assert!(requests.get(2).is_some_and(
        |r| r.starts_with("GET /v2/_catalog?n=100 ") && r.contains("Connection: close")
    ));
    let Some(found) = found else {
        panic!("identified")
    };
    assert_eq!(found.service.product.as_deref(), Some("Docker Registry"));
    assert_eq!(found.service.auth, AuthState::None);
    let Some(finding) = found.findings.first() else {
        panic!("a finding")
    };
    assert_eq!(finding.rule, rules::REGISTRY_OPEN);
    assert_eq!(finding.severity, Severity::High);
    assert!(
        finding
            .evidence
            .iter()
            .any(|e| e == "GET /v2/_catalog listed 2 repositories: app/api, app/<script>"),
        "{:?}",
        finding.evidence
    );
}

/// A registry that wants a token says so on `/v2/`: named, no finding.
#[test]
fn a_registry_requiring_a_token_is_named_without_a_finding() {
    let root = http("HTTP/1.1 200 OK", &["Cache-Control: no-cache"], "");
    let v2 = http(
        "HTTP/1.1 401 Unauthorized",
        &[
            "Content-Type: application/json; charset=utf-8",
            "Docker-Distribution-Api-Version: registry/2.0",
            "Www-Authenticate: Bearer realm=\"https://auth.example/token\",service=\"registry\"",
        ],
        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#,
    );
    let (found, requests) = converse(HttpProbe::new(), &[&root, &v2]);
    assert_eq!(requests.len(), 2);
    let Some(found) = found else {
        panic!("identified")
    };
    assert_eq!(found.service.product.as_deref(), Some("Docker Registry"));
    assert_eq!(found.service.auth, AuthState::Required);
    assert_eq!(
        found.service.extra.get("auth_scheme").map(String::as_str),
        Some("Bearer")
    );
    assert!(found.findings.is_empty());
}

/// On the registry's port, a web server that is not one stays itself.
#[test]
fn port_5000_without_a_registry_stays_http() {
    let root = http(
        "HTTP/1.1 200 OK",
        &["Server: Werkzeug/2.2.2 Python/3.11.2"],
        "hello",
    );
    let v2 = http(
        "HTTP/1.1 404 NOT FOUND",
        &["Server: Werkzeug/2.2.2 Python/3.11.2"],
        "",
    );
    let (found, requests) = converse(HttpProbe::new().with_port_hint(5000), &[&root, &v2]);
    assert_eq!(requests.len(), 2);
    let Some(found) = found else {
        panic!("identified")
    };
    assert_eq!(found.service.product.as_deref(), Some("Werkzeug"));
    assert!(found.findings.is_empty());
}
