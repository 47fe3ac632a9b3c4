-- Fleet schema 4: scan jobs split into shards that scanner nodes lease
-- (issue 11), and API tokens scoped to scanner nodes.
--
-- A token's scope: 'full' acts with its user's role everywhere; 'scanner'
-- may only lease shards and send their results.
ALTER TABLE fleet_tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'full'
    CHECK (scope IN ('full', 'scanner'));

-- One scan, asked for once: the options `perimeter scan` takes (targets
-- included; a JSON array of strings), walked in the permutation of `seed`,
-- cut in `shards` parts. `vantage`, when set, is the only vantage point
-- whose nodes may scan it. Seeds are u64 stored bit for bit in a BIGINT.
CREATE TABLE fleet_scan_jobs (
    id BIGSERIAL PRIMARY KEY,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    scan_args TEXT NOT NULL,
    seed BIGINT NOT NULL,
    shards BIGINT NOT NULL CHECK (shards >= 1),
    vantage TEXT,
    lease_seconds BIGINT NOT NULL CHECK (lease_seconds >= 1)
);

-- Each part of a job: pending, leased (to `node`, under `lease_token`, until
-- `lease_expires`), or done with the run it sent (JSON, which TOAST compresses).
-- A lease past its expiry may be taken by another node; the token changes
-- with every lease, so results sent under an old one are refused.
CREATE TABLE fleet_scan_shards (
    job_id BIGINT NOT NULL REFERENCES fleet_scan_jobs (id),
    idx BIGINT NOT NULL CHECK (idx >= 0),
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'leased', 'done')),
    node TEXT,
    lease_token TEXT UNIQUE,
    leased_at BIGINT,
    lease_expires BIGINT,
    attempts BIGINT NOT NULL DEFAULT 0,
    finished_at BIGINT,
    run TEXT,
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX fleet_scan_shards_open ON fleet_scan_shards (state, job_id, idx)
    WHERE state <> 'done';
