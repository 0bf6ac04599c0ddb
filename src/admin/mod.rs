//! What strata answers itself rather than forwarding to Redis. For now this is the admin
//! HTTP port (health, readiness, metrics); `INFO strata` and `STRATA` subcommands join later.

pub mod http;
