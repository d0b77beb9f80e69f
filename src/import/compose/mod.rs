//! Docker Compose files in: the pieces that read them as `docker compose`
//! does, each pure and tested on its own: variable interpolation
//! ([`interpolate`]), `.env` and `env_file` files ([`env_file`]), YAML
//! merge keys ([`merge_keys`]), one form for the fields compose accepts in
//! two ([`normalize`]), several files merged into one ([`merge`]), and a
//! whole project read with `extends` and profiles ([`load`]); then each
//! service as an ECS container definition ([`container`], with durations
//! and sizes in ECS units from [`units`]), and the project as one task
//! definition and one service ([`project`]).

pub mod container;
pub mod env_file;
pub mod interpolate;
pub mod load;
pub mod merge;
pub mod merge_keys;
pub mod normalize;
pub mod project;
pub mod units;
