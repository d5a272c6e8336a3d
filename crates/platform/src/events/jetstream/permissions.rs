//! What each service may do on NATS, as the server's per-user permissions: a service
//! publishes only its own stream's subjects and the JetStream API calls its relay makes
//! on that stream; a consumer only the calls of its own durable consumer; and each hears
//! only replies on its own inbox prefix, so no service reads another's answers.
//!
//! `agilepm nats-authorization` renders these as a `nats-server` authorization block (the
//! one `deploy/nats/` ships, checked against this in CI), and the secured-NATS test
//! starts its server with the same block: what is tested is what is deployed.

use crate::domain::service_name::ServiceName;

use super::{stream_name, stream_subjects};

/// The subjects one NATS user may publish to and subscribe to; nothing else is allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Subjects (with wildcards) it may publish on.
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
}

impl Permissions {
    /// Only what every client needs: replies on `service`'s own inbox prefix.
    pub fn of(service: ServiceName) -> Permissions {
        Permissions {
            publish: Vec::new(),
            subscribe: vec![format!("{}.>", inbox_prefix(service))],
        }
    }

    /// Adds what `service`'s relay does: create or look up its stream, read the stream's
    /// last message (where the relay resumes), publish its events.
    pub fn relaying(mut self, service: ServiceName) -> Permissions {
        let stream = stream_name(service);
        self.publish.extend([
            stream_subjects(service),
            format!("$JS.API.STREAM.INFO.{stream}"),
            format!("$JS.API.STREAM.CREATE.{stream}"),
            format!("$JS.API.STREAM.MSG.GET.{stream}"),
        ]);
        self
    }

    /// Adds what a replica of the durable consumer `durable` on `service`'s stream does:
    /// create or look up the stream (whichever side starts first) and the consumer, pull
    /// messages, acknowledge them. It cannot publish on the stream's subjects.
    pub fn consuming(mut self, service: ServiceName, durable: &str) -> Permissions {
        let stream = stream_name(service);
        self.publish.extend([
            format!("$JS.API.STREAM.INFO.{stream}"),
            format!("$JS.API.STREAM.CREATE.{stream}"),
            format!("$JS.API.CONSUMER.INFO.{stream}.{durable}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.{durable}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.{durable}.>"),
            format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"),
            format!("$JS.ACK.{stream}.{durable}.>"),
        ]);
        self.publish.sort();
        self.publish.dedup();
        self
    }
}

/// The prefix of `service`'s reply subjects (`_INBOX_agilepm-task`): replies to one
/// service's requests are subjects only it may subscribe to.
pub fn inbox_prefix(service: ServiceName) -> String {
    format!("_INBOX_agilepm-{service}")
}

/// A `nats-server` configuration's `authorization` block: one user per entry, with the
/// password taken from the server's environment variable named beside it (nats-server
/// expands `$NAME`), so the file itself holds no secret.
pub fn authorization_block(users: &[(ServiceName, Permissions, String)]) -> String {
    let list = |subjects: &[String]| {
        subjects
            .iter()
            .map(|subject| format!("\"{subject}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::from("authorization {\n  users = [\n");
    // nats-server reads an empty `allow` as no restriction: nothing allowed is `deny: [">"]`.
    let rule = |subjects: &[String]| {
        if subjects.is_empty() {
            "deny: [\">\"]".to_owned()
        } else {
            format!("allow: [{}]", list(subjects))
        }
    };
    for (service, permissions, password_variable) in users {
        out.push_str(&format!(
            "    {{\n      user: \"{service}\"\n      password: ${password_variable}\n      \
             permissions: {{\n        publish: {{ {} }}\n        \
             subscribe: {{ {} }}\n      }}\n    }}\n",
            rule(&permissions.publish),
            rule(&permissions.subscribe),
        ));
    }
    out.push_str("  ]\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_may_not_publish_on_the_stream_it_reads() {
        let coordinator =
            Permissions::of(ServiceName::Coordinator).consuming(ServiceName::Task, "coordinator");
        assert!(!coordinator.publish.contains(&"agilepm.task.>".to_owned()));
        assert!(
            coordinator
                .publish
                .contains(&"$JS.ACK.AGILEPM_TASK.coordinator.>".to_owned())
        );
        assert_eq!(coordinator.subscribe, ["_INBOX_agilepm-coordinator.>"]);
        let task = Permissions::of(ServiceName::Task).relaying(ServiceName::Task);
        assert!(task.publish.contains(&"agilepm.task.>".to_owned()));
        assert!(
            !task
                .publish
                .iter()
                .any(|subject| subject.contains("BACKLOG_ITEM"))
        );
    }
}
