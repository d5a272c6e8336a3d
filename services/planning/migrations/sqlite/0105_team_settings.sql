-- What a tenant's whole team shares (TeamService.UpdateTeamSettings): its IANA time
-- zone, which decides the team's days. A tenant without a row has the defaults (UTC,
-- version 0).
CREATE TABLE team_settings (
    tenant_id      TEXT   NOT NULL PRIMARY KEY,
    time_zone      TEXT   NOT NULL,
    version        BIGINT NOT NULL,
    update_time_us BIGINT NOT NULL
);
