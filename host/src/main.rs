//! The `weir` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weir::{Job, JobError, JobOptions};

/// weir: a stream processor whose operators are WebAssembly components.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Log filter (tracing's env-filter syntax); RUST_LOG also works.
    #[arg(long, global = true, default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job until its inputs end (or Ctrl-C), then print a summary of records in
    /// and out, late records and duration per source, operator and sink. A job with
    /// checkpoints resumes from its latest completed checkpoint.
    Run {
        /// The job file (TOML).
        job: PathBuf,
        /// Directories searched for components named by a bare file name
        /// (after the job file's own directory). Also WEIR_PLUGIN_PATH, `:`-separated.
        #[arg(long = "plugin-dir", env = "WEIR_PLUGIN_PATH", value_delimiter = ':')]
        plugin_dirs: Vec<PathBuf>,
        /// Ignore the job's checkpoints and start from the beginning of its inputs.
        #[arg(long)]
        fresh: bool,
    },
    /// Check a job file and its components without running anything: the job's wiring,
    /// and that every component implements the weir:operator world.
    Check {
        /// The job file (TOML).
        job: PathBuf,
        /// As for `run`.
        #[arg(long = "plugin-dir", env = "WEIR_PLUGIN_PATH", value_delimiter = ':')]
        plugin_dirs: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or(cli.log);
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Run { job, plugin_dirs, fresh } => run(job, JobOptions { plugin_dirs, fresh }),
        Command::Check { job, plugin_dirs } => {
            match Job::load(&job, &JobOptions { plugin_dirs, fresh: false }) {
                Ok(job) => {
                    println!("job `{}` is valid", job.spec().name);
                    ExitCode::SUCCESS
                }
                Err(error) => fail(&error),
            }
        }
    }
}

fn run(path: PathBuf, options: JobOptions) -> ExitCode {
    let job = match Job::load(&path, &options) {
        Ok(job) => job,
        Err(error) => return fail(&error),
    };
    let control = job.control();
    // Ctrl-C stops the sources; every task flushes what it has and the summary prints.
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        if runtime.block_on(tokio::signal::ctrl_c()).is_ok() {
            eprintln!("weir: stopping (Ctrl-C)");
            control.stop();
        }
    });
    match job.run() {
        Ok(summary) => {
            eprint!("{summary}");
            if summary.cancelled { ExitCode::from(130) } else { ExitCode::SUCCESS }
        }
        Err(error) => {
            if let JobError::Failed { summary, .. } = &error {
                eprint!("{summary}");
            }
            fail(&error)
        }
    }
}

fn fail(error: &JobError) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::FAILURE
}
