//! Item operations: GetItem, PutItem, DeleteItem, UpdateItem, BatchGetItem,
//! BatchWriteItem, Query, Scan.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use dyno_ddb::expr::parse::{self, Kind};
use dyno_ddb::expr::{CmpOp, Cond, Operand, Path, PathElem, Placeholders, eval};
use dyno_ddb::item;
use dyno_ddb::legacy::{self, Translated};
use dyno_ddb::schema::TableSchema;
use dyno_ddb::write::{ReturnValues, WriteKind, WriteOp};
use serde_json::{Map, Value as Json, json};

use super::request::{Req, missing};
use super::{ApiError, ApiResult};
use crate::catalog::{Access, TableEntry};
use crate::error::ErrorKind;
use crate::service::{DdbFailure, PageSpec, QueryRange, RequestCtx, Service, SortCond};

/// Most keys in one BatchGetItem.
pub const MAX_BATCH_GET: usize = 100;
/// Most requests in one BatchWriteItem.
pub const MAX_BATCH_WRITE: usize = 25;

fn schema(entry: &TableEntry) -> ApiResult<&TableSchema> {
    entry
        .dynamo
        .as_ref()
        .ok_or_else(|| ApiError::validation("not a DynamoDB table"))
}

fn both(expr: &str, legacy: &str) -> ApiError {
    ApiError::validation(format!(
        "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {{{legacy}}} Expression parameters: {{{expr}}}"
    ))
}

/// The expression `expr` of a request, or its legacy twin translated; the
/// names and values of a translation are added to `extra`.
fn expression_or_legacy(
    r: &Req<'_>,
    expr: &str,
    legacy_name: &str,
    translate: impl FnOnce(&Json) -> dyno_ddb::error::DdbResult<Translated>,
    extra: &mut Translated,
) -> ApiResult<Option<String>> {
    match (r.str(expr)?, r.get(legacy_name)) {
        (Some(_), Some(_)) => Err(both(expr, legacy_name)),
        (Some(e), None) => Ok(Some(e.to_owned())),
        (None, Some(l)) => {
            if r.get("ExpressionAttributeNames").is_some()
                || r.get("ExpressionAttributeValues").is_some()
            {
                return Err(ApiError::validation(
                    "ExpressionAttributeNames and ExpressionAttributeValues can only be specified when using expressions",
                ));
            }
            let t = translate(l)?;
            // Placeholders of several legacy parameters must not collide.
            let mut text = t.text.clone();
            let mut renames: Vec<(String, String)> = Vec::new();
            for (k, v) in t.names {
                let fresh = format!("#x{}", extra.names.len());
                renames.push((k, fresh.clone()));
                extra.names.insert(fresh, v);
            }
            for (k, v) in t.values {
                let fresh = format!(":x{}", extra.values.len());
                renames.push((k, fresh.clone()));
                extra.values.insert(fresh, v);
            }
            // Longest first, so that #l1 is not replaced inside #l10.
            renames.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(b.0.cmp(&a.0)));
            for (from, to) in renames {
                text = replace_token(&text, &from, &to);
            }
            Ok((!text.is_empty()).then_some(text))
        }
        (None, None) => Ok(None),
    }
}

/// Replaces whole placeholder tokens.
fn replace_token(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(from) {
        let end = i + from.len();
        let boundary = rest[end..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        out.push_str(&rest[..i]);
        out.push_str(if boundary { to } else { from });
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The request's placeholders, with a legacy translation's added.
fn placeholders(r: &Req<'_>, extra: Translated) -> ApiResult<Placeholders> {
    if extra.names.is_empty() && extra.values.is_empty() {
        return r.placeholders();
    }
    let values = item::from_json(&Json::Object(extra.values))?;
    Ok(Placeholders::new(extra.names, values))
}

/// `ProjectionExpression`, or the legacy `AttributesToGet` translated.
fn projection_text(r: &Req<'_>, extra: &mut Translated) -> ApiResult<Option<String>> {
    expression_or_legacy(
        r,
        "ProjectionExpression",
        "AttributesToGet",
        legacy::attributes_to_get,
        extra,
    )
}

/// A filter expression, parsed and substituted.
fn filter(ph: &mut Placeholders, text: Option<String>) -> ApiResult<Option<Cond>> {
    let Some(text) = text else { return Ok(None) };
    let mut c = parse::condition(Kind::Filter, &text)?;
    ph.cond(&mut c)?;
    Ok(Some(c))
}

fn projection(ph: &mut Placeholders, text: Option<String>) -> ApiResult<Option<Vec<Path>>> {
    let Some(text) = text else { return Ok(None) };
    let mut paths = parse::projection(&text)?;
    for p in &mut paths {
        ph.path(p)?;
    }
    Ok(Some(paths))
}

fn consumed(r: &Req<'_>, table: &str, units: f64) -> ApiResult<Option<Json>> {
    match r.str("ReturnConsumedCapacity")? {
        None | Some("NONE") => Ok(None),
        Some("TOTAL" | "INDEXES") => Ok(Some(json!({"TableName": table, "CapacityUnits": units}))),
        Some(other) => Err(ApiError::validation(format!(
            "1 validation error detected: Value '{other}' at 'returnConsumedCapacity' failed to satisfy constraint: Member must satisfy enum value set: [INDEXES, TOTAL, NONE]"
        ))),
    }
}

/// Read units: 4 KB each, halved for eventually consistent reads.
fn read_units(bytes: usize, consistent: bool) -> f64 {
    let units = bytes.div_ceil(4096).max(1) as f64;
    if consistent { units } else { units / 2.0 }
}

/// Write units: 1 KB each.
fn write_units(bytes: usize) -> f64 {
    bytes.div_ceil(1024).max(1) as f64
}

fn with_consumed(mut out: Json, c: Option<Json>) -> Json {
    if let Some(c) = c {
        out["ConsumedCapacity"] = c;
    }
    out
}

/// GetItem.
pub async fn get_item(service: &Service, ctx: &RequestCtx, input: &Json) -> ApiResult<Json> {
    let r = Req(input);
    let table = r.table_name()?;
    let entry = service.ddb_table(ctx, table, Access::Read)?;
    let schema = schema(&entry)?;
    let key_item = r.item("Key")?.ok_or_else(|| missing("Key"))?;
    let key = schema.key.key_of(&key_item)?;
    let mut extra = Translated::default();
    let proj = projection_text(&r, &mut extra)?;
    let mut ph = placeholders(&r, extra)?;
    let paths = projection(&mut ph, proj)?;
    ph.finish()?;
    let consistent = r.bool("ConsistentRead")?.unwrap_or(false);
    let found = service.ddb_get(ctx, &entry, key, consistent).await?;
    let size = found.as_ref().map_or(0, item::item_size);
    let mut out = json!({});
    if let Some(it) = found {
        let shown = match &paths {
            Some(p) => eval::project(&it, p),
            None => it,
        };
        out["Item"] = item::to_json(&shown);
    }
    Ok(with_consumed(
        out,
        consumed(&r, table, read_units(size, consistent))?,
    ))
}

fn write_op(
    r: &Req<'_>,
    key: Json,
    kind: WriteKind,
    allowed: &[ReturnValues],
) -> ApiResult<WriteOp> {
    let mut extra = Translated::default();
    let condition = expression_or_legacy(
        r,
        "ConditionExpression",
        "Expected",
        |m| legacy::conditions(m, r.str("ConditionalOperator").ok().flatten()),
        &mut extra,
    )?;
    let kind = match kind {
        WriteKind::Update(None) => {
            let u = expression_or_legacy(
                r,
                "UpdateExpression",
                "AttributeUpdates",
                legacy::attribute_updates,
                &mut extra,
            )?;
            WriteKind::Update(u)
        }
        k => k,
    };
    let (names, values) = if extra.names.is_empty() && extra.values.is_empty() {
        (r.names()?, r.get("ExpressionAttributeValues").cloned())
    } else {
        (extra.names, Some(Json::Object(extra.values)))
    };
    let old_on_failure = match r.str("ReturnValuesOnConditionCheckFailure")? {
        None | Some("NONE") => false,
        Some("ALL_OLD") => true,
        Some(other) => {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{other}' at 'returnValuesOnConditionCheckFailure' failed to satisfy constraint: Member must satisfy enum value set: [ALL_OLD, NONE]"
            )));
        }
    };
    Ok(WriteOp {
        key,
        kind,
        condition,
        names,
        values,
        return_values: ReturnValues::parse(r.str("ReturnValues")?, allowed)?,
        old_on_failure,
    })
}

async fn run_write(
    service: &Service,
    ctx: &RequestCtx,
    r: &Req<'_>,
    access_table: &str,
    op: WriteOp,
    size: usize,
) -> ApiResult<Json> {
    let entry = service.ddb_table(ctx, access_table, Access::Write)?;
    let attrs = service.ddb_write(ctx, &entry, op).await?;
    let mut out = json!({});
    if let Some(a) = attrs {
        out["Attributes"] = item::to_json(&a);
    }
    Ok(with_consumed(
        out,
        consumed(r, access_table, write_units(size))?,
    ))
}

/// PutItem.
pub async fn put_item(service: &Service, ctx: &RequestCtx, input: &Json) -> ApiResult<Json> {
    let r = Req(input);
    let table = r.table_name()?;
    let it = r.get("Item").ok_or_else(|| missing("Item"))?;
    let size = item::from_json(it)
        .map(|i| item::item_size(&i))
        .unwrap_or(0);
    let op = write_op(
        &r,
        json!({}),
        WriteKind::Put(it.clone()),
        &[ReturnValues::AllOld],
    )?;
    run_write(service, ctx, &r, table, op, size).await
}

/// DeleteItem.
pub async fn delete_item(service: &Service, ctx: &RequestCtx, input: &Json) -> ApiResult<Json> {
    let r = Req(input);
    let table = r.table_name()?;
    let key = r.get("Key").ok_or_else(|| missing("Key"))?.clone();
    let op = write_op(&r, key, WriteKind::Delete, &[ReturnValues::AllOld])?;
    run_write(service, ctx, &r, table, op, 0).await
}

/// UpdateItem.
pub async fn update_item(service: &Service, ctx: &RequestCtx, input: &Json) -> ApiResult<Json> {
    let r = Req(input);
    let table = r.table_name()?;
    let key = r.get("Key").ok_or_else(|| missing("Key"))?.clone();
    let op = write_op(
        &r,
        key,
        WriteKind::Update(None),
        &[
            ReturnValues::AllOld,
            ReturnValues::AllNew,
            ReturnValues::UpdatedOld,
            ReturnValues::UpdatedNew,
        ],
    )?;
    run_write(service, ctx, &r, table, op, 0).await
}

fn retryable(f: &DdbFailure) -> bool {
    matches!(
        f,
        DdbFailure::Service(e) if matches!(
            e.code.kind(),
            ErrorKind::Throttled | ErrorKind::Unavailable | ErrorKind::Internal
        ) || e.code == crate::error::ErrorCode::DeadlineExceeded
    )
}

struct BatchGet {
    entry: Arc<TableEntry>,
    spec: Json,
    keys: Vec<(Vec<u8>, Json)>,
    paths: Option<Vec<Path>>,
    consistent: bool,
}

/// BatchGetItem.
pub async fn batch_get_item(service: &Service, ctx: &RequestCtx, input: &Json) -> ApiResult<Json> {
    let r = Req(input);
    let request_items = r
        .object("RequestItems")?
        .ok_or_else(|| missing("RequestItems"))?;
    let map = request_items.0.as_object().cloned().unwrap_or_default();
    if map.is_empty() {
        return Err(ApiError::validation(
            "1 validation error detected: Value at 'requestItems' failed to satisfy constraint: Member must have length greater than or equal to 1",
        ));
    }
    let mut total = 0;
    let mut batches = Vec::new();
    for (table, spec) in &map {
        super::request::check_table_name(table)?;
        let t = Req(spec);
        let entry = service.ddb_table(ctx, table, Access::Read)?;
        let schema = schema(&entry)?;
        let keys = t.list("Keys")?.ok_or_else(|| missing("Keys"))?;
        let mut seen = BTreeSet::new();
        let mut parsed = Vec::new();
        for k in keys {
            let it = item::from_json(k)?;
            let raw = schema.key.key_of(&it)?;
            if !seen.insert(raw.clone()) {
                return Err(ApiError::validation(
                    "Provided list of item keys contains duplicates",
                ));
            }
            parsed.push((raw, k.clone()));
        }
        total += parsed.len();
        let mut extra = Translated::default();
        let proj = projection_text(&t, &mut extra)?;
        let mut ph = placeholders(&t, extra)?;
        let paths = projection(&mut ph, proj)?;
        ph.finish()?;
        batches.push(BatchGet {
            consistent: t.bool("ConsistentRead")?.unwrap_or(false),
            entry,
            spec: spec.clone(),
            keys: parsed,
            paths,
        });
    }
    if total > MAX_BATCH_GET {
        return Err(ApiError::validation(format!(
            "Too many items requested for the BatchGetItem call: {total} keys; the limit is {MAX_BATCH_GET}"
        )));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (b, batch) in batches.iter().enumerate() {
        for (k, (raw, _)) in batch.keys.iter().enumerate() {
            let (service, ctx, entry, raw, consistent) = (
                service.clone(),
                ctx.clone(),
                Arc::clone(&batch.entry),
                raw.clone(),
                batch.consistent,
            );
            tasks
                .spawn(async move { (b, k, service.ddb_get(&ctx, &entry, raw, consistent).await) });
        }
    }
    let mut responses: Map<String, Json> = Map::new();
    let mut unprocessed: BTreeMap<usize, Vec<Json>> = BTreeMap::new();
    let mut units = 0.0;
    while let Some(done) = tasks.join_next().await {
        let (b, k, res) = done.map_err(|_| ApiError::internal())?;
        let batch = &batches[b];
        let name = batch.entry.display_name().to_owned();
        match res {
            Ok(found) => {
                let list = responses.entry(name).or_insert_with(|| json!([]));
                if let Some(it) = found {
                    units += read_units(item::item_size(&it), batch.consistent);
                    let shown = match &batch.paths {
                        Some(p) => eval::project(&it, p),
                        None => it,
                    };
                    if let Some(a) = list.as_array_mut() {
                        a.push(item::to_json(&shown));
                    }
                }
            }
            Err(f) if retryable(&f) => unprocessed
                .entry(b)
                .or_default()
                .push(batch.keys[k].1.clone()),
            Err(f) => return Err(f.into()),
        }
    }
    let mut unprocessed_json = Map::new();
    for (b, keys) in unprocessed {
        let mut spec = batches[b].spec.clone();
        spec["Keys"] = Json::Array(keys);
        unprocessed_json.insert(batches[b].entry.display_name().to_owned(), spec);
    }
    for b in &batches {
        responses
            .entry(b.entry.display_name().to_owned())
            .or_insert_with(|| json!([]));
    }
    let out = json!({"Responses": responses, "UnprocessedKeys": unprocessed_json});
    let consumed = match r.str("ReturnConsumedCapacity")? {
        None | Some("NONE") => None,
        Some(_) => Some(json!([{"CapacityUnits": units}])),
    };
    Ok(with_consumed(out, consumed))
}

/// BatchWriteItem.
pub async fn batch_write_item(
    service: &Service,
    ctx: &RequestCtx,
    input: &Json,
) -> ApiResult<Json> {
    let r = Req(input);
    let request_items = r
        .object("RequestItems")?
        .ok_or_else(|| missing("RequestItems"))?;
    let map = request_items.0.as_object().cloned().unwrap_or_default();
    if map.is_empty() {
        return Err(ApiError::validation(
            "1 validation error detected: Value at 'requestItems' failed to satisfy constraint: Member must have length greater than or equal to 1",
        ));
    }
    let mut work: Vec<(Arc<TableEntry>, String, Json, WriteOp)> = Vec::new();
    for (table, list) in &map {
        super::request::check_table_name(table)?;
        let entry = service.ddb_table(ctx, table, Access::Write)?;
        let schema = schema(&entry)?;
        let list = list.as_array().ok_or_else(|| {
            ApiError::serialization("RequestItems values must be lists of WriteRequests")
        })?;
        let mut seen = BTreeSet::new();
        for req in list {
            let w = Req(req);
            let (raw, op) = match (w.object("PutRequest")?, w.object("DeleteRequest")?) {
                (Some(p), None) => {
                    let it = p.get("Item").ok_or_else(|| missing("Item"))?;
                    let parsed = item::from_json(it)?;
                    let raw = schema.key.key_of_item(&parsed)?;
                    item::check_item(&parsed)?;
                    (
                        raw,
                        WriteOp {
                            key: json!({}),
                            kind: WriteKind::Put(it.clone()),
                            condition: None,
                            names: BTreeMap::new(),
                            values: None,
                            return_values: ReturnValues::None,
                            old_on_failure: false,
                        },
                    )
                }
                (None, Some(d)) => {
                    let k = d.get("Key").ok_or_else(|| missing("Key"))?;
                    let raw = schema.key.key_of(&item::from_json(k)?)?;
                    (
                        raw,
                        WriteOp {
                            key: k.clone(),
                            kind: WriteKind::Delete,
                            condition: None,
                            names: BTreeMap::new(),
                            values: None,
                            return_values: ReturnValues::None,
                            old_on_failure: false,
                        },
                    )
                }
                _ => {
                    return Err(ApiError::validation(
                        "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes: a WriteRequest needs exactly one of PutRequest and DeleteRequest",
                    ));
                }
            };
            if !seen.insert(raw) {
                return Err(ApiError::validation(
                    "Provided list of item keys contains duplicates",
                ));
            }
            work.push((Arc::clone(&entry), table.clone(), req.clone(), op));
        }
    }
    if work.len() > MAX_BATCH_WRITE {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value at 'requestItems' failed to satisfy constraint: Map value must satisfy constraint: [Member must have length less than or equal to {MAX_BATCH_WRITE}, Member must have length greater than or equal to 1]"
        )));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (entry, _, _, op)) in work.iter().enumerate() {
        let (service, ctx, entry, op) =
            (service.clone(), ctx.clone(), Arc::clone(entry), op.clone());
        tasks.spawn(async move { (i, service.ddb_write(&ctx, &entry, op).await) });
    }
    let mut unprocessed: Map<String, Json> = Map::new();
    let mut failed_hard = None;
    while let Some(done) = tasks.join_next().await {
        let (i, res) = done.map_err(|_| ApiError::internal())?;
        match res {
            Ok(_) => {}
            Err(f) if retryable(&f) => {
                let (_, table, req, _) = &work[i];
                if let Some(a) = unprocessed
                    .entry(table.clone())
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                {
                    a.push(req.clone());
                }
            }
            Err(f) => failed_hard = Some(f),
        }
    }
    if let Some(f) = failed_hard {
        return Err(f.into());
    }
    Ok(json!({"UnprocessedItems": unprocessed}))
}

/// The key attribute a key-condition part names, and the value it compares
/// with.
fn key_condition(schema: &TableSchema, c: &Cond) -> ApiResult<(String, SortCond)> {
    let attr_of = |o: &Operand| -> Option<String> {
        match o {
            Operand::Path(Path(elems)) if elems.len() == 1 => match &elems[0] {
                PathElem::Name(n) => Some(n.clone()),
                PathElem::Index(_) => None,
            },
            _ => None,
        }
    };
    let value_of = |o: &Operand| match o {
        Operand::Const(v) => Some(v.clone()),
        _ => None,
    };
    let unsupported = || {
        ApiError::validation("Invalid KeyConditionExpression: Query key condition not supported")
    };
    let (attr, cond) = match c {
        Cond::Cmp(a, op, b) => {
            let (attr, v, op) = match (attr_of(a), value_of(b), attr_of(b), value_of(a)) {
                (Some(n), Some(v), _, _) => (n, v, *op),
                (_, _, Some(n), Some(v)) => (n, v, flip(*op)),
                _ => return Err(unsupported()),
            };
            let sc = match op {
                CmpOp::Eq => SortCond::Eq(v),
                CmpOp::Lt => SortCond::Lt(v),
                CmpOp::Le => SortCond::Le(v),
                CmpOp::Gt => SortCond::Gt(v),
                CmpOp::Ge => SortCond::Ge(v),
                CmpOp::Ne => {
                    return Err(ApiError::validation(
                        "Invalid KeyConditionExpression: Invalid operator used in KeyConditionExpression: <>",
                    ));
                }
            };
            (attr, sc)
        }
        Cond::Between(a, lo, hi) => match (attr_of(a), value_of(lo), value_of(hi)) {
            (Some(n), Some(l), Some(h)) => (n, SortCond::Between(l, h)),
            _ => return Err(unsupported()),
        },
        Cond::BeginsWith(a, p) => match (attr_of(a), value_of(p)) {
            (Some(n), Some(v)) => (n, SortCond::BeginsWith(v)),
            _ => return Err(unsupported()),
        },
        _ => return Err(unsupported()),
    };
    if !schema.key.is_key(&attr) {
        return Err(ApiError::validation(format!(
            "Query condition missed key schema element: {}",
            schema.key.hash.name
        )));
    }
    Ok((attr, cond))
}

fn flip(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Le => CmpOp::Ge,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Ge => CmpOp::Le,
        o => o,
    }
}

fn query_range(schema: &TableSchema, cond: &Cond, forward: bool) -> ApiResult<QueryRange> {
    let parts: Vec<&Cond> = match cond {
        Cond::And(a, b) => vec![a, b],
        c => vec![c],
    };
    let mut partition = None;
    let mut sort = None;
    for p in parts {
        let (attr, c) = key_condition(schema, p)?;
        if attr == schema.key.hash.name {
            match c {
                SortCond::Eq(v) if partition.is_none() => partition = Some(v),
                _ => {
                    return Err(ApiError::validation(
                        "Invalid KeyConditionExpression: the partition key must be compared with =, once",
                    ));
                }
            }
        } else if sort.is_none() {
            sort = Some(c);
        } else {
            return Err(ApiError::validation(
                "Invalid KeyConditionExpression: KeyConditionExpressions must only contain one condition per key",
            ));
        }
    }
    let partition = partition.ok_or_else(|| {
        ApiError::validation(format!(
            "Query condition missed key schema element: {}",
            schema.key.hash.name
        ))
    })?;
    Ok(QueryRange {
        partition,
        sort,
        forward,
    })
}

enum Select {
    All,
    Count,
}

fn select(r: &Req<'_>, has_projection: bool) -> ApiResult<Select> {
    match r.str("Select")? {
        None if has_projection => Ok(Select::All),
        None | Some("ALL_ATTRIBUTES" | "ALL_PROJECTED_ATTRIBUTES") => {
            if has_projection {
                return Err(ApiError::validation(
                    "Cannot specify the AttributesToGet or ProjectionExpression when choosing to get ALL_ATTRIBUTES",
                ));
            }
            Ok(Select::All)
        }
        Some("SPECIFIC_ATTRIBUTES") => Ok(Select::All),
        Some("COUNT") => {
            if has_projection {
                return Err(ApiError::validation(
                    "Cannot specify the AttributesToGet or ProjectionExpression when choosing to get COUNT",
                ));
            }
            Ok(Select::Count)
        }
        Some(other) => Err(ApiError::validation(format!(
            "1 validation error detected: Value '{other}' at 'select' failed to satisfy constraint: Member must satisfy enum value set: [SPECIFIC_ATTRIBUTES, COUNT, ALL_ATTRIBUTES, ALL_PROJECTED_ATTRIBUTES]"
        ))),
    }
}

fn page_spec(r: &Req<'_>) -> ApiResult<PageSpec> {
    let limit = match r.u64("Limit")? {
        Some(0) => {
            return Err(ApiError::validation(
                "1 validation error detected: Value '0' at 'limit' failed to satisfy constraint: Member must have value greater than or equal to 1",
            ));
        }
        l => l.map(|l| l as usize),
    };
    Ok(PageSpec {
        exclusive_start: r.item("ExclusiveStartKey")?,
        limit,
        consistent: r.bool("ConsistentRead")?.unwrap_or(false),
    })
}

fn no_index(r: &Req<'_>, table: &str) -> ApiResult<()> {
    match r.str("IndexName")? {
        Some(i) => Err(ApiError::validation(format!(
            "The table does not have the specified index: {i} (table {table} has no secondary indexes; Dyno does not support them yet)"
        ))),
        None => Ok(()),
    }
}

/// Filters, projects and shapes a page.
fn shape_page(
    r: &Req<'_>,
    table: &str,
    page: crate::service::ItemPage,
    filter: Option<&Cond>,
    paths: Option<&[Path]>,
    sel: Select,
    consistent: bool,
) -> ApiResult<Json> {
    let scanned = page.items.len();
    let bytes: usize = page.items.iter().map(item::item_size).sum();
    let mut kept = Vec::new();
    for it in page.items {
        if let Some(f) = filter
            && !eval::eval(f, &it)?
        {
            continue;
        }
        kept.push(it);
    }
    let mut out = json!({"Count": kept.len(), "ScannedCount": scanned});
    if let Select::All = sel {
        out["Items"] = Json::Array(
            kept.iter()
                .map(|it| match paths {
                    Some(p) => item::to_json(&eval::project(it, p)),
                    None => item::to_json(it),
                })
                .collect(),
        );
    }
    if let Some(k) = page.last_key {
        out["LastEvaluatedKey"] = item::to_json(&k);
    }
    Ok(with_consumed(
        out,
        consumed(r, table, read_units(bytes, consistent))?,
    ))
}

/// Query.
pub async fn query(service: &Service, ctx: &RequestCtx, input: &Json) -> ApiResult<Json> {
    let r = Req(input);
    let table = r.table_name()?;
    no_index(&r, table)?;
    let entry = service.ddb_table(ctx, table, Access::Read)?;
    let schema = schema(&entry)?;
    let mut extra = Translated::default();
    let key_text = expression_or_legacy(
        &r,
        "KeyConditionExpression",
        "KeyConditions",
        |m| legacy::conditions(m, None),
        &mut extra,
    )?
    .ok_or_else(|| {
        ApiError::validation(
            "Either the KeyConditions or KeyConditionExpression parameter must be specified in the request.",
        )
    })?;
    let filter_text = expression_or_legacy(
        &r,
        "FilterExpression",
        "QueryFilter",
        |m| legacy::conditions(m, r.str("ConditionalOperator").ok().flatten()),
        &mut extra,
    )?;
    let proj = projection_text(&r, &mut extra)?;
    let mut ph = placeholders(&r, extra)?;
    let mut key_cond = parse::condition(Kind::KeyCondition, &key_text)?;
    ph.cond(&mut key_cond)?;
    let filter = filter(&mut ph, filter_text)?;
    let paths = projection(&mut ph, proj)?;
    ph.finish()?;
    let sel = select(&r, paths.is_some())?;
    let forward = r.bool("ScanIndexForward")?.unwrap_or(true);
    let range = query_range(schema, &key_cond, forward)?;
    let spec = page_spec(&r)?;
    let consistent = spec.consistent;
    let page = service.ddb_query(ctx, &entry, range, spec).await?;
    shape_page(
        &r,
        table,
        page,
        filter.as_ref(),
        paths.as_deref(),
        sel,
        consistent,
    )
}

/// Scan.
pub async fn scan(service: &Service, ctx: &RequestCtx, input: &Json) -> ApiResult<Json> {
    let r = Req(input);
    let table = r.table_name()?;
    no_index(&r, table)?;
    let entry = service.ddb_table(ctx, table, Access::Read)?;
    let mut extra = Translated::default();
    let filter_text = expression_or_legacy(
        &r,
        "FilterExpression",
        "ScanFilter",
        |m| legacy::conditions(m, r.str("ConditionalOperator").ok().flatten()),
        &mut extra,
    )?;
    let proj = projection_text(&r, &mut extra)?;
    let mut ph = placeholders(&r, extra)?;
    let filter = filter(&mut ph, filter_text)?;
    let paths = projection(&mut ph, proj)?;
    ph.finish()?;
    let sel = select(&r, paths.is_some())?;
    let (segment, total) = match (r.u64("Segment")?, r.u64("TotalSegments")?) {
        (None, None) => (0, 1),
        (Some(s), Some(t)) if (1..=1_000_000).contains(&t) && s < t => (s as u32, t as u32),
        (Some(_), None) => {
            return Err(ApiError::validation(
                "The TotalSegments parameter is required but was not present in the request when Segment parameter is present",
            ));
        }
        (None, Some(_)) => {
            return Err(ApiError::validation(
                "The Segment parameter is required but was not present in the request when parameter TotalSegments is present",
            ));
        }
        (Some(s), Some(t)) => {
            return Err(ApiError::validation(format!(
                "The Segment parameter is zero-based and must be less than parameter TotalSegments (1 to 1000000): Segment: {s} is not less than TotalSegments: {t}"
            )));
        }
    };
    let spec = page_spec(&r)?;
    let consistent = spec.consistent;
    let page = service.ddb_scan(ctx, &entry, segment, total, spec).await?;
    shape_page(
        &r,
        table,
        page,
        filter.as_ref(),
        paths.as_deref(),
        sel,
        consistent,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_tokens_are_replaced_whole() {
        assert_eq!(
            replace_token("#l1 = :l1, #l10", "#l1", "#x0"),
            "#x0 = :l1, #l10"
        );
    }
}
