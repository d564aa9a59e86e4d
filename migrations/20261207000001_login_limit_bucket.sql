-- Failed logins are limited per email by a leaky bucket (GCRA) instead
-- of counts in wall-clock minutes: a count that starts again at every
-- minute boundary lets failures on both sides of it reach twice the
-- limit. Each failure adds 60/limit seconds of debt to the email; a login
-- is refused while the debt reaches further than limit - 1 failures' worth
-- past now. A row whose debt is paid is the same as no row.
DROP TABLE login_failures;
CREATE TABLE login_failures (
    email text PRIMARY KEY,
    debt_until timestamptz NOT NULL
);
CREATE INDEX login_failures_debt ON login_failures (debt_until);
