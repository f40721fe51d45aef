//! A transform author's first hour, as a newcomer lives it: the commands
//! are taken verbatim from the SDK's README and docs/transforms.md (a test
//! fails when a documented command changes or stops working), run by a
//! shell in a folder outside the workspace, against a real gateway.

use crate::gw::{Gateway, config, delivered, wait_delivered};
use crate::support::shared_cache;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const TOKEN: &str = "authoring-test-token-0123456789";

/// The line of a doc that starts with `prefix` (after indentation).
#[track_caller]
fn doc_line(doc: &str, prefix: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(doc);
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("{doc} has no line starting with {prefix:?}"))
        .split(" # ")
        .next()
        .unwrap()
        .trim()
        .to_string()
}

/// What a shell command printed; fails the test unless it exited 0 (or
/// `expect_ok` is false).
struct Shell {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `line` with `sh -c` in `dir`, with this build's `sluice` first on
/// the PATH and the admin API's address and token in the environment, as a
/// user's shell would have them. The outer `cargo test`'s own variables are
/// removed, so a nested `cargo` behaves as it does for the user.
fn shell(dir: &Path, line: &str, admin: Option<&Gateway>) -> Shell {
    let bin = Path::new(env!("CARGO_BIN_EXE_sluice")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(line).current_dir(dir).env("PATH", path);
    for (key, _) in std::env::vars() {
        let keep = ["CARGO_HOME", "CARGO_NET", "CARGO_HTTP", "CARGO_REGISTR"]
            .iter()
            .any(|k| key.starts_with(k));
        if (key.starts_with("CARGO_") && !keep) || key == "RUSTFLAGS" {
            cmd.env_remove(key);
        }
    }
    cmd.env("SLUICE_CACHE_DIR", shared_cache())
        .env("SLUICE_LOG", "warn")
        .env_remove("SLUICE_ADMIN_TOKEN");
    if let Some(gw) = admin {
        cmd.env("SLUICE_ADMIN_URL", format!("http://{}", gw.admin))
            .env("SLUICE_ADMIN_TOKEN", TOKEN);
    }
    let out = cmd.output().unwrap();
    Shell {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[track_caller]
fn ok(dir: &Path, line: &str, admin: Option<&Gateway>) -> String {
    let run = shell(dir, line, admin);
    assert_eq!(
        run.code, 0,
        "`{line}` failed\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    run.stdout
}

#[track_caller]
fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// A push source `jc` whose pipeline uses transform `transform` with
/// `pipeline_config`, into a local sink; the admin API on, with its token.
fn gateway_config(transform: &str, pipeline_config: &str) -> String {
    let cfg = config(&format!(
        r#"
[sources.jc]
type = "push"
listener = "https"
auth = {{ type = "none" }}

[pipelines.jc]
source = "jc"
sink = "out"

[[pipelines.jc.transforms]]
use = "{transform}"
config = {{ {pipeline_config} }}

[sinks.out]
type = "local"
path = "out"
key = "{{route}}"
rotate = {{ max_age_secs = 0.2 }}
"#
    ));
    crate::gw::with_admin_token(&cfg, TOKEN, "")
}

/// Creates `my-mapper` with the SDK README's commands, tests and builds it.
/// Its `target` is a link into this build's target folder, so a second run
/// (and v2) builds incrementally; the workspace's lock file pins the same
/// dependency versions the SDK is tested with.
fn scaffold(home: &Path) -> PathBuf {
    const SDK: &str = "guest-sdk/README.md";
    let new = doc_line(SDK, "sluice transform new ");
    assert_eq!(new, "sluice transform new my-mapper");
    let said = ok(home, &new, None);
    let krate = home.join("my-mapper");
    assert!(
        said.contains("target/wasm32-wasip2/release/my_mapper.wasm"),
        "says where the component lands: {said}"
    );
    assert_eq!(doc_line(SDK, "cd "), "cd my-mapper");
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("newcomer-target");
    std::fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&target, krate.join("target")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock"),
        krate.join("Cargo.lock"),
    )
    .unwrap();
    let tested = shell(&krate, &doc_line(SDK, "cargo test"), None);
    assert_eq!(tested.code, 0, "{}{}", tested.stdout, tested.stderr);
    assert!(tested.stdout.contains("2 passed"), "{}", tested.stdout);
    ok(
        &krate,
        &doc_line(SDK, "cargo build --release --target wasm32-wasip2"),
        None,
    );
    assert!(
        krate
            .join("target/wasm32-wasip2/release/my_mapper.wasm")
            .is_file()
    );
    krate
}

/// Pushes the crate's samples; returns the reply.
async fn push_samples(gw: &Gateway, krate: &Path) -> crate::gw::Reply {
    let body = std::fs::read(krate.join("samples.jsonl")).unwrap();
    gw.client()
        .push("jc", &[("content-type", "application/x-ndjson")], body)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_scaffolds_tests_builds_uploads_swaps_and_rolls_back_with_the_documented_commands()
 {
    const README: &str = "docs/transforms.md";
    let home = tempfile::tempdir().unwrap();
    let krate = scaffold(home.path());

    // `transform run` on the samples, as the SDK README says.
    let run = ok(
        &krate,
        &doc_line("guest-sdk/README.md", "sluice transform run target/"),
        None,
    );
    let docs: Vec<Value> = run
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 3, "{run}");
    for d in &docs {
        assert_eq!(d["labels"]["env"], "prod");
        assert!(
            d["user"]["email"]
                .as_str()
                .unwrap()
                .ends_with("@example.com")
        );
    }

    // A gateway whose pipeline names the transform before its first upload.
    let dir = tempfile::tempdir().unwrap();
    let cfg = gateway_config("my-mapper", "env = \"prod\"");
    std::fs::write(dir.path().join("sluice.toml"), &cfg).unwrap();
    let check = shell(dir.path(), "sluice check --config sluice.toml", None);
    assert_eq!(check.code, 0, "{}", check.stderr);
    let line = cfg
        .lines()
        .position(|l| l == "use = \"my-mapper\"")
        .unwrap()
        + 1;
    assert!(
        check.stderr.contains(&format!(
            "sluice.toml:{line}:1: `pipelines.jc.transforms.0.use`"
        )) && check.stderr.contains("not uploaded yet")
            && check.stderr.contains("sluice transform push my-mapper"),
        "check warns with file, line, key and what to do: {}",
        check.stderr
    );
    let gw = Gateway::start(dir.path(), &cfg);
    let waiting = push_samples(&gw, &krate).await;
    assert_eq!(waiting.status, 503, "{}", waiting.body);
    assert!(waiting.headers.contains_key("retry-after"));
    assert!(
        waiting.body.contains("waits for transform `my-mapper`"),
        "{}",
        waiting.body
    );
    let (status, ready) = gw.admin_get("/readyz").await;
    assert_eq!(status, 503);
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["waiting_pipelines"]["jc"][0], "my-mapper", "{ready}");
    assert_eq!(
        gw.metric("sluice_pipeline_waiting{pipeline=\"jc\",transform=\"my-mapper\"}")
            .await,
        1.0
    );

    // Upload and activate with the commands of docs/transforms.md.
    let v1 = json_of(&ok(
        &krate,
        &doc_line(
            README,
            "sluice transform push my-mapper target/wasm32-wasip2/release/my_mapper.wasm",
        ),
        Some(&gw),
    ));
    assert_eq!(
        (v1["version"].as_u64(), v1["active"].as_bool()),
        (Some(1), Some(false))
    );
    assert_eq!(v1["checked_with"], "the given --config");
    let activate_v1 = doc_line(README, "sluice transform activate my-mapper 1");
    let swap = json_of(&ok(&krate, &activate_v1, Some(&gw)));
    assert_eq!(swap["pipelines"], serde_json::json!(["jc"]), "{swap}");
    let ms = swap["swap_ms"].as_f64().unwrap();
    assert_eq!((ms * 10.0).round(), ms * 10.0, "swap_ms in tenths: {ms}");
    assert_eq!(gw.admin_get("/readyz").await.0, 200, "up with no restart");
    assert_eq!(
        gw.metric("sluice_pipeline_waiting{pipeline=\"jc\",transform=\"my-mapper\"}")
            .await,
        0.0
    );
    let accepted = push_samples(&gw, &krate).await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    let out = dir.path().join("out");
    for (_, line) in wait_delivered(&out, 3).await {
        let doc: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(doc["labels"]["env"], "prod");
        assert!(doc["labels"].get("version").is_none());
    }

    // v2, pushed without --config: checked with the pipeline's own config.
    let lib = krate.join("src/lib.rs");
    let code = std::fs::read_to_string(&lib).unwrap();
    let mark = "json::set(&mut doc, \"labels.env\", self.env.clone())?;";
    assert!(code.contains(mark));
    std::fs::write(
        &lib,
        code.replace(
            mark,
            &format!("{mark}\n        json::set(&mut doc, \"labels.version\", \"2\".into())?;"),
        ),
    )
    .unwrap();
    ok(&krate, "cargo build --release --target wasm32-wasip2", None);
    std::fs::copy(
        krate.join("target/wasm32-wasip2/release/my_mapper.wasm"),
        krate.join("my_mapper_v2.wasm"),
    )
    .unwrap();
    let v2 = json_of(&ok(
        &krate,
        &doc_line(README, "sluice transform push my-mapper my_mapper_v2.wasm"),
        Some(&gw),
    ));
    assert_eq!(
        (v2["version"].as_u64(), v2["active"].as_bool()),
        (Some(2), Some(true)),
        "{v2}"
    );
    assert_eq!(v2["checked_with"], "the config of pipeline(s) jc", "{v2}");
    assert_eq!(push_samples(&gw, &krate).await.status, 200);
    let lines = wait_delivered(&out, 6).await;
    let versions = |lines: &[(String, String)]| {
        lines
            .iter()
            .filter(|(_, l)| l.contains("\"version\":\"2\""))
            .count()
    };
    assert_eq!(versions(&lines), 3, "v2 ran the second push");

    // A version by a sha256 prefix, then the README's rollback.
    let sha2 = v2["sha256"].as_str().unwrap();
    let by_prefix = json_of(&ok(
        &krate,
        &format!("sluice transform activate my-mapper sha256:{}", &sha2[..8]),
        Some(&gw),
    ));
    assert_eq!(by_prefix["version"], 2);
    let back = json_of(&ok(&krate, &activate_v1, Some(&gw)));
    assert_eq!(
        (back["version"].as_u64(), back["previous"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(push_samples(&gw, &krate).await.status, 200);
    let lines = wait_delivered(&out, 9).await;
    assert_eq!(versions(&lines), 3, "v1 again after the rollback");

    let listed = json_of(&ok(
        &krate,
        &doc_line(README, "sluice transform versions my-mapper"),
        Some(&gw),
    ));
    assert_eq!(listed["active"], 1);
    assert_eq!(listed["versions"].as_array().unwrap().len(), 2);
    let deleted = json_of(&ok(
        &krate,
        &doc_line(README, "sluice transform delete my-mapper 2"),
        Some(&gw),
    ));
    assert_eq!(deleted["removed"]["version"], 2);

    // The CLI's errors read plainly.
    let missing = shell(&krate, "sluice transform activate my-mapper 7", Some(&gw));
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("there is no version 7") && !missing.stderr.contains("Version("),
        "{}",
        missing.stderr
    );
    let unknown = shell(
        &krate,
        "sluice transform activate my-mapper sha256:19ad44c8",
        Some(&gw),
    );
    assert!(
        unknown.stderr.contains("no version with sha256 19ad44c8")
            && !unknown.stderr.contains("Sha256("),
        "{}",
        unknown.stderr
    );
    let active = shell(&krate, "sluice transform delete my-mapper 1", Some(&gw));
    assert!(
        active.code == 2 && active.stderr.contains("is active"),
        "{}",
        active.stderr
    );
    let no_token = shell(&krate, "sluice transform versions my-mapper", None);
    assert_eq!(no_token.code, 2);
    assert!(
        no_token.stderr.contains("SLUICE_ADMIN_TOKEN"),
        "{}",
        no_token.stderr
    );
    let logs = gw.stop();
    assert!(logs.contains("pipeline is up"), "{logs}");
    assert_eq!(delivered(&out).len(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_activations_say_what_was_stored_and_warnings_and_auth_failures_are_logged() {
    // The hostile test guest: `mode=reject` makes `create` refuse its
    // config, so no activation for this pipeline can succeed; `mode=trap`
    // panics on the record "boom".
    let component = sluice_test_artifacts::HOSTILE_COMPONENT;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &gateway_config("t", "mode = \"reject\""));
    let cwd = dir.path();

    // Without --config, the upload is checked with the pipeline's config.
    let refused = shell(
        cwd,
        &format!("sluice transform push t {component}"),
        Some(&gw),
    );
    assert_eq!(refused.code, 2);
    assert!(
        refused.stderr.contains("rejected on purpose")
            && refused.stderr.contains("the config of pipeline(s) jc"),
        "{}",
        refused.stderr
    );
    // With a test config it is stored, but the activation is refused.
    let half = shell(
        cwd,
        &format!("sluice transform push t {component} --config mode=trap --activate"),
        Some(&gw),
    );
    assert_eq!(half.code, 2);
    assert!(
        half.stderr
            .contains("stored as version 1; activation refused:"),
        "{}",
        half.stderr
    );
    let versions = json_of(&ok(cwd, "sluice transform versions t", Some(&gw)));
    assert_eq!(
        (
            versions["active"].clone(),
            versions["versions"][0]["version"].clone()
        ),
        (Value::Null, 1.into()),
        "the refused version is stored, not active"
    );

    // A name no pipeline uses: the activation works, with a warning.
    let other = shell(
        cwd,
        &format!("sluice transform push other {component} --config mode=trap --activate"),
        Some(&gw),
    );
    assert_eq!(other.code, 0, "{}", other.stderr);
    assert!(
        other
            .stderr
            .contains("warning: no pipeline of the config uses \"other\""),
        "{}",
        other.stderr
    );

    // A sample that traps is found among the others and named by its line.
    std::fs::write(cwd.join("samples.jsonl"), "\"a\"\n\n\"boom\"\n\"c\"\n").unwrap();
    let sample = shell(
        cwd,
        &format!(
            "sluice transform push other {component} --config mode=trap --samples samples.jsonl"
        ),
        Some(&gw),
    );
    assert!(
        sample.stderr.contains("samples.jsonl:3: sample 2 trapped")
            && sample.stderr.contains("hostile guest: boom"),
        "{}",
        sample.stderr
    );

    // A wrong token is refused, logged with the peer, never echoed.
    let wrong = "wrong-token-do-not-log-7f3a";
    let denied = shell(
        cwd,
        &format!("SLUICE_ADMIN_TOKEN={wrong} sluice transform versions t"),
        Some(&gw),
    );
    assert!(
        denied.code == 2 && denied.stderr.contains("HTTP 401"),
        "{}",
        denied.stderr
    );
    assert_eq!(
        gw.metric("sluice_admin_auth_failures_total{reason=\"wrong\"}")
            .await,
        1.0
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let logs = gw.stop();
    assert!(
        logs.contains("bearer token refused") && logs.contains("peer=\"127.0.0.1:"),
        "{logs}"
    );
    assert!(logs.contains("transform activation refused"), "{logs}");
    assert!(logs.contains("no pipeline of the config uses it"), "{logs}");
    assert!(!logs.contains(wrong), "the wrong token is never logged");
}

#[test]
fn a_pipeline_waiting_for_an_upload_needs_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = gateway_config("my-mapper", "env = \"prod\"")
        .replace(&format!("token = \"{TOKEN}\"\n"), "");
    assert!(!cfg.contains("token ="));
    std::fs::write(dir.path().join("sluice.toml"), &cfg).unwrap();
    let check = shell(dir.path(), "sluice check --config sluice.toml", None);
    assert_eq!(check.code, 2, "{}", check.stderr);
    assert!(
        check.stderr.contains("sluice.toml:")
            && check.stderr.contains("`pipelines.jc.transforms.0.use`")
            && check.stderr.contains("set [admin] token"),
        "{}",
        check.stderr
    );
    // A typo of a built-in is pointed out.
    let typo = gateway_config("ecs-jumpclod", "");
    std::fs::write(dir.path().join("typo.toml"), typo).unwrap();
    let check = shell(dir.path(), "sluice check --config typo.toml", None);
    assert!(
        check
            .stderr
            .contains("did you mean the built-in `ecs-jumpcloud`?"),
        "{}",
        check.stderr
    );
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let input: String = (0..50_000).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.jsonl"), input).unwrap();
    // `{ …; echo "exit=$?" >&2; }` shows sluice's own exit status.
    let run = shell(
        dir.path(),
        "{ sluice transform run add-fields --config x=y --input in.jsonl; echo \"exit=$?\" >&2; } | head -n 1; \
         { sluice transform list; echo \"exit=$?\" >&2; } | head -n 1",
        None,
    );
    assert_eq!(run.stdout.lines().count(), 2, "{}", run.stdout);
    assert_eq!(run.stderr.matches("exit=0").count(), 2, "{}", run.stderr);
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("Broken pipe"),
        "{}",
        run.stderr
    );
}
