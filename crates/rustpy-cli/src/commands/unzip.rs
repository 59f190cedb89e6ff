//! placeholder
use crate::{cli::UnzipArgs, Global, Result};
pub fn run(_global: &Global, _args: UnzipArgs) -> Result { todo!() }
