//! placeholder
use crate::{cli::ServeArgs, Global, Result};
pub fn run(_global: &Global, _args: ServeArgs) -> Result { todo!() }
