//! Proves that config errors name their file and field path, all of them at once, through the
//! library (`config::parse`) and the `coregate check` command (non-zero exit on an invalid
//! file; a summary naming listeners and clusters on a valid one).

mod support;

use std::process::{Command, Output};

use coregate::config;
use support::harness::TempFile;

/// A valid config with distinctive names.
const VALID: &str = r#"
workers: 1
listeners:
  - name: edge_listener
    address: 127.0.0.1:18080
    virtual_hosts:
      - name: everything
        domains: ["*"]
        routes:
          - match: { prefix: "/" }
            route: { cluster: billing_cluster }
          - match: { prefix: "/ledger" }
            route: { cluster: ledger_cluster }
clusters:
  - name: billing_cluster
    connect_timeout: 250ms
    endpoints: [{ address: "127.0.0.1:9001" }]
  - name: ledger_cluster
    endpoints: [{ address: "127.0.0.1:9002", weight: 2 }]
"#;

/// VALID with three independent mistakes, and the field path each must be reported at.
fn invalid() -> (String, [&'static str; 3]) {
    let yaml = VALID
        .replace(
            "{ cluster: billing_cluster }",
            "{ cluster: no_such_cluster }",
        )
        .replace("connect_timeout: 250ms", "connect_timeout: soon")
        .replace("weight: 2", "weight: 0");
    (
        yaml,
        [
            "listeners[0].virtual_hosts[0].routes[0].route.cluster",
            "clusters[0].connect_timeout",
            "clusters[1].endpoints[0].weight",
        ],
    )
}

fn check(file: &TempFile) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coregate"))
        .arg("check")
        .arg("-c")
        .arg(file.path())
        .output()
        .expect("run coregate check")
}

#[test]
fn every_error_is_reported_with_its_field_path() {
    let (yaml, paths) = invalid();
    let errors = config::parse(&yaml, "edge.yaml").expect_err("the config is invalid");
    let got: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    for path in paths {
        assert!(got.contains(&path), "{path} not reported; got {got:?}");
    }
    assert_eq!(got.len(), paths.len(), "one error per mistake: {errors:#?}");
    assert!(errors.0.iter().all(|e| e.file == "edge.yaml"));
    let unknown = errors
        .0
        .iter()
        .find(|e| e.path == paths[0])
        .expect("cluster error");
    assert!(
        unknown.reason.contains("no_such_cluster"),
        "the reason names the dangling cluster: {unknown:?}"
    );

    let text = errors.to_string();
    assert!(text.starts_with("edge.yaml: "), "{text}");
    for (line, path) in text.lines().zip(&got) {
        assert!(
            line.starts_with(&format!("edge.yaml: {path}: ")),
            "each line reads `file: path: reason`: {line:?}"
        );
    }
}

#[test]
fn the_valid_config_parses() {
    let c = config::parse(VALID, "edge.yaml").expect("valid");
    assert_eq!(c.listeners[0].name, "edge_listener");
    assert_eq!(c.clusters.len(), 2);
}

#[test]
fn check_command_rejects_an_invalid_file_naming_file_and_fields() {
    let (yaml, paths) = invalid();
    let file = TempFile::new("invalid.yaml", &yaml);
    let out = check(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit status {:?}", out.status);
    let name = file.path().display().to_string();
    assert!(stderr.contains(&name), "stderr names {name}: {stderr}");
    for path in paths {
        assert!(
            stderr.contains(&format!("{name}: {path}: ")),
            "stderr names {path}: {stderr}"
        );
    }
}

#[test]
fn check_command_accepts_a_valid_file_and_summarises_it() {
    let file = TempFile::new("valid.yaml", VALID);
    let out = check(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit status {:?}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["edge_listener", "billing_cluster", "ledger_cluster"] {
        assert!(stdout.contains(name), "stdout mentions {name}: {stdout}");
    }
}

#[test]
fn tls_mistakes_are_all_reported_with_their_field_paths() {
    let dir = support::tls::Dir::new("tls-errors");
    let ca = support::tls::Ca::new("errors ca");
    let (cert, key) = ca
        .server(&["a.test"], support::tls::Key::EcdsaP256)
        .write(&dir, "a");
    let yaml = format!(
        "listeners:
  - name: secure
    address: 127.0.0.1:0
    tls:
      certificates:
        - {{ cert: \"{cert}\", key: \"{key}\", server_names: [\"a.test\", \"*.*.test\"] }}
        - {{ cert: \"{missing}\", key: \"{key}\", server_names: [\"a.test\"] }}
      min_version: \"1.1\"
      alpn: [h3]
      client_auth: {{ ca: \"{cert}\", mode: sometimes }}
      client_cert_header: \"bad header\"
    virtual_hosts:
      - name: all
        domains: [\"*\"]
        redirect_to_https: true
        routes:
          - match: {{ prefix: \"/\", tls_context: {{ presented: true, validated: false }} }}
            route: {{ cluster: c }}
clusters:
  - name: c
    tls: {{ verify: false, ca: \"{cert}\", sni: \"*.test\", client_cert: \"{cert}\" }}
    endpoints:
      - {{ address: 127.0.0.1:1 }}
",
        cert = cert.display(),
        key = key.display(),
        missing = dir.path("missing.pem").display(),
    );
    let errors = config::parse(&yaml, "tls.yaml").expect_err("invalid");
    let got: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    let want = [
        "listeners[0].tls.min_version",
        "listeners[0].tls.alpn[0]",
        "listeners[0].tls.client_auth.mode",
        "listeners[0].tls.certificates[0].server_names[1]",
        "listeners[0].tls.certificates[1].server_names[0]",
        "listeners[0].tls.certificates[1].cert",
        "listeners[0].tls.client_cert_header",
        "listeners[0].virtual_hosts[0].redirect_to_https",
        "listeners[0].virtual_hosts[0].routes[0].match.tls_context",
        "clusters[0].tls.verify",
        "clusters[0].tls.sni",
        "clusters[0].tls.client_key",
    ];
    for path in want {
        assert!(got.contains(&path), "{path} not reported; got {errors}");
    }
    assert_eq!(got.len(), want.len(), "one error per mistake:\n{errors}");
    let missing = errors
        .0
        .iter()
        .find(|e| e.path.ends_with("certificates[1].cert"))
        .unwrap();
    assert!(missing.reason.contains("missing.pem") && missing.reason.contains("cannot read"));
}

#[test]
fn access_log_mistakes_name_their_field() {
    let yaml = r#"
listeners:
  - name: main
    address: 127.0.0.1:0
    access_log:
      - { path: "-", format: "%START_TIME% %NOPE%" }
      - { path: "/nonexistent-dir/x/access.log" }
      - path: "-"
        json_format: { code: "%RESPONSE_CODE%", bad: "%REQ(:weird)%" }
      - { path: "-", format: "x", json_format: { a: "b" } }
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { prefix: "/" }
            route: { cluster: c }
clusters:
  - name: c
    endpoints: [{ address: 127.0.0.1:1 }]
"#;
    let errors = config::parse(yaml, "log.yaml").expect_err("invalid");
    let got: Vec<(&str, &str)> = errors
        .0
        .iter()
        .map(|e| (e.path.as_str(), e.reason.as_str()))
        .collect();
    let want = [
        (
            "listeners[0].access_log[0].format",
            "unknown operator %NOPE%",
        ),
        ("listeners[0].access_log[1].path", "is not a directory"),
        (
            "listeners[0].access_log[2].json_format.bad",
            "unknown pseudo-header :weird",
        ),
        ("listeners[0].access_log[3]", "not both"),
    ];
    for (path, why) in want {
        assert!(
            got.iter().any(|(p, r)| *p == path && r.contains(why)),
            "{path}: {why} not reported; got {got:#?}"
        );
    }
    assert_eq!(got.len(), want.len(), "{got:#?}");
}

#[test]
fn route_match_mistakes_name_their_field() {
    let yaml = r#"
listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { safe_regex: { regex: "/api/(v1" } }
            route: { cluster: c }
          - match: { prefix: "/a", path: "/b" }
            route: { cluster: c }
          - match: { prefix: "/", headers: [{ name: "bad header", present_match: true }] }
            route: { cluster: c }
          - match: { safe_regex: { regex: "((a{100}){100}){100}" } }
            route: { cluster: c }
          - match: { path_separated_prefix: "/api/" }
            route: { cluster: c }
          - match: { prefix: "/", headers: [{ name: ":status", present_match: true }, { name: x, range_match: { start: 5, end: 5 } }, { name: y, string_match: { prefix: "" } }, { name: z, exact_match: a, present_match: true }] }
            route: { cluster: c }
          - match: { prefix: "/", query_parameters: [{ name: q, present_match: false }, { name: r, string_match: { safe_regex: { regex: "[" }, ignore_case: true } }, { name: s, string_match: {} }] }
            route: { cluster: c }
          - match: { methods: [GET] }
            route: { cluster: c }
clusters:
  - name: c
    endpoints: [{ address: 127.0.0.1:1 }]
"#;
    let errors = config::parse(yaml, "match.yaml").expect_err("invalid");
    let r = "listeners[0].virtual_hosts[0].routes";
    let want = [
        (format!("{r}[0].match.safe_regex.regex"), "invalid regex"),
        (format!("{r}[1].match"), "found: prefix, path"),
        (
            format!("{r}[2].match.headers[0].name"),
            "invalid header name",
        ),
        (format!("{r}[3].match.safe_regex.regex"), "regex too large"),
        (
            format!("{r}[4].match.path_separated_prefix"),
            "must not end with '/'",
        ),
        (
            format!("{r}[5].match.headers[0].name"),
            "unknown pseudo-header",
        ),
        (
            format!("{r}[5].match.headers[1].range_match"),
            "must be below end",
        ),
        (
            format!("{r}[5].match.headers[2].string_match.prefix"),
            "must not be empty",
        ),
        (format!("{r}[5].match.headers[3]"), "at most one"),
        (
            format!("{r}[6].match.query_parameters[0].present_match"),
            "not an absence test",
        ),
        (
            format!("{r}[6].match.query_parameters[1].string_match.ignore_case"),
            "(?i)",
        ),
        (
            format!("{r}[6].match.query_parameters[1].string_match.safe_regex.regex"),
            "invalid regex",
        ),
        (
            format!("{r}[6].match.query_parameters[2].string_match"),
            "found: none",
        ),
        (format!("{r}[7].match"), "found: none"),
    ];
    for (path, reason) in &want {
        let e = errors.0.iter().find(|e| &e.path == path);
        let e = e.unwrap_or_else(|| panic!("{path} not reported:\n{errors}"));
        assert!(
            e.reason.contains(reason),
            "{path}: {:?} lacks {reason:?}",
            e.reason
        );
        assert_eq!(e.file, "match.yaml");
        assert!(!e.reason.contains('\n'), "one line: {:?}", e.reason);
    }
    assert_eq!(
        errors.0.len(),
        want.len(),
        "one error per mistake:\n{errors}"
    );
}
