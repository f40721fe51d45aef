//! `sluice transform list` and `sluice transform run` on well-behaved input.

use crate::support::{run_with, sluice, transform_run};
use std::time::Duration;

#[test]
fn list_shows_every_builtin_with_its_sha256() {
    let run = run_with(
        {
            let mut c = sluice();
            c.args(["transform", "list"]);
            c
        },
        "",
        Duration::from_secs(30),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    // The six built-ins, named here rather than taken from the code under
    // test, each with the sha256 of the component cargo built for it
    // (hashed here with sha2, not with sluice's helper).
    let guests = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("../wasm-guests/wasm32-wasip2/guest");
    let names = [
        "add-fields",
        "ecs-jumpcloud",
        "ecs-jupiterone",
        "emnify-csv",
        "j1-cdc",
        "redact",
    ];
    let listed: Vec<&str> = run
        .stdout
        .lines()
        .skip(1) // the header
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(listed, names, "{}", run.stdout);
    for name in names {
        use sha2::Digest;
        let line = run
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap();
        let wasm = std::fs::read(guests.join(format!("{}.wasm", name.replace('-', "_")))).unwrap();
        let expected: String = sha2::Sha256::digest(&wasm)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            line.split_whitespace().nth(1),
            Some(expected.as_str()),
            "{name}"
        );
    }
}

#[test]
fn add_fields_adds_config_to_each_object() {
    let run = transform_run(&["add-fields", "--config", "x=y"], "{\"a\":1}\n");
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "{\"a\":1,\"x\":\"y\"}\n"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr, "");
}

#[test]
fn record_errors_are_reported_per_line_and_processing_continues() {
    let input = "{\"a\":1}\nnot json\n\n[1,2]\r\n{\"b\":2}\n";
    let run = transform_run(&["add-fields", "-c", "k=v", "--batch", "2"], input);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.stdout, "{\"a\":1,\"k\":\"v\"}\n{\"b\":2,\"k\":\"v\"}\n");
    let errors = run.error_lines();
    assert_eq!(errors.len(), 2, "{}", run.stderr);
    assert_eq!(errors[0]["line"], 2);
    assert_eq!(errors[0]["error"]["kind"], "invalid-input");
    assert!(
        errors[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    assert_eq!(errors[1]["line"], 4, "blank line 3 is skipped but counted");
    assert!(
        errors[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expected a JSON object")
    );
    assert!(
        run.stderr.contains("2 of 4 records failed"),
        "{}",
        run.stderr
    );
}

#[test]
fn csv_output_has_header_and_rfc4180_rows() {
    let input =
        "{\"id\":1,\"name\":\"a,b\"}\n{\"id\":2,\"name\":null}\n{\"id\":3,\"extra\":true}\n";
    let run = transform_run(&["add-fields", "--output", "csv"], input);
    assert_eq!(
        run.code, 1,
        "the third record adds a column: {}",
        run.stderr
    );
    assert_eq!(run.stdout, "\"id\",\"name\"\r\n\"1\",\"a,b\"\r\n\"2\",\r\n");
    let errors = run.error_lines();
    assert_eq!(errors[0]["line"], 3);
    assert_eq!(errors[0]["error"]["kind"], "encode");
}

#[test]
fn input_file_many_batches_keep_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.jsonl");
    let input: String = (0..1000).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    std::fs::write(&path, &input).unwrap();
    let run = transform_run(
        &[
            "add-fields",
            "--input",
            path.to_str().unwrap(),
            "--batch",
            "7",
        ],
        "",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let got: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(got.len(), 1000);
    for (i, line) in got.iter().enumerate() {
        assert_eq!(*line, format!("{{\"i\":{i}}}"));
    }
}

#[test]
fn rejected_config_is_exit_2_naming_the_key() {
    let run = transform_run(&["add-fields", "--config", "a..b=x"], "{}\n");
    run.expect_failure(
        2,
        "transform `add-fields` rejected its configuration: key `a..b`",
    );
    assert_eq!(run.stdout, "");
}

#[test]
fn unknown_transform_and_bad_files_are_exit_2() {
    let run = transform_run(&["no-such-transform"], "");
    run.expect_failure(
        2,
        "unknown transform `no-such-transform`: not a built-in (add-fields",
    );

    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "hello").unwrap();
    let run = transform_run(&[text.to_str().unwrap()], "");
    run.expect_failure(2, "not a WebAssembly component (no `\\0asm` header");

    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let run = transform_run(&[core.to_str().unwrap()], "");
    run.expect_failure(2, "core WebAssembly module, not a component");

    let run = transform_run(&[dir.path().join("missing.wasm").to_str().unwrap()], "");
    run.expect_failure(2, "cannot read");
}

#[test]
fn usage_errors_are_exit_2() {
    let run = transform_run(&["add-fields", "--config", "novalue"], "");
    run.expect_failure(2, "expected KEY=VALUE");
    let run = transform_run(&["add-fields", "--batch", "0"], "");
    assert_eq!(run.code, 2);
}

#[test]
fn second_run_loads_the_compiled_component_from_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let go = || {
        let mut c = sluice();
        c.env("SLUICE_CACHE_DIR", cache.path())
            .env("SLUICE_LOG", "sluice=debug");
        c.args(["transform", "run", "add-fields"]);
        run_with(c, "{}\n", Duration::from_secs(60))
    };
    let first = go();
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(first.stderr.contains("cache miss"), "{}", first.stderr);
    let entries: Vec<_> = std::fs::read_dir(cache.path().join("wasm"))
        .unwrap()
        .collect();
    assert_eq!(
        entries.len(),
        1,
        "one compiled artifact, no temp files left"
    );
    let second = go();
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(second.stderr.contains("cache hit"), "{}", second.stderr);
    assert!(!second.stderr.contains("cache miss"), "{}", second.stderr);
}

/// `sluice check` prints the graph it validated: each source → pipeline →
/// transforms (with their sha256) → sink, and an example key per sink, as
/// each sink's layout (presets included) will write it.
#[test]
fn check_prints_the_graph_with_digests_and_an_example_key_per_sink() {
    let dir = tempfile::tempdir().unwrap();
    let ecs_sha = {
        let list = run_with(
            {
                let mut c = sluice();
                c.args(["transform", "list"]);
                c
            },
            "",
            Duration::from_secs(30),
        );
        list.stdout
            .lines()
            .find(|l| l.starts_with("ecs-jumpcloud "))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .to_string()
    };
    let cfg = r#"state_dir = "state"

[listeners.https]
address = "127.0.0.1:0"
tls = { self_signed = true }

[sources.jc]
type = "push"
listener = "https"
auth = { type = "none" }

[sources.em]
type = "push"
listener = "https"
auth = { type = "none" }

[pipelines.jc]
source = "jc"
sink = "out"
dead_letter_sink = "dl"
[[pipelines.jc.transforms]]
use = "ecs-jumpcloud"

[pipelines.em]
source = "em"
route = "emnify.usage"
sink = "emnify"
[[pipelines.em.transforms]]
use = "emnify-csv"

[pipelines.j1]
source = "em"
route = "j1"
sink = "j1ds"

[sinks.out]
type = "local"
path = "out"
key = "{route}/%Y/%m/%d"
compression = "gzip"

[sinks.dl]
type = "local"
path = "dead"

[sinks.emnify]
type = "s3"
bucket = "em-bucket"
region = "eu-central-1"
preset = "emnify"

[sinks.j1ds]
type = "s3"
bucket = "j1-bucket"
region = "eu-central-1"
preset = "j1ds"
"#;
    std::fs::write(dir.path().join("sluice.toml"), cfg).unwrap();
    let mut cmd = sluice();
    cmd.args(["check", "--config"])
        .arg(dir.path().join("sluice.toml"));
    let run = run_with(cmd, "", Duration::from_secs(60));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = &run.stdout;
    let today = chrono::Utc::now().format("%Y/%m/%d").to_string();
    for expected in [
        format!(
            "source jc (push on https) -> pipeline jc -> ecs-jumpcloud@sha256:{}… -> sink out (dead letters -> sink dl)",
            &ecs_sha[..12]
        ),
        "source em (push on https) -> pipeline em -> emnify-csv@sha256:".to_string(),
        "source em (push on https) -> pipeline j1 -> sink j1ds".to_string(),
        format!("sink out writes objects such as out/jc/{today}/"),
        "sink emnify writes objects such as s3://em-bucket/cdr_".to_string(),
        "sink j1ds writes objects such as s3://j1-bucket/jupiterone/graph/cdc/accountId="
            .to_string(),
    ] {
        assert!(out.contains(&expected), "missing {expected:?} in:\n{out}");
    }
    let line = |sink: &str| {
        out.lines()
            .find(|l| l.contains(&format!("sink {sink} writes")))
            .unwrap()
            .to_string()
    };
    assert!(line("out").ends_with(".jsonl.gz"), "{}", line("out"));
    assert!(line("emnify").ends_with(".csv"), "{}", line("emnify"));
    assert!(line("j1ds").contains("/time="), "{}", line("j1ds"));
}
