//! The simulator's fake CPH management API, driven by three independent clients: cphub's own
//! `CphClient` (AK/SK and IAM token), raw signed requests for the refusals, and Huawei's
//! official Python SDK.

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use chrono::{TimeDelta, Utc};
use cphub::config::Settings;
use cphub::cph::model::{job_status, status};
use cphub::cph::signer::Signing;
use cphub::cph::{CphClient, CphError, PhoneFilter, PhoneItem};
use cphub::simulator::control_plane::{
    self, ControlPlaneFaults, ControlPlaneSettings, DEFAULT_MAX_DATE_SKEW, LostAnswer, Operation,
};
use cphub::simulator::fleet::{Fleet, SharedFleet, SimPhone};
use serde_json::{Value, json};

const PROJECT_ID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const AK: &str = "SIMULATORTESTAK00001";
const SK: &str = "simulatorTestSecretKey0123456789abcdef";
const IAM_USER: &str = "cphub-operator";
const IAM_PASSWORD: &str = "correct horse battery staple";
const IAM_DOMAIN: &str = "cphub-domain";

/// A running fake control plane over a fresh fleet.
struct FakeCph {
    endpoint: String,
    fleet: SharedFleet,
    server: ServerHandle,
    /// The running control plane's faults (off until a test turns one on).
    faults: ControlPlaneFaults,
}

impl FakeCph {
    async fn start(phones: usize) -> FakeCph {
        Self::start_with(phones, |_| {}).await
    }

    async fn start_with(phones: usize, adjust: impl FnOnce(&mut ControlPlaneSettings)) -> FakeCph {
        let mut settings = ControlPlaneSettings {
            project_id: PROJECT_ID.into(),
            ak: AK.into(),
            sk: SK.into(),
            iam_user: Some((IAM_USER.into(), IAM_PASSWORD.into(), IAM_DOMAIN.into())),
            job_delay: Duration::from_millis(50),
            job_failure_rate: 0.0,
            max_date_skew: DEFAULT_MAX_DATE_SKEW,
            faults: ControlPlaneFaults::default(),
        };
        adjust(&mut settings);
        let faults = settings.faults.clone();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let fleet = SharedFleet::new(Fleet::new(phones, 0x5eed));
        let server = control_plane::start(listener, settings, fleet.clone()).unwrap();
        let handle = server.handle();
        tokio::spawn(server);
        FakeCph {
            endpoint,
            fleet,
            server: handle,
            faults,
        }
    }

    /// cphub's client, signing with AK/SK.
    fn client(&self) -> CphClient {
        self.client_with(&format!("[cph.auth]\nak = \"{AK}\"\nsk = \"{SK}\"\n"))
    }

    fn client_with(&self, auth_toml: &str) -> CphClient {
        self.tuned_client("max_attempts = 1\n", auth_toml)
    }

    /// cphub's client (AK/SK) that retries: up to 4 attempts, millisecond backoffs.
    fn retrying_client(&self) -> CphClient {
        self.tuned_client(
            "max_attempts = 4\nretry_base_ms = 1\nretry_max_ms = 5\n",
            &format!("[cph.auth]\nak = \"{AK}\"\nsk = \"{SK}\"\n"),
        )
    }

    fn tuned_client(&self, tuning: &str, auth_toml: &str) -> CphClient {
        let settings = Settings::with_overrides(&format!(
            "[cph]\nendpoint = \"{}\"\nproject_id = \"{PROJECT_ID}\"\njob_poll_interval_ms = 20\n\
             job_deadline_secs = 10\n{tuning}{auth_toml}",
            self.endpoint
        ))
        .unwrap();
        CphClient::new(&settings.cph).unwrap()
    }

    fn phone_id(&self, index: usize) -> String {
        self.phone(index).phone_id
    }

    /// A copy of the simulated phone: no lock is held while the test goes on.
    fn phone(&self, index: usize) -> SimPhone {
        self.fleet.lock().phones[index].clone()
    }

    fn host(&self) -> &str {
        self.endpoint.trim_start_matches("http://")
    }

    /// A GET of `/v1/{project}/{path}` signed as the official SDK signs it.
    fn signed_get(
        &self,
        path: &str,
        sk: &str,
        now: chrono::DateTime<Utc>,
    ) -> reqwest::RequestBuilder {
        self.signed_query(path, &[], sk, now)
    }

    /// As `signed_get`, with a query sent as the signer encodes it.
    fn signed_query(
        &self,
        path: &str,
        query: &[(&str, &str)],
        sk: &str,
        now: chrono::DateTime<Utc>,
    ) -> reqwest::RequestBuilder {
        let path = format!("/v1/{PROJECT_ID}/{path}");
        let query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
        let signing = Signing {
            ak: AK,
            sk,
            project_id: Some(PROJECT_ID),
            host: self.host(),
            now,
        };
        signing.sign("GET", &path, &query, &mut headers, b"");
        let wire_query = cphub::cph::signer::canonical_query(&query);
        let url = format!("{}{path}?{wire_query}", self.endpoint);
        let mut request = reqwest::Client::new().get(url.trim_end_matches('?'));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request
    }

    async fn stop(self) {
        self.server.stop(false).await;
    }
}

/// A raw POST of `body` to `phones/{path}` with an IAM token: the answer exactly as sent.
async fn raw_post(fake: &FakeCph, token: &str, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!(
            "{}/v1/{PROJECT_ID}/cloud-phone/phones/{path}",
            fake.endpoint
        ))
        .header("X-Auth-Token", token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A raw GET of `/v1/{project}/cloud-phone/{path}` with an IAM token, as JSON.
async fn raw_get(fake: &FakeCph, token: &str, path: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!(
            "{}/v1/{PROJECT_ID}/cloud-phone/{path}",
            fake.endpoint
        ))
        .header("X-Auth-Token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.unwrap()
}

/// Waits for the fake's job to end.
async fn wait_for_job(fake: &FakeCph, job_id: &str) {
    for _ in 0..200 {
        if fake.fleet.lock().jobs[job_id].status != job_status::RUNNING {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {job_id} still running");
}

/// Asserts a refusal: `status` and chapter 7.1.1's body with `code`; returns the message.
async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(response.status().as_u16(), status);
    let header_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error_code"], code, "{body}");
    assert_eq!(body["request_id"], header_id.as_str());
    assert_eq!(header_id.len(), 32);
    body["error_msg"].as_str().unwrap().to_owned()
}

fn item(phone_id: &str, property: Option<Value>) -> PhoneItem {
    PhoneItem {
        phone_id: phone_id.to_owned(),
        property: property.map(|p| p.to_string()),
    }
}

/// 4.3.1: all pages, "sorted in descending order of the creation time": the fleet's newest
/// phone (its last) first, each phone with its own `create_time`.
#[tokio::test]
async fn cphub_lists_every_phone_over_pages_newest_first_4_3_1_and_reads_details() {
    let fake = FakeCph::start(250).await;
    let client = fake.client();

    let phones = client.list_phones(&PhoneFilter::default()).await.unwrap();
    let expected: Vec<String> = fake
        .fleet
        .lock()
        .phones
        .iter()
        .rev()
        .map(|p| p.phone_id.clone())
        .collect();
    assert_eq!(
        phones
            .iter()
            .map(|p| p.phone_id.clone())
            .collect::<Vec<_>>(),
        expected
    );
    assert!(
        phones
            .iter()
            .all(|p| p.status == status::RUNNING && !p.server_id.is_empty())
    );
    assert_eq!(phones[0].phone_name, "mobile-0250");
    let created: Vec<&str> = phones
        .iter()
        .map(|p| p.create_time.as_deref().unwrap())
        .collect();
    assert!(
        created.windows(2).all(|pair| pair[0] > pair[1]),
        "each phone its own create_time, newest first: {:?}",
        &created[..3]
    );

    let server = PhoneFilter {
        server_id: Some(phones[20].server_id.clone()),
        status: None,
    };
    assert_eq!(client.list_phones(&server).await.unwrap().len(), 16);
    let stopped = PhoneFilter {
        server_id: None,
        status: Some(8),
    };
    assert!(client.list_phones(&stopped).await.unwrap().is_empty());

    fake.fleet
        .lock()
        .phone_mut(&phones[3].phone_id)
        .unwrap()
        .properties
        .insert("com.cph.cg.heartbeat_interval".into(), "30".into());
    let detail = client.phone(&phones[3].phone_id).await.unwrap();
    assert_eq!(detail.phone, phones[3]);
    assert_eq!(
        detail.property.as_deref(),
        Some(r#"{"com.cph.cg.heartbeat_interval":"30"}"#)
    );
    assert_eq!(detail.access_infos.len(), 1);
    assert!(detail.access_infos[0]["listen_port"].is_u64());
    fake.stop().await;
}

/// 4.3.1's filters and paging; `limit` 1–100 and the listed statuses only (7.2: CPS.0002,
/// CPS.0010). `offset` is defined only "greater than 0 but less than the number of
/// resources": the simulator refuses the list's end, and cphub, whose page after a full one
/// asks for exactly that, still reads a fleet of whole pages to its end.
#[tokio::test]
async fn the_list_answers_the_count_and_filters_by_name_4_3_1() {
    let fake = FakeCph::start(30).await;
    let list = |query: &[(&str, &str)]| {
        fake.signed_query("cloud-phone/phones", query, SK, Utc::now())
            .send()
    };

    let page: Value = list(&[("limit", "5"), ("offset", "10")])
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["count"], 30);
    assert_eq!(page["phones"].as_array().unwrap().len(), 5);
    assert_eq!(page["phones"][0]["phone_name"], "mobile-0020");
    assert_eq!(page["request_id"].as_str().unwrap().len(), 32);
    let phone = &page["phones"][0];
    for field in [
        "phone_name",
        "server_id",
        "phone_id",
        "phone_model_name",
        "image_id",
        "vnc_enable",
        "status",
        "type",
        "metadata",
        "create_time",
        "update_time",
    ] {
        assert!(!phone[field].is_null(), "{field} missing in {phone}");
    }

    let named: Value = list(&[("phone_name", "mobile-002")])
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(named["count"], 10);
    assert_eq!(named["phones"][0]["phone_name"], "mobile-0029");
    // Characters the signer percent-encodes verify too (and match nothing).
    let odd = list(&[("phone_name", "a b/c*~é"), ("server_id", "x+y=z&")])
        .await
        .unwrap();
    assert_eq!(odd.status().as_u16(), 200);
    assert_eq!(odd.json::<Value>().await.unwrap()["count"], 0);

    let full: Value = list(&[("limit", "100")])
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(full["phones"].as_array().unwrap().len(), 30);
    for bad in ["0", "101", "200", "ten"] {
        assert_error(list(&[("limit", bad)]).await.unwrap(), 400, "CPS.0002").await;
    }
    assert_error(list(&[("offset", "-1")]).await.unwrap(), 400, "CPS.0002").await;
    assert_error(list(&[("offset", "30")]).await.unwrap(), 400, "CPS.0002").await;
    let last: Value = list(&[("offset", "29")])
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(last["phones"].as_array().unwrap().len(), 1);
    let three_pages = fake.tuned_client(
        "max_attempts = 1\npage_limit = 10\n",
        &format!("[cph.auth]\nak = \"{AK}\"\nsk = \"{SK}\"\n"),
    );
    let phones = three_pages.list_phones(&PhoneFilter::default()).await;
    assert_eq!(phones.unwrap().len(), 30);
    for bad in ["running", "5", "9", "-1", "-10"] {
        assert_error(list(&[("status", bad)]).await.unwrap(), 400, "CPS.0010").await;
    }
    let restarting: Value = list(&[("status", "-6")])
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(restarting["count"], 0);

    // The query changed after signing: refused, so the query is covered by the signature.
    let mut tampered = fake
        .signed_query("cloud-phone/phones", &[("limit", "5")], SK, Utc::now())
        .build()
        .unwrap();
    tampered.url_mut().set_query(Some("limit=6"));
    let response = reqwest::Client::new().execute(tampered).await.unwrap();
    assert_error(response, 401, "APIGW.0301").await;
    fake.stop().await;
}

/// 5.1.3 lists the apps newest first, 5.1.2 an app's phones with Table 5-4's fields as the
/// example spells them; both page by `limit` 1–100 (CPS.0002). cphub's client reads them
/// through every page.
#[tokio::test]
async fn apps_and_their_phones_are_listed_as_the_reference_shows_5_1_2_5_1_3() {
    let fake = FakeCph::start(150).await;
    {
        let mut fleet = fake.fleet.lock();
        fleet.deploy("game.a", 1.0);
        fleet.deploy("game.b", 0.1);
    }
    let get = |path: &'static str, query: &'static [(&'static str, &'static str)]| {
        fake.signed_query(path, query, SK, Utc::now()).send()
    };

    let apps: Value = get("cloud-phone/apps", &[])
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(apps["request_id"].as_str().unwrap().len(), 32);
    let ids: Vec<&str> = (apps["apps"].as_array().unwrap().iter())
        .map(|a| a["app_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["game.b", "game.a"], "newest first");
    for field in [
        "name",
        "package_name",
        "launch_activity",
        "app_id",
        "description",
        "create_time",
        "update_time",
    ] {
        assert!(apps["apps"][0][field].is_string(), "{field} in {apps}");
    }
    let page: Value = get("cloud-phone/apps/game.b/phones", &[("limit", "100")])
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let phones = page["phones"].as_array().unwrap();
    assert_eq!(phones.len(), 15);
    assert_eq!(phones[0]["phone_id"], fake.phone_id(0));
    assert_eq!(phones[0]["app_verison_id"], "");
    assert_eq!(phones[0]["version_code"], "1");
    assert!(phones[0]["launch_activity"].is_string());
    let nowhere: Value = get("cloud-phone/apps/unknown/phones", &[])
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(nowhere["phones"], json!([]));
    for path in ["cloud-phone/apps", "cloud-phone/apps/game.a/phones"] {
        let res = get(path, &[("limit", "101")]).await.unwrap();
        assert_error(res, 400, "CPS.0002").await;
    }

    let client = fake.tuned_client(
        "max_attempts = 1\npage_limit = 40\n",
        &format!("[cph.auth]\nak = \"{AK}\"\nsk = \"{SK}\"\n"),
    );
    assert_eq!(client.list_apps().await.unwrap().len(), 2);
    let everywhere = client.app_phones("game.a").await.unwrap();
    assert_eq!(everywhere.len(), 150, "all four pages");
    assert_eq!(everywhere[0].app_version_id, None, "\"\" is no value");
    assert_eq!(everywhere[0].version_name.as_deref(), Some("1.0.0"));
    fake.stop().await;
}

/// A rollout's calls, as chapter 5.3 shows them: a new version is installed on a phone
/// (5.3.7, job type 32) only once pushed to the phone's server (5.3.4, job type 31); 5.3.1
/// lists what a server holds, 5.3.6 what a phone runs. (Huawei's Python SDK has no call of
/// chapter 5.3, so only cphub's client and raw requests speak to it here.)
#[tokio::test]
async fn a_version_is_installed_only_after_its_push_to_the_server_5_3_1_5_3_4_5_3_6_5_3_7() {
    let fake = FakeCph::start(20).await; // two servers: 16 phones and 4
    let (phone, other_server) = (fake.phone_id(0), fake.phone(16).server_id);
    let server = fake.phone(0).server_id;
    let (v1, v2) = deployed_and_new_version(&fake, "game.a");
    let client = fake.client();
    let version_ids = |apps: Vec<cphub::cph::DeployedApp>| -> Vec<Option<String>> {
        apps.into_iter().map(|a| a.app_version_id).collect()
    };
    assert_eq!(
        version_ids(client.server_apps(&server).await.unwrap()),
        [Some(v1.clone())]
    );
    let raw: Value = (fake.signed_get(
        &format!("cloud-phone/servers/{server}/apps"),
        SK,
        Utc::now(),
    ))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        raw["apps"][0]["app_verison_id"],
        v1.as_str(),
        "5.3.1's example's spelling"
    );

    // Not pushed yet: the update's job fails, the phone keeps v1.
    let update = client
        .update_app_version(&phone, std::slice::from_ref(&v2))
        .await
        .unwrap();
    assert_eq!(update.items[0].app_version_id.as_deref(), Some(v2.as_str()));
    let (_, job_id) = update.jobs().next().expect("a job");
    let job = client.follow_job(job_id).await.unwrap();
    assert_eq!(
        (job.status, job.error_code.as_deref()),
        (job_status::FAILED, Some("CPS.0003"))
    );
    assert_eq!(
        version_ids(client.phone_apps(&phone).await.unwrap()),
        [Some(v1.clone())]
    );

    let push = client
        .push_app_version(std::slice::from_ref(&v2), std::slice::from_ref(&server))
        .await
        .unwrap();
    assert_eq!(push.items.len(), 1);
    assert_eq!(push.items[0].server_id.as_deref(), Some(server.as_str()));
    assert_eq!(
        push.items[0].phone_id, None,
        "a server job names no phone (Table 5-26)"
    );
    let job_id = push.items[0].job_id.clone().unwrap();
    assert_eq!(
        client.follow_job(&job_id).await.unwrap().status,
        job_status::SUCCEEDED
    );
    let pushed = version_ids(client.server_apps(&server).await.unwrap());
    assert!(pushed.contains(&Some(v2.clone())), "{pushed:?}");
    assert_eq!(
        version_ids(client.server_apps(&other_server).await.unwrap()),
        [Some(v1.clone())]
    );

    let boots = fake.phone(0).boots;
    let update = client
        .update_app_version(&phone, std::slice::from_ref(&v2))
        .await
        .unwrap();
    let (_, job_id) = update.jobs().next().expect("a job");
    assert_eq!(
        client.follow_job(job_id).await.unwrap().status,
        job_status::SUCCEEDED
    );
    let apps = client.phone_apps(&phone).await.unwrap();
    assert_eq!(apps[0].app_version_id.as_deref(), Some(v2.as_str()));
    assert_eq!(apps[0].version_code.as_deref(), Some("2"));
    assert_eq!(
        fake.phone(0).boots,
        boots + 1,
        "installing restarts the game"
    );
    assert_eq!(
        version_ids(client.phone_apps(&fake.phone_id(1)).await.unwrap()),
        [Some(v1)]
    );

    // Refusals: an unknown version (400 CPS.0200, as every bad parameter), an unknown phone.
    let token = iam_token(&fake).await;
    let body = json!({"update_app_version": {"app_version_ids": ["0".repeat(32)]}});
    let res = raw_post(&fake, &token, &format!("{phone}/action"), body).await;
    assert_error(res, 400, "CPS.0200").await;
    let body = json!({"update_app_version": {"app_version_ids": [v2]}});
    let res = raw_post(&fake, &token, &format!("{}/action", "0".repeat(32)), body).await;
    assert_error(res, 400, "CPS.0005").await;
    fake.stop().await;
}

/// `app` deployed on every phone at its first version, and a second version created (not
/// pushed anywhere): their ids.
fn deployed_and_new_version(fake: &FakeCph, app: &str) -> (String, String) {
    let mut fleet = fake.fleet.lock();
    fleet.deploy(app, 1.0);
    let v1 = fleet.app(app).unwrap().latest().app_version_id.clone();
    (v1, fleet.new_version(app).unwrap())
}

/// `--job-failure-rate` fails update jobs (5.3.7, type 32) as it fails restarts and resets,
/// so a rollout meets failures across a whole fleet; a push (5.3.4, type 31) still succeeds.
#[tokio::test]
async fn the_job_failure_rate_fails_an_update_5_3_7_but_not_a_push_5_3_4() {
    let fake = FakeCph::start_with(1, |s| s.job_failure_rate = 1.0).await;
    let (phone, server) = (fake.phone_id(0), fake.phone(0).server_id);
    let (v1, v2) = deployed_and_new_version(&fake, "game.a");
    let client = fake.client();
    let push = (client.push_app_version(std::slice::from_ref(&v2), std::slice::from_ref(&server)))
        .await
        .unwrap();
    let push_job = push.items[0].job_id.clone().unwrap();
    assert_eq!(
        client.follow_job(&push_job).await.unwrap().status,
        job_status::SUCCEEDED
    );

    let update = client
        .update_app_version(&phone, std::slice::from_ref(&v2))
        .await
        .unwrap();
    let (_, job_id) = update.jobs().next().expect("a job");
    let job = client.follow_job(job_id).await.unwrap();
    assert_eq!(
        (job.status, job.error_code.as_deref()),
        (job_status::FAILED, Some("CPS.0003"))
    );
    let apps = client.phone_apps(&phone).await.unwrap();
    assert_eq!(apps[0].app_version_id.as_deref(), Some(v1.as_str()));
    fake.stop().await;
}

/// 4.3.9: "some attributes take effect only after the cloud phone is restarted", and A.1
/// does not say which: the simulator holds every update until the next restart (4.3.6).
#[tokio::test]
async fn update_property_takes_effect_at_the_next_restart_4_3_9() {
    let fake = FakeCph::start(3).await;
    let client = fake.client();
    let phone = fake.phone_id(1);
    fake.fleet.lock().phones[1]
        .properties
        .insert("kept".into(), "yes".into());

    let property = json!({
        "com.cph.cg.heartbeat_url": "http://127.0.0.1:1/cph/heartbeat",
        "com.cph.mainkeys": 1,
    });
    let batch = client
        .update_property(vec![item(&phone, Some(property))])
        .await
        .unwrap();
    assert_eq!(batch.failures().count(), 0);
    let (job_phone, job_id) = batch.jobs().next().unwrap();
    assert_eq!(job_phone, phone);
    assert!(!fake.phone(1).properties.contains_key("com.cph.mainkeys"));

    let job = client.follow_job(job_id).await.unwrap();
    assert_eq!(job.status, job_status::SUCCEEDED);
    assert_eq!(job.phone_id.as_deref(), Some(phone.as_str()));
    assert!(job.begin_time.is_some() && job.end_time.is_some());
    let shown = client.phone(&phone).await.unwrap().property.unwrap();
    assert!(!shown.contains("com.cph.mainkeys"), "4.3.2 shows {shown}");
    assert!(!fake.phone(1).properties.contains_key("com.cph.mainkeys"));

    let restart = client.restart(std::slice::from_ref(&phone)).await.unwrap();
    let restarted = client.follow_job(restart.jobs().next().unwrap().1).await;
    assert_eq!(restarted.unwrap().status, job_status::SUCCEEDED);
    let sim = fake.phone(1);
    let properties = &sim.properties;
    assert!(sim.pending_properties.is_empty());
    assert_eq!(
        properties["com.cph.cg.heartbeat_url"],
        "http://127.0.0.1:1/cph/heartbeat"
    );
    assert_eq!(properties["com.cph.mainkeys"], "1");
    assert_eq!(properties["kept"], "yes");
    assert_eq!(sim.boots, 1);
    fake.stop().await;
}

/// 4.3.6, and 4.3.1's `update_time` ("the time when the cloud phone is updated"): it moves
/// with the restart, which phone sync watches to read the phone's detail again.
#[tokio::test]
async fn restart_reboots_the_phone_and_wakes_a_silent_one() {
    let fake = FakeCph::start(2).await;
    let client = fake.client();
    let phone = fake.phone_id(0);
    fake.fleet.lock().phones[0].faults.silent = true;
    let listed = client.list_phones(&PhoneFilter::default()).await.unwrap();
    let update_time = |phones: &[cphub::cph::Phone], id: &str| {
        let phone = phones.iter().find(|p| p.phone_id == id).unwrap();
        (phone.create_time.clone(), phone.update_time.clone())
    };
    let (created, before) = update_time(&listed, &phone);
    assert_eq!(before, created, "never updated: its creation");

    let batch = client.restart(std::slice::from_ref(&phone)).await.unwrap();
    assert_eq!(fake.phone(0).status, status::RESTARTING);
    let job = client
        .follow_job(batch.jobs().next().unwrap().1)
        .await
        .unwrap();

    assert_eq!(job.status, job_status::SUCCEEDED);
    let sim = fake.phone(0);
    assert_eq!((sim.status, sim.boots), (status::RUNNING, 1));
    assert!(sim.is_alive());
    assert_eq!(fake.phone(1).boots, 0);
    let listed = client.list_phones(&PhoneFilter::default()).await.unwrap();
    let (_, after) = update_time(&listed, &phone);
    assert!(after > before, "{after:?} after {before:?}");
    let (created, untouched) = update_time(&listed, &fake.phone_id(1));
    assert_eq!(untouched, created, "the other phone was not updated");
    fake.stop().await;
}

#[tokio::test]
async fn restart_of_a_restart_fails_phone_fails_and_stuck_needs_a_reset() {
    let fake = FakeCph::start(2).await;
    let client = fake.client();
    let (failing, stuck) = (fake.phone_id(0), fake.phone_id(1));
    {
        let mut fleet = fake.fleet.lock();
        fleet.phones[0].faults.restart_fails = true;
        fleet.phones[1].faults.stuck = true;
    }

    let batch = client
        .restart(&[failing.clone(), stuck.clone()])
        .await
        .unwrap();
    let jobs: Vec<_> = batch
        .jobs()
        .map(|(p, j)| (p.to_owned(), j.to_owned()))
        .collect();
    assert_eq!(
        jobs.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        [failing.clone(), stuck.clone()]
    );
    let failed = client.follow_job(&jobs[0].1).await.unwrap();
    assert_eq!(failed.status, job_status::FAILED);
    assert_eq!(failed.error_code.as_deref(), Some("CPS.0003"));
    assert!(failed.error_msg.is_some());
    assert_eq!(
        client.follow_job(&jobs[1].1).await.unwrap().status,
        job_status::SUCCEEDED
    );
    let (failed, restarted) = (fake.phone(0), fake.phone(1));
    assert_eq!((failed.status, failed.boots), (status::RESTART_FAILED, 0));
    assert_eq!((restarted.status, restarted.boots), (status::RUNNING, 1));
    assert!(restarted.faults.stuck && !restarted.is_alive());

    let batch = client
        .reset(vec![item(&failing, None), item(&stuck, None)])
        .await
        .unwrap();
    for (_, job_id) in batch.jobs() {
        assert_eq!(
            client.follow_job(job_id).await.unwrap().status,
            job_status::SUCCEEDED
        );
    }
    for sim in [fake.phone(0), fake.phone(1)] {
        assert!(sim.is_alive() && sim.faults == Default::default());
    }
    fake.stop().await;
}

#[tokio::test]
async fn reset_replaces_the_properties_and_clears_the_faults() {
    let fake = FakeCph::start(1).await;
    let client = fake.client();
    let phone = fake.phone_id(0);
    {
        let mut fleet = fake.fleet.lock();
        let sim = &mut fleet.phones[0];
        sim.properties
            .insert("old".into(), "gone after reset".into());
        sim.faults.silent = true;
        sim.faults.restart_fails = true;
    }

    let property = json!({"com.cph.cg.heartbeat_interval": "30"});
    let batch = client
        .reset(vec![item(&phone, Some(property))])
        .await
        .unwrap();
    assert_eq!(fake.phone(0).status, status::RESETTING);
    let job = client
        .follow_job(batch.jobs().next().unwrap().1)
        .await
        .unwrap();

    assert_eq!(job.status, job_status::SUCCEEDED);
    let sim = fake.phone(0);
    assert_eq!(sim.properties.len(), 1);
    assert_eq!(sim.properties["com.cph.cg.heartbeat_interval"], "30");
    assert_eq!(sim.faults, Default::default());
    assert_eq!((sim.status, sim.boots), (status::RUNNING, 1));
    fake.stop().await;
}

#[tokio::test]
async fn a_failing_reset_leaves_the_phone_reset_failed() {
    let fake = FakeCph::start_with(1, |s| s.job_failure_rate = 1.0).await;
    let client = fake.client();
    let phone = fake.phone_id(0);

    let batch = client.reset(vec![item(&phone, None)]).await.unwrap();
    let job = client
        .follow_job(batch.jobs().next().unwrap().1)
        .await
        .unwrap();

    assert_eq!(job.status, job_status::FAILED);
    assert_eq!(fake.phone(0).status, status::RESET_FAILED);
    fake.stop().await;
}

#[tokio::test]
async fn stop_takes_a_phone_to_stopped_and_restart_starts_it() {
    let fake = FakeCph::start_with(2, |s| s.job_delay = Duration::from_millis(300)).await;
    let client = fake.client();
    let phone = fake.phone_id(1);

    let batch = client.stop(std::slice::from_ref(&phone)).await.unwrap();
    let job_id = batch.jobs().next().unwrap().1.to_owned();
    assert_eq!(fake.phone(1).status, 7);
    assert_eq!(
        client.job(&job_id).await.unwrap().status,
        job_status::RUNNING
    );
    assert_eq!(
        client.follow_job(&job_id).await.unwrap().status,
        job_status::SUCCEEDED
    );
    assert_eq!(fake.phone(1).status, 8);
    let stopped = PhoneFilter {
        server_id: None,
        status: Some(8),
    };
    assert_eq!(client.list_phones(&stopped).await.unwrap().len(), 1);

    let batch = client.restart(std::slice::from_ref(&phone)).await.unwrap();
    client
        .follow_job(batch.jobs().next().unwrap().1)
        .await
        .unwrap();
    assert_eq!(fake.phone(1).status, status::RUNNING);
    fake.stop().await;
}

#[tokio::test]
async fn jobs_by_request_lists_the_jobs_of_one_batch() {
    let fake = FakeCph::start(5).await;
    let client = fake.client();
    let phones: Vec<String> = (0..3).map(|i| fake.phone_id(i)).collect();
    client.restart(&phones[..1]).await.unwrap();

    let batch = client
        .restart(&[phones[2].clone(), phones[1].clone()])
        .await
        .unwrap();
    let request_id = batch.request_id.clone().unwrap();
    assert_eq!(request_id.len(), 32);
    let jobs = client.jobs_by_request(&request_id).await.unwrap();

    let listed: Vec<_> = jobs.iter().map(|j| j.phone_id.clone().unwrap()).collect();
    assert_eq!(
        listed,
        [phones[1].clone(), phones[2].clone()],
        "fleet order"
    );
    let mut started: Vec<_> = batch.jobs().map(|(_, j)| j.to_owned()).collect();
    let mut found: Vec<_> = jobs.iter().map(|j| j.job_id.clone()).collect();
    started.sort();
    found.sort();
    assert_eq!(started, found);
    assert!(
        client
            .jobs_by_request("00000000000000000000000000000000")
            .await
            .unwrap()
            .is_empty()
    );
    fake.stop().await;
}

#[tokio::test]
async fn a_bad_phone_in_a_batch_fails_only_its_own_item() {
    let fake = FakeCph::start(2).await;
    let client = fake.client();
    let good = fake.phone_id(0);
    let unknown = "ffffffffffffffffffffffffffffffff";

    let batch = client
        .update_property(vec![
            item(&good, Some(json!({"ro.install.auto": "1"}))),
            item(unknown, Some(json!({"ro.install.auto": "1"}))),
            item("not-a-phone", Some(json!({"ro.install.auto": "1"}))),
            PhoneItem {
                phone_id: fake.phone_id(1),
                property: Some("[1, 2]".into()),
            },
            PhoneItem {
                phone_id: fake.phone_id(1),
                property: None,
            },
        ])
        .await
        .unwrap();

    assert_eq!(
        batch.jobs().map(|(p, _)| p).collect::<Vec<_>>(),
        [good.as_str()]
    );
    let failures: Vec<_> = batch
        .failures()
        .map(|f| (f.phone_id.clone().unwrap(), f.error_code.clone().unwrap()))
        .collect();
    assert_eq!(
        failures,
        [
            // 4.3.5's example: a well-formed id the control plane lacks is CPS.0004 in
            // its entry, as a malformed one is.
            (unknown.to_owned(), "CPS.0004".to_owned()),
            ("not-a-phone".into(), "CPS.0004".into()),
            // 7.2 has no code for a bad property: its generic "Invalid parameters.".
            (fake.phone_id(1), "CPS.0200".into()),
            (fake.phone_id(1), "CPS.0200".into()),
        ]
    );
    assert!(
        batch
            .failures()
            .all(|f| f.error_msg.is_some() && f.job_id.is_none())
    );
    fake.stop().await;
}

/// Appendix A.1, 4.3.5, 7.2: a reset whose property carries a key the reference does not
/// name is refused for that phone with the parameter error CPS.0200, naming the key; the
/// keys of A.1 and of 4.3.5's own example are accepted.
#[tokio::test]
async fn a_reset_with_a_key_outside_appendix_a_1_is_refused_naming_it() {
    let fake = FakeCph::start(2).await;
    let client = fake.client();
    let [refused, accepted] = [0, 1].map(|i| fake.phone_id(i));

    let batch = client
        .reset(vec![
            item(
                &refused,
                Some(json!({"vendor.fan": "1", "ro.horizontal.screen": "1"})),
            ),
            item(
                &accepted,
                Some(json!({"phone_num": "13666666666", "ro.horizontal.screen": "1"})),
            ),
        ])
        .await
        .unwrap();

    assert_eq!(
        batch.jobs().map(|(p, _)| p).collect::<Vec<_>>(),
        [accepted.as_str()]
    );
    let failure = batch.failures().next().unwrap();
    assert_eq!(failure.phone_id.as_deref(), Some(refused.as_str()));
    assert_eq!(failure.error_code.as_deref(), Some("CPS.0200"));
    let message = failure.error_msg.as_deref().unwrap();
    assert!(
        message.contains("vendor.fan") && !message.contains("ro.horizontal.screen"),
        "{message}"
    );
    fake.stop().await;
}

/// 7.2: an unknown phone is 400 CPS.0005 (not 404), a malformed id CPS.0004; an unknown job
/// (4.4.1 is silent) the closest documented answer, 400 CPS.0200; malformed requests
/// CPS.0200, never CPS.0001 ("no permission").
#[tokio::test]
async fn unknown_phones_jobs_and_malformed_bodies_get_the_7_2_error_bodies() {
    let fake = FakeCph::start(1).await;
    let client = fake.client();

    match client.phone("ffffffffffffffffffffffffffffffff").await {
        Err(CphError::Api {
            status: 400,
            code,
            message,
            request_id,
            ..
        }) => {
            assert_eq!(
                (code.as_str(), message.as_str()),
                ("CPS.0005", "Phone is not found.")
            );
            assert_eq!(request_id.map(|id| id.len()), Some(32));
        }
        other => panic!("expected a 400 CPS.0005, got {other:?}"),
    }
    // An id that cannot be a phone's is 7.2's CPS.0004, as the batch operations answer it.
    match client.phone("not-a-phone").await {
        Err(CphError::Api {
            status: 400,
            code,
            message,
            ..
        }) => assert_eq!(
            (code.as_str(), message.as_str()),
            ("CPS.0004", "Parameter: phone_id is invalid.")
        ),
        other => panic!("expected a 400 CPS.0004, got {other:?}"),
    }
    assert!(matches!(
        client.job("nope").await,
        Err(CphError::Api { status: 400, code, .. }) if code == "CPS.0200"
    ));
    let empty = client.restart(&[]).await;
    assert!(matches!(empty, Err(CphError::Api { status: 400, code, .. }) if code == "CPS.0009"));

    let token = iam_token(&fake).await;
    let http = reqwest::Client::new();
    let post = |path: &str, body: &'static str| {
        http.post(format!(
            "{}/v1/{PROJECT_ID}/cloud-phone/phones/{path}",
            fake.endpoint
        ))
        .header("X-Auth-Token", token.clone())
        .body(body)
        .send()
    };
    for body in [
        "{",
        "",
        "{\"phones\": 3}",
        "{\"phones\": [{\"property\": \"{}\"}]}",
        "\u{0}",
    ] {
        assert_error(post("batch-restart", body).await.unwrap(), 400, "CPS.0200").await;
    }
    assert_error(
        post("batch-stop", "{\"phones\": []}").await.unwrap(),
        400,
        "CPS.0200",
    )
    .await;
    assert_error(
        post("batch-stop", "{\"phone_ids\": []}").await.unwrap(),
        400,
        "CPS.0009",
    )
    .await;
    let response = http
        .delete(format!(
            "{}/v1/{PROJECT_ID}/cloud-phone/phones",
            fake.endpoint
        ))
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "APIGW.0101").await;
    let response = http
        .get(format!(
            "{}/v1/{PROJECT_ID}/cloud-phone/jobs",
            fake.endpoint
        ))
        .header("X-Auth-Token", token.clone())
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "CPS.0200").await;
    fake.stop().await;
}

#[tokio::test]
async fn requests_without_a_valid_signature_are_refused() {
    let fake = FakeCph::start(1).await;
    let http = reqwest::Client::new();
    let phones = format!("{}/v1/{PROJECT_ID}/cloud-phone/phones", fake.endpoint);

    let ok = http
        .execute(
            fake.signed_get("cloud-phone/phones", SK, Utc::now())
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);

    let missing = assert_error(http.get(&phones).send().await.unwrap(), 401, "APIGW.0301").await;
    let wrong_sk = fake.signed_get("cloud-phone/phones", "another-secret", Utc::now());
    let bad_signature = assert_error(wrong_sk.send().await.unwrap(), 401, "APIGW.0301").await;
    let stale = fake.signed_get(
        "cloud-phone/phones",
        SK,
        Utc::now() - TimeDelta::minutes(20),
    );
    let stale = assert_error(stale.send().await.unwrap(), 401, "APIGW.0301").await;
    let future = fake.signed_get(
        "cloud-phone/phones",
        SK,
        Utc::now() + TimeDelta::minutes(20),
    );
    assert_error(future.send().await.unwrap(), 401, "APIGW.0301").await;
    let unknown_ak = http
        .get(&phones)
        .header("X-Sdk-Date", cphub::cph::signer::sdk_date(Utc::now()))
        .header(
            "Authorization",
            "SDK-HMAC-SHA256 Access=OTHER, SignedHeaders=host, Signature=00",
        )
        .send()
        .await
        .unwrap();
    let unknown_ak = assert_error(unknown_ak, 401, "APIGW.0301").await;
    let garbled = http
        .get(&phones)
        .header("Authorization", "Basic eDp5")
        .send()
        .await
        .unwrap();
    let garbled = assert_error(garbled, 401, "APIGW.0301").await;
    let unsent_header = http
        .get(&phones)
        .header("X-Sdk-Date", cphub::cph::signer::sdk_date(Utc::now()))
        .header(
            "Authorization",
            format!("SDK-HMAC-SHA256 Access={AK}, SignedHeaders=host;not a name, Signature=00"),
        )
        .send()
        .await
        .unwrap();
    let unsent_header = assert_error(unsent_header, 401, "APIGW.0301").await;
    assert!(unsent_header.contains("not a name"), "{unsent_header}");

    let messages = [
        &missing,
        &bad_signature,
        &stale,
        &unknown_ak,
        &garbled,
        &unsent_header,
    ];
    for (i, a) in messages.iter().enumerate() {
        assert!(
            a.starts_with("Incorrect IAM authentication information: "),
            "{a}"
        );
        for b in &messages[i + 1..] {
            assert_ne!(a, b);
        }
    }

    // A body changed after signing.
    let path = format!("/v1/{PROJECT_ID}/cloud-phone/phones/batch-restart");
    let mut headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    let signing = Signing {
        ak: AK,
        sk: SK,
        project_id: Some(PROJECT_ID),
        host: fake.host(),
        now: Utc::now(),
    };
    signing.sign("POST", &path, &[], &mut headers, br#"{"phones": []}"#);
    let mut tampered = http.post(format!("{}{path}", fake.endpoint));
    for (name, value) in headers {
        tampered = tampered.header(name, value);
    }
    let body = format!(r#"{{"phones": [{{"phone_id": "{}"}}]}}"#, fake.phone_id(0));
    assert_error(tampered.body(body).send().await.unwrap(), 401, "APIGW.0301").await;
    assert_eq!(fake.phone(0).status, status::RUNNING);

    // Another project, correctly signed.
    let other = "ffffffffffffffffffffffffffffffff";
    let path = format!("/v1/{other}/cloud-phone/phones");
    let mut headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    let signing = Signing {
        ak: AK,
        sk: SK,
        project_id: Some(other),
        host: fake.host(),
        now: Utc::now(),
    };
    signing.sign("GET", &path, &[], &mut headers, b"");
    let mut request = http.get(format!("{}{path}", fake.endpoint));
    for (name, value) in headers {
        request = request.header(name, value);
    }
    assert_error(request.send().await.unwrap(), 404, "APIGW.0101").await;
    fake.stop().await;
}

/// A token from the fake's IAM endpoint, for the configured user.
async fn iam_token(fake: &FakeCph) -> String {
    let response = token_request(fake, IAM_PASSWORD, json!({"project": {"id": PROJECT_ID}})).await;
    assert_eq!(response.status().as_u16(), 201);
    response.headers()["x-subject-token"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn token_request(fake: &FakeCph, password: &str, scope: Value) -> reqwest::Response {
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": IAM_USER, "password": password, "domain": {"name": IAM_DOMAIN}}}},
        "scope": scope,
    }});
    reqwest::Client::new()
        .post(format!("{}/v3/auth/tokens", fake.endpoint))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn iam_tokens_are_issued_for_the_right_password_and_authenticate() {
    let fake = FakeCph::start(2).await;

    let response = token_request(
        &fake,
        IAM_PASSWORD,
        json!({"project": {"name": PROJECT_ID}}),
    )
    .await;
    assert_eq!(response.status().as_u16(), 201);
    let token = response.headers()["x-subject-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(body["token"]["expires_at"].as_str().unwrap())
            .unwrap();
    let lifetime = expires_at.with_timezone(&Utc) - Utc::now();
    assert!(
        lifetime > TimeDelta::hours(23) && lifetime <= TimeDelta::hours(24),
        "{lifetime}"
    );
    assert_eq!(body["token"]["methods"], json!(["password"]));

    let phones = format!("{}/v1/{PROJECT_ID}/cloud-phone/phones", fake.endpoint);
    let http = reqwest::Client::new();
    let listed = http
        .get(&phones)
        .header("X-Auth-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status().as_u16(), 200);
    let other = http
        .get(&phones)
        .header("X-Auth-Token", "made-up")
        .send()
        .await
        .unwrap();
    assert_error(other, 401, "APIGW.0301").await;

    let wrong_password =
        token_request(&fake, "wrong", json!({"project": {"id": PROJECT_ID}})).await;
    assert_error(wrong_password, 401, "APIGW.0301").await;
    let other_project =
        token_request(&fake, IAM_PASSWORD, json!({"project": {"id": "other"}})).await;
    assert_error(other_project, 401, "APIGW.0301").await;
    let domain_scope =
        token_request(&fake, IAM_PASSWORD, json!({"domain": {"name": IAM_DOMAIN}})).await;
    assert_error(domain_scope, 401, "APIGW.0301").await;

    // cphub's client in IAM mode: fetches a token here, then uses it.
    let client = fake.client_with(&format!(
        "[cph.auth]\niam_endpoint = \"{}\"\nusername = \"{IAM_USER}\"\n\
         password = \"{IAM_PASSWORD}\"\ndomain = \"{IAM_DOMAIN}\"\n",
        fake.endpoint
    ));
    assert_eq!(
        client
            .list_phones(&PhoneFilter::default())
            .await
            .unwrap()
            .len(),
        2
    );
    let batch = client.restart(&[fake.phone_id(0)]).await.unwrap();
    let job = client
        .follow_job(batch.jobs().next().unwrap().1)
        .await
        .unwrap();
    assert_eq!(job.status, job_status::SUCCEEDED);
    fake.stop().await;
}

#[tokio::test]
async fn iam_login_is_refused_when_no_user_is_configured() {
    let fake = FakeCph::start_with(1, |s| s.iam_user = None).await;
    let response = token_request(&fake, IAM_PASSWORD, json!({"project": {"id": PROJECT_ID}})).await;
    assert_error(response, 401, "APIGW.0301").await;
    fake.stop().await;
}

/// Runs tools/huawei-sdk/sdk_against_simulator.py with the venv's Python; returns the exit
/// status and the JSON lines it printed.
async fn run_python_sdk(args: Vec<String>) -> (std::process::ExitStatus, Vec<Value>, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test creates the venv with Huawei's Python SDK \
         (from tools/*/requirements.txt); run it once",
        python.display()
    );
    let script = root.join("tools/huawei-sdk/sdk_against_simulator.py");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .args(args)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let lines = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}\n{stderr}")))
        .collect();
    (
        output.status,
        lines,
        format!("stdout:\n{stdout}\nstderr:\n{stderr}"),
    )
}

fn sdk_args(fake: &FakeCph, sk: &str) -> Vec<String> {
    [
        "--endpoint",
        &fake.endpoint,
        "--ak",
        AK,
        "--sk",
        sk,
        "--project-id",
        PROJECT_ID,
    ]
    .map(str::to_owned)
    .to_vec()
}

#[test]
fn the_official_python_sdk_works_against_the_fake() {
    crate::helpers::run_scenario("the_official_python_sdk_works_against_the_fake", async {
        let fake = FakeCph::start(120).await;
        let phone = fake.phone_id(117);

        let mut args = sdk_args(&fake, SK);
        args.extend(["--phone-id".into(), phone.clone()]);
        args.extend([
            "--property".into(),
            "sys.prop.writewifissid=sdk_wifi".into(),
        ]);
        args.extend([
            "--reset-property".into(),
            "com.cph.cg.heartbeat_interval=45".into(),
        ]);
        let (exit, lines, output) = run_python_sdk(args).await;

        assert!(exit.success(), "the SDK run failed:\n{output}");
        let calls: Vec<&str> = lines.iter().map(|l| l["call"].as_str().unwrap()).collect();
        assert_eq!(
            calls,
            [
                "ListCloudPhones",
                "ShowCloudPhoneDetail",
                "UpdateCloudPhoneProperty",
                "ShowJob",
                "RestartCloudPhone",
                "ShowJob",
                "ResetCloudPhone",
                "ShowJob",
                "ListJobs",
                "ShowCloudPhoneDetail",
            ],
            "{output}"
        );
        assert!(lines.iter().all(|l| l["ok"] == true), "{output}");
        assert_eq!(lines[0]["response"]["count"], 120);
        assert_eq!(
            lines[0]["response"]["phones"].as_array().unwrap().len(),
            100
        );
        assert_eq!(lines[1]["response"]["phone_id"], phone.as_str());
        for job in lines.iter().filter(|l| l["call"] == "ShowJob") {
            assert_eq!(job["response"]["status"], 2, "{output}");
            assert_eq!(job["response"]["phone_id"], phone.as_str());
        }
        assert_eq!(lines[8]["response"]["jobs"][0]["phone_id"], phone.as_str());
        assert_eq!(
            lines[9]["response"]["property"],
            r#"{"com.cph.cg.heartbeat_interval":"45"}"#
        );
        let sim = fake.phone(117);
        assert_eq!((sim.status, sim.boots), (status::RUNNING, 2));

        let mut args = sdk_args(&fake, "not-the-secret");
        args.push("--expect-auth-failure".into());
        let (exit, lines, output) = run_python_sdk(args).await;
        assert!(exit.success(), "the refusal was not reported:\n{output}");
        assert_eq!(lines[0]["call"], "ListCloudPhones");
        assert_eq!(lines[0]["status_code"], 401, "{output}");
        assert_eq!(lines[0]["error_code"], "APIGW.0301");
        assert_eq!(lines.last().unwrap()["call"], "expect-auth-failure");

        // And --expect-auth-failure with the right key fails.
        let mut args = sdk_args(&fake, SK);
        args.push("--expect-auth-failure".into());
        let (exit, _, output) = run_python_sdk(args).await;
        assert!(!exit.success(), "{output}");
        fake.stop().await;
    })
}

/// 7.1.2: a batch POST answers 201. Its entries are as 4.3.5–4.3.7's examples show them
/// (`phone_id` and `job_id`, no error fields); a job reads as 4.4.1's example (`null` for
/// no error) and as 4.4.2's (`""` for no error, and `node_id`).
#[tokio::test]
async fn batch_posts_answer_201_and_jobs_read_as_the_4_4_1_and_4_4_2_examples() {
    let fake = FakeCph::start(1).await;
    let token = iam_token(&fake).await;
    let phone = fake.phone_id(0);

    let response = raw_post(
        &fake,
        &token,
        "batch-restart",
        json!({"phones": [{"phone_id": phone}]}),
    )
    .await;
    assert_eq!(response.status().as_u16(), 201);
    let answer: Value = response.json().await.unwrap();
    let entry = answer["jobs"][0].as_object().unwrap();
    let mut keys: Vec<&str> = entry.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["job_id", "phone_id"], "{answer}");
    let job_id = entry["job_id"].as_str().unwrap().to_owned();
    wait_for_job(&fake, &job_id).await;

    let job = raw_get(&fake, &token, &format!("jobs/{job_id}")).await;
    assert_eq!(job["status"], 2, "{job}");
    for field in ["error_code", "error_msg", "execute_msg"] {
        assert!(job[field].is_null(), "4.4.1 writes null: {job}");
    }
    let request_id = answer["request_id"].as_str().unwrap();
    let list = raw_get(&fake, &token, &format!("jobs?request_id={request_id}")).await;
    let listed = &list["jobs"][0];
    assert_eq!(
        (&listed["error_code"], &listed["error_msg"]),
        (&json!(""), &json!("")),
        "{list}"
    );
    assert_eq!(listed["node_id"], listed["server_id"]);
    assert_eq!(listed["status"], 2);
    fake.stop().await;
}

/// The reference is silent on a second job for a phone that is still resetting: the fake
/// refuses a restart, reset or stop of it (7.2's CPS.0010, "the cloud phone status is
/// invalid"), inside the 201, and accepts a property update (4.3.9).
#[tokio::test]
async fn a_resetting_phone_takes_no_other_restart_reset_or_stop() {
    let fake = FakeCph::start_with(2, |s| s.job_delay = Duration::from_millis(800)).await;
    let client = fake.client();
    let phone = fake.phone_id(0);
    let reset = client.reset(vec![item(&phone, None)]).await.unwrap();
    assert_eq!(reset.jobs().count(), 1);
    assert_eq!(fake.phone(0).status, status::RESETTING);

    for batch in [
        client
            .restart(&[phone.clone(), fake.phone_id(1)])
            .await
            .unwrap(),
        client.reset(vec![item(&phone, None)]).await.unwrap(),
        client.stop(std::slice::from_ref(&phone)).await.unwrap(),
    ] {
        let refused: Vec<_> = batch
            .failures()
            .map(|f| (f.phone_id.clone().unwrap(), f.error_code.clone().unwrap()))
            .collect();
        assert_eq!(refused, [(phone.clone(), "CPS.0010".to_owned())]);
    }
    let update = client
        .update_property(vec![item(&phone, Some(json!({"ro.install.auto": "1"})))])
        .await
        .unwrap();
    assert_eq!(update.jobs().count(), 1);
    let jobs_of_phone = fake
        .fleet
        .lock()
        .jobs
        .values()
        .filter(|j| j.phone_id.as_deref() == Some(phone.as_str()))
        .count();
    assert_eq!(jobs_of_phone, 2, "the reset and the property update");
    fake.stop().await;
}

/// Fault: the next N calls of an operation answer 400 CPS.0003 (7.2) and do nothing;
/// cphub's client retries them, the POST included, and a job follow polls through them.
#[tokio::test]
async fn system_errors_on_demand_answer_cps_0003_and_cphub_retries_them_7_2() {
    let fake = FakeCph::start(1).await;
    fake.faults.system_errors(Operation::Restart, 2);
    fake.faults.system_errors(Operation::ShowJob, 3);
    let token = iam_token(&fake).await;
    let phone = fake.phone_id(0);

    let refused = raw_post(
        &fake,
        &token,
        "batch-restart",
        json!({"phones": [{"phone_id": phone}]}),
    )
    .await;
    assert_error(refused, 400, "CPS.0003").await;
    assert!(fake.fleet.lock().jobs.is_empty(), "a CPS.0003 does nothing");

    let batch = fake
        .retrying_client()
        .restart(std::slice::from_ref(&phone))
        .await
        .unwrap();
    let (_, job_id) = batch.jobs().next().unwrap();
    assert_eq!(
        fake.fleet.lock().jobs.len(),
        1,
        "one restart for one decision"
    );
    let job = fake.client().follow_job(job_id).await.unwrap();
    assert_eq!(job.status, job_status::SUCCEEDED);
    assert_eq!(fake.phone(0).boots, 1);
    fake.stop().await;
}

/// Fault: a batch POST performed, then answered 502/504 (7.1.2). The answer names its
/// request, whose jobs (4.4.2) cphub's client returns instead of resending: one restart.
#[tokio::test]
async fn a_lost_answer_after_a_restart_is_reconciled_not_resent_7_1_2() {
    let fake = FakeCph::start(1).await;
    let phone = fake.phone_id(0);
    fake.faults
        .lose_answers(Operation::Restart, 1, LostAnswer::GatewayTimeout);
    let token = iam_token(&fake).await;

    let lost = raw_post(
        &fake,
        &token,
        "batch-restart",
        json!({"phones": [{"phone_id": phone}]}),
    )
    .await;
    assert_error(lost, 504, "APIGW.0203").await;
    let (job_id, request_id) = {
        let fleet = fake.fleet.lock();
        let job = fleet
            .jobs
            .values()
            .next()
            .expect("performed although the answer was lost");
        (job.job_id.clone(), job.request_id.clone())
    };
    let found = raw_get(&fake, &token, &format!("jobs?request_id={request_id}")).await;
    assert_eq!(found["jobs"][0]["job_id"], job_id.as_str());
    wait_for_job(&fake, &job_id).await;

    fake.faults
        .lose_answers(Operation::Restart, 1, LostAnswer::BadGateway);
    let client = fake.retrying_client();
    let batch = client.restart(std::slice::from_ref(&phone)).await.unwrap();
    let (_, job_id) = batch.jobs().next().expect("the job of the lost answer");
    client.follow_job(job_id).await.unwrap();
    assert_eq!(fake.fleet.lock().jobs.len(), 2, "each POST acted once");
    assert_eq!(fake.phone(0).boots, 2);
    fake.stop().await;
}

/// Fault: the account in arrears; every call answers 400 CPS.0006 (7.2), which cphub reads
/// as account-level and does not retry; nothing is done until it is lifted.
#[tokio::test]
async fn arrears_answer_cps_0006_to_every_call_and_read_as_account_level_7_2() {
    let fake = FakeCph::start(1).await;
    fake.faults.set_arrears(true);
    let client = fake.retrying_client();

    let listed = client
        .list_phones(&PhoneFilter::default())
        .await
        .unwrap_err();
    assert!(listed.is_account_level(), "{listed:?}");
    let restarted = client.restart(&[fake.phone_id(0)]).await.unwrap_err();
    assert!(
        restarted.is_account_level() && !restarted.is_transient(),
        "{restarted:?}"
    );
    assert!(fake.fleet.lock().jobs.is_empty());

    fake.faults.set_arrears(false);
    assert_eq!(
        client
            .list_phones(&PhoneFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
    fake.stop().await;
}

/// 4.6.1 and 4.6.2: an abnormal encoding server is listed with status 2; its restart is a
/// job (4.4.1) naming only its `encode_server_id`, the server restarting (3) meanwhile and
/// running (1) after.
#[tokio::test]
async fn an_encoding_server_is_listed_and_restarted_as_a_job_4_6_1_4_6_2() {
    let fake = FakeCph::start(20).await;
    let client = fake.client();
    let id = {
        let mut fleet = fake.fleet.lock();
        fleet.set_encode_server_abnormal(1);
        fleet.encode_servers[1].encode_server_id.clone()
    };

    let listed = client.list_encode_servers().await.unwrap();
    let restarted = client
        .restart_encode_servers(std::slice::from_ref(&id))
        .await
        .unwrap();

    let statuses: Vec<i32> = listed.iter().map(|e| e.status).collect();
    assert_eq!(statuses, [1, 2]);
    let item = &restarted.items[0];
    assert_eq!(item.encode_server_id.as_deref(), Some(id.as_str()));
    let job_id = item.job_id.clone().unwrap();
    assert_eq!(fake.fleet.lock().encode_servers[1].status, 3);
    let job = client.follow_job(&job_id).await.unwrap();
    assert_eq!(job.status, job_status::SUCCEEDED);
    assert_eq!(job.encode_server_id.as_deref(), Some(id.as_str()));
    assert_eq!((job.phone_id, job.server_id), (None, None));
    assert_eq!(fake.fleet.lock().encode_servers[1].status, 1);
    let token = iam_token(&fake).await;
    let unknown = json!({"encode_server_ids": ["0".repeat(32)]});
    let response = reqwest::Client::new()
        .post(format!(
            "{}/v1/{PROJECT_ID}/cloud-phone/encode-servers/batch-restart",
            fake.endpoint
        ))
        .header("X-Auth-Token", &token)
        .json(&unknown)
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "CPS.0200").await;
    fake.stop().await;
}

/// 4.7.5 as its example shows it: `""` codes on success, `CPS.0191` and the output on a
/// failure; the failure fault fails a canned command too, keeping its output; a content
/// beyond the limits is refused with 7.2's parameter error.
#[tokio::test]
async fn sync_commands_answer_per_phone_as_the_4_7_5_example() {
    let fake = FakeCph::start(2).await;
    let phones: Vec<String> = (fake.fleet.lock().phones.iter())
        .map(|p| p.phone_id.clone())
        .collect();
    fake.fleet
        .lock()
        .command_outputs
        .insert("getprop ro.build.product".into(), "STF".into());
    let token = iam_token(&fake).await;
    let run = |content: &str| json!({"command": "shell", "content": content, "phone_ids": phones});

    let answer = raw_post(
        &fake,
        &token,
        "sync-commands",
        run("getprop ro.build.product"),
    )
    .await;
    assert_eq!(answer.status().as_u16(), 201);
    let answer: Value = answer.json().await.unwrap();
    let job = &answer["jobs"][0];
    assert_eq!(
        (
            &job["status"],
            &job["error_code"],
            &job["error_msg"],
            &job["execute_msg"]
        ),
        (&json!(2), &json!(""), &json!(""), &json!("STF"))
    );
    assert_eq!(answer["jobs"][1]["phone_id"], phones[1].as_str());

    let missing: Value = (raw_post(&fake, &token, "sync-commands", run("ls -l /system")).await)
        .json()
        .await
        .unwrap();
    let job = &missing["jobs"][0];
    assert_eq!(
        (&job["status"], &job["error_code"]),
        (&json!(-1), &json!("CPS.0191"))
    );
    assert_eq!(job["execute_msg"], "/system/bin/sh: ls: not found");

    fake.faults.fail_commands(true);
    let failed: Value = (raw_post(
        &fake,
        &token,
        "sync-commands",
        run("getprop ro.build.product"),
    )
    .await)
        .json()
        .await
        .unwrap();
    let job = &failed["jobs"][0];
    assert_eq!(
        (&job["status"], &job["execute_msg"]),
        (&json!(-1), &json!("STF"))
    );

    let refused = raw_post(&fake, &token, "sync-commands", run("ls; reboot")).await;
    assert_error(refused, 400, "CPS.0200").await;
    fake.stop().await;
}

/// Huawei's SDK lists the encoding servers (4.6.1), restarts one and follows its job
/// (4.6.2, 4.4.1), and runs a synchronous command (4.7.5) against the fake: its paths,
/// bodies and response models are the fake's.
#[test]
fn the_official_python_sdk_reaches_encoding_servers_and_sync_commands() {
    crate::helpers::run_scenario(
        "the_official_python_sdk_reaches_encoding_servers_and_sync_commands",
        async {
            let fake = FakeCph::start(2).await;
            let phone = fake.phone_id(1);
            let encode_server_id = {
                let mut fleet = fake.fleet.lock();
                fleet
                    .command_outputs
                    .insert("getprop sys.boot_completed".into(), "1".into());
                fleet.set_encode_server_abnormal(0);
                fleet.encode_servers[0].encode_server_id.clone()
            };

            let mut args = sdk_args(&fake, SK);
            args.extend(["--phone-id".into(), phone.clone()]);
            args.extend(["--encode-server-id".into(), encode_server_id.clone()]);
            args.extend(["--command".into(), "getprop sys.boot_completed".into()]);
            let (exit, lines, output) = run_python_sdk(args).await;

            assert!(exit.success(), "the SDK run failed:\n{output}");
            let calls: Vec<&str> = lines.iter().map(|l| l["call"].as_str().unwrap()).collect();
            assert_eq!(
                calls,
                [
                    "ListEncodeServers",
                    "RestartEncodeServer",
                    "ShowJob",
                    "RunSyncCommand"
                ],
                "{output}"
            );
            assert_eq!(lines[0]["response"]["encode_servers"][0]["status"], 2);
            assert_eq!(
                lines[1]["response"]["jobs"][0]["encode_server_id"],
                encode_server_id.as_str()
            );
            let run = &lines[3]["response"]["jobs"][0];
            assert_eq!(
                (&run["phone_id"], &run["execute_msg"], &run["error_code"]),
                (&json!(phone), &json!("1"), &json!(""))
            );
            assert_eq!(fake.fleet.lock().encode_servers[0].status, 1);
            fake.stop().await;
        },
    )
}
