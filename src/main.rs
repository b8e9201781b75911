//! The `orders-server` binary: parse the configuration, start logging, run
//! the master (or `check` the kernel's tuning), map errors to exit codes
//! (2: unusable setting, 3: workers cannot start, 1: anything else).

use clap::Parser;
use orders_server::config::{Cli, Command, Config};
use orders_server::{logging, master, tuning};

fn main() {
    let cli = Cli::parse();
    if let Some(Command::Check { proc_sys }) = &cli.command {
        std::process::exit(tuning::run(proc_sys));
    }
    let config = match Config::load(cli.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("orders-server: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = logging::init(config.log_level, &format!("master {}", std::process::id()), config.log_file.as_deref()) {
        eprintln!("orders-server: log_file {}: {e}", config.log_file.as_deref().unwrap_or_else(|| std::path::Path::new("")).display());
        std::process::exit(2);
    }
    if let Err(e) = master::run(config, cli) {
        log::error!("{e}");
        std::process::exit(e.exit_code());
    }
}
