//! One module per subcommand.

pub(crate) mod schema;
pub(crate) mod conform;
pub(crate) mod mock;
