//! The names of agilepm's services and their well-known ports: a module of its own
//! because configuration and authentication both need them (and each other not).

/// The agilepm services, with their well-known default ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceName {
    /// Owns BacklogItem.
    BacklogItem,
    /// Owns Task and its estimation log.
    Task,
    /// Owns Product, UseCase, Release, Sprint.
    Planning,
    /// Reconciles item status from task hours.
    Coordinator,
    /// Delivers webhooks from the other services' feeds.
    Notifier,
}

impl ServiceName {
    /// Every service, in start-up order (dependencies first).
    pub const ALL: [ServiceName; 5] = [
        ServiceName::BacklogItem,
        ServiceName::Task,
        ServiceName::Planning,
        ServiceName::Coordinator,
        ServiceName::Notifier,
    ];

    /// The service's name as used in file names, logs and `application_name`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::BacklogItem => "backlog-item",
            ServiceName::Task => "task",
            ServiceName::Planning => "planning",
            ServiceName::Coordinator => "coordinator",
            ServiceName::Notifier => "notifier",
        }
    }

    /// The port the service listens on unless told otherwise.
    pub fn default_port(self) -> u16 {
        match self {
            ServiceName::BacklogItem => 50051,
            ServiceName::Task => 50052,
            ServiceName::Planning => 50053,
            ServiceName::Coordinator => 50054,
            ServiceName::Notifier => 50055,
        }
    }

    /// `http://127.0.0.1:PORT`, the default address peers use to reach the service.
    pub fn default_endpoint(self) -> String {
        format!("http://127.0.0.1:{}", self.default_port())
    }
}

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
