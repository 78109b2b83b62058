//! Change management: the change gate, the state directory, the audit log, file watching.

pub mod audit;
pub mod gate;
pub mod store;
pub mod watch;
