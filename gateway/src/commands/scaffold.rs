//! `sluice transform new NAME`: a transform crate that tests, builds and
//! runs unchanged, so a newcomer starts from something that works.
//!
//! The crate is its own workspace (`[workspace]` in its manifest), so it
//! can be created anywhere, even inside another cargo workspace. It depends
//! on the SDK by path when this binary was built from a checkout that still
//! exists (the SDK is then the exact one this gateway speaks), by git or
//! version when asked, and by version from the registry otherwise.

use std::path::{Path, PathBuf};

/// Where the scaffold takes `sluice-sdk` from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// A local folder holding the SDK's `Cargo.toml`.
    Path(PathBuf),
    /// A git repository (the SDK is found in it by name).
    Git(String),
    /// A registry version requirement.
    Version(String),
}

impl SdkSource {
    /// The default: the SDK of the checkout this binary was built from, if
    /// it is still there, else this release's version from the registry.
    pub fn default_for_this_build() -> Self {
        let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
        match checkout.join("Cargo.toml").is_file() {
            true => SdkSource::Path(checkout.canonicalize().unwrap_or(checkout)),
            false => SdkSource::Version(env!("CARGO_PKG_VERSION").to_string()),
        }
    }

    fn dependency(&self) -> String {
        match self {
            SdkSource::Path(p) => {
                format!("sluice-sdk = {{ path = {:?} }}", p.display().to_string())
            }
            SdkSource::Git(url) => format!("sluice-sdk = {{ git = {url:?} }}"),
            SdkSource::Version(v) => format!("sluice-sdk = {v:?}"),
        }
    }
}

/// Why a crate could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name is not usable as both a crate and a transform name.
    #[error(
        "{0:?} cannot name a transform: use 1-64 lower-case letters, digits, `-` or `_`, starting with a letter"
    )]
    BadName(String),
    /// The folder exists.
    #[error("{} already exists; choose another name or folder", .0.display())]
    Exists(PathBuf),
    /// Writing failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What was created.
#[derive(Debug)]
pub struct Scaffold {
    /// The crate's folder.
    pub dir: PathBuf,
    /// Where `cargo build --release --target wasm32-wasip2` puts the
    /// component, relative to `dir`.
    pub component: String,
}

/// Creates crate `name` in `parent/name`.
///
/// # Errors
///
/// [`ScaffoldError`]; nothing is left behind when writing fails half way.
pub fn create(parent: &Path, name: &str, sdk: &SdkSource) -> Result<Scaffold, ScaffoldError> {
    let valid = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        return Err(ScaffoldError::BadName(name.into()));
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir));
    }
    let lib = name.replace('-', "_");
    let component = format!("target/wasm32-wasip2/release/{lib}.wasm");
    let type_name: String = name
        .split(['-', '_'])
        .map(|part| {
            let mut c = part.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let fill = |template: &str| {
        template
            .replace("{name}", name)
            .replace("{lib}", &lib)
            .replace("{Type}", &type_name)
            .replace("{component}", &component)
            .replace("{sdk}", &sdk.dependency())
    };
    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("src/lib.rs", fill(LIB_RS)),
        ("tests/samples.rs", fill(TEST_RS)),
        ("samples.jsonl", SAMPLES.to_string()),
        ("README.md", fill(README)),
        (".gitignore", "/target\n".to_string()),
        (".cargo/config.toml", CARGO_CONFIG.to_string()),
    ];
    let written = (|| {
        for (file, text) in &files {
            let path = dir.join(file);
            if let Some(folder) = path.parent() {
                std::fs::create_dir_all(folder).map_err(|source| ScaffoldError::Write {
                    path: folder.to_path_buf(),
                    source,
                })?;
            }
            std::fs::write(&path, text).map_err(|source| ScaffoldError::Write { path, source })?;
        }
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    Ok(Scaffold { dir, component })
}

const CARGO_TOML: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
rust-version = "1.95"
publish = false

[lib]
# cdylib: the WebAssembly component sluice runs; rlib: the native tests.
crate-type = ["cdylib", "rlib"]

[dependencies]
{sdk}

# Its own workspace, so the crate builds wherever it is created.
[workspace]

# Small, fast components (what sluice's built-in transforms use). A panic
# in a transform is a trap either way; sluice reports its message.
[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"
strip = true
"#;

const CARGO_CONFIG: &str = r#"# The component may use WebAssembly's 128-bit SIMD, which sluice runs; the
# SDK's string escaping is faster with it.
[target.wasm32-wasip2]
rustflags = ["-C", "target-feature=+simd128"]
"#;

const LIB_RS: &str = r#"//! `{name}`: a Sluice transform. Edit `process`; `cargo test` runs it
//! natively, `cargo build --release --target wasm32-wasip2` builds the
//! component sluice runs.

use sluice_sdk::serde_json::Value;
use sluice_sdk::{Config, ConfigError, Emit, Record, RecordError, Transform, json};

/// Adds `labels.env` (the `env` config key) to every JSON object, and
/// copies the initiating user's email to ECS `user.email`.
pub struct {Type} {
    env: Value,
}

impl Transform for {Type} {
    fn new(config: Config) -> Result<Self, ConfigError> {
        config.deny_unknown(&["env"])?;
        Ok(Self {
            env: config.require("env")?.into(),
        })
    }

    fn process(&mut self, record: Record, out: &mut Emit) -> Result<(), RecordError> {
        // Not a JSON object: an `invalid-input` error, and sluice
        // dead-letters this record alone with its original bytes.
        let mut doc = Value::Object(record.json_object()?);
        json::set(&mut doc, "labels.env", self.env.clone())?;
        if let Some(email) = json::get(&doc, "initiated_by.email").cloned() {
            json::set(&mut doc, "user.email", email)?;
        }
        out.emit_json(&doc);
        Ok(())
    }
}

sluice_sdk::export!({Type});
"#;

const TEST_RS: &str = r#"//! Runs `samples.jsonl` through the transform natively, with the same
//! batch semantics as the component inside sluice.

use sluice_sdk::testing::Harness;
use {lib}::{Type};

#[test]
fn every_sample_gets_the_label_and_the_user_email() {
    let mut h = Harness::<{Type}>::new(&[("env", "prod")]).unwrap();
    let samples = include_str!("../samples.jsonl");
    for line in samples.lines().filter(|l| !l.trim().is_empty()) {
        let docs = h.run_json(&sluice_sdk::serde_json::from_str(line).unwrap()).unwrap();
        assert_eq!(docs.len(), 1, "one output per input");
        assert_eq!(docs[0]["labels"]["env"], "prod");
        assert_eq!(docs[0]["user"]["email"], docs[0]["initiated_by"]["email"]);
    }
}

#[test]
fn a_record_that_is_not_an_object_is_an_error_and_env_is_required() {
    let mut h = Harness::<{Type}>::new(&[("env", "prod")]).unwrap();
    assert!(h.run_line("[1, 2]").is_err());
    assert!(Harness::<{Type}>::new(&[]).is_err(), "`env` is required");
}
"#;

const SAMPLES: &str = include_str!("../../../examples/jumpcloud-events.jsonl");

const README: &str = r#"# {name}

A Sluice transform, built with the `sluice-sdk` crate (its README is the
authoring guide: the `Transform` trait, the JSON helpers, the test harness,
writing a fast transform).

The four commands (the WebAssembly target once: `rustup target add wasm32-wasip2`):

```sh
cargo test                                         # native tests, no WebAssembly
cargo build --release --target wasm32-wasip2       # the component: {component}
sluice transform run {component} --config env=prod --input samples.jsonl
sluice transform push {name} {component} --config env=prod --samples samples.jsonl --activate
```

`push` uploads to a running gateway (`SLUICE_ADMIN_URL`, default
`http://127.0.0.1:9464`, and the token in `SLUICE_ADMIN_TOKEN`). A pipeline
runs it with `use = "{name}"`; it may name it before the first upload (its
sources answer 503 until then).
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fill_every_placeholder_and_bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = SdkSource::Version("0.1.0".into());
        let made = create(dir.path(), "my-mapper", &sdk).unwrap();
        assert_eq!(
            made.component,
            "target/wasm32-wasip2/release/my_mapper.wasm"
        );
        for file in ["Cargo.toml", "src/lib.rs", "tests/samples.rs", "README.md"] {
            let text = std::fs::read_to_string(made.dir.join(file)).unwrap();
            assert!(
                !text.contains("{name}") && !text.contains("{Type}") && !text.contains("{lib}"),
                "{file}"
            );
        }
        let lib = std::fs::read_to_string(made.dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("pub struct MyMapper"));
        let manifest = std::fs::read_to_string(made.dir.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("sluice-sdk = \"0.1.0\""));
        let cargo_config = std::fs::read_to_string(made.dir.join(".cargo/config.toml")).unwrap();
        assert!(cargo_config.contains("+simd128"), "{cargo_config}");
        assert!(matches!(
            create(dir.path(), "my-mapper", &sdk),
            Err(ScaffoldError::Exists(_))
        ));
        for bad in ["", "My", "a/b", "1x", "a b", "x.wasm"] {
            assert!(
                matches!(
                    create(dir.path(), bad, &sdk),
                    Err(ScaffoldError::BadName(_))
                ),
                "{bad:?}"
            );
        }
    }
}
