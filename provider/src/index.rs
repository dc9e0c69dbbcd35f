//! The provider as an index provider: [`IndexService`] serves a [`LocalIndexStore`] through
//! [`IndexApi`], after checking each request's signature. The signer is the owner: a request
//! can only name tables in its signer's namespace.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tracing::debug;
use wwt_index::{ApplyReceipt, CatalogBlob, IndexStore, LocalIndexStore, OwnerId, QueryOutput};
use wwt_net::index::{ApplyBatch, CreateTable, DropTable, GetCatalog, PutCatalog, QueryTable};
use wwt_net::{IndexApi, NetError, Signed, Verifier};

use crate::ProviderError;

/// Encrypted indexes of many owners, behind signature checks.
pub struct IndexService {
    store: Arc<LocalIndexStore>,
    verifier: Verifier,
}

impl std::fmt::Debug for IndexService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexService")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl IndexService {
    /// Opens (or creates) the index store in `dir`; requests signed further than `window`
    /// from the local clock are refused.
    pub fn open(dir: &Path, window: Duration) -> Result<IndexService, ProviderError> {
        Ok(IndexService {
            store: Arc::new(LocalIndexStore::open(dir)?),
            verifier: Verifier::new(window),
        })
    }

    /// Closes the store (waits for full-text merges, flushes); call once no request is in
    /// flight.
    pub fn close(self) -> Result<(), ProviderError> {
        match Arc::into_inner(self.store) {
            Some(store) => Ok(store.close()?),
            None => Ok(()),
        }
    }

    /// Runs `op` on the store off the async threads, as the verified signer.
    async fn call<T, R>(
        &self,
        request: Signed<T>,
        op: impl FnOnce(&LocalIndexStore, &OwnerId, T) -> Result<R, wwt_index::IndexError>
        + Send
        + 'static,
    ) -> Result<R, NetError>
    where
        T: wwt_net::auth::Body + Send + 'static,
        R: Send + 'static,
    {
        let (signer, body) = self.verifier.verify(request)?;
        let owner = OwnerId(signer.0);
        let store = self.store.clone();
        let answer = tokio::task::spawn_blocking(move || op(&store, &owner, body))
            .await
            .map_err(|e| NetError::Internal(format!("index task failed: {e}")))?;
        if let Err(e) = &answer {
            debug!(owner = %signer, error = %e, "index request refused");
        }
        Ok(answer?)
    }
}

#[async_trait]
impl IndexApi for IndexService {
    async fn create_table(&self, request: Signed<CreateTable>) -> Result<(), NetError> {
        self.call(request, |s, owner, c| {
            s.create_table(owner, &c.table, &c.schema)
        })
        .await
    }

    async fn drop_table(&self, request: Signed<DropTable>) -> Result<(), NetError> {
        self.call(request, |s, owner, d| s.drop_table(owner, &d.table))
            .await
    }

    async fn apply(&self, request: Signed<ApplyBatch>) -> Result<ApplyReceipt, NetError> {
        self.call(request, |s, owner, a| s.apply(owner, &a.table, &a.batch))
            .await
    }

    async fn query(&self, request: Signed<QueryTable>) -> Result<QueryOutput, NetError> {
        self.call(request, |s, owner, q| s.query(owner, &q.table, &q.query))
            .await
    }

    async fn catalog(&self, request: Signed<GetCatalog>) -> Result<CatalogBlob, NetError> {
        self.call(request, |s, owner, _| s.catalog(owner)).await
    }

    async fn put_catalog(&self, request: Signed<PutCatalog>) -> Result<u64, NetError> {
        self.call(request, |s, owner, p| {
            s.put_catalog(owner, p.expected_version, &p.blob)
        })
        .await
    }
}
