-- One database per service: no service reads another's tables.
CREATE DATABASE agilepm_backlog_item;
CREATE DATABASE agilepm_task;
CREATE DATABASE agilepm_planning;
CREATE DATABASE agilepm_coordinator;
CREATE DATABASE agilepm_notifier;
