//! The region's object store: where volume snapshots live, readable from
//! every zone. A thin layer over the `object_store` crate that gives the
//! snapshot engine the few operations it needs, with reprise's errors.
//!
//! Contract (what the engine relies on, and what [`conformance`] checks
//! against every backend):
//! - `put` is atomic: a reader sees the whole new object or the old one,
//!   never a part. It is durable when it returns: the local directory
//!   fsyncs the file and the directories it changed before the rename
//!   that publishes it; an S3 server answers only once it has stored it.
//! - `put_if_absent` writes only when nothing is at the key and says
//!   whether it wrote: a present chunk costs no upload.
//! - `put_if_absent_unsynced` is `put_if_absent` for many objects in a
//!   row (a backup's chunks): each is atomic, and durable once a later
//!   `sync_written` returns. The local directory leaves its fsyncs to that
//!   one `syncfs` (an fsync per 1 MiB chunk, each a journal commit, cost a
//!   third of a backup's time); an S3 server stores before it answers. An
//!   object found present may have been written unsynced by another
//!   writer: `sync_written` covers it too, since it syncs the whole
//!   directory's filesystem. Where the store
//!   creates atomically ([`Store::creates_atomically`]) two writers never
//!   both write; elsewhere it is HEAD-then-PUT and both may write, which is
//!   only safe for content-named objects (both write the same bytes) — the
//!   only use the engine makes of it.
//! - `get` refuses an object larger than the caller's cap before reading it
//!   whole, and a missing object is `object_not_found`, not an I/O error.
//! - `delete` of a missing object succeeds (deletions are retried).
//! - `list` returns every key under a prefix with its size.
//!
//! Backends: a local directory (the embedded default) and S3-compatible
//! stores. Garage 2.5 ignores `If-None-Match: *` on PUT (the conformance
//! suite caught it), so S3 stores do not create atomically. Transient S3
//! errors (timeouts, 5xx, throttling) are retried by `object_store` with
//! exponential backoff, up to [`S3_RETRIES`] times.

use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use reprise_core::{Error, ErrorKind, Result};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// The same objects, written without waiting for the disk (the local
    /// directory; `inner` elsewhere).
    unsynced: Arc<dyn ObjectStore>,
    /// The local directory, which `sync_written` syncs.
    local_dir: Option<std::path::PathBuf>,
    /// Where it is, for messages.
    label: String,
    atomic_create: bool,
}

/// How many times a failed S3 request is retried, with backoff.
pub const S3_RETRIES: usize = 8;

/// Where an S3-compatible store is and how to sign in to it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// `http(s)://host:port` of the S3 API.
    pub endpoint: String,
    pub bucket: String,
    /// The signing region (`garage` for Garage, `us-east-1` for many).
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "S3Config({} bucket {} region {})",
            self.endpoint, self.bucket, self.region
        )
    }
}

fn key_path(key: &str) -> Result<Path> {
    Path::parse(key)
        .map_err(|e| Error::invalid("object_key_invalid", format!("object key '{key}': {e}")))
}

impl Store {
    /// A store in a local directory (created if missing).
    pub fn local(dir: &std::path::Path) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::unavailable(
                "object_store_unavailable",
                format!(
                    "cannot create the object store directory {}: {e}",
                    dir.display()
                ),
            )
            .with_source(e)
        })?;
        // Every write is durable when it returns: the file and each
        // directory it changed are fsynced before the rename publishes it.
        // Unsynced writes rename without fsyncs (see the contract).
        let fs = |fsync: bool| {
            LocalFileSystem::new_with_prefix(dir)
                .map(|fs| Arc::new(fs.with_fsync(fsync)))
                .map_err(|e| self::map_err(&dir.display().to_string(), e))
        };
        let mut store = Store::from_object_store(fs(true)?, format!("directory {}", dir.display()));
        store.unsynced = fs(false)?;
        store.local_dir = Some(dir.to_path_buf());
        Ok(store)
    }

    /// An S3-compatible store.
    pub fn s3(c: &S3Config) -> Result<Store> {
        let retry = object_store::RetryConfig {
            max_retries: S3_RETRIES,
            retry_timeout: std::time::Duration::from_secs(120),
            ..Default::default()
        };
        let s3 = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&c.endpoint)
            .with_allow_http(c.endpoint.starts_with("http://"))
            .with_region(&c.region)
            .with_bucket_name(&c.bucket)
            .with_access_key_id(&c.access_key_id)
            .with_secret_access_key(&c.secret_access_key)
            .with_retry(retry)
            .build()
            .map_err(|e| {
                Error::invalid(
                    "config_invalid",
                    format!("region S3 store {}: {e}", c.endpoint),
                )
                .with_source(e)
            })?;
        let mut store = Store::from_object_store(
            Arc::new(s3),
            format!("S3 {} bucket {}", c.endpoint, c.bucket),
        );
        store.atomic_create = false;
        Ok(store)
    }

    /// Any `object_store` backend that honours conditional create (tests
    /// use the in-memory one).
    pub fn from_object_store(inner: Arc<dyn ObjectStore>, label: String) -> Store {
        Store {
            unsynced: inner.clone(),
            local_dir: None,
            inner,
            label,
            atomic_create: true,
        }
    }

    /// The same store seen under `prefix/` (a region in part of a bucket,
    /// or one test's corner of a shared server).
    pub fn with_prefix(&self, prefix: &str) -> Result<Store> {
        let p = key_path(prefix)?;
        let under = |store: &Arc<dyn ObjectStore>| -> Arc<dyn ObjectStore> {
            Arc::new(object_store::prefix::PrefixStore::new(
                store.clone(),
                p.clone(),
            ))
        };
        Ok(Store {
            inner: under(&self.inner),
            unsynced: under(&self.unsynced),
            local_dir: self.local_dir.clone(),
            label: format!("{} under {prefix}/", self.label),
            atomic_create: self.atomic_create,
        })
    }

    /// Whether `put_if_absent` is one atomic create (see the contract).
    pub fn creates_atomically(&self) -> bool {
        self.atomic_create
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    fn err(&self, key: &str, e: object_store::Error) -> Error {
        map_err(&format!("{} ({key})", self.label), e)
    }

    /// Write an object, replacing any at `key`, atomically.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let path = key_path(key)?;
        self.inner
            .put(&path, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.err(key, e))
    }

    /// Write an object only if none is at `key`; true if it was written.
    pub async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<bool> {
        self.put_if_absent_on(&self.inner, key, bytes).await
    }

    /// [`Store::put_if_absent`], durable only once a later
    /// [`Store::sync_written`] returns (see the contract).
    pub async fn put_if_absent_unsynced(&self, key: &str, bytes: Vec<u8>) -> Result<bool> {
        self.put_if_absent_on(&self.unsynced, key, bytes).await
    }

    async fn put_if_absent_on(
        &self,
        store: &Arc<dyn ObjectStore>,
        key: &str,
        bytes: Vec<u8>,
    ) -> Result<bool> {
        let path = key_path(key)?;
        let written = if self.atomic_create {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            store.put_opts(&path, PutPayload::from(bytes), opts).await
        } else {
            if self.exists(key).await? {
                return Ok(false);
            }
            store.put(&path, PutPayload::from(bytes)).await
        };
        match written {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.err(key, e)),
        }
    }

    /// Make every object written so far durable, unsynced ones included:
    /// one `syncfs` of the local directory's filesystem; nothing to do
    /// for S3.
    pub async fn sync_written(&self) -> Result<()> {
        let Some(dir) = self.local_dir.clone() else {
            return Ok(());
        };
        let synced = tokio::task::spawn_blocking(move || {
            let d = std::fs::File::open(&dir)?;
            rustix::fs::syncfs(&d).map_err(std::io::Error::from)
        })
        .await;
        match synced {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::unavailable(
                "object_store_unavailable",
                format!("syncing {}: {e}", self.label),
            )
            .with_source(e)),
            Err(e) => Err(Error::internal(format!("syncing {}: {e}", self.label))),
        }
    }

    /// Read an object of at most `max` bytes.
    pub async fn get(&self, key: &str, max: u64) -> Result<Vec<u8>> {
        let path = key_path(key)?;
        let got = self.inner.get(&path).await.map_err(|e| self.err(key, e))?;
        if got.meta.size > max {
            return Err(Error::new(
                ErrorKind::Corrupt,
                "object_corrupt",
                format!(
                    "object {key} is {} bytes, more than the {max} it may be",
                    got.meta.size
                ),
            ));
        }
        let bytes = got.bytes().await.map_err(|e| self.err(key, e))?;
        // The local directory's bytes are read into a buffer of their own:
        // taken over, not copied.
        Ok(Vec::from(bytes))
    }

    /// Whether an object is at `key`.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.size(key).await?.is_some())
    }

    /// The size of the object at `key`, if there is one.
    pub async fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = key_path(key)?;
        match self.inner.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(key, e)),
        }
    }

    /// Remove an object; a missing one is fine.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let path = key_path(key)?;
        match self.inner.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }

    /// Every key under `prefix`, with its size, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let listed = self.list_modified(prefix).await?;
        Ok(listed
            .into_iter()
            .map(|(key, size, _)| (key, size))
            .collect())
    }

    /// [`Store::list`] with when each object was last written, by the
    /// store's clock.
    pub async fn list_modified(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, u64, std::time::SystemTime)>> {
        let path = key_path(prefix)?;
        let mut out: Vec<(String, u64, std::time::SystemTime)> = self
            .inner
            .list(Some(&path))
            .map_ok(|m| (m.location.to_string(), m.size, m.last_modified.into()))
            .try_collect()
            .await
            .map_err(|e| self.err(prefix, e))?;
        out.sort();
        Ok(out)
    }
}

impl S3Config {
    /// The S3 server the test scripts start (`scripts/s3.sh`), from
    /// `REPRISE_TEST_S3_*` variables. `None` only when `REPRISE_TEST_S3=off`
    /// says so out loud; missing variables otherwise fail the test, so no
    /// S3 test is skipped silently.
    pub fn from_test_env() -> Option<S3Config> {
        if std::env::var("REPRISE_TEST_S3").as_deref() == Ok("off") {
            eprintln!("REPRISE_TEST_S3=off: the S3 half of this test does not run");
            return None;
        }
        Some(Self::from_env("REPRISE_TEST_S3"))
    }

    /// The S3 that `scripts/s3.sh` started and described in variables
    /// named `{prefix}_ENDPOINT`, `_BUCKET`, … (panics naming a missing one).
    pub fn from_env(prefix: &str) -> S3Config {
        let var = |name: &str| {
            std::env::var(format!("{prefix}_{name}")).unwrap_or_else(|_| {
                panic!(
                    "{prefix}_{name} is not set: run the tests with scripts/test.sh \
                     (it starts the Garage S3 servers)"
                )
            })
        };
        S3Config {
            endpoint: var("ENDPOINT"),
            bucket: var("BUCKET"),
            region: var("REGION"),
            access_key_id: var("ACCESS_KEY_ID"),
            secret_access_key: var("SECRET_ACCESS_KEY"),
        }
    }
}

fn map_err(place: &str, e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::new(
            ErrorKind::NotFound,
            "object_not_found",
            format!("no object at {place}"),
        )
        .with_source(e),
        other => Error::unavailable(
            "object_store_unavailable",
            format!("object store {place}: {other}"),
        )
        .with_source(other),
    }
}

/// The contract above, checked against one backend. Keys go under
/// `prefix` so a shared bucket can run it.
pub async fn conformance(store: &Store, prefix: &str) {
    let key = |k: &str| format!("{prefix}/{k}");
    // put, get, overwrite
    store.put(&key("a"), b"one".to_vec()).await.unwrap();
    assert_eq!(store.get(&key("a"), 10).await.unwrap(), b"one");
    store.put(&key("a"), b"two!".to_vec()).await.unwrap();
    assert_eq!(store.get(&key("a"), 10).await.unwrap(), b"two!");
    // the cap is checked before reading
    let e = store.get(&key("a"), 3).await.unwrap_err();
    assert_eq!(e.code, "object_corrupt");
    // put_if_absent writes once and never clobbers
    assert!(store
        .put_if_absent(&key("chunks/c1"), b"first".to_vec())
        .await
        .unwrap());
    assert!(!store
        .put_if_absent(&key("chunks/c1"), b"second".to_vec())
        .await
        .unwrap());
    assert_eq!(store.get(&key("chunks/c1"), 10).await.unwrap(), b"first");
    // missing objects
    let e = store.get(&key("missing"), 10).await.unwrap_err();
    assert_eq!(
        (e.kind, e.code.as_str()),
        (ErrorKind::NotFound, "object_not_found")
    );
    assert!(!store.exists(&key("missing")).await.unwrap());
    assert!(store.exists(&key("a")).await.unwrap());
    store.delete(&key("missing")).await.unwrap();
    // list under a prefix, with sizes
    assert!(store
        .put_if_absent(&key("chunks/c2"), vec![0u8; 1000])
        .await
        .unwrap());
    let listed = store.list(&key("chunks")).await.unwrap();
    assert_eq!(
        listed,
        vec![(key("chunks/c1"), 5), (key("chunks/c2"), 1000)]
    );
    // delete
    store.delete(&key("chunks/c1")).await.unwrap();
    assert!(!store.exists(&key("chunks/c1")).await.unwrap());
    assert_eq!(store.list(&key("chunks")).await.unwrap().len(), 1);
    // concurrent put_if_absent of one key: exactly one writer wins
    let mut writers = Vec::new();
    for i in 0..8u8 {
        let s = store.clone();
        let k = key("chunks/race");
        writers.push(async move { s.put_if_absent(&k, vec![i; 64]).await.unwrap() });
    }
    let won = futures::future::join_all(writers).await;
    let winners = won.iter().filter(|w| **w).count();
    if store.creates_atomically() {
        assert_eq!(winners, 1, "one writer wins");
    } else {
        assert!(winners >= 1, "someone wrote");
    }
    let kept = store.get(&key("chunks/race"), 64).await.unwrap();
    assert!(
        kept.iter().all(|b| *b == kept[0]),
        "the object is one writer's, whole"
    );
    // unsynced puts: the same answers, whole objects, never clobbering;
    // then synced together
    assert!(store
        .put_if_absent_unsynced(&key("chunks/u1"), vec![7; 300])
        .await
        .unwrap());
    assert!(!store
        .put_if_absent_unsynced(&key("chunks/u1"), vec![8; 300])
        .await
        .unwrap());
    assert!(!store
        .put_if_absent(&key("chunks/u1"), vec![9; 300])
        .await
        .unwrap());
    store.sync_written().await.unwrap();
    assert_eq!(
        store.get(&key("chunks/u1"), 300).await.unwrap(),
        vec![7; 300]
    );
    store.delete(&key("chunks/u1")).await.unwrap();
    let e = store.put("bad//key", vec![]).await.unwrap_err();
    assert_eq!(e.code, "object_key_invalid");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_directory_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::local(&dir.path().join("objects")).unwrap();
        conformance(&store, "region1").await;
        // It really is files on disk, and no temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path().join("objects/region1/chunks"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[tokio::test]
    async fn a_real_s3_server_keeps_the_contract() {
        let Some(config) = S3Config::from_test_env() else {
            return;
        };
        let store = Store::s3(&config).unwrap();
        assert!(!store.creates_atomically());
        let prefix = format!("conformance-{}", std::process::id());
        conformance(&store, &prefix).await;
        // Under a prefix, the same contract holds and keys stay inside it.
        let scoped = store.with_prefix(&format!("{prefix}-scoped")).unwrap();
        conformance(&scoped, "r").await;
        let outside = store
            .list(&format!("{prefix}-scoped/r/chunks"))
            .await
            .unwrap();
        assert_eq!(outside.len(), 2, "{outside:?}");
    }

    #[tokio::test]
    async fn transient_s3_errors_are_retried() {
        let Some(mut config) = S3Config::from_test_env() else {
            return;
        };
        let proxy = reprise_testing::s3_proxy::S3Proxy::start(&config.endpoint);
        proxy.refuse(3);
        config.endpoint = proxy.endpoint.clone();
        let store = Store::s3(&config)
            .unwrap()
            .with_prefix(&format!("flaky-{}", std::process::id()))
            .unwrap();
        // The first requests meet 503s; retried with backoff, they succeed.
        store.put("a", b"kept".to_vec()).await.unwrap();
        assert_eq!(store.get("a", 10).await.unwrap(), b"kept");
        assert_eq!(proxy.refused(), 3, "the proxy refused requests");
        store.delete("a").await.unwrap();
    }

    #[tokio::test]
    async fn the_in_memory_store_keeps_the_contract() {
        let store = Store::from_object_store(
            Arc::new(object_store::memory::InMemory::new()),
            "memory".into(),
        );
        conformance(&store, "region1").await;
    }
}
