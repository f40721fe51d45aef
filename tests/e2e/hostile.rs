//! Test components. The hostile ones must each give a clear error within
//! their limits, fail only what they should, and never crash the host;
//! the others check what the contract carries.

use crate::support::transform_run;
use sluice_test_artifacts::{HOSTILE_COMPONENT, WRONG_WORLD_COMPONENT};

macro_rules! assert_test_exists {
    ($name:ident) => {
        #[allow(
            unused_imports,
            reason = "only checks that a test with this name exists"
        )]
        use self::$name as _;
    };
}
sluice_test_artifacts::foreach_guest!(assert_test_exists);

fn hostile(mode: &str, extra: &[&str], input: &str) -> crate::support::Run {
    let mode = format!("mode={mode}");
    let mut args = vec![HOSTILE_COMPONENT, "--config", mode.as_str()];
    args.extend_from_slice(extra);
    transform_run(&args, input)
}

#[allow(
    clippy::module_inception,
    reason = "foreach_guest! names each module after its guest; this guest is called hostile"
)]
mod hostile {
    use super::hostile;

    #[test]
    fn infinite_loop_hits_the_deadline_and_later_batches_recover() {
        let run = hostile(
            "loop",
            &["--batch", "1", "--deadline-ms", "200"],
            "ok1\nspin\nok2\n",
        );
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert_eq!(
            run.stdout, "ok1\nok2\n",
            "the batches around the bad one go through"
        );
        let errors = run.error_lines();
        assert_eq!(errors.len(), 1, "{}", run.stderr);
        assert_eq!(errors[0]["line"], 2);
        assert_eq!(errors[0]["error"]["kind"], "deadline");
        let msg = errors[0]["error"]["message"].as_str().unwrap();
        assert!(
            msg.starts_with("transform `hostile` exceeded its deadline of 200ms"),
            "{msg}"
        );
    }

    #[test]
    fn memory_bomb_hits_the_cap() {
        let run = hostile("membomb", &["--memory-mib", "16"], "bomb\n");
        assert_eq!(run.code, 1, "{}", run.stderr);
        let errors = run.error_lines();
        assert_eq!(errors[0]["error"]["kind"], "memory-cap", "{}", run.stderr);
        let msg = errors[0]["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("transform `hostile` exceeded its memory cap of 16 MiB"),
            "{msg}"
        );
    }

    #[test]
    fn panic_is_a_trap_with_the_panic_message_and_fails_only_its_record() {
        let run = hostile("trap", &["--batch", "3"], "a\nboom\nc\nd\n");
        assert_eq!(run.code, 1);
        assert_eq!(
            run.stdout, "a\nc\nd\n",
            "the failed batch is retried one record at a time: its good records survive"
        );
        let errors = run.error_lines();
        let lines: Vec<u64> = errors.iter().map(|e| e["line"].as_u64().unwrap()).collect();
        assert_eq!(lines, [2], "only the line that trapped is reported");
        assert_eq!(errors[0]["error"]["kind"], "trap");
        let msg = errors[0]["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with("transform `hostile` trapped: "), "{msg}");
        assert!(
            msg.contains("hostile guest: boom"),
            "the guest's panic message is kept: {msg}"
        );
    }

    #[test]
    fn guest_stderr_is_attached_and_stdout_is_discarded() {
        let run = hostile("stderr", &[], "boom\n");
        assert_eq!(run.code, 1);
        assert_eq!(run.stdout, "", "a guest cannot write to our stdout");
        let msg = run.error_lines()[0]["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(msg.contains("about to fail"), "{msg}");
    }

    #[test]
    fn loop_during_create_is_exit_2_with_deadline() {
        let run = hostile("init-loop", &["--deadline-ms", "200"], "x\n");
        run.expect_failure(2, "transform `hostile` exceeded its deadline of 200ms");
    }

    #[test]
    fn trap_during_create_is_exit_2() {
        let run = hostile("init-trap", &[], "x\n");
        run.expect_failure(2, "transform `hostile` trapped");
        assert!(run.stderr.contains("trap during create"), "{}", run.stderr);
    }

    #[test]
    fn config_rejected_by_guest_is_exit_2() {
        let run = hostile("reject", &[], "x\n");
        run.expect_failure(
            2,
            "rejected its configuration: key `mode`: rejected on purpose",
        );
    }

    /// Each probe's answer, by what it probed.
    fn probes(input: &str) -> (crate::support::Run, Vec<serde_json::Value>) {
        let run = hostile("probe", &["--batch", "1"], input);
        let answers = run
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        (run, answers)
    }

    #[test]
    fn no_filesystem_environment_network_or_clock_inside_the_sandbox() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        tcp.set_nonblocking(true).unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_nonblocking(true).unwrap();
        let input = format!(
            "fs\nenv\ntcp:{}\nudp:{}\ndns:localhost\nclock\n",
            tcp.local_addr().unwrap(),
            udp.local_addr().unwrap()
        );
        // The host has an environment; the guest must not see it.
        assert!(std::env::vars_os().count() > 0);
        let (run, answers) = probes(&input);
        assert_eq!((run.code, answers.len()), (0, 6), "{}", run.stderr);
        let [fs, env, tcp_probe, udp_probe, dns, clock] = &answers[..] else {
            unreachable!()
        };
        for what in ["read", "list", "create"] {
            assert_eq!(fs[what]["ok"], false, "filesystem {what}: {fs}");
        }
        assert_eq!(
            (&env["vars"], &env["args"]),
            (&0.into(), &0.into()),
            "{env}"
        );
        for socket in [tcp_probe, udp_probe] {
            assert_eq!(socket["ok"], false, "{socket}");
            let error = socket["error"].as_str().unwrap_or_default();
            assert!(error.starts_with("Permission denied"), "{socket}");
        }
        assert_eq!(dns["ok"], false, "{dns}");
        assert_eq!(
            (&clock["wall_ns"], &clock["elapsed_ns"]),
            (&0.into(), &0.into()),
            "both clocks read zero: {clock}"
        );
        // And from outside: nothing reached our sockets.
        assert_eq!(
            tcp.accept().map(|_| ()).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock,
            "no connection arrived"
        );
        let mut buf = [0u8; 64];
        assert_eq!(
            udp.recv_from(&mut buf).map(|_| ()).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock,
            "no datagram arrived"
        );
        assert!(
            !std::path::Path::new("sluice-probe").exists(),
            "no file was created in the working directory"
        );
    }

    #[test]
    fn a_guest_that_floods_stderr_keeps_its_panic_message_and_writing_never_fails() {
        let (run, _) = probes("flood\n");
        assert_eq!(run.code, 1, "{}", run.stderr);
        let msg = run.error_lines()[0]["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        // 64 lines of 1 KiB went before the panic; the host keeps a bounded
        // tail, so the panic message, written last, is what is attached.
        assert!(
            msg.contains("hostile guest: flooded stderr, 65536 bytes accepted"),
            "{msg}"
        );
        assert!(!msg.contains("0062"), "only the tail is attached: {msg}");
        assert!(msg.len() < 2048, "{} bytes: {msg}", msg.len());
    }

    #[test]
    fn well_behaved_records_pass() {
        let run = hostile("trap", &[], "a\nb\n");
        assert_eq!(
            (run.code, run.stdout.as_str()),
            (0, "a\nb\n"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn wrong_world() {
    let run = transform_run(&[WRONG_WORLD_COMPONENT], "x\n");
    run.expect_failure(
        2,
        "transform `wrong_world`: does not implement `sluice:transform/transformer@0.3.0` (nor the older `@0.2.0` or `@0.1.0`, which Sluice still runs)",
    );
}

#[test]
fn smuggler() {
    let run = transform_run(&[sluice_test_artifacts::SMUGGLER_COMPONENT], "x\n");
    run.expect_failure(
        2,
        "transform `smuggler`: imports something Sluice does not provide",
    );
    assert!(run.stderr.contains("test:smuggler/dial"), "{}", run.stderr);
}

/// The two tagger guests (used by the admin API's hot-swap tests): each
/// tags records with its own letter.
mod tagger_a {
    #[test]
    fn tags_records_a() {
        let run = crate::support::transform_run(
            &[sluice_test_artifacts::TAGGER_A_COMPONENT],
            "{\"x\":1}\n",
        );
        assert_eq!(run.stdout, "{\"x\":1,\"tag\":\"a\"}\n", "{}", run.stderr);
    }
}

mod tagger_b {
    #[test]
    fn tags_records_b() {
        let run = crate::support::transform_run(
            &[sluice_test_artifacts::TAGGER_B_COMPONENT],
            "{\"x\":1}\n",
        );
        assert_eq!(run.stdout, "{\"x\":1,\"tag\":\"b\"}\n", "{}", run.stderr);
    }
}

/// The guest that does nothing: what goes in comes out, byte for byte and
/// in order, however a batch is split into calls.
mod passthrough {
    use std::fmt::Write as _;

    #[test]
    fn records_cross_the_contract_unchanged_and_in_order() {
        // Lines that are not JSON, non-ASCII text, quotes and backslashes,
        // and one long line; 300 of them, so that a batch of 150 goes in
        // calls of 64, 64 and 22 and the order across calls is checked.
        let mut input = String::new();
        for i in 0..300 {
            match i % 5 {
                0 => writeln!(input, "{{\"i\":{i}}}"),
                1 => writeln!(input, "not json {i} \"quoted\" \\ back"),
                2 => writeln!(input, "ünïcödé ✓ {i} 🦀"),
                3 => writeln!(input, "{i}{}", "x".repeat(100_000)),
                _ => writeln!(input, "[{i}, null]"),
            }
            .unwrap();
        }
        for batch in ["1", "64", "150"] {
            let run = crate::support::transform_run(
                &[
                    sluice_test_artifacts::PASSTHROUGH_COMPONENT,
                    "--batch",
                    batch,
                ],
                &input,
            );
            assert_eq!(run.code, 0, "batch {batch}: {}", run.stderr);
            assert!(
                run.stdout == input,
                "batch {batch}: {} bytes out for {} in",
                run.stdout.len(),
                input.len()
            );
        }
    }
}

mod probe {
    use crate::support::transform_run;
    use sluice_test_artifacts::PROBE_COMPONENT;

    /// Components built against the older contracts,
    /// `sluice:transform@0.1.0` and `@0.2.0`, by the last SDK of each: the
    /// probe guest as it was then (see `tests/fixtures/components/README.md`).
    const PROBE_0_1: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/components/probe-0.1.0.wasm"
    );
    const PROBE_0_2: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/components/probe-0.2.0.wasm"
    );

    /// The output lines with the receive time (the clock of each run)
    /// taken out.
    fn without_clock(stdout: &str) -> Vec<String> {
        stdout
            .lines()
            .map(|l| match (l.find(" received_at=\""), l.find(" route=")) {
                (Some(a), Some(b)) => format!("{}{}", &l[..a], &l[b..]),
                _ => l.to_string(),
            })
            .collect()
    }

    /// The real binary runs 0.1.0 and 0.2.0 components unchanged, and they
    /// answer exactly as the same guest built against 0.3.0: outputs,
    /// order, errors, across calls (batch 2 over 6 records).
    #[test]
    fn components_of_older_contracts_still_run_and_answer_alike() {
        let input = "hello\nfail\nnone\nmany 3\n{\"a\":\"ü \\\" \\\\\"}\nlast\n";
        let args = ["--batch", "2", "--source", "probe-src"];
        let new = transform_run(&[&[PROBE_COMPONENT][..], &args].concat(), input);
        assert_eq!(new.code, 1, "a failed record exits 1: {}", new.stderr);
        for path in [PROBE_0_2, PROBE_0_1] {
            let old = transform_run(&[&[path][..], &args].concat(), input);
            assert_eq!(old.code, 1, "a failed record exits 1: {}", old.stderr);
            assert_eq!(without_clock(&new.stdout), without_clock(&old.stdout));
            assert_eq!(new.stderr, old.stderr);
        }
        assert_eq!(
            without_clock(&new.stdout),
            [
                r#"data="hello" source="probe-src" route=None metadata=[]"#,
                "0 of 3",
                "1 of 3",
                "2 of 3",
                r#"data="{\"a\":\"ü \\\" \\\\\"}" source="probe-src" route=None metadata=[]"#,
                r#"data="last" source="probe-src" route=None metadata=[]"#,
            ]
        );
        assert!(
            new.stderr
                .contains(r#"{"line":2,"error":{"kind":"unsupported","message":"asked to fail"}}"#),
            "{}",
            new.stderr
        );
    }

    /// A guest's `log` call reaches the gateway's log, tagged with the
    /// transform's name, in every contract version (each has its own `log`
    /// import).
    #[test]
    fn every_contract_version_logs_through_the_host() {
        for (path, name) in [
            (PROBE_COMPONENT, "probe"),
            (PROBE_0_2, "probe-0.2.0"),
            (PROBE_0_1, "probe-0.1.0"),
        ] {
            let run = transform_run(&[path], "log a line from the guest\n");
            assert_eq!(run.code, 0, "{}", run.stderr);
            let line = run
                .stderr
                .lines()
                .find(|l| l.contains("a line from the guest"))
                .unwrap_or_else(|| panic!("{name}: no log line in {:?}", run.stderr));
            assert!(line.contains("WARN"), "{line}");
            assert!(line.contains(name), "{line}");
        }
    }
}
