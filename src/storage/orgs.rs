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
use super::{pair_key, second_id, Result, Store};
use crate::domain::organisation::{OrgKind, Organisation};

/// In `meta`: set once `orgs_by_reseller` lists every organisation stored
/// before it existed.
const RESELLER_INDEX_BUILT: &[u8] = b"orgs_by_reseller_built";

/// Where an organisation is listed in `orgs_by_reseller`: under its
/// reseller, or under itself if it is one.
fn reseller_key(org: &Organisation) -> Option<[u8; 32]> {
    match (org.kind, org.reseller_id) {
        (OrgKind::Reseller, _) => Some(pair_key(org.id, org.id)),
        (_, Some(reseller)) => Some(pair_key(reseller, org.id)),
        _ => None,
    }
}

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
        (&i.orgs, &i.api_keys, &i.orgs_by_reseller).transaction(|(orgs, keys, by_reseller)| {
            orgs.insert(org.id.as_bytes(), encode(org))?;
            keys.insert(&key_hash, org.id.as_bytes())?;
            if let Some(key) = reseller_key(org) {
                by_reseller.insert(&key, &[])?;
            }
            Ok::<_, ConflictableTransactionError<String>>(())
        })?;
        Ok(())
    }

    /// Lists in `orgs_by_reseller` the organisations of a store written
    /// before it existed; once.
    pub(super) fn index_orgs_by_reseller(&self) -> Result<()> {
        let i = &self.inner;
        if i.meta.contains_key(RESELLER_INDEX_BUILT)? {
            return Ok(());
        }
        for item in i.orgs.iter() {
            let org: Organisation = decode("organisation", &item?.1)?;
            if let Some(key) = reseller_key(&org) {
                i.orgs_by_reseller.insert(key, &[])?;
            }
        }
        i.meta.insert(RESELLER_INDEX_BUILT, &[])?;
        Ok(())
    }

    /// Up to `limit` of a reseller's organisations (itself and its
    /// children) older than `before` (all if `None`), newest first.
    pub fn reseller_orgs_page(
        &self,
        reseller: Uuid,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Organisation>> {
        let from = pair_key(reseller, Uuid::nil());
        let to = pair_key(reseller, before.unwrap_or(Uuid::max()));
        let mut out = Vec::new();
        for item in self.inner.orgs_by_reseller.range(from..to).rev() {
            if out.len() == limit {
                break;
            }
            let (key, _) = item?;
            let org = second_id(&key).map(|id| self.org(id)).transpose()?;
            out.extend(org.flatten());
        }
        Ok(out)
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

    /// Up to `limit` organisations older than `before` (all if `None`),
    /// newest first.
    pub fn orgs_page(&self, before: Option<Uuid>, limit: usize) -> Result<Vec<Organisation>> {
        let before = before.unwrap_or(Uuid::max());
        let older = self.inner.orgs.range(..&before.as_bytes()[..]).rev();
        older
            .take(limit)
            .map(|item| decode("organisation", &item?.1))
            .collect()
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

    fn org(kind: OrgKind, reseller_id: Option<Uuid>) -> Organisation {
        Organisation {
            id: Uuid::now_v7(),
            name: "o".into(),
            kind,
            reseller_id,
            created_at: 1,
        }
    }

    fn ids(orgs: Vec<Organisation>) -> Vec<Uuid> {
        orgs.into_iter().map(|o| o.id).collect()
    }

    #[test]
    fn a_resellers_page_lists_itself_and_its_children_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let reseller = org(OrgKind::Reseller, None);
        let other = org(OrgKind::Reseller, None);
        let (a, stray, b) = (
            org(OrgKind::Organisation, Some(reseller.id)),
            org(OrgKind::Organisation, Some(other.id)),
            org(OrgKind::Organisation, Some(reseller.id)),
        );
        let alone = org(OrgKind::Organisation, None);
        for (n, o) in [&reseller, &other, &a, &stray, &b, &alone]
            .into_iter()
            .enumerate()
        {
            store.insert_org(o, [n as u8; 32]).unwrap();
        }
        let page = |before, limit| {
            ids(store
                .reseller_orgs_page(reseller.id, before, limit)
                .unwrap())
        };
        assert_eq!(page(None, 10), vec![b.id, a.id, reseller.id]);
        assert_eq!(page(None, 2), vec![b.id, a.id]);
        assert_eq!(page(Some(a.id), 2), vec![reseller.id]);
        assert_eq!(page(Some(reseller.id), 2), Vec::<Uuid>::new());

        // A store written before the index: it is built at the next start.
        drop(store);
        {
            let db = sled::open(dir.path().join("data")).unwrap();
            db.open_tree("orgs_by_reseller").unwrap().clear().unwrap();
            db.open_tree("meta")
                .unwrap()
                .remove(RESELLER_INDEX_BUILT)
                .unwrap();
            db.flush().unwrap();
        }
        let store = Store::open(&dir.path().join("data")).unwrap();
        let listed = ids(store.reseller_orgs_page(reseller.id, None, 10).unwrap());
        assert_eq!(listed, vec![b.id, a.id, reseller.id]);
        let all = ids(store.orgs_page(None, 10).unwrap());
        assert_eq!(
            all,
            vec![alone.id, b.id, stray.id, a.id, other.id, reseller.id]
        );
    }
}
