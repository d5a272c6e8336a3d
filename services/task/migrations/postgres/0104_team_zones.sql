-- What the planning service told this service about each tenant's team settings
-- (SyncTeamSettings): the team's IANA time zone, which decides the team's today for the
-- estimates' default date and bounds and the days define, status changes and removals
-- log. A tenant without a row is in UTC. The newest settings version wins.
CREATE TABLE team_zones (
    tenant_id        TEXT   NOT NULL PRIMARY KEY,
    time_zone        TEXT   NOT NULL,
    settings_version BIGINT NOT NULL
);
