-- What the planning service told this service about each tenant's team (SyncMembers):
-- whether a member is enabled and holds the team-member role, which volunteering for a
-- task requires. The newest member version wins.
CREATE TABLE members (
    tenant_id      TEXT    NOT NULL,
    member_id      TEXT    NOT NULL,
    enabled        BIGINT  NOT NULL,
    team_member    BIGINT  NOT NULL,
    member_version BIGINT  NOT NULL,
    PRIMARY KEY (tenant_id, member_id)
);
