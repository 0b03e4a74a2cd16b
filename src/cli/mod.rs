//! The `frameworks` operator CLI.
//!
//! `frameworks edge provision` will run the seven provisioning steps of DESIGN.md §8 (preflight,
//! tune, register, cert stage, install, start, verify); until it lands, the command explains itself
//! and refuses to pretend it did anything.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "frameworks", version, about = "FrameWorks operator CLI")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Self-hosted edge nodes.
    Edge {
        #[command(subcommand)]
        command: EdgeCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum EdgeCommand {
    /// Provision an edge node over SSH: preflight, tune, register, cert stage, install, start, verify.
    Provision {
        /// The platform's Foghorn (gRPC), e.g. https://foghorn.example.net:18019; the private
        /// cluster API prints the serving cell's.
        #[arg(long, env = "FRAMEWORKS_FOGHORN")]
        foghorn: Option<String>,
        /// Enrollment token (`enroll_...`) from the cluster's owner.
        #[arg(long)]
        enrollment_token: Option<String>,
        /// SSH destination, e.g. ubuntu@203.0.113.7
        #[arg(long)]
        ssh: Option<String>,
        /// Show what would be done without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// YAML manifest of many edges.
        #[arg(long)]
        manifest: Option<std::path::PathBuf>,
        /// Edges provisioned at once with --manifest.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
    },
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Edge {
            command: EdgeCommand::Provision { .. },
        } => {
            eprintln!(
                "frameworks edge provision is not available in this build yet; \
                 enroll an edge by starting Helmsman with an enrollment token \
                 (see `foghorn sim --help` for a simulated edge)"
            );
            std::process::ExitCode::from(2)
        }
    }
}
