//! `iogate-lb --check`: the shipped example is valid; errors name file, line, column and field.

use std::io::Write;
use std::path::Path;
use std::process::Command;

fn check(args: &[&str]) -> (i32, String) {
    check_env(args, None)
}

#[test]
fn shipped_example_is_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/lb.yaml");
    let (code, text) = check(&["--config", &example.to_string_lossy()]);
    assert_eq!(code, 0, "{text}");
}

#[test]
fn errors_name_file_line_and_field() {
    let mut f = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temp");
    f.write_all(b"listeners:\n  - address: 0.0.0.0:8080\nupstreams:\n  - id: a\n    address: nowhere\n  - id: a\n    address: 127.0.0.1:2\n    weight: 0\nbalancing:\n  policy: hash\n").expect("write");
    let (code, text) = check(&["--config", &f.path().to_string_lossy()]);
    assert_ne!(code, 0);
    let file = f.path().display().to_string();
    for want in [
        format!("{file}:5:5: field `upstreams[0].address`"),
        format!("{file}:6:5: field `upstreams[1].id`"),
        format!("{file}:8:5: field `upstreams[1].weight`"),
        format!("{file}:9:1: field `balancing.key`"),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
    let mut g = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temp");
    g.write_all(b"upstreams: []\ntimeouts:\n  websocket_idle: soon\n  bogus: 1\n")
        .expect("write");
    let (code, text) = check(&["--config", &g.path().to_string_lossy()]);
    assert_ne!(code, 0);
    assert!(
        text.contains("timeouts.websocket_idle") && text.contains(":3:"),
        "{text}"
    );
}

#[test]
fn quick_flags_are_validated() {
    let (code, _) = check(&[
        "--listen",
        "127.0.0.1:8080",
        "--upstream",
        "127.0.0.1:4001",
        "--upstream",
        "127.0.0.1:4002",
    ]);
    assert_eq!(code, 0);
    let (code, text) = check(&["--listen", "127.0.0.1:8080", "--upstream", "nowhere"]);
    assert_ne!(code, 0);
    assert!(
        text.contains("<command line>") && text.contains("upstreams[0].address"),
        "{text}"
    );
    // `--threads` is the file's `threads`, validated the same way.
    let quick = ["--listen", "127.0.0.1:8080", "--upstream", "127.0.0.1:4001"];
    let (code, text) = check(&[&quick[..], &["--threads", "1"]].concat());
    assert_eq!(code, 0, "{text}");
    let (code, text) = check(&[&quick[..], &["--threads", "0"]].concat());
    assert_ne!(code, 0);
    assert!(
        text.contains("<command line>") && text.contains("field `threads`"),
        "{text}"
    );
}

fn yaml_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temp");
    f.write_all(text.as_bytes()).expect("write");
    f
}

fn check_env(args: &[&str], env: Option<&str>) -> (i32, String) {
    let mut cmd = Command::new(iogate_testkit::bin("iogate-lb"));
    cmd.args(args).arg("--check");
    match env {
        Some(v) => cmd.env("IOGATE_LB_ADMIN_TOKEN", v),
        None => cmd.env_remove("IOGATE_LB_ADMIN_TOKEN"),
    };
    let out = cmd.output().expect("run iogate-lb");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// An admin API reachable from other hosts needs a token, from the file, a token file or the
/// environment; a token file that cannot be used is an error naming the field.
#[test]
fn an_exposed_admin_api_needs_a_token() {
    let ups = "upstreams:\n  - address: 127.0.0.1:2\n";
    let exposed = yaml_file(&format!("admin:\n  listen: 0.0.0.0:9100\n{ups}"));
    let path = exposed.path().to_string_lossy().to_string();
    let (code, text) = check_env(&["--config", &path], None);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("field `admin.listen`") && text.contains("reachable from other hosts"),
        "{text}"
    );
    // The environment variable is a token source.
    let (code, text) = check_env(&["--config", &path], Some("from-env"));
    assert_eq!(code, 0, "{text}");

    let token = yaml_file("s3cret\n");
    let with_file = yaml_file(&format!(
        "admin:\n  listen: 0.0.0.0:9100\n  token_file: {}\n{ups}",
        token.path().display()
    ));
    let (code, text) = check_env(&["--config", &with_file.path().to_string_lossy()], None);
    assert_eq!(code, 0, "{text}");

    let missing = yaml_file(&format!(
        "admin:\n  listen: 0.0.0.0:9100\n  token_file: /nonexistent/iogate-token\n{ups}"
    ));
    let (code, text) = check_env(&["--config", &missing.path().to_string_lossy()], None);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("field `admin.token_file`") && text.contains("/nonexistent/iogate-token"),
        "{text}"
    );

    let empty = yaml_file("\n");
    let empty_cfg = yaml_file(&format!(
        "admin:\n  token_file: {}\n{ups}",
        empty.path().display()
    ));
    let (code, text) = check_env(&["--config", &empty_cfg.path().to_string_lossy()], None);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("holds no token"), "{text}");

    let both = yaml_file(&format!(
        "admin:\n  token: a\n  token_file: {}\n{ups}",
        token.path().display()
    ));
    let (code, text) = check_env(&["--config", &both.path().to_string_lossy()], None);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("not both"), "{text}");

    // --admin on top of a file is validated again (a loopback file, an exposed flag).
    let loopback = yaml_file(ups);
    let (code, text) = check_env(
        &[
            "--config",
            &loopback.path().to_string_lossy(),
            "--admin",
            "0.0.0.0:9",
        ],
        None,
    );
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("field `admin.listen`") && text.contains("reachable from other hosts"),
        "{text}"
    );
    let (code, text) = check_env(
        &[
            "--config",
            &loopback.path().to_string_lossy(),
            "--admin",
            "nowhere",
        ],
        None,
    );
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("is not IP:port"), "{text}");

    // The quick form's --admin is checked the same way.
    let (code, text) = check_env(
        &[
            "--listen",
            "127.0.0.1:1",
            "--upstream",
            "127.0.0.1:2",
            "--admin",
            "0.0.0.0:9",
        ],
        None,
    );
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("reachable from other hosts"), "{text}");
}

#[test]
fn tls_certificate_errors_name_the_field_and_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = iogate_testkit::TestCert::generate(dir.path(), "a", &["a.test"]);
    let other = iogate_testkit::TestCert::generate(dir.path(), "b", &["b.test"]);
    let missing = dir.path().join("missing.crt");
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:8443\n    tls:\n      certificates:\n        - cert: {}\n          key: {}\n        - cert: {}\n          key: {}\nupstreams: []\n",
        cert.cert.display(),
        cert.key.display(),
        missing.display(),
        cert.key.display()
    );
    let f = dir.path().join("lb.yaml");
    std::fs::write(&f, &yaml).expect("write");
    let (code, text) = check(&["--config", &f.to_string_lossy()]);
    assert_ne!(code, 0);
    let want = format!("{}:7:", f.display());
    assert!(
        text.contains(&want)
            && text.contains("listeners[0].tls.certificates[1].cert")
            && text.contains("missing.crt"),
        "{text}"
    );
    // A key that belongs to another certificate.
    std::fs::write(
        &f,
        yaml.replace(
            &missing.display().to_string(),
            &other.cert.display().to_string(),
        ),
    )
    .expect("write");
    let (code, text) = check(&["--config", &f.to_string_lossy()]);
    assert_ne!(code, 0);
    assert!(
        text.contains("listeners[0].tls.certificates[1].key") && text.contains("does not go with"),
        "{text}"
    );
    // The quick form names the files too, and a valid pair passes.
    let (c, k) = (cert.cert.to_string_lossy(), cert.key.to_string_lossy());
    let quick = |cert: &str, key: &str| {
        check(&[
            "--listen",
            "127.0.0.1:8443",
            "--upstream",
            "127.0.0.1:4001",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ])
    };
    assert_eq!(quick(&c, &k).0, 0);
    let (code, text) = quick(&k, &k);
    assert_ne!(code, 0);
    assert!(text.contains("holds no certificate"), "{text}");
}

#[test]
fn dns_upstreams_and_the_resolver_are_validated() {
    let good = yaml_file(
        "upstreams:\n  - address: nodes.test:3000\n  - srv: _sio._tcp.nodes.test\n  - address: 127.0.0.1:4000\nresolver:\n  servers: [\"127.0.0.1\", \"127.0.0.1:5353\", \"[::1]:53\"]\n  interval: 10s\n",
    );
    let (code, text) = check(&["--config", &good.path().to_string_lossy()]);
    assert_eq!(code, 0, "{text}");
    let bad = yaml_file(
        "upstreams:\n  - address: nodes.test:3000\n  - address: \"bad_name!:3000\"\n  - srv: _sio._tcp.nodes.test\n    address: x.test:1\n  - address: nodes2.test:3000\n    sid_tag: a\n  - address: nodes3.test\nresolver:\n  servers: [\"127.0.0.1:53\", \"dns.example\"]\n  min_interval: 0s\n",
    );
    let (code, text) = check(&["--config", &bad.path().to_string_lossy()]);
    assert_ne!(code, 0);
    let file = bad.path().display().to_string();
    for want in [
        format!("{file}:3:5: field `upstreams[1].address`"),
        format!("{file}:4:5: field `upstreams[2].srv`"),
        format!("{file}:7:5: field `upstreams[3].sid_tag`"),
        format!("{file}:8:5: field `upstreams[4].address`"),
        "field `resolver.servers[1]`".to_string(),
        "field `resolver.min_interval`".to_string(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
    let (code, text) = check(&[
        "--listen",
        "127.0.0.1:8080",
        "--upstream",
        "nodes.test:3000",
        "--upstream",
        "srv:_sio._tcp.nodes.test",
        "--resolver",
        "127.0.0.1:5353",
    ]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = check(&[
        "--listen",
        "127.0.0.1:8080",
        "--upstream",
        "nodes.test:3000",
        "--resolver",
        "dns.example",
    ]);
    assert_ne!(code, 0);
    assert!(text.contains("resolver.servers[0]"), "{text}");
}
