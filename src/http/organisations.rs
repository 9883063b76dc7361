//! `/v1/organisations`: the admin creates organisations and resellers (a
//! reseller may create its own child organisations); each gets an API key
//! shown once.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::body::ApiJson;
use super::{auth, parse_id, AppState, PageQuery};
use crate::clock::{self, now_ms};
use crate::domain::organisation::{Caller, OrgKind, Organisation};
use crate::error::{ApiError, ErrorBody};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/me").get(me))
        .service(web::resource("/organisations").get(list).post(create))
        .service(web::resource("/organisations/{id}").get(get));
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrganisationIn {
    name: String,
    kind: OrgKind,
    reseller_id: Option<Uuid>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OrganisationOut {
    id: Uuid,
    name: String,
    kind: OrgKind,
    reseller_id: Option<Uuid>,
    created_at: String,
    /// Only in the create response.
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<String>,
}

/// Organisations within scope, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OrganisationList {
    data: Vec<OrganisationOut>,
    /// Pass as `before` for the next page; null on the last (and without
    /// `limit`).
    next_before: Option<Uuid>,
}

/// The admin (`kind: "admin"`) or the key's organisation.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MeOut {
    kind: String,
    #[serde(flatten)]
    organisation: Option<OrganisationOut>,
}

impl From<&Organisation> for OrganisationOut {
    fn from(o: &Organisation) -> Self {
        OrganisationOut {
            id: o.id,
            name: o.name.clone(),
            kind: o.kind,
            reseller_id: o.reseller_id,
            created_at: clock::iso(o.created_at),
            api_key: None,
        }
    }
}

fn not_found() -> ApiError {
    ApiError::not_found("organisation_not_found", "Organisation not found")
}

#[utoipa::path(post, path = "/v1/organisations", tag = "organisations", request_body = OrganisationIn,
    responses((status = 201, body = OrganisationOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<OrganisationIn>,
) -> Result<HttpResponse, ApiError> {
    let name = crate::domain::webhook::validate_name(&input.name)
        .map_err(|m| ApiError::validation("name", m))?;
    let reseller_id = match (&caller, input.kind) {
        (Caller::Admin, OrgKind::Organisation) => input.reseller_id,
        (Caller::Admin, OrgKind::Reseller) if input.reseller_id.is_some() => {
            return Err(ApiError::validation(
                "reseller_id",
                "a reseller cannot belong to another reseller",
            ))
        }
        (Caller::Admin, OrgKind::Reseller) => None,
        // A reseller creates its own children, and nothing else.
        (Caller::Org(me), OrgKind::Organisation) if me.kind == OrgKind::Reseller => {
            if input.reseller_id.is_some_and(|r| r != me.id) {
                return Err(not_found());
            }
            Some(me.id)
        }
        (Caller::Org(_), _) => return Err(ApiError::not_found("not_found", "no such route")),
    };
    if let Some(rid) = reseller_id {
        match state.store.org(rid)? {
            Some(r) if r.kind == OrgKind::Reseller => {}
            _ => {
                return Err(ApiError::validation(
                    "reseller_id",
                    "must be the id of an existing reseller",
                ))
            }
        }
    }
    let org = Organisation {
        id: Uuid::now_v7(),
        name,
        kind: input.kind,
        reseller_id,
        created_at: now_ms(),
    };
    let key = auth::new_key("hr_");
    state.store.insert_org(&org, auth::hash_key(&key))?;
    state.store.flush().await?;
    let mut out = OrganisationOut::from(&org);
    out.api_key = Some(key);
    Ok(HttpResponse::Created().json(out))
}

/// Who the key belongs to (the dashboard shows it).
#[utoipa::path(get, path = "/v1/me", tag = "organisations",
    responses((status = 200, body = MeOut), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
pub async fn me(caller: Caller) -> HttpResponse {
    let out = match caller {
        Caller::Admin => MeOut {
            kind: "admin".into(),
            organisation: None,
        },
        Caller::Org(org) => MeOut {
            kind: match org.kind {
                OrgKind::Reseller => "reseller".into(),
                OrgKind::Organisation => "organisation".into(),
            },
            organisation: Some(OrganisationOut::from(&org)),
        },
    };
    HttpResponse::Ok().json(out)
}

#[utoipa::path(get, path = "/v1/organisations", tag = "organisations", params(PageQuery),
    responses((status = 200, body = OrganisationList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let to_read = query.to_read()?;
    let mut orgs = match &caller {
        // Only a reseller has organisations under it: no need to scan them all.
        Caller::Org(me) if me.kind == OrgKind::Organisation => {
            let on_page = query.before.is_none_or(|before| me.id < before);
            on_page.then(|| me.clone()).into_iter().collect()
        }
        Caller::Org(me) => state
            .store
            .reseller_orgs_page(me.id, query.before, to_read)?,
        Caller::Admin => state.store.orgs_page(query.before, to_read)?,
    };
    let next_before = query.cut(&mut orgs, |o| o.id);
    let data: Vec<OrganisationOut> = orgs.iter().map(OrganisationOut::from).collect();
    Ok(HttpResponse::Ok().json(OrganisationList { data, next_before }))
}

#[utoipa::path(get, path = "/v1/organisations/{id}", tag = "organisations", params(("id" = Uuid, Path)),
    responses((status = 200, body = OrganisationOut), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path, not_found)?;
    match state.store.org(id)? {
        Some(org) if caller.can_see_org(&org) => {
            Ok(HttpResponse::Ok().json(OrganisationOut::from(&org)))
        }
        _ => Err(not_found()),
    }
}
