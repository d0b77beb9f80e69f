//! Docker Compose files in: the pieces that read them as `docker compose`
//! does, each pure and tested on its own: variable interpolation
//! ([`interpolate`]), `.env` and `env_file` files ([`env_file`]), YAML
//! merge keys ([`merge_keys`]), one form for the fields compose accepts in
//! two ([`normalize`]), several files merged into one ([`merge`]), and a
//! whole project read with `extends` and profiles ([`load`]).

pub mod env_file;
pub mod interpolate;
pub mod load;
pub mod merge;
pub mod merge_keys;
pub mod normalize;
