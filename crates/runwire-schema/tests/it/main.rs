//! Integration tests of runwire-schema: the compatibility corpus, real schemars output,
//! the released `schema/v1` tree, properties of the engine, and validation.

mod agreement;
mod corpus;
mod generated_docs;
mod proptests;
mod real_v1;
mod report;
mod schemars_cases;
mod validation;
