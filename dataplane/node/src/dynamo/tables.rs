//! Table operations. Changes (CreateTable, UpdateTable, DeleteTable, TTL,
//! tags) go to the control plane's REST API on behalf of the request's
//! API key (which needs `manage` access to the table): Postgres stays the
//! one source of truth and the table reaches every node through the
//! reconciler, as one made in the console does. Descriptions (DescribeTable,
//! ListTables, DescribeTimeToLive, ListTagsOfResource) come from this
//! node's catalog, so they work with the control plane down; changes then
//! fail with `ServiceUnavailable`.

use axum::http::{HeaderMap, StatusCode};
use dyno_ddb::schema::{KeySchema, TableSchema};
use serde_json::{Value as Json, json};

use super::request::{Req, check_table_name, missing};
use super::{ApiError, ApiResult};
use crate::catalog::{Access, TableEntry};
use crate::service::{RequestCtx, Service};

fn arn(tenant: &str, table: &str) -> String {
    format!("arn:aws:dynamodb:dyno:{tenant}:table/{table}")
}

/// The table an ARN names, in the caller's tenant.
fn table_of_arn<'a>(ctx: &RequestCtx, arn: &'a str) -> ApiResult<&'a str> {
    let (prefix, table) = arn.rsplit_once(":table/").ok_or_else(|| {
        ApiError::validation(format!(
            "Invalid TableArn: {arn}: expected arn:aws:dynamodb:<region>:<tenant>:table/<name>"
        ))
    })?;
    let tenant = prefix.rsplit(':').next().unwrap_or("");
    if tenant != ctx.tenant {
        return Err(ApiError::not_found(format!(
            "Requested resource not found: ResourceArn: {arn} not found"
        )));
    }
    check_table_name(table)?;
    Ok(table)
}

/// A `TableDescription`.
fn description(
    tenant: &str,
    name: &str,
    schema: Option<&TableSchema>,
    created_secs: f64,
    status: &str,
) -> Json {
    let mut d = json!({
        "TableName": name,
        "TableStatus": status,
        "TableArn": arn(tenant, name),
        "CreationDateTime": created_secs,
        "ItemCount": 0,
        "TableSizeBytes": 0,
        "DeletionProtectionEnabled": false,
    });
    if let Some(s) = schema {
        d["KeySchema"] = s.key.key_schema_json();
        d["AttributeDefinitions"] = s.key.definitions_json();
        d["BillingModeSummary"] = json!({"BillingMode": s.billing_mode});
        d["ProvisionedThroughput"] = json!({
            "ReadCapacityUnits": s.read_capacity,
            "WriteCapacityUnits": s.write_capacity,
            "NumberOfDecreasesToday": 0,
        });
    }
    d
}

/// The `TableDescription` of a catalog entry, with this node's estimate
/// of its items and bytes ([`Service::table_estimate`]).
fn describe(service: &Service, entry: &TableEntry, status: &str) -> Json {
    let mut d = description(
        &entry.tenant,
        entry.display_name(),
        entry.dynamo.as_ref(),
        (entry.version >> 16) as f64 / 1000.0,
        status,
    );
    d["TableId"] = json!(entry.name.trim_start_matches('#'));
    let load = service.table_estimate(entry);
    d["ItemCount"] = json!(load.items);
    d["TableSizeBytes"] = json!(load.bytes);
    d
}

/// A call to the control plane on behalf of the request's key.
async fn controlplane(
    service: &Service,
    ctx: &RequestCtx,
    method: reqwest::Method,
    path: &str,
    body: Option<Json>,
) -> ApiResult<Json> {
    let (base, client) = service.controlplane().ok_or_else(|| {
        ApiError::unavailable(
            "table changes go through the control plane, and this node has none configured (--controlplane-url)",
        )
    })?;
    let token = service.token_of(ctx).ok_or_else(|| {
        ApiError::validation("table changes through the DynamoDB API need an API key")
    })?;
    let mut req = client
        .request(method, format!("{}{path}", base.trim_end_matches('/')))
        .bearer_auth(token)
        .timeout(std::time::Duration::from_secs(10));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.map_err(|e| {
        tracing::warn!(error = %e, "control plane unreachable");
        ApiError::unavailable(
            "the control plane is unreachable: table changes are unavailable for now (item operations keep working)",
        )
    })?;
    let status = resp.status();
    let body: Json = resp.json().await.unwrap_or_else(|_| json!({}));
    if status.is_success() {
        return Ok(body);
    }
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or("the control plane refused the change")
        .to_owned();
    Err(match status.as_u16() {
        400 => ApiError::validation(message),
        401 => ApiError::new(
            StatusCode::BAD_REQUEST,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ),
        403 => ApiError::new(
            StatusCode::BAD_REQUEST,
            "AccessDeniedException",
            format!("User is not authorized to perform this action: {message}"),
        ),
        404 => ApiError::not_found(format!("Requested resource not found: {message}")),
        409 => ApiError::in_use(message),
        429 => ApiError::new(StatusCode::BAD_REQUEST, "ThrottlingException", message),
        503 => ApiError::unavailable(message),
        _ => ApiError::internal(),
    })
}

fn unsupported(r: &Req<'_>, fields: &[&str]) -> ApiResult<()> {
    for f in fields {
        let present = match r.get(f) {
            None => false,
            Some(Json::Array(a)) => !a.is_empty(),
            Some(_) => true,
        };
        if present {
            return Err(ApiError::validation(format!(
                "{f} is not supported by Dyno yet (no secondary indexes or streams)"
            )));
        }
    }
    Ok(())
}

fn throughput(r: &Req<'_>) -> ApiResult<(u64, u64)> {
    match r.object("ProvisionedThroughput")? {
        None => Ok((0, 0)),
        Some(p) => Ok((
            p.u64("ReadCapacityUnits")?.unwrap_or(0),
            p.u64("WriteCapacityUnits")?.unwrap_or(0),
        )),
    }
}

fn billing(r: &Req<'_>, default: &str) -> ApiResult<String> {
    match r.str("BillingMode")? {
        None => Ok(default.to_owned()),
        Some(m @ ("PROVISIONED" | "PAY_PER_REQUEST")) => Ok(m.to_owned()),
        Some(other) => Err(ApiError::validation(format!(
            "1 validation error detected: Value '{other}' at 'billingMode' failed to satisfy constraint: Member must satisfy enum value set: [PROVISIONED, PAY_PER_REQUEST]"
        ))),
    }
}

fn tags_of(list: Option<&Vec<Json>>) -> ApiResult<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for t in list.into_iter().flatten() {
        let t = Req(t);
        out.insert(
            t.required_str("Key")?.to_owned(),
            t.str("Value")?.unwrap_or("").to_owned(),
        );
    }
    Ok(out)
}

/// CreateTable.
pub async fn create_table(service: &Service, ctx: &RequestCtx, input: &Json) -> ApiResult<Json> {
    let r = Req(input);
    let name = r.table_name()?;
    unsupported(&r, &["GlobalSecondaryIndexes", "LocalSecondaryIndexes"])?;
    if let Some(s) = r.object("StreamSpecification")?
        && s.bool("StreamEnabled")?.unwrap_or(false)
    {
        return Err(ApiError::validation(
            "Streams are not supported by Dyno yet",
        ));
    }
    ctx.principal.authorize(name, Access::Manage)?;
    let key = KeySchema::from_create(
        r.get("KeySchema").ok_or_else(|| missing("KeySchema"))?,
        r.get("AttributeDefinitions")
            .ok_or_else(|| missing("AttributeDefinitions"))?,
    )?;
    let billing_mode = billing(&r, "PROVISIONED")?;
    let (read_capacity, write_capacity) = throughput(&r)?;
    if billing_mode == "PROVISIONED" && r.get("ProvisionedThroughput").is_none() {
        return Err(ApiError::validation(
            "One or more parameter values were invalid: ReadCapacityUnits and WriteCapacityUnits must both be specified when BillingMode is PROVISIONED",
        ));
    }
    let schema = TableSchema {
        key,
        billing_mode,
        read_capacity,
        write_capacity,
        ttl_attribute: None,
        tags: tags_of(r.list("Tags")?)?,
    };
    let members = service.ring_members();
    let n = members.clamp(1, 3) as u32;
    let q = n / 2 + 1;
    controlplane(
        service,
        ctx,
        reqwest::Method::POST,
        "/api/v1/tables",
        Some(json!({
            "name": name, "n": n, "r": q, "w": q, "conflict": "lww",
            "dynamo": serde_json::to_value(&schema).map_err(|_| ApiError::internal())?,
        })),
    )
    .await
    .map_err(|e| {
        if e.type_name == "ResourceInUseException" {
            ApiError::in_use(format!("Table already exists: {name}"))
        } else {
            e
        }
    })?;
    let now = crate::sys::wall_ms() as f64 / 1000.0;
    Ok(json!({"TableDescription": description(&ctx.tenant, name, Some(&schema), now, "CREATING")}))
}

fn entry(
    service: &Service,
    ctx: &RequestCtx,
    name: &str,
    access: Access,
) -> ApiResult<std::sync::Arc<TableEntry>> {
    service.ddb_table(ctx, name, access).map_err(|e| {
        if e.code == crate::error::ErrorCode::TableNotFound {
            ApiError::not_found(format!(
                "Requested resource not found: Table: {name} not found"
            ))
        } else {
            e.into()
        }
    })
}

/// DescribeTable.
pub fn describe_table(service: &Service, ctx: &RequestCtx, input: &Json) -> ApiResult<Json> {
    let r = Req(input);
    let name = r.table_name()?;
    let e = entry(service, ctx, name, Access::Read)?;
    Ok(json!({"Table": describe(service, &e, "ACTIVE")}))
}

/// ListTables.
pub fn list_tables(service: &Service, ctx: &RequestCtx, input: &Json) -> ApiResult<Json> {
    let r = Req(input);
    let limit = match r.u64("Limit")? {
        None => 100,
        Some(l @ 1..=100) => l as usize,
        Some(l) => {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{l}' at 'limit' failed to satisfy constraint: Member must have value less than or equal to 100 and greater than or equal to 1"
            )));
        }
    };
    let after = r.str("ExclusiveStartTableName")?;
    let names: Vec<String> = service
        .ddb_tables(ctx)
        .iter()
        .map(|t| t.display_name().to_owned())
        .filter(|n| after.is_none_or(|a| n.as_str() > a))
        .collect();
    let page: Vec<&String> = names.iter().take(limit).collect();
    let mut out = json!({"TableNames": page});
    if names.len() > limit
        && let Some(last) = page.last()
    {
        out["LastEvaluatedTableName"] = json!(last);
    }
    Ok(out)
}

/// DeleteTable.
pub async fn delete_table(service: &Service, ctx: &RequestCtx, input: &Json) -> ApiResult<Json> {
    let r = Req(input);
    let name = r.table_name()?;
    ctx.principal.authorize(name, Access::Manage)?;
    let known = service.ddb_table(ctx, name, Access::Manage).ok();
    controlplane(
        service,
        ctx,
        reqwest::Method::DELETE,
        &format!("/api/v1/tables/{name}"),
        None,
    )
    .await
    .map_err(|e| {
        if e.type_name == "ResourceNotFoundException" {
            ApiError::not_found(format!(
                "Requested resource not found: Table: {name} not found"
            ))
        } else {
            e
        }
    })?;
    let d = match known {
        Some(e) => describe(service, &e, "DELETING"),
        None => json!({"TableName": name, "TableStatus": "DELETING"}),
    };
    Ok(json!({"TableDescription": d}))
}

async fn patch(service: &Service, ctx: &RequestCtx, name: &str, dynamo: Json) -> ApiResult<()> {
    ctx.principal.authorize(name, Access::Manage)?;
    controlplane(
        service,
        ctx,
        reqwest::Method::PATCH,
        &format!("/api/v1/tables/{name}"),
        Some(json!({ "dynamo": dynamo })),
    )
    .await
    .map(|_| ())
}

/// UpdateTable: billing mode and provisioned throughput are accepted and
/// reported (Dyno's own throughput limits are set in the console).
pub async fn update_table(service: &Service, ctx: &RequestCtx, input: &Json) -> ApiResult<Json> {
    let r = Req(input);
    let name = r.table_name()?;
    unsupported(&r, &["GlobalSecondaryIndexUpdates", "ReplicaUpdates"])?;
    let e = entry(service, ctx, name, Access::Manage)?;
    let schema = e.dynamo.clone().ok_or_else(ApiError::internal)?;
    let billing_mode = billing(&r, &schema.billing_mode)?;
    let (rc, wc) = match r.get("ProvisionedThroughput") {
        Some(_) => throughput(&r)?,
        None => (schema.read_capacity, schema.write_capacity),
    };
    patch(
        service,
        ctx,
        name,
        json!({"billing_mode": billing_mode, "read_capacity": rc, "write_capacity": wc}),
    )
    .await?;
    let mut d = describe(service, &e, "ACTIVE");
    d["BillingModeSummary"] = json!({"BillingMode": billing_mode});
    d["ProvisionedThroughput"] =
        json!({"ReadCapacityUnits": rc, "WriteCapacityUnits": wc, "NumberOfDecreasesToday": 0});
    Ok(json!({"TableDescription": d}))
}

/// DescribeTimeToLive.
pub fn describe_ttl(service: &Service, ctx: &RequestCtx, input: &Json) -> ApiResult<Json> {
    let r = Req(input);
    let name = r.table_name()?;
    let e = entry(service, ctx, name, Access::Read)?;
    let d = match e.dynamo.as_ref().and_then(|s| s.ttl_attribute.as_ref()) {
        Some(a) => json!({"TimeToLiveStatus": "ENABLED", "AttributeName": a}),
        None => json!({"TimeToLiveStatus": "DISABLED"}),
    };
    Ok(json!({"TimeToLiveDescription": d}))
}

/// UpdateTimeToLive.
pub async fn update_ttl(service: &Service, ctx: &RequestCtx, input: &Json) -> ApiResult<Json> {
    let r = Req(input);
    let name = r.table_name()?;
    let spec = r
        .object("TimeToLiveSpecification")?
        .ok_or_else(|| missing("TimeToLiveSpecification"))?;
    let enabled = spec.bool("Enabled")?.ok_or_else(|| missing("Enabled"))?;
    let attr = spec.required_str("AttributeName")?;
    if attr.is_empty() {
        return Err(ApiError::validation(
            "TimeToLiveSpecification.AttributeName must not be empty",
        ));
    }
    let e = entry(service, ctx, name, Access::Manage)?;
    let current = e.dynamo.as_ref().and_then(|s| s.ttl_attribute.clone());
    match (&current, enabled) {
        (Some(_), true) => {
            return Err(ApiError::validation("TimeToLive is already enabled"));
        }
        (None, false) => {
            return Err(ApiError::validation("TimeToLive is already disabled"));
        }
        (Some(a), false) if a != attr => {
            return Err(ApiError::validation(format!(
                "TimeToLive is enabled on attribute {a}, not {attr}"
            )));
        }
        _ => {}
    }
    patch(
        service,
        ctx,
        name,
        json!({"ttl": {"enabled": enabled, "attribute": attr}}),
    )
    .await?;
    Ok(json!({"TimeToLiveSpecification": {"Enabled": enabled, "AttributeName": attr}}))
}

/// TagResource.
pub async fn tag_resource(service: &Service, ctx: &RequestCtx, input: &Json) -> ApiResult<Json> {
    let r = Req(input);
    let name = table_of_arn(ctx, r.required_str("ResourceArn")?)?;
    let tags = tags_of(Some(r.list("Tags")?.ok_or_else(|| missing("Tags"))?))?;
    entry(service, ctx, name, Access::Manage)?;
    patch(service, ctx, name, json!({"tags_set": tags})).await?;
    Ok(json!({}))
}

/// UntagResource.
pub async fn untag_resource(service: &Service, ctx: &RequestCtx, input: &Json) -> ApiResult<Json> {
    let r = Req(input);
    let name = table_of_arn(ctx, r.required_str("ResourceArn")?)?;
    let keys: Vec<String> = r
        .list("TagKeys")?
        .ok_or_else(|| missing("TagKeys"))?
        .iter()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    entry(service, ctx, name, Access::Manage)?;
    patch(service, ctx, name, json!({"tags_remove": keys})).await?;
    Ok(json!({}))
}

/// ListTagsOfResource.
pub fn list_tags(service: &Service, ctx: &RequestCtx, input: &Json) -> ApiResult<Json> {
    let r = Req(input);
    let name = table_of_arn(ctx, r.required_str("ResourceArn")?)?;
    let e = entry(service, ctx, name, Access::Read)?;
    let tags: Vec<Json> = e
        .dynamo
        .as_ref()
        .map(|s| {
            s.tags
                .iter()
                .map(|(k, v)| json!({"Key": k, "Value": v}))
                .collect()
        })
        .unwrap_or_default();
    Ok(json!({"Tags": tags}))
}

/// DescribeEndpoints: this node (the SDKs' endpoint discovery).
pub fn describe_endpoints(headers: &HeaderMap) -> Json {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    json!({"Endpoints": [{"Address": host, "CachePeriodInMinutes": 1440}]})
}
