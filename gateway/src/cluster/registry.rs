//! The cluster's transform registry in etcd: uploads and activations made
//! through any replica's admin API reach every replica.
//!
//! Keys, under the configured prefix:
//! - `transforms/index`: the registry (names, numbered versions, sha256,
//!   the active version) as the JSON of the local store's `index.json`.
//!   Every change is a compare-and-swap on its mod revision, so two
//!   replicas changing it at once never lose one another's change.
//! - `transforms/blobs/<sha256>/<n>`: the component in chunks of
//!   [`CHUNK`] bytes, under etcd's 1.5 MiB request limit; written before
//!   the index names them, verified by sha256 when read.
//!
//! Each replica keeps a mirror in its local store (`state_dir/transforms`),
//! which it runs from when it starts while etcd cannot be reached. A watch
//! on the index brings every replica to the new active versions.

use super::ClusterError;
use crate::store::{Entry, Store, StoreError, Version, Which};
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, WatchOptions};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::timeout;

/// Bytes per blob chunk: under etcd's default 1.5 MiB request limit.
pub const CHUNK: usize = 1 << 20;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

type Index = BTreeMap<String, Entry>;

/// Why a registry change failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// etcd could not be reached or refused; nothing changed.
    #[error("the cluster's transform registry (etcd) is unavailable: {0}")]
    Cluster(#[from] ClusterError),
    /// The change itself was refused (no such version, version active).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The registry of one replica.
pub struct Registry {
    client: Client,
    prefix: String,
    store: Arc<Store>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unavailable(e.to_string())
}

impl Registry {
    /// A registry on `client` under `prefix`, mirrored into `store`.
    pub fn new(client: Client, prefix: &str, store: Arc<Store>) -> Self {
        Self {
            client,
            prefix: prefix.to_string(),
            store,
        }
    }

    fn index_key(&self) -> String {
        format!("{}/transforms/index", self.prefix)
    }

    fn blob_prefix(&self, sha256: &str) -> String {
        format!("{}/transforms/blobs/{sha256}/", self.prefix)
    }

    /// The index, its mod revision (0: there is none yet) and the store's
    /// revision when it was read.
    async fn read_index(&self) -> Result<(Index, i64, i64), ClusterError> {
        let r = timeout(
            REQUEST_TIMEOUT,
            self.client.clone().get(self.index_key(), None),
        )
        .await
        .map_err(|_| unavailable("no answer in 5 s"))?
        .map_err(unavailable)?;
        let at = r.header().map_or(0, etcd_client::ResponseHeader::revision);
        match r.kvs().first() {
            None => Ok((Index::new(), 0, at)),
            Some(kv) => serde_json::from_slice(kv.value())
                .map(|i| (i, kv.mod_revision(), at))
                .map_err(|e| {
                    unavailable(format!(
                        "{} is not a sluice registry: {e}",
                        self.index_key()
                    ))
                }),
        }
    }

    /// Applies `f` to the cluster's index with a compare-and-swap (retried
    /// when another replica changed it in between), then mirrors it locally.
    async fn update<T>(
        &self,
        mut f: impl FnMut(&mut Index) -> Result<T, StoreError>,
    ) -> Result<T, RegistryError> {
        loop {
            let (index, revision, _) = self.read_index().await?;
            let mut next = index.clone();
            let out = f(&mut next)?;
            let key = self.index_key();
            let guard = match revision {
                0 => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                r => Compare::mod_revision(key.clone(), CompareOp::Equal, r),
            };
            let value = serde_json::to_vec(&next).map_err(unavailable)?;
            let txn = Txn::new()
                .when([guard])
                .and_then([TxnOp::put(key, value, None)]);
            let r = timeout(REQUEST_TIMEOUT, self.client.clone().txn(txn))
                .await
                .map_err(|_| unavailable("no answer in 5 s"))?
                .map_err(unavailable)?;
            if r.succeeded() {
                // The change is made; a mirror that fails here is redone
                // by the watch (`follow`).
                if let Err(e) = self.mirror(&next).await {
                    tracing::warn!(error = %e, "registry changed in etcd; the local mirror follows later");
                }
                return Ok(out);
            }
        }
    }

    /// Stores a checked component as the next version of `name`, in the
    /// cluster and locally.
    ///
    /// # Errors
    ///
    /// [`RegistryError`]; the cluster's index is then unchanged.
    pub async fn add(
        &self,
        name: &str,
        bytes: &[u8],
        sha256: &str,
    ) -> Result<Version, RegistryError> {
        self.store.put_blob(sha256, bytes)?;
        self.put_blob(sha256, bytes).await?;
        self.update(|index| {
            Ok(crate::store::index_add(
                index,
                name,
                sha256,
                bytes.len() as u64,
            ))
        })
        .await
    }

    /// Marks a version active in the cluster (and locally); returns it and
    /// the version it replaces.
    ///
    /// # Errors
    ///
    /// [`RegistryError`].
    pub async fn activate(
        &self,
        name: &str,
        which: &Which,
    ) -> Result<(Version, Option<u32>), RegistryError> {
        self.update(|index| crate::store::index_activate(index, name, which))
            .await
    }

    /// Removes an inactive version in the cluster (and locally).
    ///
    /// # Errors
    ///
    /// [`RegistryError`].
    pub async fn remove(&self, name: &str, which: &Which) -> Result<Version, RegistryError> {
        // Whether another version still names the blob, decided on the same
        // index the removal was applied to.
        let (removed, still_used) = self
            .update(|index| {
                let removed = crate::store::index_remove(index, name, which)?;
                let used = index
                    .values()
                    .flat_map(|e| &e.versions)
                    .any(|v| v.sha256 == removed.sha256);
                Ok((removed, used))
            })
            .await?;
        if !still_used {
            let opts = etcd_client::DeleteOptions::new().with_prefix();
            let _ = timeout(
                REQUEST_TIMEOUT,
                self.client
                    .clone()
                    .delete(self.blob_prefix(&removed.sha256), Some(opts)),
            )
            .await;
        }
        Ok(removed)
    }

    async fn put_blob(&self, sha256: &str, bytes: &[u8]) -> Result<(), ClusterError> {
        let prefix = self.blob_prefix(sha256);
        for (n, chunk) in bytes.chunks(CHUNK).enumerate() {
            timeout(
                REQUEST_TIMEOUT,
                self.client
                    .clone()
                    .put(format!("{prefix}{n:06}"), chunk, None),
            )
            .await
            .map_err(|_| unavailable("no answer in 5 s"))?
            .map_err(unavailable)?;
        }
        Ok(())
    }

    /// A component's bytes from etcd, verified against its sha256.
    async fn fetch_blob(&self, sha256: &str) -> Result<Vec<u8>, ClusterError> {
        let opts = GetOptions::new()
            .with_prefix()
            .with_sort(etcd_client::SortTarget::Key, etcd_client::SortOrder::Ascend);
        let r = timeout(
            REQUEST_TIMEOUT,
            self.client
                .clone()
                .get(self.blob_prefix(sha256), Some(opts)),
        )
        .await
        .map_err(|_| unavailable("no answer in 5 s"))?
        .map_err(unavailable)?;
        let bytes: Vec<u8> = r.kvs().iter().flat_map(|kv| kv.value().to_vec()).collect();
        let got = crate::util::hex_sha256(&bytes);
        if got != sha256 {
            return Err(unavailable(format!(
                "component {sha256} read from etcd has sha256 {got} ({} bytes): incomplete or damaged",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// Makes the local store the cluster's `index`, fetching the blobs it
    /// lacks first.
    async fn mirror(&self, index: &Index) -> Result<(), RegistryError> {
        for v in index.values().flat_map(|e| &e.versions) {
            if !self.store.has_blob(&v.sha256) {
                let bytes = self.fetch_blob(&v.sha256).await?;
                self.store.put_blob(&v.sha256, &bytes)?;
            }
        }
        self.store.mirror(index)?;
        Ok(())
    }

    /// Brings the local store to the cluster's registry; returns it and the
    /// etcd revision it was read at. The first replica to find none in etcd
    /// seeds it with its own (blobs first).
    ///
    /// # Errors
    ///
    /// [`RegistryError`].
    pub async fn sync(&self) -> Result<(Index, i64), RegistryError> {
        let (index, revision, at) = self.read_index().await?;
        if revision == 0 {
            let local = self.store.list();
            if local.is_empty() {
                return Ok((local, at));
            }
            for v in local.values().flat_map(|e| &e.versions) {
                let bytes = self.store.blob(&v.sha256)?;
                self.put_blob(&v.sha256, &bytes).await?;
            }
            // Seeds only if still absent; else another replica did first.
            let seeded = self
                .update(|index| {
                    if index.is_empty() {
                        index.clone_from(&local);
                    }
                    Ok(())
                })
                .await;
            seeded?;
            return Ok((self.store.list(), at));
        }
        self.mirror(&index).await?;
        Ok((index, at))
    }

    /// Syncs now and on every change of the cluster's index (and every
    /// 30 s), calling `apply` with the synced index each time.
    pub async fn follow(self: Arc<Self>, apply: impl Fn(Index) -> super::BoxFuture<'static, ()>) {
        let mut first = true;
        loop {
            let at = match self.sync().await {
                Ok((index, at)) => {
                    if first {
                        tracing::info!("transform registry synced from the cluster");
                    }
                    first = false;
                    apply(index).await;
                    at
                }
                Err(e) => {
                    if first {
                        tracing::warn!(
                            error = %e,
                            "cannot reach the cluster's transform registry: running the last local copy"
                        );
                        first = false;
                    } else {
                        tracing::warn!(error = %e, "transform registry sync failed; retrying");
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            // Wait for the next change of the index.
            let _ = timeout(Duration::from_secs(30), async {
                let Ok(mut events) = self
                    .client
                    .clone()
                    .watch(
                        self.index_key(),
                        Some(WatchOptions::new().with_start_revision(at + 1)),
                    )
                    .await
                else {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    return;
                };
                // Any change after the synced read; the first message may
                // only confirm the watch.
                while let Ok(Some(r)) = events.message().await {
                    if !r.events().is_empty() {
                        return;
                    }
                }
            })
            .await;
        }
    }
}
