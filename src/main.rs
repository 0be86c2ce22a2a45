//! The `clustorio` binary: one function per role (DESIGN §2).

use clap::{Args, CommandFactory, Parser, Subcommand};
use clustorio::config::{ControllerConfig, HostConfig, init_logging};
use clustorio::store::{self, Store};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "clustorio",
    version,
    about = "A clustered Factorio server manager",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// What the Docker image runs: reads SERVER_MODE and the panel's variables, writes
    /// config-master.json or config-slave.json, and runs that role.
    Entrypoint {
        /// Working directory (the panel's /home/container).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// The controller: HTTP API, link socket, web UI and metrics on port 8081.
    #[command(alias = "master")]
    Controller {
        #[command(subcommand)]
        command: ControllerCommand,
    },
    /// A first look: controller, one host and two instances on factorio-sim, players chatting.
    Demo {
        /// Where the demo keeps its files (default: a new temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Port of the web UI and API.
        #[arg(long, default_value_t = 8081)]
        port: u16,
    },
    /// A host: connects to the controller and runs the Factorio instances assigned to it.
    #[command(alias = "slave")]
    Host {
        #[command(subcommand)]
        command: HostCommand,
    },
    /// The command-line client of the controller's API: `clustorio ctl <noun> <verb>`.
    Ctl(clustorio::ctl::CtlArgs),
    /// Print a shell completion script, e.g. `clustorio completions bash > /etc/bash_completion.d/clustorio`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum HostCommand {
    /// Run the host until SIGINT, SIGTERM or `stop` on stdin (instances are saved and stopped).
    Run {
        /// Data directory (config-slave.json, instances/, factorio/). Default: the working directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Args)]
struct DataDir {
    /// Data directory (config-master.json, clustorio.db). Default: the working directory.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

#[derive(Subcommand)]
enum ControllerCommand {
    /// Run the controller until SIGINT, SIGTERM or `stop` on stdin.
    Run {
        #[command(flatten)]
        data: DataDir,
        /// Port to listen on (overrides SERVER_PORT and the config file).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Print a token, for scripts; works without a running controller.
    Token {
        #[command(flatten)]
        data: DataDir,
        /// Issue a new login token for this user.
        #[arg(long, conflicts_with = "join", required_unless_present = "join")]
        user: Option<String>,
        /// Print the join token hosts register with (the slaves' MASTER_TOKEN).
        #[arg(long)]
        join: bool,
    },
    /// Write a consistent copy of the database to FILE (works while the controller runs).
    Backup {
        #[command(flatten)]
        data: DataDir,
        /// Where to write the copy (must not exist).
        file: PathBuf,
    },
    /// Give a user the Cluster Admin role (created if missing): the way back when no admin is
    /// left. Works without a running controller (stop it first, or it may hold the database).
    Admin {
        #[command(flatten)]
        data: DataDir,
        /// The user to make an administrator.
        #[arg(long)]
        user: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Role::Entrypoint { dir } = &cli.role {
        // A panel shows one clear line for a misconfigured server, with exit code 2.
        return match clustorio::entrypoint::run(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(clustorio::entrypoint::EntrypointError::Usage(m)) => {
                eprintln!("error: {m}");
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<clustorio::UsageError>().is_some() => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

use clustorio::runtime;

/// Servers hold a socket per client and a file per game: use every descriptor the system allows.
fn raise_fd_limit() {
    match clustorio::limits::raise_fd_limit() {
        Ok((before, after)) => {
            tracing::info!(before, after, "file descriptor limit (RLIMIT_NOFILE)")
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.role {
        Role::Entrypoint { .. } => Ok(()),
        Role::Ctl(args) => clustorio::ctl::run(args),
        Role::Completions { shell } => {
            // Generated into memory first: `clustorio completions zsh | head` closes the pipe
            // early, which is not an error.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "clustorio", &mut script);
            clustorio::ctl::output::write_stdout(&String::from_utf8_lossy(&script))
        }
        Role::Demo { dir, port } => {
            init_logging(clustorio::config::LogLevel::Warn);
            runtime()?.block_on(clustorio::demo::run(clustorio::demo::DemoOptions {
                dir,
                port,
            }))
        }
        Role::Host {
            command: HostCommand::Run { dir },
        } => {
            let cfg = HostConfig::load(&dir)?;
            init_logging(cfg.log_level);
            raise_fd_limit();
            runtime()?.block_on(clustorio::host::run(&dir, cfg))
        }
        Role::Controller { command } => match command {
            ControllerCommand::Run { data, port } => {
                let mut cfg = ControllerConfig::load(&data.dir)?;
                if let Some(port) = port {
                    cfg.port = port;
                }
                init_logging(cfg.log_level);
                raise_fd_limit();
                runtime()?.block_on(clustorio::controller::run(&data.dir, cfg))
            }
            ControllerCommand::Token { data, user, join } => {
                let store = Store::open(&data.dir)?;
                let token = if join {
                    store.write_blocking(store::tokens::ensure_join_token)?
                } else {
                    let user = user.unwrap_or_default();
                    store
                        .write_blocking(move |c| store::tokens::issue(c, "cli", &user))
                        .map(|(_, token)| token)?
                };
                println!("{token}");
                Ok(())
            }
            ControllerCommand::Backup { data, file } => {
                let bytes = store::backup(&data.dir, &file)?;
                println!(
                    "Backed up {} to {} ({bytes} bytes, integrity ok)",
                    data.dir.join(store::DB_FILE).display(),
                    file.display()
                );
                Ok(())
            }
            ControllerCommand::Admin { data, user } => {
                let store = Store::open(&data.dir)?;
                let u = store.write_blocking(move |c| store::grants::restore_admin(c, &user))?;
                println!(
                    "{} now has the {} role; log in with: clustorio controller token --user {}",
                    u.name,
                    clustorio::permissions::ROLE_ADMIN_NAME,
                    u.name
                );
                Ok(())
            }
        },
    }
}
