//! The `orders-server` binary: parse the configuration, start logging, run
//! the master, map errors to exit codes (2: unusable setting, 3: workers
//! cannot start, 1: anything else).

use clap::Parser;
use orders_server::config::{Cli, Config};
use orders_server::{logging, master};

fn main() {
    let cli = Cli::parse();
    let config = match Config::load(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("orders-server: {e}");
            std::process::exit(2);
        }
    };
    logging::init(config.log_level, &format!("master {}", std::process::id()));
    if let Err(e) = master::run(config) {
        log::error!("{e}");
        std::process::exit(e.exit_code());
    }
}
