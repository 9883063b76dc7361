//! Organisations, resellers, and who may see what (SPEC §1).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrgKind {
    Reseller,
    Organisation,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Organisation {
    pub id: Uuid,
    pub name: String,
    pub kind: OrgKind,
    pub reseller_id: Option<Uuid>,
    pub created_at: u64,
}

/// Who is calling: the admin, or the organisation an API key belongs to.
#[derive(Debug, Clone)]
pub enum Caller {
    Admin,
    Org(Organisation),
}

impl Caller {
    pub fn org_id(&self) -> Option<Uuid> {
        match self {
            Caller::Admin => None,
            Caller::Org(o) => Some(o.id),
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::Admin)
    }

    /// The organisation itself, its reseller, or the admin.
    pub fn can_see_org(&self, org: &Organisation) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Org(me) => me.id == org.id || org.reseller_id == Some(me.id),
        }
    }

    /// Webhooks are private to their owner (and the admin).
    pub fn owns(&self, owner: Uuid) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Org(me) => me.id == owner,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(kind: OrgKind, reseller_id: Option<Uuid>) -> Organisation {
        Organisation {
            id: Uuid::new_v4(),
            name: "x".into(),
            kind,
            reseller_id,
            created_at: 0,
        }
    }

    #[test]
    fn scope_rules() {
        let reseller = org(OrgKind::Reseller, None);
        let child = org(OrgKind::Organisation, Some(reseller.id));
        let stranger = org(OrgKind::Organisation, None);
        let as_reseller = Caller::Org(reseller.clone());
        assert!(as_reseller.can_see_org(&child));
        assert!(as_reseller.can_see_org(&reseller));
        assert!(!as_reseller.can_see_org(&stranger));
        assert!(!Caller::Org(child.clone()).can_see_org(&reseller));
        assert!(!as_reseller.owns(child.id));
        assert!(Caller::Admin.can_see_org(&stranger) && Caller::Admin.owns(stranger.id));
    }
}
