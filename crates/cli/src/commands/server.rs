//! `perimeter server`: the fleet's HTTPS API (crates/server) over the fleet
//! store (SQLite by default, PostgreSQL with a postgres:// URL), and its
//! administration on the same database: `server user`, `server token`,
//! `server agents`.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use perimeter_monitor::service::{self, Control, ServiceOptions};
use perimeter_server::{Limits, ServerConfig, TlsSource};
use perimeter_store::fleet::{AgentStatus, FleetStore, Role, TokenScope};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::args::{
    AgentsAction, AgentsArgs, RoleArg, ServerAction, ServerArgs, TokenAction, UserAction,
    UserNameArgs,
};
use crate::exit_codes::ExitCode;
use crate::pipeline::fleet::{default_fleet_database, is_postgres, open_fleet_store};
use crate::pipeline::monitor::CliRunner;
use crate::pipeline::scanner::{NodeOptions, StoreLeases, run_node};
use crate::settings::{self, Zero, parse_duration};
use crate::terminal::Terminal;

/// The largest enrolment secret or password file read.
const MAX_SECRET_BYTES: u64 = 4096;

/// How often a server on SQLite looks for a scan job to run.
const LOCAL_SCANNER_POLL: Duration = Duration::from_secs(5);

pub(crate) fn run(args: ServerArgs, _terminal: &Terminal) -> Result<ExitCode> {
    let mut store = open_fleet_store(args.database.as_deref())?;
    match args.action {
        None => serve(&args, store),
        Some(ServerAction::User(user)) => match user.action {
            UserAction::Add(add) => {
                let password = match &add.password_file {
                    Some(path) => {
                        perimeter_files::read_text(path, "a password file", MAX_SECRET_BYTES)?
                            .lines()
                            .next()
                            .unwrap_or("")
                            .to_owned()
                    }
                    None => {
                        let mut line = String::new();
                        std::io::stdin()
                            .lock()
                            .read_line(&mut line)
                            .context("cannot read the password from standard input")?;
                        line.trim_end_matches(['\n', '\r']).to_owned()
                    }
                };
                let hash = perimeter_server::hash_password(&password)?;
                let role = match add.role {
                    RoleArg::Viewer => Role::Viewer,
                    RoleArg::Approver => Role::Approver,
                    RoleArg::Admin => Role::Admin,
                };
                store.add_user(
                    &add.name,
                    role,
                    &hash,
                    &settings::acting_user(None)?,
                    OffsetDateTime::now_utc(),
                )?;
                outln!("added {} ({})", add.name, role.as_str());
                Ok(ExitCode::Clean)
            }
            UserAction::Disable(user) => set_disabled(store.as_mut(), user, true),
            UserAction::Enable(user) => set_disabled(store.as_mut(), user, false),
            UserAction::List => {
                for user in store.users()? {
                    outln!(
                        "{:<24} {:<9} {}{}",
                        user.name,
                        user.role.as_str(),
                        settings::rfc3339(user.created_at),
                        if user.disabled { "  disabled" } else { "" }
                    );
                }
                Ok(ExitCode::Clean)
            }
        },
        Some(ServerAction::Token(token)) => match token.action {
            TokenAction::Add(add) => {
                if store.user(&add.user)?.is_none() {
                    bail!(
                        "no user {} (add one with `perimeter server user add`)",
                        add.user
                    );
                }
                let now = OffsetDateTime::now_utc();
                let expires = match &add.expires {
                    Some(text) => Some(now + parse_duration("--expires", text, Zero::Refused)?),
                    None => None,
                };
                let new = perimeter_server::new_token();
                let scope = if add.scanner {
                    TokenScope::Scanner
                } else {
                    TokenScope::Full
                };
                let row = store
                    .add_scoped_token(&new.hash, &add.user, &add.label, now, expires, scope)?;
                eprintln!(
                    "perimeter: token {} for {} ({}): shown once, keep it in a file only its user reads",
                    row.id,
                    row.user,
                    match scope {
                        TokenScope::Full => row.role.as_str(),
                        TokenScope::Scanner => "scanner node: leases scan parts, nothing else",
                    }
                );
                outln!("{}", new.token);
                Ok(ExitCode::Clean)
            }
            TokenAction::Revoke(revoke) => {
                store.revoke_token(
                    revoke.id,
                    &settings::acting_user(None)?,
                    OffsetDateTime::now_utc(),
                )?;
                outln!("revoked token {}", revoke.id);
                Ok(ExitCode::Clean)
            }
        },
        Some(ServerAction::Agents(agents)) => run_agents(agents, store.as_mut()),
    }
}

fn set_disabled(store: &mut dyn FleetStore, user: UserNameArgs, disable: bool) -> Result<ExitCode> {
    store.set_user_disabled(
        &user.name,
        disable,
        &settings::acting_user(user.by)?,
        OffsetDateTime::now_utc(),
    )?;
    outln!(
        "{} {}",
        if disable { "disabled" } else { "enabled" },
        user.name
    );
    Ok(ExitCode::Clean)
}

fn run_agents(args: AgentsArgs, store: &mut dyn FleetStore) -> Result<ExitCode> {
    let now = OffsetDateTime::now_utc();
    match args.action.unwrap_or(crate::args::AgentsAction::List) {
        AgentsAction::List => {
            let agents = store.agents()?;
            if agents.is_empty() {
                outln!("no agent has enrolled");
            }
            for agent in agents {
                outln!(
                    "{}  {:<9} {:<24} env {:<12} reports {:<6} last seen {}",
                    agent.id,
                    agent.status.as_str(),
                    agent.hostname,
                    agent.environment.as_deref().unwrap_or("-"),
                    agent.last_seq,
                    agent
                        .last_seen
                        .map_or_else(|| "never".to_owned(), settings::rfc3339),
                );
            }
        }
        AgentsAction::Accept(decision) => {
            let by = settings::acting_user(decision.by)?;
            store.set_agent_status(
                &decision.id,
                AgentStatus::Accepted,
                &by,
                &decision.reason,
                now,
            )?;
            outln!("accepted {}", decision.id);
        }
        AgentsAction::Revoke(decision) => {
            let by = settings::acting_user(decision.by)?;
            store.set_agent_status(
                &decision.id,
                AgentStatus::Revoked,
                &by,
                &decision.reason,
                now,
            )?;
            outln!(
                "revoked {}: its reports are refused from now on",
                decision.id
            );
        }
        AgentsAction::Environment(set) => {
            let by = settings::acting_user(set.by)?;
            store.set_agent_environment(&set.id, set.environment.as_deref(), &by, now)?;
            outln!(
                "{} is in environment {}",
                set.id,
                set.environment.as_deref().unwrap_or("(none)")
            );
        }
    }
    Ok(ExitCode::Clean)
}

fn serve(args: &ServerArgs, store: Box<dyn FleetStore>) -> Result<ExitCode> {
    let tls = match (&args.tls_cert, &args.tls_key, args.dev_self_signed) {
        (Some(cert), Some(key), false) => TlsSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        (None, None, true) => {
            let mut names = vec!["localhost".to_owned()];
            if !args.listen.ip().is_unspecified() {
                names.push(args.listen.ip().to_string());
            }
            TlsSource::DevSelfSigned { names }
        }
        _ => bail!(
            "the server speaks HTTPS only: give --tls-cert and --tls-key, or --dev-self-signed to try it out"
        ),
    };
    let tls = tls.load()?;
    let enrol_secret = match &args.enrol_secret_file {
        Some(path) => {
            let text =
                perimeter_files::read_text(path, "an enrolment secret file", MAX_SECRET_BYTES)?;
            let secret = text.trim().to_owned();
            if secret.len() < 16 {
                bail!(
                    "{}: the enrolment secret must have at least 16 characters",
                    path.display()
                );
            }
            Some(secret)
        }
        None => None,
    };
    let mut config = ServerConfig {
        listen: args.listen,
        enrol_secret,
        require_acceptance: args.require_acceptance,
        limits: Limits {
            reports_per_minute: args.reports_per_minute.max(1),
            keep_history: parse_duration("--keep-history", &args.keep_history, Zero::Allowed)?,
            ..Limits::default()
        },
        monitor_history: None,
    };
    let backend = store.backend();
    // The monitor's fleet job opens the same database on its own connection.
    let fleet_database = match args.database.clone() {
        Some(database) => database,
        None => default_fleet_database()?.to_string_lossy().into_owned(),
    };
    let monitor = match &args.monitor {
        Some(config) => {
            let history = match &args.history {
                Some(path) => path.clone(),
                None => match args.database.as_deref() {
                    Some(db) if !is_postgres(db) => PathBuf::from(db).with_file_name("history.db"),
                    None => default_fleet_database()?.with_file_name("history.db"),
                    Some(_) => settings::db_path(None)?,
                },
            };
            // Checked before the server starts: a monitor that cannot run is
            // an error now, not a log line later.
            service::check_config(config)?;
            Some(ServiceOptions {
                config_path: config.clone(),
                db_path: history,
                host: settings::hostname(),
                once: None,
                retry_initial: Duration::from_secs(30),
                retry_max: Duration::from_secs(3600),
            })
        }
        None => None,
    };
    config.monitor_history = monitor.as_ref().map(|options| options.db_path.clone());
    // On SQLite the server scans its jobs itself, as one part each, on its
    // own connection to the same file (scanner nodes need PostgreSQL).
    let local_scanner = if backend == "sqlite" {
        Some(StoreLeases {
            store: Arc::new(Mutex::new(open_fleet_store(Some(&fleet_database))?)),
            node: "server".to_owned(),
        })
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let bound = listener.local_addr().context("the listening address")?;
        outln!("perimeter server: https://{bound} ({backend})");
        outln!("certificate fingerprint {}", tls.fingerprint);
        if config.enrol_secret.is_none() {
            outln!("enrolment closed (no --enrol-secret-file)");
        }
        if let Some(options) = &monitor {
            outln!(
                "monitor: the jobs of {}, history {}",
                options.config_path.display(),
                options.db_path.display()
            );
        }
        if local_scanner.is_some() {
            outln!("scan jobs: run by this server's own scanner, one part each (SQLite)");
        }
        crate::output::flush();
        let stop = CancellationToken::new();
        let (control, controls) = mpsc::channel(8);
        tokio::spawn(forward_signals(stop.clone(), control));
        if let Some(leases) = local_scanner {
            let stop = stop.clone();
            tokio::spawn(async move {
                let options = NodeOptions {
                    name: "server".to_owned(),
                    allow: Vec::new(),
                    poll: LOCAL_SCANNER_POLL,
                    once: false,
                };
                if let Err(err) = run_node(&leases, &options, &stop).await {
                    tracing::error!("the server's own scanner stopped: {err:#}");
                }
            });
        }
        let server = perimeter_server::serve(
            listener,
            tls.config,
            store,
            config,
            stop.clone().cancelled_owned(),
        );
        let monitor_run = async {
            match monitor {
                Some(options) => {
                    let runner = CliRunner {
                        db: options.db_path.clone(),
                        inventory: options.config_path.clone(),
                        fleet_database: Some(fleet_database),
                    };
                    service::run(&runner, options, controls).await.map(drop)
                }
                None => {
                    drop(controls);
                    std::future::pending::<anyhow::Result<()>>().await
                }
            }
        };
        tokio::pin!(server, monitor_run);
        tokio::select! {
            served = &mut server => served?,
            monitored = &mut monitor_run => {
                // The monitor stopped (SIGTERM) or failed: the server stops too.
                stop.cancel();
                server.await?;
                monitored?;
            }
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::Clean)
}

/// SIGTERM or SIGINT stop the server (and the monitor in it); SIGHUP reloads
/// the monitor's configuration.
async fn forward_signals(stop: CancellationToken, control: mpsc::Sender<Control>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for signals");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let _ = control.send(Control::Reload).await;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let _ = control.send(Control::Stop).await;
    stop.cancel();
}
