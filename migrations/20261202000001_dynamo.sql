-- DynamoDB tables: the key schema, TTL attribute, tags and billing settings
-- (dyno_ddb::schema::TableSchema as JSON). NULL for native tables. A table
-- with a schema is stored on the data plane under `#p<id>` (composite keys).
ALTER TABLE tables ADD COLUMN dynamo jsonb;
