//! Running the `sluice` binary from tests.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The compiled-component cache shared by the tests of this binary, so each
/// component is compiled once per `cargo test`, not once per test.
pub fn shared_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-wasm-cache")
}

/// A `sluice` command with logging kept quiet and the shared cache.
pub fn sluice() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.env("SLUICE_CACHE_DIR", shared_cache())
        .env("SLUICE_LOG", "warn");
    cmd
}

/// What a run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Wall time of the run (diagnostics in assertion messages).
    #[allow(dead_code, reason = "read by tests when debugging")]
    pub elapsed: Duration,
}

impl Run {
    /// Asserts the exit status and that stderr says `needle`.
    #[track_caller]
    pub fn expect_failure(&self, code: i32, needle: &str) {
        assert_eq!(self.code, code, "exit status; stderr: {}", self.stderr);
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {}",
            self.stderr
        );
    }

    /// The JSON error lines on stderr.
    pub fn error_lines(&self) -> Vec<serde_json::Value> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad error line {l:?}: {e}"))
            })
            .collect()
    }
}

/// Runs `cmd` with `stdin`, killing it after `limit` (a hang is a failure,
/// never a stuck test run).
pub fn run_with(mut cmd: Command, stdin: &str, limit: Duration) -> Run {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let input = stdin.to_string();
    let mut child_stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = child_stdin.write_all(input.as_bytes());
    });
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            if std::fs::metadata(format!("/proc/{pid}")).is_err() {
                return false;
            }
        }
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        true
    });
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("wait for sluice");
    writer.join().unwrap();
    let elapsed = start.elapsed();
    let _ = watchdog; // it exits on its own once the process is gone
    assert!(
        elapsed < limit,
        "sluice did not finish within {limit:?}; stderr: {}",
        String::from_utf8_lossy(&stderr)
    );
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8(stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        elapsed,
    }
}

/// `sluice transform run <args…>` over `stdin`, 60 s at most.
pub fn transform_run(args: &[&str], stdin: &str) -> Run {
    let mut cmd = sluice();
    cmd.args(["transform", "run"]).args(args);
    run_with(cmd, stdin, Duration::from_secs(60))
}

/// `promtool`, as `scripts/setup.sh` installs it (from Debian's
/// `prometheus` package) into the target folder, or from `PATH`.
pub fn promtool() -> PathBuf {
    let local = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../tools/promtool");
    if local.is_file() {
        local
    } else {
        PathBuf::from("promtool")
    }
}

/// Runs `promtool check metrics` on a scrape; fails the test with what it
/// said unless it passes.
#[allow(dead_code, reason = "the benchmarks include this file too")]
pub fn promtool_check(scrape: &str) {
    let promtool = promtool();
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (scripts/setup.sh installs it): {e}",
                promtool.display()
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
