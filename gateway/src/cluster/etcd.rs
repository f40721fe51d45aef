//! The etcd engine behind [`Coordinator`].
//!
//! Keys, under the configured prefix:
//! - `pollers/<source>/leader`: the leader's instance id, attached to its
//!   lease. Whoever creates it leads; its create revision is the fencing
//!   token.
//! - `pollers/<source>/cursor`: the [`Cursor`] as JSON, written only by
//!   transactions that compare the leader key's create revision.
//!
//! One lease per replica, renewed every quarter TTL. The lease is trusted
//! for 2/3 of the TTL after the last renewal was *sent* (monotonic clock):
//! etcd expires it no earlier than TTL after it *received* that renewal,
//! so a replica always stops polling before another can take over.
//! Nothing here is a lease or consensus protocol of our own: leadership is
//! etcd's lease plus a create-if-absent transaction, and the fence is a
//! compare inside the same transaction as the write (strict serializable).

use super::{BoxFuture, ClusterConfig, ClusterError, Coordinator, Cursor, Term};
use crate::metrics::Metrics;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, Identity, PutOptions,
    TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, timeout};

/// A replica that does not lead a source watches the leader key and asks
/// again when it is deleted, or after this long in any case.
const CAMPAIGN_EVERY: Duration = Duration::from_secs(5);
/// Longest wait for one etcd request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// The etcd coordinator of one replica.
pub struct Etcd {
    client: Client,
    prefix: String,
    instance: String,
    lease: watch::Receiver<Option<i64>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("prefix", &self.prefix)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The client, with TLS from the section (files read here).
///
/// # Errors
///
/// [`ClusterError::Config`] for an unreadable file or a bad URL. etcd is
/// not contacted: connections are made on first use.
pub async fn client(
    cfg: &ClusterConfig,
    path: &dyn Fn(&Path) -> PathBuf,
) -> Result<Client, ClusterError> {
    let read = |p: &Path| {
        let p = path(p);
        std::fs::read(&p)
            .map_err(|e| ClusterError::Config(format!("cannot read {}: {e}", p.display())))
    };
    let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read(&cfg.tls.ca)?));
    if let (Some(cert), Some(key)) = (&cfg.tls.cert, &cfg.tls.key) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    let options = ConnectOptions::new()
        .with_tls(tls)
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5))
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        // Without a leader (quorum lost) requests fail at once instead of
        // waiting: pollers pause, and say why.
        .with_require_leader(true);
    Client::connect(&cfg.etcd, Some(options))
        .await
        .map_err(|e| ClusterError::Config(format!("etcd client: {e}")))
}

/// Reaches the cluster (`sluice check --connect`): its members, its
/// leader, and a read under the prefix (which proves the credentials).
///
/// # Errors
///
/// [`ClusterError`] saying what could not be reached or read.
pub async fn probe(
    cfg: &ClusterConfig,
    path: &dyn Fn(&Path) -> PathBuf,
) -> Result<String, ClusterError> {
    let mut c = client(cfg, path).await?;
    let wait = Duration::from_secs(5);
    let unavailable = |what: &str, e: String| {
        ClusterError::Unavailable(format!("{what} at {}: {e}", cfg.etcd.join(", ")))
    };
    let status = match timeout(wait, c.status()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(unavailable("no etcd member answered", e.to_string())),
        Err(_) => {
            return Err(unavailable(
                "no etcd member answered",
                "timed out after 5 s".into(),
            ));
        }
    };
    let members = match timeout(wait, c.member_list()).await {
        Ok(Ok(m)) => m.members().len(),
        Ok(Err(e)) => return Err(unavailable("cannot list members", e.to_string())),
        Err(_) => return Err(unavailable("cannot list members", "timed out".into())),
    };
    let opts = etcd_client::GetOptions::new()
        .with_prefix()
        .with_count_only();
    let keys = match timeout(wait, c.get(format!("{}/", cfg.prefix), Some(opts))).await {
        // With require_leader set, this fails when quorum is lost.
        Ok(Ok(r)) => r.count(),
        Ok(Err(e)) => {
            return Err(unavailable(
                &format!("cannot read {}/", cfg.prefix),
                e.to_string(),
            ));
        }
        Err(_) => return Err(unavailable("no answer", "timed out".into())),
    };
    Ok(format!(
        "etcd: reached ({members} members, version {}, a leader elected), {keys} keys under {}/; this replica is {:?}",
        status.version(),
        cfg.prefix,
        cfg.instance_id()
    ))
}

impl Etcd {
    /// Starts the replica's lease keeper. etcd need not be reachable yet:
    /// pollers wait for it, everything else runs.
    ///
    /// # Errors
    ///
    /// As [`client`].
    pub async fn start(
        cfg: &ClusterConfig,
        path: &dyn Fn(&Path) -> PathBuf,
        metrics: Metrics,
    ) -> Result<Self, ClusterError> {
        let client = client(cfg, path).await?;
        let (tx, lease) = watch::channel(None);
        let state = Arc::new(Mutex::new((None, Instant::now())));
        let ttl = cfg.ttl();
        let tasks = vec![
            tokio::spawn(keep_lease(
                client.clone(),
                ttl,
                state.clone(),
                metrics.clone(),
            )),
            tokio::spawn(watch_lease(ttl, state, tx, metrics)),
        ];
        Ok(Self {
            client,
            prefix: cfg.prefix.clone(),
            instance: cfg.instance_id(),
            lease,
            tasks,
        })
    }

    /// The etcd client (the transform registry shares it).
    pub fn etcd_client(&self) -> Client {
        self.client.clone()
    }

    fn key(&self, source: &str, what: &str) -> String {
        format!("{}/pollers/{source}/{what}", self.prefix)
    }

    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, ClusterError> {
        match timeout(REQUEST_TIMEOUT, self.client.clone().txn(txn)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(ClusterError::Unavailable(e.to_string())),
            Err(_) => Err(ClusterError::Unavailable("no answer in 3 s".into())),
        }
    }

    /// One attempt to lead `source` under `lease`: the fencing token when
    /// it leads, else the revision at which another replica held it.
    async fn try_lead(&self, source: &str, lease: i64) -> Result<Result<i64, i64>, ClusterError> {
        let key = self.key(source, "leader");
        let r = self
            .txn(
                Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key.clone(),
                        self.instance.clone(),
                        Some(PutOptions::new().with_lease(lease)),
                    )])
                    .or_else([TxnOp::get(key, None)]),
            )
            .await?;
        let revision = r.header().map_or(0, etcd_client::ResponseHeader::revision);
        if r.succeeded() {
            // The transaction's revision is the new key's create revision.
            return Ok(Ok(revision));
        }
        // Still ours (the lease survived a pause in renewals): lead on with
        // the same token, which no other replica has held since.
        let ours = r.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .filter(|kv| kv.lease() == lease)
                .map(etcd_client::KeyValue::create_revision),
            _ => None,
        });
        Ok(ours.ok_or(revision))
    }

    /// Waits (at most [`CAMPAIGN_EVERY`]) for the leader key to go: its
    /// lease expired or its holder resigned.
    async fn until_vacant(&self, source: &str, after: i64) {
        let key = self.key(source, "leader");
        let options = WatchOptions::new().with_start_revision(after + 1);
        let _ = timeout(CAMPAIGN_EVERY, async {
            let Ok(mut events) = self.client.clone().watch(key, Some(options)).await else {
                // Not watchable now: wait the whole period.
                return std::future::pending::<()>().await;
            };
            while let Ok(Some(r)) = events.message().await {
                if r.events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete)
                {
                    return;
                }
            }
            std::future::pending::<()>().await;
        })
        .await;
    }
}

impl Coordinator for Etcd {
    fn campaign<'a>(&'a self, source: &'a str) -> BoxFuture<'a, Term> {
        Box::pin(async move {
            let mut held = self.lease.clone();
            loop {
                let Ok(lease) = held.wait_for(Option::is_some).await.map(|l| l.unwrap_or(0)) else {
                    // The keeper is gone (shutdown): never lead.
                    std::future::pending::<()>().await;
                    continue;
                };
                match self.try_lead(source, lease).await {
                    Ok(Ok(token)) => return Term::new(source, token, lease, self.lease.clone()),
                    Ok(Err(held_at)) => self.until_vacant(source, held_at).await,
                    Err(e) => {
                        tracing::debug!(source, error = %e, "campaign failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        })
    }

    fn load_cursor<'a>(
        &'a self,
        term: &'a Term,
    ) -> BoxFuture<'a, Result<Option<Cursor>, ClusterError>> {
        Box::pin(async move {
            let key = self.key(&term.source, "cursor");
            let r = match timeout(REQUEST_TIMEOUT, self.client.clone().get(key.clone(), None)).await
            {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return Err(ClusterError::Unavailable(e.to_string())),
                Err(_) => return Err(ClusterError::Unavailable("no answer in 3 s".into())),
            };
            r.kvs()
                .first()
                .map(|kv| {
                    serde_json::from_slice(kv.value()).map_err(|e| {
                        ClusterError::Unavailable(format!(
                            "{key} does not hold a sluice cursor: {e}"
                        ))
                    })
                })
                .transpose()
        })
    }

    fn commit_cursor<'a>(
        &'a self,
        term: &'a Term,
        cursor: &'a Cursor,
    ) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(self.fenced(term, cursor, false))
    }

    fn resign<'a>(
        &'a self,
        term: &'a Term,
        cursor: &'a Cursor,
    ) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(self.fenced(term, cursor, true))
    }
}

impl Etcd {
    /// Writes `cursor` (and, to resign, deletes the leader key) in one
    /// transaction that commits only if `term` still leads the source.
    async fn fenced(&self, term: &Term, cursor: &Cursor, resign: bool) -> Result<(), ClusterError> {
        let value = serde_json::to_vec(cursor).map_err(|e| ClusterError::Config(e.to_string()))?;
        let leader = self.key(&term.source, "leader");
        let mut ops = vec![TxnOp::put(self.key(&term.source, "cursor"), value, None)];
        if resign {
            ops.push(TxnOp::delete(leader.clone(), None));
        }
        let r = self
            .txn(
                Txn::new()
                    .when([Compare::create_revision(
                        leader,
                        CompareOp::Equal,
                        term.token,
                    )])
                    .and_then(ops),
            )
            .await?;
        if r.succeeded() {
            Ok(())
        } else {
            Err(ClusterError::Fenced)
        }
    }
}

/// The lease and when its last successful renewal was sent.
type LeaseState = Arc<Mutex<(Option<i64>, Instant)>>;

/// Grants the replica's lease and renews it every quarter TTL, for good.
/// A lease etcd reports expired is replaced by a new one.
async fn keep_lease(client: Client, ttl: Duration, state: LeaseState, metrics: Metrics) {
    let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let every = ttl / 4;
    loop {
        let sent = Instant::now();
        let granted = timeout(every, client.clone().lease_grant(ttl_secs, None)).await;
        let id = match granted {
            Ok(Ok(r)) if r.ttl() > 0 => r.id(),
            other => {
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    Ok(Ok(_)) => "lease granted with no TTL".into(),
                    Err(_) => "no answer to a lease grant".into(),
                };
                metrics.cluster_etcd(false, &why);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        *crate::util::lock(&state) = (Some(id), sent);
        let mut stream = None;
        let mut next = sent + every;
        loop {
            tokio::time::sleep_until(next).await;
            let sent = Instant::now();
            let renewed = timeout(every, async {
                if stream.is_none() {
                    stream = Some(client.clone().lease_keep_alive(id).await?);
                }
                let (keeper, answers) = stream.as_mut().expect("just set");
                keeper.keep_alive().await?;
                answers.message().await
            })
            .await;
            match renewed {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {
                    crate::util::lock(&state).1 = sent;
                    next = sent + every;
                }
                Ok(Ok(Some(_))) => {
                    // Expired in etcd: every term under it is over.
                    *crate::util::lock(&state) = (None, sent);
                    metrics.cluster_etcd(false, "the lease expired in etcd");
                    break;
                }
                other => {
                    let why = match other {
                        Ok(Err(e)) => e.to_string(),
                        _ => "no answer to a lease renewal".into(),
                    };
                    tracing::debug!(error = why, "lease renewal failed; retrying");
                    stream = None;
                    next = Instant::now() + Duration::from_millis(200);
                }
            }
        }
    }
}

/// Publishes the lease as valid while its last renewal was sent less than
/// 2/3 TTL ago, checked every 50 ms on the monotonic clock.
async fn watch_lease(
    ttl: Duration,
    state: LeaseState,
    tx: watch::Sender<Option<i64>>,
    metrics: Metrics,
) {
    let limit = ttl * 2 / 3;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let (id, last) = *crate::util::lock(&state);
        let valid = id.filter(|_| last.elapsed() < limit);
        metrics.cluster_etcd(
            valid.is_some(),
            "the lease was not renewed within 2/3 of its TTL",
        );
        tx.send_if_modified(|v| {
            let changed = *v != valid;
            *v = valid;
            changed
        });
    }
}
