//! The agilepm contract as Rust: one module per protobuf package under `proto/agilepm/`.
//!
//! Everything here is generated at build time; edit the `.proto` files, not this crate.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// The encoded `FileDescriptorSet` of every agilepm proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/agilepm_descriptor.bin"));

pub mod common {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/agilepm.common.v1.rs"));
    }
}

pub mod events {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/agilepm.events.v1.rs"));
    }
}

pub mod backlog {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/agilepm.backlog.v1.rs"));
    }
}

pub mod task {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/agilepm.task.v1.rs"));
    }
}

pub mod planning {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/agilepm.planning.v1.rs"));
    }
}

pub mod coordinator {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/agilepm.coordinator.v1.rs"));
    }
}

pub mod notifier {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/agilepm.notifier.v1.rs"));
    }
}

/// The fully qualified protobuf name of a generated message, used as the outbox event type
/// and in `google.protobuf.Any` type URLs.
pub trait EventType: prost::Message + Default {
    /// e.g. `"agilepm.task.v1.TaskDefined"`.
    const EVENT_TYPE: &'static str;
}

macro_rules! event_types {
    ($($package:literal => $area:ident :: $version:ident : [$($name:ident),* $(,)?]);* $(;)?) => {
        $($(
            impl EventType for $area::$version::$name {
                const EVENT_TYPE: &'static str = concat!($package, ".", stringify!($name));
            }
        )*)*
    };
}

event_types! {
    "agilepm.task.v1" => task::v1: [
        TaskDefined, TaskRenamed, TaskDescribed, TaskVolunteerAssigned, TaskStatusChanged,
        TaskHoursRemainingEstimated, TaskRemoved,
    ];
    "agilepm.backlog.v1" => backlog::v1: [
        BacklogItemPlanned, BacklogItemSummarized, BacklogItemStoryTold,
        BacklogItemCategoryChanged, BacklogItemTypeChanged, BacklogItemUseCaseChanged,
        BacklogItemStoryPointsAssigned, BacklogItemBusinessPriorityAssigned,
        BacklogItemScheduled, BacklogItemUnscheduled, BacklogItemCommitted,
        BacklogItemUncommitted, BacklogItemStatusChanged, BacklogItemMarkedAsRemoved,
        BacklogItemRanked, BacklogItemRankedInSprint,
    ];
    "agilepm.planning.v1" => planning::v1: [
        ProductCreated, ProductUpdated, ProductTransitionModeChanged, UseCaseCreated,
        UseCaseUpdated, ReleaseScheduled, ReleaseUpdated, ReleaseArchived, ReleaseUnarchived,
        SprintScheduled, MemberAdded, MemberUpdated, MemberEnabled, MemberDisabled, SprintUpdated, SprintStarted,
        SprintCompleted, TeamSettingsChanged,
    ];
}
