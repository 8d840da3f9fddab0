//! One module per subcommand.

pub(crate) mod schema;
pub(crate) mod conform;
