//! `reconcile`: Amazon ECS semantics as a declarative, git-driven reconciler.
//! See ARCHITECTURE.md for how the modules fit together.

pub mod cli;
pub mod expression;
pub mod import;
pub mod manifest;
pub mod pointer;
pub mod schema;
pub mod source;
pub mod suggest;
pub mod validate;
pub mod yaml;
