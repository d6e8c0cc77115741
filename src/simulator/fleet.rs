//! The simulated fleet: what the fake control plane changes (properties, status, jobs) and
//! what the virtual phones read (where to call back, whether they are up).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::cph::model::{job_status, status};

/// Faults a phone can be given (docs/simulator.md; the watchdog must recover them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhoneFaults {
    /// Sends no heartbeats and plays nothing, until restarted or reset.
    pub silent: bool,
    /// Stuck: as silent, but a restart does not help; only a reset does.
    pub stuck: bool,
    /// Every restart job of this phone fails (status -6); a reset is needed.
    pub restart_fails: bool,
    /// Its server is down: no heartbeats, no sessions, whatever is done to the phone, until
    /// the server comes back ([`Fleet::set_server_dark`]). The control plane still lists
    /// the phone running (2): a dead host is what it may not have noticed yet. Restart and
    /// reset jobs run as usual (the reference is silent on jobs of a phone whose host is
    /// down) and change nothing about it.
    pub dark: bool,
    /// Every update of this phone to an application version (5.3.7, job type 32) fails:
    /// a game build that does not install. The reference names no cause of such a failure;
    /// the job ends as every failed job here does (7.2's system error).
    pub update_fails: bool,
}

#[derive(Debug, Clone)]
pub struct SimPhone {
    pub phone_id: String,
    pub phone_name: String,
    pub server_id: String,
    /// Chapter 4.3.1 status: 2 running, 3 resetting, 4 restarting, 6 frozen, 7 stopping,
    /// 8 stopped, -5/-6 failed. Only a running phone calls back.
    pub status: i32,
    /// The phone properties (appendix A.1), e.g. `com.cph.cg.heartbeat_url`.
    pub properties: BTreeMap<String, String>,
    /// Properties a 4.3.9 update wrote that take effect only at the next restart (or are
    /// dropped by a reset, which restores factory settings). 4.3.9 says "some attributes
    /// take effect only after the cloud phone is restarted" and points to appendix A.1,
    /// which does not say which ones; the simulator takes the conservative reading that
    /// every updated property waits for a restart, so cphub is tested against the harder
    /// case. The phone detail (4.3.2) and the engine show only `properties`.
    pub pending_properties: BTreeMap<String, String>,
    pub faults: PhoneFaults,
    /// Bumped by every restart or reset: a phone task that sees it change starts over
    /// (its session, if any, is lost, as on a real reboot).
    pub boots: u64,
    /// Ids of the applications deployed on the phone (chapter 5.1.2), in deployment order.
    pub apps: Vec<String>,
    /// The version installed of each of those apps: app id → `app_version_id` (5.3.6).
    pub versions: BTreeMap<String, String>,
    /// Whether a heartbeat of this phone has been answered: cphub knows it. The faults wait
    /// for it (see `break_phones_later`).
    pub heard: bool,
    /// 4.3.1's `update_time`, "the time when the cloud phone is updated": set by every
    /// change of its status or properties (the reference names no other); None until the
    /// first, when it is the creation time.
    pub updated: Option<DateTime<Utc>>,
    /// Its server was released (or the phone deleted) outside the API, which has no call for
    /// it: the control plane no longer lists or knows it (4.3.1, 4.3.2 `CPS.0005`) and it
    /// calls back no more. Kept in `phones` so the phone tasks' places stay put.
    pub released: bool,
}

impl SimPhone {
    /// Its status or properties changed now (`update_time`).
    pub fn touch(&mut self) {
        self.updated = Some(Utc::now());
    }

    /// Up and sending callbacks.
    pub fn is_alive(&self) -> bool {
        let faults = self.faults;
        self.status == status::RUNNING
            && !self.released
            && !faults.silent
            && !faults.stuck
            && !faults.dark
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    UpdateProperty,
    Restart,
    Reset,
    Stop,
    /// 5.3.4, job type 31: a version's package pushed to a server.
    PushAppVersion,
    /// 5.3.7, job type 32: a version installed on a phone.
    UpdateAppVersion,
    /// 4.6.2: an encoding server restarted; the job's `server_id` holds the encoding
    /// server's id, which 4.4 shows as `encode_server_id`.
    RestartEncodeServer,
}

#[derive(Debug, Clone)]
pub struct SimJob {
    pub job_id: String,
    pub request_id: String,
    /// Table 4-50: "contained in tasks related to cloud phones" — absent from server jobs.
    pub phone_id: Option<String>,
    /// The server of a server job (5.3.4); a phone job's is its phone's; the encoding server
    /// of a [`JobKind::RestartEncodeServer`].
    pub server_id: Option<String>,
    pub kind: JobKind,
    /// 1 running, 2 succeeded, -1 failed (chapter 4.4.1).
    pub status: i32,
    pub begin_time: String,
    pub end_time: Option<String>,
    pub error_code: Option<String>,
    pub error_msg: Option<String>,
}

/// Why a job failed: its `error_code` and `error_msg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    pub code: &'static str,
    pub message: String,
}

impl JobFailure {
    /// 7.2's "System error" (`CPS.0003`): what an operation that failed on its phone
    /// carries here (the reference shows no code for a restart or reset that failed).
    pub fn system(message: impl Into<String>) -> Self {
        JobFailure {
            code: "CPS.0003",
            message: message.into(),
        }
    }

    /// A job whose phone is gone, exactly as 4.4.2's example shows it: `CPS0005` (7.2 spells
    /// the code `CPS.0005`) and "Phone not found.".
    pub fn phone_gone() -> Self {
        JobFailure {
            code: "CPS0005",
            message: "Phone not found.".to_owned(),
        }
    }
}

impl SimJob {
    /// Ends the job at `end_time`: succeeded, or failed with the failure's code and message.
    pub fn end(&mut self, end_time: String, outcome: Result<(), JobFailure>) {
        self.end_time = Some(end_time);
        match outcome {
            Ok(()) => self.status = job_status::SUCCEEDED,
            Err(failure) => {
                self.status = job_status::FAILED;
                self.error_code = Some(failure.code.to_owned());
                self.error_msg = Some(failure.message);
            }
        }
    }
}

/// An application of the control plane (chapter 5.1.3, Table 5-6).
#[derive(Debug, Clone)]
pub struct SimApp {
    pub app_id: String,
    pub name: String,
    pub package_name: String,
    /// Its versions (chapter 5.2), oldest first; never empty.
    pub versions: Vec<SimVersion>,
}

/// A version of an application (chapter 5.2.1).
#[derive(Debug, Clone)]
pub struct SimVersion {
    pub app_version_id: String,
    pub version_code: String,
    pub version_name: String,
}

impl SimApp {
    /// An app whose name and package are made from its id, with its first version.
    fn new(app_id: &str) -> SimApp {
        let mut app = SimApp {
            app_id: app_id.to_owned(),
            name: app_id.replace(|c: char| !c.is_ascii_alphanumeric() && c != '.', "_"),
            package_name: format!("com.simulator.{}", app_id.replace(':', "_")),
            versions: Vec::new(),
        };
        app.add_version();
        app
    }

    /// A new version, code n and name "n.0.0"; its id is 32 hex characters, as the
    /// reference's ids are, derived from the app and n so a seed gives the same ids.
    fn add_version(&mut self) -> &SimVersion {
        use sha2::Digest;
        let n = self.versions.len() + 1;
        let digest = sha2::Sha256::digest(format!("{}#{n}", self.app_id));
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.versions.push(SimVersion {
            app_version_id: hex,
            version_code: n.to_string(),
            version_name: format!("{n}.0.0"),
        });
        self.latest()
    }

    pub fn latest(&self) -> &SimVersion {
        self.versions.last().expect("an app has a version")
    }

    pub fn version(&self, app_version_id: &str) -> Option<&SimVersion> {
        self.versions
            .iter()
            .find(|v| v.app_version_id == app_version_id)
    }
}

#[derive(Debug, Default)]
pub struct Fleet {
    /// In creation order (the list API answers newest first, chapter 4.3.1).
    pub phones: Vec<SimPhone>,
    pub jobs: HashMap<String, SimJob>,
    /// Whether the configured job failures apply yet. A simulator started with faults keeps
    /// them off until its faults start, so setting the fleet up (pointing the phones at
    /// cphub, which takes a restart) is not itself a fault; a bare fleet has them on.
    pub job_failures_on: bool,
    /// The control plane's applications, in creation order (5.1.3 lists newest first).
    pub apps: Vec<SimApp>,
    /// The versions pushed to each server (5.3.4), which 5.3.1 lists and which a phone of
    /// the server can be updated to (5.3.7): server id → version ids.
    pub pushed: BTreeMap<String, BTreeSet<String>>,
    /// Where the next deployment's phones start (see [`Fleet::deploy`]).
    deployed: usize,
    /// One encoding server per server, in server order (4.6.1).
    pub encode_servers: Vec<SimEncodeServer>,
    /// What a synchronous ADB command prints (4.7.5): command → output. A command not
    /// listed fails as the reference's example does, `execute_msg` saying it was not found.
    pub command_outputs: BTreeMap<String, String>,
    /// How long the jobs started from now on run, instead of the configured `job_delay`.
    /// A test sets the fleet up with quick jobs (pointing the phones at cphub is two jobs a
    /// phone) and then slows the one it needs to catch running, a 5.3.7 update say. The
    /// reference says nothing of how long a job runs.
    pub job_delay_override: Option<Duration>,
}

/// An encoding server (chapter 4.6.1). Its status is 1 running, 2 abnormal (a fault set by
/// [`Fleet::set_encode_server_abnormal`]), 3 while a restart (4.6.2) runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimEncodeServer {
    pub encode_server_id: String,
    pub encode_server_name: String,
    pub server_id: String,
    pub status: i32,
    /// Restarts (4.6.2) it went through.
    pub restarts: u64,
}

impl Fleet {
    /// How long a job started now runs: `configured` (the simulator's `job_delay`) unless a
    /// test set [`Fleet::job_delay_override`].
    pub fn job_delay(&self, configured: Duration) -> Duration {
        self.job_delay_override.unwrap_or(configured)
    }

    /// `count` running phones named `mobile-0001`…, ids derived from `seed`, spread over
    /// servers of 16 phones.
    pub fn new(count: usize, seed: u64) -> Fleet {
        Fleet::with_servers(count, seed, 16)
    }

    /// As [`Fleet::new`], with `per_server` phones on each server (the reference is silent on
    /// how many a server holds: it depends on the server's and the phones' flavors).
    pub fn with_servers(count: usize, seed: u64, per_server: usize) -> Fleet {
        let per_server = per_server.max(1);
        let phones = (0..count)
            .map(|i| SimPhone {
                phone_id: format!("{seed:08x}{i:024x}"),
                phone_name: format!("mobile-{:04}", i + 1),
                server_id: server_id(seed, i / per_server),
                status: status::RUNNING,
                properties: BTreeMap::new(),
                pending_properties: BTreeMap::new(),
                faults: PhoneFaults::default(),
                boots: 0,
                apps: Vec::new(),
                versions: BTreeMap::new(),
                heard: false,
                updated: None,
                released: false,
            })
            .collect();
        let mut fleet = Fleet {
            phones,
            jobs: HashMap::new(),
            job_failures_on: true,
            apps: Vec::new(),
            pushed: BTreeMap::new(),
            deployed: 0,
            encode_servers: Vec::new(),
            command_outputs: BTreeMap::new(),
            job_delay_override: None,
        };
        fleet.encode_servers = (fleet.server_ids().into_iter().enumerate())
            .map(|(i, server_id)| SimEncodeServer {
                encode_server_id: format!("{seed:08x}{:024x}", 0xeeee_0000 + i),
                encode_server_name: format!("ENCODE_SERVER_{}", i + 1),
                server_id,
                status: ENCODE_SERVER_RUNNING,
                restarts: 0,
            })
            .collect();
        fleet
    }

    pub fn encode_server_mut(&mut self, id: &str) -> Option<&mut SimEncodeServer> {
        self.encode_servers
            .iter_mut()
            .find(|e| e.encode_server_id == id)
    }

    /// The encoding server turns abnormal (status 2, 4.6.1) until it is restarted (4.6.2).
    pub fn set_encode_server_abnormal(&mut self, index: usize) {
        if let Some(server) = self.encode_servers.get_mut(index) {
            server.status = ENCODE_SERVER_ABNORMAL;
        }
    }

    /// Deploys `app_id` on `share` (0.0..=1.0) of the phones, at least one: the phones after
    /// those the previous deployment took, wrapping around, so two apps at 0.5 each split
    /// the fleet and an app at 1.0 is on every phone. They get the app's latest version,
    /// which counts as pushed to their servers (it had to be, to be installed: 5.3.7).
    pub fn deploy(&mut self, app_id: &str, share: f64) {
        let count = self.phones.len();
        if count == 0 {
            return;
        }
        if !self.apps.iter().any(|app| app.app_id == app_id) {
            self.apps.push(SimApp::new(app_id));
        }
        let version = self
            .app(app_id)
            .expect("just added")
            .latest()
            .app_version_id
            .clone();
        let phones = ((count as f64 * share.clamp(0.0, 1.0)).ceil() as usize).clamp(1, count);
        for offset in 0..phones {
            let phone = &mut self.phones[(self.deployed + offset) % count];
            if !phone.apps.iter().any(|a| a == app_id) {
                phone.apps.push(app_id.to_owned());
            }
            phone.versions.insert(app_id.to_owned(), version.clone());
            let server = self.pushed.entry(phone.server_id.clone()).or_default();
            server.insert(version.clone());
        }
        self.deployed = (self.deployed + phones) % count;
    }

    pub fn app(&self, app_id: &str) -> Option<&SimApp> {
        self.apps.iter().find(|app| app.app_id == app_id)
    }

    /// The operator uploads a new version of `app_id` (chapter 5.2.2); pushed nowhere yet.
    /// Returns its id, or `None` for an unknown app.
    pub fn new_version(&mut self, app_id: &str) -> Option<String> {
        let app = self.apps.iter_mut().find(|app| app.app_id == app_id)?;
        Some(app.add_version().app_version_id.clone())
    }

    /// The app and version of a version id.
    pub fn find_version(&self, app_version_id: &str) -> Option<(&SimApp, &SimVersion)> {
        self.apps
            .iter()
            .find_map(|app| app.version(app_version_id).map(|v| (app, v)))
    }

    /// The phone the control plane knows by `phone_id` (not one released).
    pub fn phone(&self, phone_id: &str) -> Option<&SimPhone> {
        self.listed().find(|p| p.phone_id == phone_id)
    }

    pub fn phone_mut(&mut self, phone_id: &str) -> Option<&mut SimPhone> {
        (self.phones.iter_mut()).find(|p| p.phone_id == phone_id && !p.released)
    }

    /// The phones the control plane knows, in creation order.
    pub fn listed(&self) -> impl DoubleEndedIterator<Item = &SimPhone> {
        self.phones.iter().filter(|p| !p.released)
    }

    /// The server is released outside the API (the reference has no call for it): its
    /// phones are gone from the control plane and stop calling back.
    pub fn release_server(&mut self, server_id: &str) {
        for phone in self.phones.iter_mut().filter(|p| p.server_id == server_id) {
            phone.released = true;
        }
    }

    /// Someone other than cphub changes the phone's status (chapter 4.3.1): stops, freezes
    /// or restarts it. Any status but running silences the phone (see
    /// [`SimPhone::is_alive`]); the control plane reports the new status at once.
    pub fn set_status(&mut self, index: usize, status: i32) {
        if let Some(phone) = self.phones.get_mut(index) {
            phone.status = status;
            phone.touch();
        }
    }

    /// The servers, in the order of their phones.
    pub fn server_ids(&self) -> Vec<String> {
        let mut servers: Vec<String> = Vec::new();
        for phone in &self.phones {
            if servers.last() != Some(&phone.server_id) {
                servers.push(phone.server_id.clone());
            }
        }
        servers
    }

    /// A server goes down (`dark`) or comes back: its phones stop or resume calling back;
    /// the control plane's view of them does not change.
    pub fn set_server_dark(&mut self, server_id: &str, dark: bool) {
        for phone in self.phones.iter_mut().filter(|p| p.server_id == server_id) {
            phone.faults.dark = dark;
        }
    }

    /// Properties the phones' operator set (appendix A.1), on every phone.
    pub fn set_operator_properties(&mut self, properties: &[(String, String)]) {
        for phone in &mut self.phones {
            phone.properties.extend(properties.iter().cloned());
            phone.touch();
        }
    }
}

fn server_id(seed: u64, index: usize) -> String {
    format!("{seed:08x}{:024x}", 0xffff_0000 + index)
}

/// Chapter 4.6.1's encoding server statuses the simulator uses.
pub const ENCODE_SERVER_RUNNING: i32 = 1;
pub const ENCODE_SERVER_ABNORMAL: i32 = 2;
pub const ENCODE_SERVER_RESTARTING: i32 = 3;

/// The fleet shared by the control plane and the phone tasks.
#[derive(Clone, Default)]
pub struct SharedFleet(Arc<Mutex<Fleet>>);

impl SharedFleet {
    pub fn new(fleet: Fleet) -> Self {
        SharedFleet(Arc::new(Mutex::new(fleet)))
    }

    pub fn lock(&self) -> MutexGuard<'_, Fleet> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::Fleet;

    fn with(fleet: &Fleet, app_id: &str) -> Vec<usize> {
        (fleet.phones.iter().enumerate())
            .filter(|(_, p)| p.apps.iter().any(|a| a == app_id))
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn deployments_take_the_phones_after_the_previous_ones_wrapping_around() {
        let mut fleet = Fleet::new(8, 1);
        fleet.deploy("a", 0.5);
        fleet.deploy("b", 0.5);
        fleet.deploy("c", 0.3);
        fleet.deploy("all", 1.0);
        fleet.deploy("tiny", 0.0);

        assert_eq!(with(&fleet, "a"), [0, 1, 2, 3]);
        assert_eq!(with(&fleet, "b"), [4, 5, 6, 7]);
        assert_eq!(with(&fleet, "c"), [0, 1, 2], "0.3 of 8 rounds up to 3");
        assert_eq!(with(&fleet, "all"), (0..8).collect::<Vec<_>>());
        assert_eq!(with(&fleet, "tiny"), [3], "at least one phone");
        let ids: Vec<&str> = fleet.apps.iter().map(|a| a.app_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "all", "tiny"]);
    }
}
