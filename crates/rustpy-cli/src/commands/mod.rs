//! One module per subcommand; each exposes `run(&Global, Args) -> Result`.

pub mod cache;
pub mod check;
pub mod env;
pub mod fetch;
pub mod init;
pub mod run;
pub mod serve;
pub mod test;
pub mod top;
pub mod unzip;
pub mod zip;
