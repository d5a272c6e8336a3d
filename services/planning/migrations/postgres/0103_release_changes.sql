-- Releases change after they are scheduled: renamed, described, rescheduled, archived.
-- A release archived at some time (NULL while in planning) is history: ListReleases hides
-- it unless asked, and it takes no new items.
ALTER TABLE releases ADD COLUMN update_time_us BIGINT NOT NULL DEFAULT 0;
ALTER TABLE releases ADD COLUMN archive_time_us BIGINT;
UPDATE releases SET update_time_us = create_time_us;
