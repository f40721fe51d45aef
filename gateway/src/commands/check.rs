//! `sluice check`: everything `sluice run` verifies before it accepts data,
//! without binding a port or opening the spool.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::wasm::{HostConfig, WasmHost};
use std::path::Path;

/// What `check` found: a one-line summary, and warnings that do not stop
/// `sluice run` (each located in the file).
#[derive(Debug)]
pub struct Report {
    /// Listeners, sources, pipelines and sinks counted.
    pub summary: String,
    /// Things to know before starting, such as a pipeline that will wait
    /// for a transform to be uploaded.
    pub warnings: Vec<String>,
    /// The graph, a line each: source → pipeline → transforms (with their
    /// sha256) → sink, then what each sink writes (an example key).
    pub graph: Vec<String>,
}

/// Loads and validates the config, resolves its secrets, and loads every
/// transform (checking `sha256` pins and that each accepts its config).
///
/// # Errors
///
/// The first step that fails, as a [`super::run::RunError`].
pub fn check(path: &Path) -> Result<Report, super::run::RunError> {
    let config = Config::load(path)?;
    let secrets = config.resolve_secrets()?;
    let host = WasmHost::new(HostConfig {
        deadline: std::time::Duration::from_millis(config.limits.transform_deadline_ms),
        memory_cap: (config.limits.transform_memory_mib as usize) << 20,
        max_instances: 16,
        cache_dir: HostConfig::default_cache_dir(),
        count_instructions: false,
    })?;
    let metrics = Metrics::new();
    // Uploaded transforms are looked up where `sluice run` keeps them,
    // without creating anything when the state folder does not exist yet.
    let store = if config.state_dir().join("transforms").is_dir() {
        Some(
            crate::store::Store::open(&config.state_dir())
                .map_err(|e| super::run::RunError::Store(e.to_string()))?,
        )
    } else {
        None
    };
    let mut warnings = Vec::new();
    let mut graph = Vec::new();
    for (name, p) in &config.pipelines {
        let built = Pipeline::build(name, p, &config, &host, metrics.clone(), store.as_ref())?;
        graph.push(pipeline_line(&config, name, p, &built));
        for transform in built.waiting() {
            if secrets.admin_token.is_none() {
                return Err(super::run::nothing_can_upload(&config, name, &transform));
            }
            let similar = crate::builtins::BUILTINS
                .iter()
                .find(|b| edit_distance(b.name, &transform) <= 2)
                .map(|b| format!(" (did you mean the built-in `{}`?)", b.name))
                .unwrap_or_default();
            warnings.push(format!(
                "{}: `{transform}` is not a built-in and not uploaded yet{similar}: sluice run starts, \
                 and pipeline `{name}` waits (its sources answer 503, pollers do not poll) until \
                 `sluice transform push {transform} FILE.wasm --activate`",
                super::run::use_location(&config, name, &transform)
            ));
        }
    }
    let now = chrono::Utc::now();
    for (name, sink) in &config.sinks {
        let mut naming =
            crate::sinks::Naming::of(sink).map_err(|e| super::run::RunError::Sink {
                sink: name.clone(),
                source: crate::sinks::SinkError::Fatal(e.to_string()),
            })?;
        naming.instance = config.cluster.as_ref().map(|c| c.instance_id().into());
        // The route of the first pipeline into it (transforms may set
        // their own per record, such as `jumpcloud.<service>`).
        let (route, source) = config.pipelines.values().find(|p| p.sink == *name).map_or(
            ("ROUTE".to_string(), "SOURCE"),
            |p| {
                (
                    p.route.clone().unwrap_or_else(|| p.source.clone()),
                    p.source.as_str(),
                )
            },
        );
        graph.push(format!(
            "sink {name} writes objects such as {}",
            naming.example(&route, source, now)
        ));
    }
    if let Some(c) = &config.cluster {
        graph.push(format!(
            "cluster: this replica is {:?}; pollers run where they are led, through etcd {} under {} \
             (lease {} s); `--connect` reaches it",
            c.instance_id(),
            c.etcd.join(", "),
            c.prefix,
            c.lease_ttl_secs
        ));
    }
    Ok(Report {
        graph,
        summary: format!(
            "{} listeners, {} sources, {} pipelines, {} sinks",
            config.listeners.len(),
            config.sources.len(),
            config.pipelines.len(),
            config.sinks.len()
        ),
        warnings,
    })
}

/// `source jc (push on https) -> pipeline jc -> ecs-jumpcloud@sha256:1a2b3c4d… -> sink out`.
fn pipeline_line(
    config: &Config,
    name: &str,
    p: &crate::config::PipelineConfig,
    built: &Pipeline,
) -> String {
    use crate::config::SourceConfig;
    let kind = match config.sources.get(&p.source) {
        Some(SourceConfig::Push(c)) => format!("push on {}", c.listener),
        Some(SourceConfig::Jumpcloud(_)) => "JumpCloud poller".to_string(),
        Some(SourceConfig::Jupiterone(_)) => "JupiterOne poller".to_string(),
        None => "?".to_string(),
    };
    let mut parts = vec![
        format!("source {} ({kind})", p.source),
        format!("pipeline {name}"),
    ];
    parts.extend(built.steps().into_iter().map(|(t, sha)| match sha {
        Some(sha) => format!("{t}@sha256:{}…", &sha[..sha.len().min(12)]),
        None => format!("{t} (waiting for its first upload)"),
    }));
    parts.push(format!("sink {}", p.sink));
    let mut line = parts.join(" -> ");
    if let Some(dl) = p.dead_letter_sink.as_deref().filter(|d| *d != p.sink) {
        line.push_str(&format!(" (dead letters -> sink {dl})"));
    }
    line
}

/// Levenshtein distance, to suggest a built-in for a mistyped name.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(super::edit_distance("ecs-jumpcloud", "ecs-jumpcloud"), 0);
        assert_eq!(super::edit_distance("ecs-jumpclod", "ecs-jumpcloud"), 1);
        assert_eq!(super::edit_distance("ecs-jupmcloud", "ecs-jumpcloud"), 2);
        assert_eq!(super::edit_distance("", "abc"), 3);
        assert_eq!(super::edit_distance("my-mapper", "redact"), 8);
    }
}
