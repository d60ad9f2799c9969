//! `iogate-lb --check`: the shipped example is valid; errors name file, line, column and field.

use std::io::Write;
use std::path::Path;
use std::process::Command;

fn check(args: &[&str]) -> (i32, String) {
    let out = Command::new(iogate_testkit::bin("iogate-lb"))
        .args(args)
        .arg("--check")
        .output()
        .expect("run iogate-lb");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
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
}
