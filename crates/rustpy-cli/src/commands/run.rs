//! `rustpy run`: placeholder until the backend core can execute a model
//! in-process.

use crate::{cli::RunArgs, Error, Global, Result};

pub fn run(_global: &Global, _args: RunArgs) -> Result {
    Err(Error::NotImplemented("run"))
}
