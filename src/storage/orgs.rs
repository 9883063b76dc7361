//! Organisations and the hashes of their API keys, with a read-through
//! cache: every ingest authenticates its key and looks up its event's
//! organisation (and its reseller), three sled reads and decodes that were
//! about 3 % of the CPU of the delivery benchmark's (b).
//!
//! NB: the cache is sound because an organisation never changes once
//! stored (there is no update, delete or key rotation). Whatever adds one
//! must invalidate here. Only hits are cached, so an organisation created
//! after a failed lookup is found at once.

use std::collections::HashMap;
use std::sync::RwLock;

use sled::transaction::ConflictableTransactionError;
use sled::Transactional;
use uuid::Uuid;

use super::codec::{decode, encode};
use super::{Result, Store};
use crate::domain::organisation::Organisation;

#[derive(Default)]
pub(super) struct OrgCache {
    by_id: RwLock<HashMap<Uuid, Organisation>>,
    by_key: RwLock<HashMap<[u8; 32], Uuid>>,
}

/// Each write is one statement, so a poisoned lock still holds a sound map.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

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
        let cache = &self.inner.org_cache;
        if let Some(org) = read(&cache.by_id).get(&id) {
            return Ok(Some(org.clone()));
        }
        let Some(bytes) = self.inner.orgs.get(id.as_bytes())? else {
            return Ok(None);
        };
        let org: Organisation = decode("organisation", &bytes)?;
        write(&cache.by_id).insert(id, org.clone());
        Ok(Some(org))
    }

    pub fn org_by_key_hash(&self, hash: &[u8; 32]) -> Result<Option<Organisation>> {
        let cached = read(&self.inner.org_cache.by_key).get(hash).copied();
        let id = match cached {
            Some(id) => id,
            None => match self.inner.api_keys.get(hash)? {
                Some(id) => match Uuid::from_slice(&id) {
                    Ok(id) => id,
                    Err(_) => return Ok(None),
                },
                None => return Ok(None),
            },
        };
        let org = self.org(id)?;
        if cached.is_none() && org.is_some() {
            write(&self.inner.org_cache.by_key).insert(*hash, id);
        }
        Ok(org)
    }

    /// Up to `limit` organisations older than `before` (all if `None`)
    /// that `keep` takes, newest first.
    pub fn orgs_page(
        &self,
        keep: impl Fn(&Organisation) -> bool,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Organisation>> {
        let before = before.unwrap_or(Uuid::max());
        let mut out = Vec::new();
        for item in self.inner.orgs.range(..&before.as_bytes()[..]).rev() {
            if out.len() == limit {
                break;
            }
            let org: Organisation = decode("organisation", &item?.1)?;
            if keep(&org) {
                out.push(org);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::organisation::OrgKind;

    #[test]
    fn a_missed_lookup_does_not_hide_an_organisation_stored_later() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let org = Organisation {
            id: Uuid::now_v7(),
            name: "acme".into(),
            kind: OrgKind::Organisation,
            reseller_id: None,
            created_at: 1,
        };
        let key = [7u8; 32];
        assert_eq!(store.org(org.id).unwrap(), None);
        assert_eq!(store.org_by_key_hash(&key).unwrap(), None);

        store.insert_org(&org, key).unwrap();
        for _ in 0..2 {
            // The first round reads sled, the second the cache.
            assert_eq!(store.org(org.id).unwrap().as_ref(), Some(&org));
            assert_eq!(store.org_by_key_hash(&key).unwrap().as_ref(), Some(&org));
            assert_eq!(store.org_by_key_hash(&[8u8; 32]).unwrap(), None);
        }
    }
}
