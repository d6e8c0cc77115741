//! The management API's bodies (chapters 4.3, 4.4, 7.1.1), field for field. Fields the
//! reference marks optional, or that vary between API versions, default rather than fail.

use serde::{Deserialize, Serialize};

/// Control-plane phone status (chapter 4.3.1).
pub mod status {
    pub const CREATING: i32 = 0;
    pub const CREATING_TOO: i32 = 1;
    pub const RUNNING: i32 = 2;
    pub const RESETTING: i32 = 3;
    pub const RESTARTING: i32 = 4;
    pub const FROZEN: i32 = 6;
    pub const STOPPING: i32 = 7;
    pub const STOPPED: i32 = 8;
    pub const RESET_FAILED: i32 = -5;
    pub const RESTART_FAILED: i32 = -6;
    pub const ABNORMAL: i32 = -7;
    pub const CREATION_FAILED: i32 = -8;
    pub const STOPPING_FAILED: i32 = -9;

    pub fn name(status: i32) -> &'static str {
        match status {
            0 | 1 => "creating",
            2 => "running",
            3 => "resetting",
            4 => "restarting",
            6 => "frozen",
            7 => "stopping",
            8 => "stopped",
            -5 => "reset failed",
            -6 => "restart failed",
            -7 => "abnormal",
            -8 => "creation failed",
            -9 => "stopping failed",
            _ => "unknown",
        }
    }
}

/// Job status (chapter 4.4.1).
pub mod job_status {
    pub const RUNNING: i32 = 1;
    pub const SUCCEEDED: i32 = 2;
    pub const FAILED: i32 = -1;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phone {
    pub phone_id: String,
    #[serde(default)]
    pub phone_name: String,
    #[serde(default)]
    pub server_id: String,
    pub status: i32,
    #[serde(default)]
    pub phone_model_name: String,
    #[serde(default)]
    pub image_id: String,
    #[serde(rename = "type", default)]
    pub phone_type: i32,
    #[serde(default)]
    pub create_time: Option<String>,
    #[serde(default)]
    pub update_time: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PhoneList {
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub phones: Vec<Phone>,
}

/// Chapter 4.3.2: the list fields plus the property string and access details.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhoneDetail {
    #[serde(flatten)]
    pub phone: Phone,
    /// A JSON object serialised into a string ("jsonString"), as the official SDK reads it.
    /// The reference's own example sends the object itself; it is kept as its JSON text.
    #[serde(default, deserialize_with = "json_string_or_object")]
    pub property: Option<String>,
    #[serde(default)]
    pub access_infos: Vec<serde_json::Value>,
}

impl PhoneDetail {
    /// Where a client connects (Table 4-30), each entry read from the current field names,
    /// or the expired ones ("the functions of new parameters are the same as those of
    /// expired parameters") when the new are absent or empty. Entries without a public
    /// address or port cannot be dialled and are left out.
    pub fn access(&self) -> Vec<crate::domain::AccessInfo> {
        self.access_infos.iter().filter_map(access_info).collect()
    }
}

fn access_info(entry: &serde_json::Value) -> Option<crate::domain::AccessInfo> {
    let text = |name: &str| {
        entry
            .get(name)
            .and_then(serde_json::Value::as_str)
            .filter(|t| !t.is_empty())
    };
    // Integers in Table 4-30; read from a string too, which costs nothing.
    let port = |name: &str| {
        let value = entry.get(name)?;
        value
            .as_i64()
            .or_else(|| value.as_str().and_then(|t| t.parse().ok()))
    };
    Some(crate::domain::AccessInfo {
        port_type: text("type").unwrap_or_default().to_owned(),
        public_ip: text("public_ip").or_else(|| text("access_ip"))?.to_owned(),
        access_port: port("access_port")?,
        listen_port: port("listen_port").unwrap_or_default(),
    })
}

/// An item of a paged list, and what names it uniquely there: a page that lists only items
/// read already ends the list (`CphClient::all_pages`). None (the default) for lists whose
/// entries may repeat (a server lists every version of an app, 5.3.1).
pub trait Listed {
    fn key(&self) -> Option<&str> {
        None
    }
}

impl Listed for Phone {
    fn key(&self) -> Option<&str> {
        Some(&self.phone_id)
    }
}

impl Listed for App {
    fn key(&self) -> Option<&str> {
        Some(&self.app_id)
    }
}

impl Listed for AppPhone {}

impl Listed for DeployedApp {}

impl Listed for Job {
    fn key(&self) -> Option<&str> {
        Some(&self.job_id)
    }
}

impl Listed for EncodeServer {
    fn key(&self) -> Option<&str> {
        Some(&self.encode_server_id)
    }
}

/// An application (chapter 5.1.3, Table 5-6); only the id is needed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct App {
    pub app_id: String,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AppList {
    #[serde(default)]
    pub apps: Vec<App>,
}

/// A phone an application is deployed on (chapter 5.1.2, Table 5-4). The table names the
/// version field `app_version_id`, the example spells it `app_verison_id`: both are read.
/// The example sends `""` for unknown values; they are read as None.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "AppPhoneWire")]
pub struct AppPhone {
    pub phone_id: String,
    pub app_version_id: Option<String>,
    pub version_code: Option<String>,
    pub version_name: Option<String>,
}

/// The version id under either spelling. Read as two fields, not as a serde alias: the
/// reference sends renamed fields under both names at once elsewhere (Table 4-30's
/// `access_ip` beside `public_ip`), and an alias refuses an object carrying both as a
/// duplicate field, failing the whole listing. The first non-empty one is kept.
#[derive(Deserialize)]
struct VersionId {
    #[serde(default, deserialize_with = "non_empty")]
    app_version_id: Option<String>,
    #[serde(default, deserialize_with = "non_empty")]
    app_verison_id: Option<String>,
}

impl VersionId {
    fn either(self) -> Option<String> {
        self.app_version_id.or(self.app_verison_id)
    }
}

#[derive(Deserialize)]
struct AppPhoneWire {
    phone_id: String,
    #[serde(flatten)]
    version_id: VersionId,
    #[serde(default, deserialize_with = "non_empty")]
    version_code: Option<String>,
    #[serde(default, deserialize_with = "non_empty")]
    version_name: Option<String>,
}

impl From<AppPhoneWire> for AppPhone {
    fn from(wire: AppPhoneWire) -> Self {
        AppPhone {
            phone_id: wire.phone_id,
            app_version_id: wire.version_id.either(),
            version_code: wire.version_code,
            version_name: wire.version_name,
        }
    }
}

/// An application version deployed on a server (chapter 5.3.1, Table 5-15) or installed on a
/// phone (5.3.6, Table 5-33). 5.3.1's example spells the id `app_verison_id`, 5.3.6's
/// `app_version_id`: both are read ([`VersionId`]), and `""` as none.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "DeployedAppWire")]
pub struct DeployedApp {
    pub app_id: String,
    pub app_version_id: Option<String>,
    pub package_name: Option<String>,
    pub version_code: Option<String>,
    pub version_name: Option<String>,
}

#[derive(Deserialize)]
struct DeployedAppWire {
    app_id: String,
    #[serde(flatten)]
    version_id: VersionId,
    #[serde(default, deserialize_with = "non_empty")]
    package_name: Option<String>,
    #[serde(default, deserialize_with = "non_empty")]
    version_code: Option<String>,
    #[serde(default, deserialize_with = "non_empty")]
    version_name: Option<String>,
}

impl From<DeployedAppWire> for DeployedApp {
    fn from(wire: DeployedAppWire) -> Self {
        DeployedApp {
            app_id: wire.app_id,
            app_version_id: wire.version_id.either(),
            package_name: wire.package_name,
            version_code: wire.version_code,
            version_name: wire.version_name,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct DeployedAppList {
    #[serde(default)]
    pub apps: Vec<DeployedApp>,
}

/// 5.3.4's body.
#[derive(Debug, Clone, Serialize)]
pub struct PushBody {
    pub batch_push_app_version: PushVersions,
}

#[derive(Debug, Clone, Serialize)]
pub struct PushVersions {
    pub app_version_ids: Vec<String>,
    pub server_ids: Vec<String>,
}

/// 5.3.7's body.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateBody {
    pub update_app_version: UpdateVersions,
}

#[derive(Debug, Clone, Serialize)]
pub struct UpdateVersions {
    pub app_version_ids: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AppPhoneList {
    #[serde(default)]
    pub phones: Vec<AppPhone>,
}

fn json_string_or_object<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(text)) => Some(text),
        Some(other) => Some(other.to_string()),
    })
}

/// A string where `null`, absent and `""` all mean "none" (the reference writes each of the
/// three for "no error": 4.3.5's example omits the fields, 4.4.1's has `null`, 4.4.2's `""`).
fn non_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|text| !text.is_empty()))
}

/// One phone of a batch request. `property` is a JSON object serialised into a string.
#[derive(Debug, Clone, Serialize)]
pub struct PhoneItem {
    pub phone_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhonesBody {
    pub phones: Vec<PhoneItem>,
}

/// Chapter 4.3.7 takes ids, not objects.
#[derive(Debug, Clone, Serialize)]
pub struct PhoneIdsBody {
    pub phone_ids: Vec<String>,
}

/// The answer of every batch operation: one entry per phone, a job or an error.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchAnswer {
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub jobs: Vec<BatchItem>,
}

/// One phone's entry in a batch answer. `error_code`/`error_msg` absent, `null` or `""` all
/// mean "no error" (4.3.5–4.3.7 omit them, 4.4.1 writes `null`, 4.4.2 writes `""`): they are
/// read as `None` here, so nothing downstream can take an empty code for a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchItem {
    #[serde(default)]
    pub phone_id: Option<String>,
    /// Server jobs (5.3.4, Table 5-26) name their server instead of a phone.
    #[serde(default, deserialize_with = "non_empty")]
    pub server_id: Option<String>,
    /// Jobs of 4.6.2 (Table 4-58) name their encoding server instead of a phone.
    #[serde(default, deserialize_with = "non_empty")]
    pub encode_server_id: Option<String>,
    /// Jobs of 5.3.4 and 5.3.7 (Tables 5-26, 5-36) name their application version.
    #[serde(default, deserialize_with = "non_empty")]
    pub app_version_id: Option<String>,
    #[serde(default, deserialize_with = "non_empty")]
    pub job_id: Option<String>,
    #[serde(default, deserialize_with = "non_empty")]
    pub error_code: Option<String>,
    #[serde(default, deserialize_with = "non_empty")]
    pub error_msg: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub job_id: String,
    pub status: i32,
    #[serde(default)]
    pub phone_id: Option<String>,
    /// Table 4-50: in jobs of servers (5.3.4); the simulator also sends it for phone jobs.
    #[serde(default, deserialize_with = "non_empty")]
    pub server_id: Option<String>,
    /// Table 4-50: in jobs of encoding servers (4.6.2).
    #[serde(default, deserialize_with = "non_empty")]
    pub encode_server_id: Option<String>,
    #[serde(default)]
    pub begin_time: Option<String>,
    #[serde(default)]
    pub end_time: Option<String>,
    /// `null` (4.4.1) and `""` (4.4.2) both mean "no error": read as `None`.
    #[serde(default, deserialize_with = "non_empty")]
    pub error_code: Option<String>,
    #[serde(default, deserialize_with = "non_empty")]
    pub error_msg: Option<String>,
    #[serde(default, deserialize_with = "non_empty")]
    pub execute_msg: Option<String>,
}

impl Job {
    pub fn is_finished(&self) -> bool {
        self.status == job_status::SUCCEEDED || self.status == job_status::FAILED
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct JobList {
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub jobs: Vec<Job>,
}

/// An encoding server (chapter 4.6.1, Table 4-55); its access information is not needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodeServer {
    pub encode_server_id: String,
    #[serde(default)]
    pub encode_server_name: String,
    #[serde(default)]
    pub encode_server_ip: String,
    #[serde(default)]
    pub server_id: String,
    /// 0 server, 1 container.
    #[serde(rename = "type", default)]
    pub server_type: i32,
    pub status: i32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EncodeServerList {
    #[serde(default)]
    pub encode_servers: Vec<EncodeServer>,
}

/// 4.6.2's body.
#[derive(Debug, Clone, Serialize)]
pub struct EncodeServerIdsBody {
    pub encode_server_ids: Vec<String>,
}

/// 4.7.5's body: `command` is always `shell` ("Currently, only shell is supported").
#[derive(Debug, Clone, Serialize)]
pub struct SyncCommandBody<'a> {
    pub command: &'static str,
    pub content: &'a str,
    pub phone_ids: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SyncCommandAnswer {
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub jobs: Vec<SyncCommandJob>,
}

/// One phone's run of a synchronous command (Table 4-68): status 2 succeeded, -1 failed;
/// `execute_msg` is "returned regardless of whether the command is successfully executed".
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SyncCommandJob {
    #[serde(default)]
    pub phone_id: Option<String>,
    #[serde(default, deserialize_with = "non_empty")]
    pub job_id: Option<String>,
    pub status: i32,
    #[serde(default, deserialize_with = "non_empty")]
    pub error_code: Option<String>,
    #[serde(default, deserialize_with = "non_empty")]
    pub error_msg: Option<String>,
    /// An empty output is an output: kept as `""`, not read as none.
    #[serde(default)]
    pub execute_msg: Option<String>,
}

/// Chapter 7.1.1 (and IAM's) error body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub error_msg: Option<String>,
    #[serde(default)]
    pub request_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 5.1.2/5.3.1 spell the version id `app_verison_id` in their examples, the tables and
    /// 5.3.6 `app_version_id`. An answer carrying both (as Table 4-30 carries old and new
    /// names side by side) is read, keeping the first non-empty one; `""` is none.
    #[test]
    fn a_version_id_is_read_under_either_spelling_or_both_5_1_2_5_3_1() {
        let app = |json: &str| serde_json::from_str::<DeployedApp>(json).unwrap();
        let both = app(r#"{"app_id": "a", "app_version_id": "v1", "app_verison_id": "v1"}"#);
        assert_eq!(both.app_version_id.as_deref(), Some("v1"));
        let misspelt = app(r#"{"app_id": "a", "app_version_id": "", "app_verison_id": "v2"}"#);
        assert_eq!(misspelt.app_version_id.as_deref(), Some("v2"));
        let blank = app(r#"{"app_id": "a", "app_verison_id": "", "version_code": ""}"#);
        assert_eq!((blank.app_version_id, blank.version_code), (None, None));

        let phones: Vec<AppPhone> = serde_json::from_str(
            r#"[{"phone_id": "p", "app_verison_id": "v3", "app_version_id": null},
                {"phone_id": "q", "app_version_id": "v4"}]"#,
        )
        .unwrap();
        let ids: Vec<_> = phones.iter().map(|p| p.app_version_id.as_deref()).collect();
        assert_eq!(ids, [Some("v3"), Some("v4")]);
    }

    #[test]
    fn parses_the_reference_examples() {
        let list: PhoneList = serde_json::from_str(
            r#"{"request_id": "6a63a18b8bab40ffb71ebd9cb80d0085", "phones": [{
                "phone_name": "mobile-0001", "server_id": "88b8449b896f3a4f0ad57222dd91909",
                "phone_id": "1234567b8bab40ffb711234cb80d0234", "phone_model_name": "AOSP-1U4G15G-001",
                "image_id": "88b8449b896f3a4f0ad57222dd91909", "vnc_enable": "true", "status": 2,
                "type": 0, "metadata": {"order_id": "CS1710111105S8IPB", "product_id": "00301-25217-0--0"},
                "create_time": "2017-10-10T00:00:00Z", "update_time": "2018-10-10T00:00:00Z"}]}"#,
        )
        .unwrap();
        assert_eq!(list.phones[0].status, status::RUNNING);

        let batch: BatchAnswer = serde_json::from_str(
            r#"{"request_id": "6837531fd3f54550927b930180a706bf", "jobs": [
                {"phone_id": "1234567b8bab40ffb711234cb80d0234", "job_id": "1564567b8bab40f34711234cb80d0123"},
                {"phone_id": "1678567b8bab40f93711234cb80d0764", "error_code": "CPS.0004",
                 "error_msg": "Parameter: phone_id is invalid."}]}"#,
        )
        .unwrap();
        assert_eq!(batch.jobs[1].error_code.as_deref(), Some("CPS.0004"));

        let job: Job = serde_json::from_str(
            r#"{"error_msg": null, "execute_msg": null, "job_id": "6837531fd3f54550927b930180a706bf",
                "end_time": "2019-04-26T07:00:06Z", "begin_time": "2019-04-26T07:00:00Z",
                "error_code": null, "request_id": "2676a3b4f7df49c297c6775989806d32", "status": 2}"#,
        )
        .unwrap();
        assert!(job.is_finished());
    }

    /// 4.4.2's example: a succeeded job with `"error_code": ""`, a failed one with a code.
    #[test]
    fn empty_error_fields_of_4_4_2_mean_no_error() {
        let list: JobList = serde_json::from_str(
            r#"{"request_id": "6a63a18b8bab40ffb71ebd9cb80d0085", "jobs": [
                {"phone_id": "1234567b8bab40ffb711234cb80d0234", "job_id": "1564567b8bab40f34711234cb80d0123",
                 "status": -1, "error_code": "CPS0005", "error_msg": "Phone not found."},
                {"phone_id": "abc4567b8bab40ffb711234cb80d0abc", "job_id": "1564567b8bab40f34711234cb80d0456",
                 "status": 2, "error_code": "", "error_msg": ""}]}"#,
        )
        .unwrap();
        assert_eq!(list.jobs[0].error_code.as_deref(), Some("CPS0005"));
        assert_eq!(
            (&list.jobs[1].error_code, &list.jobs[1].error_msg),
            (&None, &None)
        );

        let batch: BatchAnswer = serde_json::from_str(
            r#"{"request_id": "r", "jobs": [{"phone_id": "p", "job_id": "j", "error_code": "", "error_msg": ""},
                {"phone_id": "q", "job_id": "k", "error_code": null, "error_msg": null}]}"#,
        )
        .unwrap();
        for item in &batch.jobs {
            assert_eq!(
                (&item.error_code, &item.error_msg),
                (&None, &None),
                "{item:?}"
            );
        }
    }

    /// 4.3.2's example, first entry as given; the second with only the expired names (Table
    /// 4-30: "the functions of new parameters are the same as those of expired parameters");
    /// a third without a public address, which cannot be dialled.
    #[test]
    fn access_infos_of_4_3_2_are_read_from_new_or_expired_names() {
        let detail: PhoneDetail = serde_json::from_str(
            r#"{"phone_id": "1564567b8bab40f34711234cb80d8574", "status": 2,
                "server_id": "88b8449b896f3a4f0ad5722dd91909", "access_infos": [
                {"type": "server1", "device_ip": "10.237.0.61", "phone_ip": "10.237.0.61",
                 "listen_port": 38080, "access_ip": "213.32.43.210", "public_ip": "213.32.43.210",
                 "intranet_ip": "172.31.0.123", "server_ip": "172.31.0.123", "access_port": 14308},
                {"type": "server2", "device_ip": "10.237.0.61", "listen_port": 38081,
                 "access_ip": "213.32.43.211", "public_ip": "", "intranet_ip": "172.31.0.123",
                 "access_port": 14328},
                {"type": "server3", "phone_ip": "10.237.0.61", "listen_port": 38082,
                 "access_port": 14329}]}"#,
        )
        .unwrap();
        let access =
            |port_type: &str, ip: &str, access_port, listen_port| crate::domain::AccessInfo {
                port_type: port_type.into(),
                public_ip: ip.into(),
                access_port,
                listen_port,
            };
        assert_eq!(
            detail.access(),
            [
                access("server1", "213.32.43.210", 14308, 38080),
                access("server2", "213.32.43.211", 14328, 38081),
            ]
        );
    }

    /// 5.1.2: the table's `app_version_id` and the example's `app_verison_id` both read;
    /// the example's `""` is no value.
    #[test]
    fn deployments_of_5_1_2_read_either_spelling() {
        let list: AppPhoneList = serde_json::from_str(
            r#"{"request_id": "6a63a18b8bab40ffb71ebd9cb80d0085", "phones": [
                {"phone_id": "88b8449b896f3a4f0ad57222dd91909", "app_verison_id": "",
                 "version_code": "", "version_name": "", "launch_activity": "xxx"},
                {"phone_id": "88b8449b896f3a4f0ad57222dd91910", "app_version_id": "v-2",
                 "version_code": "7", "version_name": "1.7", "launch_activity": "xxx"}]}"#,
        )
        .unwrap();
        assert_eq!(list.phones[0].app_version_id, None);
        assert_eq!(list.phones[0].version_code, None);
        assert_eq!(list.phones[1].app_version_id.as_deref(), Some("v-2"));
        assert_eq!(list.phones[1].version_name.as_deref(), Some("1.7"));
    }
}
