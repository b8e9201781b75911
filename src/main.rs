//! The `orders-server` binary: parse the configuration, start logging, run
//! the master (or `check` the kernel's tuning, `check-config`, `backup`),
//! and turn what ended each process into its exit status: the one place
//! where errors map to exit statuses (the statuses are `exit`'s table),
//! for the master and for every worker it forks ([`worker_main`]).

use clap::Parser;
use orders_server::config::{Command, Config, ConfigError, Settings};
use orders_server::logging::{self, chain};
use orders_server::master::{self, MasterError};
use orders_server::store::{embedded::BackupError, StoreError};
use orders_server::worker::{self, BootError};
use orders_server::{exit, tuning};

/// Why the master process could not run.
#[derive(Debug, thiserror::Error)]
enum Error {
    /// The configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The log file cannot be opened.
    #[error("log_file {}", .0.display())]
    LogFile(std::path::PathBuf, #[source] std::io::Error),
    /// The master.
    #[error(transparent)]
    Master(#[from] MasterError),
    /// `orders-server backup`.
    #[error(transparent)]
    Backup(#[from] BackupError),
}

/// The exit status of the master process after `error`.
fn master_status(error: &Error) -> i32 {
    match error {
        Error::Master(MasterError::GaveUp { .. } | MasterError::StoreFaults { .. }) => {
            exit::BOOT_FAILURE
        }
        Error::Config(_) | Error::LogFile(..) | Error::Master(_) | Error::Backup(_) => {
            exit::UNUSABLE
        }
    }
}

/// The exit status of a worker process that ran (its error logged first).
fn worker_status(outcome: std::thread::Result<Result<(), BootError>>) -> i32 {
    match outcome {
        Ok(Ok(())) => exit::SUCCESS,
        Ok(Err(BootError::Store(_, StoreError::Damaged(_)) | BootError::Damaged(_))) => {
            exit::STORE_FAULT
        }
        Ok(Err(_)) => exit::BOOT_FAILURE,
        // The panic hook has logged it.
        Err(_) => exit::PANIC,
    }
}

/// A forked worker: serves, then ends the process with its status. A
/// panic never unwinds into the master's frames it was forked from.
fn worker_main(spec: worker::Spec<'_>) -> ! {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker::run(spec)));
    if let Ok(Err(e)) = &outcome {
        log::error!("{}", chain(e));
    }
    std::process::exit(worker_status(outcome))
}

fn main() {
    let cli = Settings::parse();
    if let Some(Command::Check { proc_sys }) = &cli.command {
        std::process::exit(match tuning::run(proc_sys) {
            tuning::Outcome::AsRecommended => exit::SUCCESS,
            tuning::Outcome::Findings(_) => exit::CHECK_FOUND,
        });
    }
    // A running master logs its errors; before that (and in check-config,
    // which never starts logging) they go straight to stderr.
    let logging = !matches!(cli.command, Some(Command::CheckConfig));
    if let Err(e) = run(cli) {
        match e {
            Error::Master(_) if logging => log::error!("{}", chain(&e)),
            // Logging may not have started: straight to stderr.
            _ => eprintln!("orders-server: {}", chain(&e)),
        }
        std::process::exit(master_status(&e));
    }
}

fn run(cli: Settings) -> Result<(), Error> {
    let config = Config::load(cli.clone())?;
    if let Some(Command::CheckConfig) = &cli.command {
        if let Some(path) = &config.process.log_file {
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
        let bytes = orders_server::store::embedded::backup(
            &config.store.data_dir,
            config.store.map_size,
            dest,
        )?;
        println!(
            "backup: {bytes} bytes written to {}",
            dest.join("data.mdb").display()
        );
        return Ok(());
    }
    let role = format!("master {}", std::process::id());
    let process = &config.process;
    if let Err(e) = logging::init(process.log_level, &role, process.log_file.as_deref()) {
        return Err(Error::LogFile(
            process.log_file.clone().unwrap_or_default(),
            e,
        ));
    }
    master::run(config, cli, worker_main)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        assert_eq!(
            master_status(&Error::LogFile("/x/log".into(), io)),
            exit::UNUSABLE
        );
        assert_eq!(
            master_status(&Error::Master(MasterError::GaveUp { failures: 5 })),
            exit::BOOT_FAILURE
        );
        assert_eq!(worker_status(Ok(Ok(()))), exit::SUCCESS);
        assert_eq!(
            worker_status(Ok(Err(BootError::TestHook))),
            exit::BOOT_FAILURE
        );
        let damaged = StoreError::damaged(std::io::Error::other("MDB_CORRUPTED"));
        assert_eq!(
            worker_status(Ok(Err(BootError::Store("embedded".into(), damaged)))),
            exit::STORE_FAULT
        );
        let refused = orders_server::store::datafile::DamagedStore::Empty("/d/data.mdb".into());
        assert_eq!(
            worker_status(Ok(Err(BootError::Damaged(refused)))),
            exit::STORE_FAULT,
            "a replacement refusing a damaged file"
        );
        assert_eq!(
            master_status(&Error::Master(MasterError::StoreFaults { faults: 5 })),
            exit::BOOT_FAILURE
        );
        assert_eq!(worker_status(Err(Box::new("panic"))), exit::PANIC);
    }
}
