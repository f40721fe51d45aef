use super::*;

const GOOD: &str = r#"
state_dir = "state"

[listeners.https]
address = "127.0.0.1:0"
tls = { self_signed = true }

[sources.jc]
type = "push"
listener = "https"
auth = { type = "bearer", token = "${env:SLUICE_TEST_TOKEN}" }

[pipelines.jumpcloud]
source = "jc"
sink = "out"
transforms = [{ use = "ecs-jumpcloud", config = { preserve_original_event = true } }]

[sinks.out]
type = "local"
path = "out"
compression = "gzip"
"#;

fn parse(text: &str) -> Result<Config, Vec<ConfigIssue>> {
    let path = Path::new("sluice.toml");
    let config = Config::parse(path, text).map_err(|e| match e {
        ConfigError::Invalid(i) => i,
        ConfigError::Read { .. } => unreachable!(),
    })?;
    let issues = config.validate();
    if issues.is_empty() {
        Ok(config)
    } else {
        Err(locate_all(path, text, issues))
    }
}

fn one_issue(text: &str) -> ConfigIssue {
    let mut issues = parse(text).expect_err("should be invalid");
    assert_eq!(issues.len(), 1, "{issues:?}");
    issues.remove(0)
}

#[test]
fn good_config_parses() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.pipelines["jumpcloud"].transforms[0].uses, "ecs-jumpcloud");
    assert_eq!(
        config_value_string(
            &c.pipelines["jumpcloud"].transforms[0].config["preserve_original_event"]
        )
        .as_deref(),
        Some("true")
    );
    assert!(
        matches!(&c.sources["jc"], SourceConfig::Push(p) if matches!(&p.auth, AuthConfig::Bearer { token: Secret::Env(n) } if n == "SLUICE_TEST_TOKEN"))
    );
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let text = GOOD.replace("compression = \"gzip\"", "compresion = \"gzip\"");
    let i = one_issue(&text);
    assert_eq!(i.key, "sinks.out.compresion", "{i}");
    assert_eq!(i.line, 21, "{i}");
    assert!(i.message.contains("unknown field `compresion`"), "{i}");
    assert!(i.to_string().starts_with("sluice.toml:21:"), "{i}");
}

#[test]
fn unknown_key_inside_a_tagged_source() {
    let text = GOOD.replace(
        "listener = \"https\"",
        "listener = \"https\"\nmax_bodybytes = 5",
    );
    let i = one_issue(&text);
    assert_eq!(i.key, "sources.jc.max_bodybytes", "{i}");
    assert_eq!(i.line, 11, "{i}");
}

#[test]
fn wrong_type_is_located() {
    let text = GOOD.replace("path = \"out\"", "path = 5");
    let i = one_issue(&text);
    assert_eq!(i.line, 20, "{i}");
    assert_eq!(i.key, "sinks.out.path", "{i}");
}

#[test]
fn dangling_references_and_bad_values() {
    let text = GOOD
        .replace("sink = \"out\"", "sink = \"nowhere\"")
        .replace("path = \"out\"", "path = \"out\"\nkey = \"../{route}\"");
    let issues = parse(&text).unwrap_err();
    let keys: Vec<_> = issues.iter().map(|i| (i.key.as_str(), i.line)).collect();
    assert!(
        keys.contains(&("pipelines.jumpcloud.sink", 15)),
        "{issues:?}"
    );
    assert!(keys.contains(&("sinks.out.key", 21)), "{issues:?}");
    let sink = issues
        .iter()
        .find(|i| i.key == "pipelines.jumpcloud.sink")
        .unwrap();
    assert!(
        sink.message
            .contains("no sink named \"nowhere\" (sinks: out)"),
        "{sink}"
    );
}

#[test]
fn pins_tls_and_orphan_sources() {
    let text = GOOD
        .replace(
            "{ use = \"ecs-jumpcloud\",",
            "{ use = \"ecs-jumpcloud\", sha256 = \"abc\",",
        )
        .replace("tls = { self_signed = true }", "tls = { cert = \"c.pem\" }");
    let issues = parse(&text).unwrap_err();
    let keys: Vec<_> = issues.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "listeners.https.tls",
            "pipelines.jumpcloud.transforms.0.sha256"
        ],
        "{issues:?}"
    );
    let text = GOOD.replace("source = \"jc\"", "source = \"other\"");
    let issues = parse(&text).unwrap_err();
    assert!(
        issues
            .iter()
            .any(|i| i.key == "sources.jc" && i.message.contains("no pipeline reads")),
        "{issues:?}"
    );
}

#[test]
fn syntax_error_has_a_line() {
    let i = one_issue("state_dir = \"s\"\n[listeners\n");
    assert_eq!(i.line, 2, "{i}");
}

#[test]
fn secrets_resolve_or_name_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(
        &path,
        GOOD.replace("SLUICE_TEST_TOKEN", "SLUICE_TEST_SURELY_UNSET_TOKEN"),
    )
    .unwrap();
    let config = Config::load(&path).unwrap();
    let e = config.resolve_secrets().unwrap_err().to_string();
    assert!(e.contains("sources.jc.auth.token"), "{e}");
    assert!(
        e.contains("SLUICE_TEST_SURELY_UNSET_TOKEN is not set"),
        "{e}"
    );
    assert!(e.contains(":11:"), "{e}");
}

#[test]
fn cluster_section_is_checked_where_it_is_written() {
    let with = |section: &str| format!("{GOOD}\n[cluster]\n{section}");
    let ok = parse(&with(
        "etcd = [\"https://e1:2379\", \"https://e2:2379\"]\ntls = { ca = \"ca.pem\" }\nprefix = \"/sluice/prod\"\ninstance_id = \"gw-1\"",
    ))
    .unwrap();
    let c = ok.cluster.unwrap();
    assert_eq!((c.instance_id().as_str(), c.lease_ttl_secs), ("gw-1", 10));
    let issues = parse(&with(
        "etcd = [\"https://e1:2379\", \"http://e2:2379\"]\ntls = { ca = \"ca.pem\", cert = \"c.pem\" }\nprefix = \"sluice/\"\ninstance_id = \"gw 1\"\nlease_ttl_secs = 1",
    ))
    .unwrap_err();
    let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "cluster.etcd.1",
            "cluster.prefix",
            "cluster.instance_id",
            "cluster.lease_ttl_secs",
            "cluster.tls"
        ],
        "{issues:#?}"
    );
    assert!(issues[0].message.contains("must be an https:// URL"));
    // Lines point into the [cluster] table.
    assert!(
        issues.iter().all(|i| i.line > GOOD.lines().count()),
        "{issues:#?}"
    );
    // Unknown keys are refused.
    let unknown = parse(&with(
        "etcd = [\"https://e1:2379\"]\ntls = { ca = \"ca.pem\" }\nprefix = \"/s\"\nleader_ttl = 3",
    ))
    .unwrap_err();
    assert!(
        unknown[0].message.contains("unknown field `leader_ttl`"),
        "{unknown:#?}"
    );
}
