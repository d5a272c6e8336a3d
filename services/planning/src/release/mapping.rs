//! Between releases and their protobuf messages.

use agilepm_platform::domain::time::timestamp;
use agilepm_proto::planning::v1 as proto;

use super::domain::Release;

/// `release` as responses and events carry it.
pub fn release_message(release: &Release) -> proto::Release {
    proto::Release {
        id: release.id.clone(),
        tenant_id: release.tenant_id.clone(),
        product_id: release.product_id.clone(),
        name: release.name.clone(),
        description: release.description.clone(),
        begin_date: release.begin_date.to_string(),
        end_date: release.end_date.to_string(),
        version: release.version,
        create_time: Some(timestamp(release.create_time_us)),
        archived: release.archived(),
        archive_time: release.archive_time_us.map(timestamp),
        update_time: Some(timestamp(release.update_time_us)),
    }
}
