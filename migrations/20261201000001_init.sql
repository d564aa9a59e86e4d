-- Dyno's control plane: the desired state of every data-plane cluster.
-- Postgres is the source of truth; the reconciler brings the clusters to it.

-- The catalog clock: every change to what the data plane must know (tables,
-- keys, tenant states) takes the next version. Versions are hybrid
-- timestamps (milliseconds << 16, plus a counter), the scale of the data
-- plane's own versions, so a change made here supersedes one a node made
-- earlier, and they only ever grow.
CREATE TABLE catalog_clock (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    last bigint NOT NULL
);
INSERT INTO catalog_clock (id, last) VALUES (true, 0);

CREATE FUNCTION next_catalog_version() RETURNS bigint
LANGUAGE sql AS $$
    UPDATE catalog_clock
       SET last = GREATEST(last + 1, (floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) << 16)
     RETURNING last
$$;

CREATE TABLE tenants (
    name text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'suspended')),
    created_at timestamptz NOT NULL DEFAULT now(),
    version bigint NOT NULL
);

CREATE TABLE users (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE CHECK (email = lower(email)),
    password_hash text NOT NULL,
    role text NOT NULL CHECK (role IN ('platform_admin', 'tenant_admin', 'tenant_member')),
    tenant text REFERENCES tenants (name),
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (role = 'platform_admin' OR tenant IS NOT NULL)
);

-- A data-plane cluster. `credential` is its admin credential sealed
-- (ChaCha20-Poly1305) under a key derived from the key master, which is
-- not in the database.
CREATE TABLE clusters (
    name text PRIMARY KEY,
    admin_urls text[] NOT NULL,
    credential bytea NOT NULL,
    node_count integer NOT NULL DEFAULT 0,
    health jsonb NOT NULL DEFAULT '{}'::jsonb,
    checked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tables (
    id bigserial PRIMARY KEY,
    tenant text NOT NULL REFERENCES tenants (name),
    name text NOT NULL CHECK (name ~ '^[A-Za-z0-9_.-]{3,255}$'),
    cluster text NOT NULL REFERENCES clusters (name),
    n integer NOT NULL CHECK (n BETWEEN 1 AND 7),
    r integer NOT NULL CHECK (r BETWEEN 1 AND n),
    w integer NOT NULL CHECK (w BETWEEN 1 AND n),
    conflict text NOT NULL CHECK (conflict IN ('siblings', 'lww')),
    throughput_limit integer CHECK (throughput_limit > 0),
    status text NOT NULL CHECK (status IN ('creating', 'active', 'deleting', 'deleted')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    version bigint NOT NULL
);
-- One live table per name and tenant: of two concurrent creates, one wins.
CREATE UNIQUE INDEX tables_live_name ON tables (tenant, name) WHERE status <> 'deleted';

-- API keys: no secret. The secret is derived from the id with the key
-- master (see dyno_core::apikey), so a dump of this table cannot call the
-- API.
CREATE TABLE api_keys (
    id text PRIMARY KEY,
    tenant text NOT NULL REFERENCES tenants (name),
    name text NOT NULL,
    scopes jsonb NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'active', 'revoked')),
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at timestamptz,
    version bigint NOT NULL
);
CREATE INDEX api_keys_tenant ON api_keys (tenant);

CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    tenant text,
    action text NOT NULL,
    resource text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_tenant_at ON audit_log (tenant, at DESC);

-- Failed logins per email and minute, shared by every control-plane
-- replica.
CREATE TABLE login_failures (
    email text NOT NULL,
    window_start timestamptz NOT NULL,
    failures integer NOT NULL,
    PRIMARY KEY (email, window_start)
);
