//! Organisations and the hashes of their API keys.

use sled::transaction::ConflictableTransactionError;
use sled::Transactional;
use uuid::Uuid;

use super::codec::{decode, encode};
use super::{Result, Store};
use crate::domain::organisation::Organisation;

impl Store {
    /// Stores an organisation and the hash of its key together.
    pub fn insert_org(&self, org: &Organisation, key_hash: [u8; 32]) -> Result<()> {
        let i = &self.inner;
        (&i.orgs, &i.api_keys).transaction(|(orgs, keys)| {
            orgs.insert(org.id.as_bytes(), encode(org))?;
            keys.insert(&key_hash, org.id.as_bytes())?;
            Ok::<_, ConflictableTransactionError<String>>(())
        })?;
        Ok(())
    }

    pub fn org(&self, id: Uuid) -> Result<Option<Organisation>> {
        self.inner
            .orgs
            .get(id.as_bytes())?
            .map(|v| decode("organisation", &v))
            .transpose()
    }

    pub fn org_by_key_hash(&self, hash: &[u8; 32]) -> Result<Option<Organisation>> {
        match self.inner.api_keys.get(hash)? {
            Some(id) => match Uuid::from_slice(&id) {
                Ok(id) => self.org(id),
                Err(_) => Ok(None),
            },
            None => Ok(None),
        }
    }

    /// Every organisation `keep` accepts, newest first.
    pub fn orgs(&self, keep: impl Fn(&Organisation) -> bool) -> Result<Vec<Organisation>> {
        let mut out = Vec::new();
        for item in self.inner.orgs.iter() {
            let (_, v) = item?;
            let org: Organisation = decode("organisation", &v)?;
            if keep(&org) {
                out.push(org);
            }
        }
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(out)
    }
}
