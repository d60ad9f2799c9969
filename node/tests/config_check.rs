//! `iogate-node --check`: exit 0 for a valid file, non-zero with file:line:column and field for
//! each problem.

use std::io::Write;
use std::path::Path;
use std::process::Command;

fn check(yaml: &str) -> (i32, String, tempfile::NamedTempFile) {
    let mut f = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temp");
    f.write_all(yaml.as_bytes()).expect("write");
    let out = Command::new(iogate_testkit::node_bin())
        .arg("--check")
        .arg("--config")
        .arg(f.path())
        .output()
        .expect("run iogate-node");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text, f)
}

#[test]
fn shipped_example_config_is_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/node.yaml");
    let out = Command::new(iogate_testkit::node_bin())
        .arg("--check")
        .arg("--config")
        .arg(&example)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unknown_field_is_reported_with_file_line_and_field() {
    let (code, text, f) =
        check("listen: 127.0.0.1:4001\nredis:\n  url: redis://127.0.0.1:6379\n  prefx: x\n");
    assert_ne!(code, 0);
    let at = format!("{}:4:", f.path().display());
    assert!(text.contains(&at), "{text}");
    assert!(text.contains("redis.prefx"), "{text}");
}

#[test]
fn wrong_type_is_reported_with_file_line_and_field() {
    let (code, text, f) = check("listen: 127.0.0.1:4001\nengineio:\n  max_payload: lots\n");
    assert_ne!(code, 0);
    assert!(
        text.contains(&format!("{}:3:", f.path().display())),
        "{text}"
    );
    assert!(text.contains("engineio.max_payload"), "{text}");
}

#[test]
fn bad_values_are_all_reported() {
    let (code, text, f) = check(
        "listen: not-an-address\nredis:\n  cluster_nodes:\n    - 127.0.0.1:7000\n    - nowhere\ndrain:\n  rate: 0\n",
    );
    assert_ne!(code, 0);
    let file = f.path().display().to_string();
    assert!(
        text.contains(&format!("{file}:1:1: field `listen`")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{file}:5:7: field `redis.cluster_nodes[1]`")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{file}:7:3: field `drain.rate`")),
        "{text}"
    );
}

#[test]
fn valid_file_passes() {
    let (code, text, _f) = check("listen: 0.0.0.0:4001\nnode_id: a\n");
    assert_eq!(code, 0, "{text}");
}
