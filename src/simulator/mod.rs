//! The simulator: a fake CPH control plane and a fleet of virtual phones, so the whole loop
//! (properties, callbacks, sessions, recovery) runs on one machine without a Huawei account.

mod client;
pub mod control_plane;
pub mod fleet;
pub mod load;
mod options;
mod phone;
mod player;
mod stats;

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use client::ClientSeal;
pub use options::{DEFAULT_APP, SimOptions};
pub use stats::{Acked, Acknowledged, PlayedSession, Stats};

use control_plane::{ControlPlaneFaults, ControlPlaneSettings};
use fleet::{Fleet, SharedFleet};
use phone::VirtualPhone;
use player::Players;

pub struct Simulator {
    pub fleet: SharedFleet,
    pub stats: Arc<Stats>,
    /// The fake control plane's faults (docs/simulator.md): change them while it runs.
    pub faults: ControlPlaneFaults,
    cph_port: u16,
    control_plane: ServerHandle,
    /// The control plane's server, run to its end.
    control_plane_task: JoinHandle<()>,
    /// The phones, the players and the faults.
    tasks: Vec<JoinHandle<()>>,
}

impl Simulator {
    /// Starts the control plane, the phones and the players.
    pub async fn start(options: SimOptions) -> std::io::Result<Simulator> {
        let mut phones =
            Fleet::with_servers(options.phones, options.seed, options.phones_per_server);
        // Restart and job failures start with the other faults (`faults_after_secs`): until
        // then the fleet can be set up, which takes a restart (4.3.9).
        phones.job_failures_on = !options.has_faults();
        let fleet = SharedFleet::new(phones);
        fleet.lock().set_operator_properties(&options.properties);
        for (app_id, share) in options.deployments() {
            fleet.lock().deploy(&app_id, share);
        }
        let listener = TcpListener::bind(options.cph_listen)?;
        let cph_port = listener.local_addr()?.port();
        let settings = control_plane_settings(&options);
        let faults = settings.faults.clone();
        let server = control_plane::start(listener, settings, fleet.clone())?;
        let control_plane = server.handle();
        let control_plane_task = tokio::spawn(async move {
            let _ = server.await;
        });
        let mut tasks = Vec::new();
        let options = Arc::new(options);
        let stats = Arc::new(Stats::default());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?;
        let mut inboxes = HashMap::new();
        for index in 0..options.phones {
            let (inbox, assignments) = mpsc::channel(4);
            inboxes.insert(fleet.lock().phones[index].phone_id.clone(), inbox);
            let phone = VirtualPhone {
                index,
                fleet: fleet.clone(),
                http: http.clone(),
                stats: Arc::clone(&stats),
                options: Arc::clone(&options),
                assignments,
            };
            tasks.push(tokio::spawn(phone.run()));
        }
        let players = Players {
            options: Arc::clone(&options),
            http,
            stats: Arc::clone(&stats),
            phones: inboxes,
        };
        tasks.push(tokio::spawn(players.run()));
        tasks.push(tokio::spawn(break_phones_later(
            fleet.clone(),
            Arc::clone(&options),
        )));
        Ok(Simulator {
            fleet,
            stats,
            faults,
            cph_port,
            control_plane,
            control_plane_task,
            tasks,
        })
    }

    /// Base URL of the fake management API, for `cph.endpoint`.
    pub fn cph_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.cph_port)
    }

    pub fn phone_ids(&self) -> Vec<String> {
        self.fleet
            .lock()
            .phones
            .iter()
            .map(|p| p.phone_id.clone())
            .collect()
    }

    /// A control-plane outage: the fake management API stops answering (phones go on).
    pub async fn stop_control_plane(&self) {
        self.control_plane.stop(false).await;
    }

    /// Stops the phones, the players and the control plane.
    pub async fn stop(self) {
        self.tasks.iter().for_each(JoinHandle::abort);
        // The control plane stops through its own loop, which answers once it has. Its task
        // was aborted here too, which raced the stop command against the task dropping the
        // command's receiver on another worker: a command sent in that instant stayed in a
        // channel nobody read, kept open by the handle awaiting its answer, and the stop
        // waited forever (a test scenario hung on it). After `stop_control_plane` the loop
        // is long gone, the command is refused and this returns at once.
        self.control_plane.stop(false).await;
        let _ = self.control_plane_task.await;
    }
}

fn control_plane_settings(options: &SimOptions) -> ControlPlaneSettings {
    ControlPlaneSettings {
        project_id: options.project_id.clone(),
        ak: options.ak.clone(),
        sk: options.sk.clone().into(),
        iam_user: None,
        job_delay: Duration::from_millis(options.job_delay_ms),
        job_failure_rate: options.job_failure_rate,
        max_date_skew: Duration::from_secs(15 * 60),
        faults: options.control_plane_faults(),
    }
}

/// The first `silent` phones go silent and the next `stuck` get stuck, a while after start;
/// the next ones are stopped, frozen, left stopping or restarted by someone else
/// ([`SimOptions::external_statuses`]); the last `dark_servers` servers go down.
async fn break_phones_later(fleet: SharedFleet, options: Arc<SimOptions>) {
    let external = options.external_statuses();
    let externally: usize = external.iter().map(|(count, _)| count).sum();
    if !options.has_faults() {
        return;
    }
    tokio::time::sleep(Duration::from_secs(options.faults_after_secs)).await;
    wait_until_heard(&fleet).await;
    let mut fleet = fleet.lock();
    fleet.job_failures_on = true;
    for (i, phone) in fleet.phones.iter_mut().enumerate() {
        phone.faults.silent |= i < options.silent;
        phone.faults.stuck |= (options.silent..options.silent + options.stuck).contains(&i);
        phone.faults.restart_fails |= i < options.restart_fails;
    }
    let mut next = options.silent + options.stuck;
    for (count, status) in external {
        for index in next..next + count {
            fleet.set_status(index, status);
        }
        next += count;
    }
    let servers = fleet.server_ids();
    for server in servers.iter().rev().take(options.dark_servers) {
        fleet.set_server_dark(server, true);
    }
    tracing::info!(
        silent = options.silent,
        stuck = options.stuck,
        externally,
        dark_servers = options.dark_servers,
        "simulated phones broke"
    );
}

/// Waits (up to a minute) until cphub has answered a heartbeat of every phone (a dark server
/// takes all of its phones, so the wait is for all). Setting a fleet up takes a 4.3.9 property update and a
/// restart, whose jobs take `job_delay` each: on a busy machine that outlasted
/// `faults_after_secs`, a phone broke before cphub ever heard of it, and a phone cphub never
/// heard is not silent to it — the watchdog rightly leaves it alone, and a test meant to see
/// a silent phone recovered saw nothing. (The reference says nothing of this; it is how the
/// simulator stages its faults.) Without a cphub to answer, the faults start after the wait.
async fn wait_until_heard(fleet: &SharedFleet) {
    for _ in 0..600 {
        let heard = fleet.lock().phones.iter().all(|p| p.heard);
        if heard {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `cphub simulate`: runs until Ctrl-C/SIGTERM or `--duration-secs`, printing a summary
/// every `--summary-secs` and once at the end.
pub async fn run(options: SimOptions) -> std::io::Result<()> {
    if options.load.load {
        return load::run_and_print(options.load.clone(), options.load_target()).await;
    }
    let summary_every = Duration::from_secs(options.summary_secs.max(1));
    let duration = options.duration_secs;
    let simulator = Simulator::start(options).await?;
    println!(
        "simulator: fake CPH API at {} ({} phones)",
        simulator.cph_endpoint(),
        simulator.phone_ids().len()
    );
    let deadline = async {
        match duration {
            0 => std::future::pending::<()>().await,
            secs => tokio::time::sleep(Duration::from_secs(secs)).await,
        }
    };
    tokio::pin!(deadline);
    let stop = crate::http::stop::stop_signal()?;
    tokio::pin!(stop);
    let mut ticks = tokio::time::interval(summary_every);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => println!("{}", simulator.stats.summary(&simulator.fleet)),
            _ = &mut deadline => break,
            _ = &mut stop => break,
        }
    }
    println!("{}", simulator.stats.summary(&simulator.fleet));
    simulator.stop().await;
    Ok(())
}
