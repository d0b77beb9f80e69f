//! `reconcile`: Amazon ECS semantics as a declarative, git-driven reconciler.
//! See ARCHITECTURE.md for how the modules fit together.

pub mod agent;
pub mod apply;
pub mod cli;
pub mod clock;
pub mod controller;
pub mod deployment;
pub mod dns;
pub mod expression;
pub mod fsutil;
pub mod git;
pub mod import;
pub mod lb;
pub mod logs;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod pointer;
pub mod reconcile;
pub mod report;
pub mod runtime;
pub mod scheduler;
pub mod schema;
pub mod secrets;
pub mod self_image;
pub mod serving;
pub mod source;
pub mod store;
pub mod suggest;
pub mod tls;
pub mod traffic;
pub mod utilization;
pub mod validate;
pub mod wire;
pub mod yaml;
