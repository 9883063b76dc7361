//! The `hookrelay` binary: arguments → config → logging → Application.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hookrelay::app::Application;
use hookrelay::config::Config;

/// A single-binary webhook platform: durable signed delivery with retries,
/// simulations and a live feed.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (default: ./config.toml when present).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Validate the configuration, print it (secrets masked) and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match Config::load(args.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            log::error!("{e}");
            eprintln!("hookrelay: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        print!("{}", config.to_masked_toml());
        return ExitCode::SUCCESS;
    }
    let result = actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config).await?;
        log::info!(
            "hookrelay listening on http://{0}/ (dashboard: http://{0}/)",
            app.addr()
        );
        app.run_until_stopped().await.map_err(|e| e.to_string())?;
        Ok::<(), Box<dyn std::error::Error>>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
