//! The `sluice` command line. Glue only: parse arguments, set up logging,
//! call into the library, map the outcome to an exit status:
//! 0 success, 1 some records failed, 2 usage, configuration or component
//! error.

use clap::{Args, Parser, Subcommand};
use sluice::commands::transform::{self, RunOptions};
use sluice::encoding::Encoding;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "Edge gateway for security and IoT telemetry"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax); also read from SLUICE_LOG.
    #[arg(long, global = true, env = "SLUICE_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway: listeners, pipelines, spool and sinks.
    Run {
        /// The config file.
        #[arg(long, short = 'c', env = "SLUICE_CONFIG")]
        config: PathBuf,
    },
    /// Check a config file (syntax, references, secrets, transform pins)
    /// without starting anything.
    Check {
        /// The config file.
        #[arg(long, short = 'c', env = "SLUICE_CONFIG")]
        config: PathBuf,
        /// Also reach the etcd cluster of `[cluster]` (TLS, credentials,
        /// quorum) and report it.
        #[arg(long)]
        connect: bool,
    },
    /// Run one poller source over a historic window, with a progress line,
    /// through its pipelines to its sinks. Beside a running gateway on the
    /// same state folder it runs inside that gateway (admin API and token).
    Backfill {
        /// The config file.
        #[arg(long, short = 'c', env = "SLUICE_CONFIG")]
        config: PathBuf,
        /// The source (a jumpcloud or jupiterone source of the config).
        #[arg(long)]
        source: String,
        /// Window start, RFC 3339 (inclusive).
        #[arg(long)]
        since: String,
        /// Window end, RFC 3339 (exclusive; default: now minus the source's lag).
        #[arg(long)]
        until: Option<String>,
    },
    /// Work with S3 sinks.
    #[command(subcommand)]
    S3(S3Command),
    /// Inspect the spool, or drop the data of a sink removed from the
    /// config (not while `sluice run` holds the state folder).
    #[command(subcommand)]
    Spool(SpoolCommand),
    /// Print the least-privilege S3 bucket policy for sluice.
    Policy {
        /// The bucket.
        #[arg(long)]
        bucket: String,
        /// The IAM principal (role or user ARN) sluice runs as.
        #[arg(long)]
        principal: String,
        /// Limit writes to this key prefix.
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Work with transform components.
    #[command(subcommand)]
    Transform(TransformCommand),
}

#[derive(Subcommand, Debug)]
enum S3Command {
    /// Write each S3 sink's connection-test object (as J1DS does) and report
    /// success or the exact S3 error.
    Test {
        /// The config file.
        #[arg(long, short = 'c', env = "SLUICE_CONFIG")]
        config: PathBuf,
        /// Only this sink.
        #[arg(long)]
        sink: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum SpoolCommand {
    /// Records and bytes spooled per sink, configured or not.
    List {
        /// The config file.
        #[arg(long, short = 'c', env = "SLUICE_CONFIG")]
        config: PathBuf,
    },
    /// Delete the spooled records of a sink that is no longer configured.
    Drop {
        /// The config file.
        #[arg(long, short = 'c', env = "SLUICE_CONFIG")]
        config: PathBuf,
        /// The sink whose records go.
        #[arg(long)]
        sink: String,
    },
}

#[derive(Subcommand, Debug)]
enum TransformCommand {
    /// Create a transform crate NAME in the current folder: a transform
    /// that compiles, a native test, sample records and a README.
    New {
        /// The transform (and crate) name, such as `my-mapper`.
        name: String,
        /// Create it in this folder instead of the current one.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Depend on the SDK in this folder.
        #[arg(long, conflicts_with_all = ["sdk_git", "sdk_version"])]
        sdk_path: Option<PathBuf>,
        /// Depend on the SDK from this git repository.
        #[arg(long, conflicts_with = "sdk_version")]
        sdk_git: Option<String>,
        /// Depend on this version of the SDK from the registry.
        #[arg(long)]
        sdk_version: Option<String>,
    },
    /// List the built-in transforms with their sha256.
    List,
    /// Run newline-delimited records through a transform.
    Run(RunArgs),
    /// Upload a component to a running gateway as the next version of NAME.
    Push {
        /// The transform name.
        name: String,
        /// The .wasm component.
        file: PathBuf,
        /// Test config the component must accept, repeatable.
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE", value_parser = parse_key_value)]
        config: Vec<(String, String)>,
        /// A JSON lines file of sample records the component must process.
        #[arg(long)]
        samples: Option<PathBuf>,
        /// Make the new version active right away (hot swap).
        #[arg(long)]
        activate: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List NAME's versions on a running gateway.
    Versions {
        /// The transform name.
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Activate a version (a number, or sha256:HEX) of NAME: hot swap, or rollback.
    Activate {
        /// The transform name.
        name: String,
        /// The version number, or sha256:HEX (a unique prefix of 4 or more digits will do).
        version: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete an inactive version of NAME from a running gateway.
    Delete {
        /// The transform name.
        name: String,
        /// The version number.
        version: u32,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Args, Debug)]
struct AdminArgs {
    /// The gateway's admin listener.
    #[arg(
        long,
        env = "SLUICE_ADMIN_URL",
        default_value = "http://127.0.0.1:9464"
    )]
    admin_url: String,
    /// The admin API's bearer token (the gateway's `[admin] token`).
    #[arg(long, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Extra CA (PEM) for an https admin listener.
    #[arg(long)]
    admin_ca: Option<PathBuf>,
}

impl AdminArgs {
    fn target(
        &self,
    ) -> Result<
        sluice::commands::admin_client::AdminTarget,
        sluice::commands::admin_client::AdminError,
    > {
        let token = self.token.clone().ok_or_else(|| {
            sluice::commands::admin_client::AdminError::Client(
                "no admin token: set SLUICE_ADMIN_TOKEN (or pass --token) to the gateway's [admin] token".into(),
            )
        })?;
        Ok(sluice::commands::admin_client::AdminTarget {
            url: self.admin_url.clone(),
            token,
            ca_file: self.admin_ca.clone(),
        })
    }
}

#[derive(Args, Debug)]
struct RunArgs {
    /// A built-in name (see `sluice transform list`) or a path to a .wasm component.
    transform: String,
    /// Transform configuration, repeatable.
    #[arg(long = "config", short = 'c', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    config: Vec<(String, String)>,
    /// Read records from this file instead of stdin.
    #[arg(long, short = 'i')]
    input: Option<PathBuf>,
    /// Output encoding.
    #[arg(long, short = 'o', value_enum, default_value_t = Encoding::Jsonl)]
    output: Encoding,
    /// Records per batch into the component (passed in calls of at most 64).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    batch: u32,
    /// The `source` name given to records.
    #[arg(long, default_value = "cli")]
    source: String,
    /// Deadline per batch, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    deadline_ms: u64,
    /// Memory cap per instance, in MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    memory_mib: u64,
    /// Where compiled components are cached (default: $SLUICE_CACHE_DIR, or ~/.cache/sluice).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Do not use the compiled-component cache.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log);
    match cli.command {
        Command::Transform(TransformCommand::New {
            name,
            dir,
            sdk_path,
            sdk_git,
            sdk_version,
        }) => new_transform(&name, &dir, sdk_path, sdk_git, sdk_version),
        Command::Transform(TransformCommand::List) => {
            let stdout = std::io::stdout();
            match transform::list(&mut stdout.lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => fail(&anyhow::Error::from(e).context("cannot write the list")),
            }
        }
        Command::Transform(TransformCommand::Run(args)) => run_transform(args),
        Command::Transform(TransformCommand::Push {
            name,
            file,
            config,
            samples,
            activate,
            admin,
        }) => admin_call(async move {
            admin
                .target()?
                .push(&name, &file, &config, samples.as_deref(), activate)
                .await
        }),
        Command::Transform(TransformCommand::Versions { name, admin }) => {
            admin_call(async move { admin.target()?.versions(&name).await })
        }
        Command::Transform(TransformCommand::Activate {
            name,
            version,
            admin,
        }) => admin_call(async move { admin.target()?.activate(&name, &version).await }),
        Command::Transform(TransformCommand::Delete {
            name,
            version,
            admin,
        }) => admin_call(async move { admin.target()?.delete(&name, version).await }),
        Command::Run { config } => run_gateway(&config),
        Command::Backfill {
            config,
            source,
            since,
            until,
        } => run_backfill(&config, &source, &since, until.as_deref()),
        Command::Policy {
            bucket,
            principal,
            prefix,
        } => {
            let p = sluice::commands::s3::policy(&bucket, &principal, prefix.as_deref());
            say(serde_json::to_string_pretty(&p).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Command::S3(S3Command::Test { config, sink }) => s3_test(&config, sink.as_deref()),
        Command::Spool(cmd) => spool_command(cmd),
        Command::Check { config, connect } => match sluice::commands::check::check(&config) {
            Ok(report) => {
                for warning in &report.warnings {
                    eprintln!("sluice: warning: {warning}");
                }
                say(format_args!(
                    "{}: ok ({})",
                    config.display(),
                    report.summary
                ));
                for line in &report.graph {
                    say(format_args!("  {line}"));
                }
                if connect {
                    return check_connect(&config);
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.into()),
        },
    }
}

fn spool_command(cmd: SpoolCommand) -> ExitCode {
    use sluice::commands::spool;
    let path = match &cmd {
        SpoolCommand::List { config } | SpoolCommand::Drop { config, .. } => config,
    };
    let config = match sluice::config::Config::load(path) {
        Ok(c) => c,
        Err(e) => return fail(&e.into()),
    };
    match cmd {
        SpoolCommand::List { .. } => match spool::list(&config) {
            Ok(sinks) => {
                say("sink\tconfigured\trecords\tbytes\tsegments\tdisk_bytes");
                for s in sinks {
                    say(format_args!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        s.sink,
                        if s.configured { "yes" } else { "no" },
                        s.records,
                        s.bytes,
                        s.segments,
                        s.disk_bytes
                    ));
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.into()),
        },
        SpoolCommand::Drop { sink, .. } => match spool::drop_sink(&config, &sink) {
            Ok(s) => {
                say(format_args!(
                    "dropped {} records ({} bytes) of sink {}",
                    s.records, s.bytes, s.sink
                ));
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.into()),
        },
    }
}

fn s3_test(path: &std::path::Path, sink: Option<&str>) -> ExitCode {
    let (config, runtime) = match config_and_runtime(path, false) {
        Ok(both) => both,
        Err(code) => return code,
    };
    match runtime.block_on(sluice::commands::s3::test(&config, sink)) {
        Ok(results) => {
            let mut ok = true;
            for r in results {
                match r.outcome {
                    Ok(object) => say(format_args!("{}: ok, wrote {object}", r.sink)),
                    Err(e) => {
                        ok = false;
                        say(format_args!("{}: FAILED: {e}", r.sink));
                    }
                }
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(e) => fail(&anyhow::anyhow!(e)),
    }
}

/// `sluice check --connect`: reaches the etcd cluster of `[cluster]`.
fn check_connect(path: &std::path::Path) -> ExitCode {
    let (config, runtime) = match config_and_runtime(path, false) {
        Ok(both) => both,
        Err(code) => return code,
    };
    let Some(cluster) = &config.cluster else {
        say("  no [cluster] section: nothing to connect to");
        return ExitCode::SUCCESS;
    };
    match runtime.block_on(sluice::cluster::etcd::probe(cluster, &|p| config.path(p))) {
        Ok(line) => {
            say(format_args!("  {line}"));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&anyhow::anyhow!(e)),
    }
}

/// The loaded config and a runtime, or the exit status of the failure.
fn config_and_runtime(
    path: &std::path::Path,
    multi_thread: bool,
) -> Result<(sluice::config::Config, tokio::runtime::Runtime), ExitCode> {
    let config = sluice::config::Config::load(path).map_err(|e| fail(&e.into()))?;
    Ok((config, runtime(multi_thread)?))
}

/// A tokio runtime for a command, or the exit status of failing to make one.
fn runtime(multi_thread: bool) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| fail(&anyhow::Error::from(e).context("cannot start the async runtime")))
}

/// Runs one admin API call and prints its JSON answer.
fn admin_call(
    call: impl Future<Output = Result<serde_json::Value, sluice::commands::admin_client::AdminError>>,
) -> ExitCode {
    let runtime = match runtime(false) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(call) {
        Ok(v) => {
            say(serde_json::to_string_pretty(&v).unwrap_or_default());
            if let Some(warning) = v["warning"].as_str() {
                eprintln!("sluice: warning: {warning}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.into()),
    }
}

fn run_gateway(path: &std::path::Path) -> ExitCode {
    let (config, runtime) = match config_and_runtime(path, true) {
        Ok(both) => both,
        Err(code) => return code,
    };
    // The handlers are installed before anything starts, so a SIGTERM that
    // comes while sluice starts (or just after it said it was listening)
    // is a graceful stop, never the default action's abrupt exit.
    let in_runtime = runtime.enter();
    let result = runtime.block_on(sluice::commands::run::run(config, shutdown_signal()));
    drop(in_runtime);
    leave_running(runtime);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.into()),
    }
}

/// Ends a command that ran sinks without shutting its runtime down.
///
/// An upload still under way when the sinks stop is left on a thread of its
/// own (`sinks::delivery`): its object stays recorded and is uploaded again
/// at the next start. That thread still uses this runtime's sockets and
/// timers, and shutting the runtime down under it made its next timer panic
/// ("A Tokio 1.x context was found, but it is being shutdown") into the log
/// of a clean stop. The process exits right after, which ends the thread
/// with the rest, so the runtime is simply left running. Nothing of the
/// spool depends on it: the sinks and the spool have stopped by then.
fn leave_running(runtime: tokio::runtime::Runtime) {
    std::mem::forget(runtime);
}

fn run_backfill(
    path: &std::path::Path,
    source: &str,
    since: &str,
    until: Option<&str>,
) -> ExitCode {
    use sluice::commands::backfill;
    let (config, runtime) = match config_and_runtime(path, true) {
        Ok(both) => both,
        Err(code) => return code,
    };
    // shutdown_signal() installs its handlers in this runtime.
    let in_runtime = runtime.enter();
    if sluice::spool::lock::StateLock::held(&config.state_dir()) {
        let target = match backfill::gateway_target(&config) {
            Ok(t) => t,
            Err(e) => return fail(&e.into()),
        };
        eprintln!(
            "sluice: a gateway holds {}; the backfill runs inside it (Ctrl-C cancels it; what it spooled stays)",
            config.state_dir().display()
        );
        let result = runtime.block_on(backfill::through_gateway(
            &target,
            source,
            since,
            until,
            shutdown_signal(),
        ));
        return match result {
            Ok(s) => {
                say(format_args!(
                    "backfill {source}: {} events spooled ({} received, {} duplicates) in {} requests, {:.1} s, {:.0} events/s; {} inside the running gateway, which delivers them (backfill {})",
                    s.events,
                    s.received,
                    s.duplicates,
                    s.requests,
                    s.elapsed_secs,
                    s.events as f64 / s.elapsed_secs.max(1e-3),
                    s.state,
                    s.id
                ));
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.into()),
        };
    }
    let result = runtime.block_on(backfill::backfill(
        config,
        source,
        since,
        until,
        shutdown_signal(),
    ));
    drop(in_runtime);
    leave_running(runtime);
    match result {
        Ok(s) => {
            say(format_args!(
                "backfill {source}: {} events spooled ({} received, {} duplicates) in {} requests, {:.1} s, {:.0} events/s; {} records not yet delivered (sinks flushed in {:.1} s)",
                s.stats.spooled,
                s.stats.received,
                s.stats.duplicates,
                s.stats.requests,
                s.elapsed.as_secs_f64(),
                s.stats.spooled as f64 / s.elapsed.as_secs_f64().max(1e-3),
                s.undelivered,
                s.flush.as_secs_f64()
            ));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.into()),
    }
}

/// Completes on SIGINT or SIGTERM.
/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called (inside a runtime: `Runtime::enter`), not when the future is
/// first polled.
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let (int, term) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(int) => {}
                () = wait(term) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn run_transform(args: RunArgs) -> ExitCode {
    let cache_dir = if args.no_cache {
        None
    } else {
        args.cache_dir
            .or_else(sluice::wasm::HostConfig::default_cache_dir)
    };
    let opts = RunOptions {
        transform: args.transform,
        config: args.config,
        output: args.output,
        batch: args.batch as usize,
        source: args.source,
        deadline: Duration::from_millis(args.deadline_ms),
        memory_cap: (args.memory_mib as usize) << 20,
        cache_dir,
    };
    let mut input: Box<dyn BufRead> = match &args.input {
        Some(path) => match std::fs::File::open(path) {
            Ok(f) => Box::new(BufReader::with_capacity(1 << 16, f)),
            Err(e) => {
                return fail(&anyhow::anyhow!(
                    "cannot open input {}: {e}",
                    path.display()
                ));
            }
        },
        None => Box::new(BufReader::with_capacity(1 << 16, std::io::stdin())),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let stderr = std::io::stderr();
    let mut errors = stderr.lock();
    let result = transform::run(&opts, &mut input, &mut out, &mut errors);
    let _ = out.flush();
    drop(errors);
    match result {
        // `sluice transform run … | head`: the reader has what it wanted.
        Err(transform::RunError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            ExitCode::SUCCESS
        }
        Ok(summary) if summary.failed == 0 => ExitCode::SUCCESS,
        Ok(summary) => {
            eprintln!(
                "sluice: {} of {} records failed (see the JSON lines above)",
                summary.failed, summary.records
            );
            ExitCode::from(1)
        }
        Err(e) => fail(&e.into()),
    }
}

/// Prints a line on stdout. A closed pipe (`sluice … | head`) ends the
/// command quietly, as it does for other Unix tools, instead of panicking.
fn say(text: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        let _ = writeln!(
            std::io::stderr(),
            "sluice: error: cannot write to stdout: {e}"
        );
        std::process::exit(2);
    }
}

fn new_transform(
    name: &str,
    dir: &std::path::Path,
    sdk_path: Option<PathBuf>,
    sdk_git: Option<String>,
    sdk_version: Option<String>,
) -> ExitCode {
    use sluice::commands::scaffold::{self, SdkSource};
    let sdk = match (sdk_path, sdk_git, sdk_version) {
        (Some(p), _, _) => SdkSource::Path(std::path::absolute(&p).unwrap_or(p)),
        (_, Some(url), _) => SdkSource::Git(url),
        (_, _, Some(v)) => SdkSource::Version(v),
        _ => SdkSource::default_for_this_build(),
    };
    match scaffold::create(dir, name, &sdk) {
        Ok(made) => {
            say(format_args!(
                "created {} (sluice-sdk from {}). Next:\n  cd {}\n  cargo test\n  cargo build --release --target wasm32-wasip2\n\nThe component lands at {}/{}; its README has the run and push commands.",
                made.dir.display(),
                match &sdk {
                    SdkSource::Path(p) => p.display().to_string(),
                    SdkSource::Git(url) => url.clone(),
                    SdkSource::Version(v) => format!("the registry, version {v}"),
                },
                made.dir.display(),
                made.dir.display(),
                made.component
            ));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.into()),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    // Typed errors already print their cause; add a cause only when the
    // message does not contain it (context added with `anyhow`).
    let mut message = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message = format!("{message}: {cause}");
        }
    }
    let _ = writeln!(std::io::stderr(), "sluice: error: {message}");
    ExitCode::from(2)
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("sluice: ignoring bad log filter {filter:?}: {e}");
        tracing_subscriber::EnvFilter::new("warn")
    });
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
