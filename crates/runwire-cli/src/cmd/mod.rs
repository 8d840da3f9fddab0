//! One module per subcommand.

pub(crate) mod client_adapter;
pub(crate) mod completions;
pub(crate) mod conform;
pub(crate) mod mock;
pub(crate) mod publish;
pub(crate) mod schema;
pub(crate) mod serve;
pub(crate) mod tls;
pub(crate) mod watch;
