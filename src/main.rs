//! The `orders-server` binary: parse the configuration, start logging, run
//! the master (or `check` the kernel's tuning, `check-config`, `backup`),
//! and turn an error into its exit status (`exit`).

use clap::Parser;
use orders_server::config::{Command, Config, Settings};
use orders_server::exit::{self, Error};
use orders_server::{logging, master, tuning};

fn main() {
    let cli = Settings::parse();
    if let Some(Command::Check { proc_sys }) = &cli.command {
        std::process::exit(tuning::run(proc_sys));
    }
    // A running master logs its errors; before that (and in check-config,
    // which never starts logging) they go straight to stderr.
    let logging = !matches!(cli.command, Some(Command::CheckConfig));
    match run(cli) {
        Ok(()) => {}
        Err(e @ Error::Master(_)) if logging => {
            log::error!("{}", exit::chain(&e));
            std::process::exit(e.status());
        }
        // Logging may not have started: straight to stderr.
        Err(e) => {
            eprintln!("orders-server: {}", exit::chain(&e));
            std::process::exit(e.status());
        }
    }
}

fn run(cli: Settings) -> Result<(), Error> {
    let config = Config::load(cli.clone())?;
    if let Some(Command::CheckConfig) = &cli.command {
        if let Some(path) = &config.log_file {
            let opened = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path);
            opened.map_err(|e| Error::LogFile(path.clone(), e))?;
        }
        master::check_config(&config)?;
        println!("configuration ok");
        return Ok(());
    }
    if let Some(Command::Backup { dest }) = &cli.command {
        let bytes =
            orders_server::store::embedded::backup(&config.data_dir, config.map_size, dest)?;
        println!(
            "backup: {bytes} bytes written to {}",
            dest.join("data.mdb").display()
        );
        return Ok(());
    }
    let role = format!("master {}", std::process::id());
    if let Err(e) = logging::init(config.log_level, &role, config.log_file.as_deref()) {
        return Err(Error::LogFile(
            config.log_file.clone().unwrap_or_default(),
            e,
        ));
    }
    master::run(config, cli)?;
    Ok(())
}
