//! The API's routes as typed methods: each path is written here once.
//! A resource is named by its name or its id (`reference`); names are
//! percent-encoded, so no name can change the route.
//!
//! Requests that start a job return the [`Job`]; follow it with
//! [`Client::wait_job`].

use crate::{segment, Client};
use reprise_core::model::*;
use reprise_core::plan::Plan;
use reprise_core::Result;
use serde_json::json;

const V1: &str = "/api/v1";

fn one(collection: &str, reference: &str) -> String {
    format!("{V1}/{collection}/{}", segment(reference))
}

fn account(reference: &str) -> String {
    one("accounts", reference)
}

fn volume(reference: &str) -> String {
    one("volumes", reference)
}

fn instance(reference: &str) -> String {
    one("instances", reference)
}

fn points(instance_ref: &str) -> String {
    format!("{}/points", instance(instance_ref))
}

fn point(instance_ref: &str, point: &str) -> String {
    format!("{}/{}", points(instance_ref), segment(point))
}

fn snapshot(reference: &str) -> String {
    one("snapshots", reference)
}

fn policy(reference: &str) -> String {
    one("policies", reference)
}

/// `?a=x&b=y` from the parameters given, or nothing.
fn query(params: &[(&str, Option<&str>)]) -> String {
    let given: Vec<String> = params
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", segment(v))))
        .collect();
    if given.is_empty() {
        String::new()
    } else {
        format!("?{}", given.join("&"))
    }
}

impl Client {
    // ---- accounts, keys, plans ------------------------------------------

    pub fn whoami(&self) -> Result<Account> {
        self.get(&format!("{V1}/whoami"))
    }

    pub fn accounts(&self) -> Result<Vec<Account>> {
        self.get(&format!("{V1}/accounts"))
    }

    pub fn create_account(&self, req: &CreateAccount) -> Result<AccountCreated> {
        self.post(&format!("{V1}/accounts"), req)
    }

    pub fn account(&self, reference: &str) -> Result<AccountDetails> {
        self.get(&account(reference))
    }

    pub fn set_account(&self, reference: &str, req: &AccountSettings) -> Result<AccountDetails> {
        self.post(&format!("{}/settings", account(reference)), req)
    }

    /// Delete an empty account.
    pub fn delete_account(&self, reference: &str) -> Result<()> {
        self.delete(&account(reference))
    }

    /// Delete an account and everything it owns (a job).
    pub fn purge_account(&self, reference: &str) -> Result<Job> {
        self.delete_job(&format!("{}?purge=true", account(reference)))
    }

    pub fn keys(&self, account_ref: &str) -> Result<Vec<ApiKey>> {
        self.get(&format!("{}/keys", account(account_ref)))
    }

    pub fn create_key(&self, account_ref: &str, req: &CreateApiKey) -> Result<ApiKeyCreated> {
        self.post(&format!("{}/keys", account(account_ref)), req)
    }

    pub fn revoke_key(&self, account_ref: &str, key: &str) -> Result<()> {
        self.delete(&format!("{}/keys/{}", account(account_ref), segment(key)))
    }

    /// Replace the admin key the daemon wrote at its first start.
    pub fn rotate_admin_key(&self) -> Result<ApiKeyCreated> {
        self.post(&format!("{V1}/keys/rotate"), &json!({}))
    }

    pub fn plans(&self) -> Result<Vec<Plan>> {
        self.get(&format!("{V1}/plans"))
    }

    /// Create or replace a plan.
    pub fn put_plan(&self, plan: &Plan) -> Result<Plan> {
        self.post(&format!("{V1}/plans"), plan)
    }

    pub fn delete_plan(&self, name: &str) -> Result<()> {
        self.delete(&one("plans", name))
    }

    // ---- zones, uploads --------------------------------------------------

    pub fn hosts(&self) -> Result<Vec<Host>> {
        self.get(&format!("{V1}/hosts"))
    }

    pub fn zones(&self) -> Result<Vec<Zone>> {
        self.get(&format!("{V1}/zones"))
    }

    pub fn create_zone(&self, req: &CreateZone) -> Result<Zone> {
        self.post(&format!("{V1}/zones"), req)
    }

    pub fn uploads(&self) -> Result<Vec<Upload>> {
        self.get(&format!("{V1}/uploads"))
    }

    pub fn upload_status(&self, id: &str) -> Result<Upload> {
        self.get(&one("uploads", id))
    }

    pub fn delete_upload(&self, id: &str) -> Result<()> {
        self.delete(&one("uploads", id))
    }

    pub(crate) fn announce_upload(&self, req: &CreateUpload) -> Result<Upload> {
        self.post(&format!("{V1}/uploads"), req)
    }

    pub(crate) fn upload_data_path(id: &str, offset: u64) -> String {
        format!("{}/data?offset={offset}", one("uploads", id))
    }

    // ---- volumes ---------------------------------------------------------

    /// Volumes, of one zone or one instance if named.
    pub fn volumes(&self, zone: Option<&str>, instance: Option<&str>) -> Result<Vec<Volume>> {
        let q = query(&[("zone", zone), ("instance", instance)]);
        self.get(&format!("{V1}/volumes{q}"))
    }

    pub fn volume(&self, reference: &str) -> Result<Volume> {
        self.get(&volume(reference))
    }

    pub fn create_volume(&self, req: &CreateVolume) -> Result<Volume> {
        self.post(&format!("{V1}/volumes"), req)
    }

    pub fn resize_volume(&self, reference: &str, req: &ResizeVolume) -> Result<Volume> {
        self.post(&format!("{}/resize", volume(reference)), req)
    }

    pub fn attach_volume(&self, reference: &str, req: &AttachVolume) -> Result<Volume> {
        self.post(&format!("{}/attach", volume(reference)), req)
    }

    pub fn detach_volume(&self, reference: &str) -> Result<Volume> {
        self.post(&format!("{}/detach", volume(reference)), &json!({}))
    }

    /// Put a volume back to one of its snapshots (a job).
    pub fn revert_volume(&self, reference: &str, req: &RevertVolume) -> Result<Job> {
        self.start_job(&format!("{}/revert", volume(reference)), req)
    }

    pub fn delete_volume(&self, reference: &str) -> Result<()> {
        self.delete(&volume(reference))
    }

    // ---- instances -------------------------------------------------------

    pub fn instances(&self) -> Result<Vec<Instance>> {
        self.get(&format!("{V1}/instances"))
    }

    pub fn instance(&self, reference: &str) -> Result<Instance> {
        self.get(&instance(reference))
    }

    pub fn create_instance(&self, req: &CreateInstance) -> Result<Job> {
        self.start_job(&format!("{V1}/instances"), req)
    }

    pub fn start_instance(&self, reference: &str) -> Result<Job> {
        self.start_job(&format!("{}/start", instance(reference)), &json!({}))
    }

    pub fn stop_instance(&self, reference: &str, req: &StopInstance) -> Result<Job> {
        self.start_job(&format!("{}/stop", instance(reference)), req)
    }

    pub fn restart_instance(&self, reference: &str) -> Result<Job> {
        self.start_job(&format!("{}/restart", instance(reference)), &json!({}))
    }

    pub fn clone_instance(&self, reference: &str, req: &CloneInstance) -> Result<Job> {
        self.start_job(&format!("{}/clone", instance(reference)), req)
    }

    pub fn set_instance(&self, reference: &str, req: &InstanceSettings) -> Result<Instance> {
        self.post(&format!("{}/settings", instance(reference)), req)
    }

    pub fn delete_instance(&self, reference: &str) -> Result<()> {
        self.delete(&instance(reference))
    }

    // ---- recovery points -------------------------------------------------

    pub fn points(&self, instance_ref: &str) -> Result<Vec<Point>> {
        self.get(&points(instance_ref))
    }

    /// The points one policy took.
    pub fn points_of_policy(&self, instance_ref: &str, policy: &str) -> Result<Vec<Point>> {
        let q = query(&[("policy", Some(policy))]);
        self.get(&format!("{}{q}", points(instance_ref)))
    }

    pub fn point(&self, instance_ref: &str, reference: &str) -> Result<Point> {
        self.get(&point(instance_ref, reference))
    }

    pub fn create_point(&self, instance_ref: &str, req: &CreatePoint) -> Result<Job> {
        self.start_job(&points(instance_ref), req)
    }

    pub fn revert_point(&self, instance_ref: &str, reference: &str) -> Result<Job> {
        let path = format!("{}/revert", point(instance_ref, reference));
        self.start_job(&path, &json!({}))
    }

    pub fn delete_point(&self, instance_ref: &str, reference: &str) -> Result<Job> {
        self.delete_job(&point(instance_ref, reference))
    }

    pub fn delete_all_points(&self, instance_ref: &str) -> Result<Job> {
        self.delete_job(&points(instance_ref))
    }

    // ---- volume snapshots, templates, the region -------------------------

    pub fn snapshots(&self, filter: &SnapshotFilter) -> Result<Vec<Snapshot>> {
        let q = query(&[
            ("volume", filter.volume.as_deref()),
            ("zone", filter.zone.as_deref()),
            ("policy", filter.policy.as_deref()),
            ("instance", filter.instance.as_deref()),
            ("deleted", filter.deleted.then_some("true")),
        ]);
        self.get(&format!("{V1}/snapshots{q}"))
    }

    /// Policies of the account; of one volume or instance when given.
    pub fn policies(&self, volume: Option<&str>, instance: Option<&str>) -> Result<Vec<Policy>> {
        let q = query(&[("volume", volume), ("instance", instance)]);
        self.get(&format!("{V1}/policies{q}"))
    }

    pub fn policy(&self, reference: &str) -> Result<Policy> {
        self.get(&policy(reference))
    }

    pub fn create_policy(&self, req: &CreatePolicy) -> Result<Policy> {
        self.post(&format!("{V1}/policies"), req)
    }

    pub fn update_policy(&self, reference: &str, req: &UpdatePolicy) -> Result<Policy> {
        self.post(&policy(reference), req)
    }

    pub fn delete_policy(&self, reference: &str) -> Result<()> {
        self.delete(&policy(reference))
    }

    pub fn simulate_policy(&self, reference: &str) -> Result<PolicySimulation> {
        self.get(&format!("{}/simulate", policy(reference)))
    }

    pub fn snapshot(&self, reference: &str) -> Result<Snapshot> {
        self.get(&snapshot(reference))
    }

    pub fn create_snapshot(&self, req: &CreateSnapshot) -> Result<Job> {
        self.start_job(&format!("{V1}/snapshots"), req)
    }

    pub fn verify_snapshot(&self, reference: &str) -> Result<Job> {
        self.start_job(&format!("{}/verify", snapshot(reference)), &json!({}))
    }

    pub fn volume_from_snapshot(&self, reference: &str, req: &VolumeFromSnapshot) -> Result<Job> {
        self.start_job(&format!("{}/volumes", snapshot(reference)), req)
    }

    /// Delete a snapshot into its undelete window; with `purge` (admin),
    /// for good at once.
    pub fn delete_snapshot(&self, reference: &str, purge: bool) -> Result<Job> {
        let q = if purge { "?purge=true" } else { "" };
        self.delete_job(&format!("{}{q}", snapshot(reference)))
    }

    pub fn undelete_snapshot(&self, reference: &str) -> Result<Snapshot> {
        self.post(&format!("{}/undelete", snapshot(reference)), &json!({}))
    }

    pub fn protect_snapshot(&self, reference: &str, protected: bool) -> Result<Snapshot> {
        self.post(
            &format!("{}/protection", snapshot(reference)),
            &Protection { protected },
        )
    }

    pub fn protect_point(
        &self,
        instance_ref: &str,
        reference: &str,
        protected: bool,
    ) -> Result<Point> {
        self.post(
            &format!("{}/protection", point(instance_ref, reference)),
            &Protection { protected },
        )
    }

    pub fn templates(&self) -> Result<Vec<Template>> {
        self.get(&format!("{V1}/templates"))
    }

    /// The deleted templates still in their undelete window.
    pub fn deleted_templates(&self) -> Result<Vec<Template>> {
        self.get(&format!("{V1}/templates?deleted=true"))
    }

    pub fn undelete_template(&self, reference: &str) -> Result<Template> {
        self.post(
            &format!("{}/undelete", one("templates", reference)),
            &json!({}),
        )
    }

    pub fn template(&self, reference: &str) -> Result<Template> {
        self.get(&one("templates", reference))
    }

    pub fn create_template(&self, req: &CreateTemplate) -> Result<Template> {
        self.post(&format!("{V1}/templates"), req)
    }

    pub fn import_template(&self, req: &ImportTemplate) -> Result<Job> {
        self.start_job(&format!("{V1}/templates/import"), req)
    }

    pub fn delete_template(&self, reference: &str) -> Result<Job> {
        self.delete_job(&one("templates", reference))
    }

    /// Collect the region's garbage now (admin; a job).
    pub fn collect_garbage(&self) -> Result<Job> {
        self.start_job(&format!("{V1}/gc"), &json!({}))
    }

    /// Rebuild the catalog from the region's store (admin; a job whose
    /// log says what was added).
    pub fn recover_region(&self, req: &RecoverRegion) -> Result<Job> {
        self.start_job(&format!("{V1}/region/recover"), req)
    }

    /// Back the catalog up into the region's store (admin; a job).
    pub fn backup_catalog(&self) -> Result<Job> {
        self.start_job(&format!("{V1}/catalog/backups"), &json!({}))
    }

    pub fn catalog_backups(&self) -> Result<Vec<CatalogBackup>> {
        self.get(&format!("{V1}/catalog/backups"))
    }

    /// Restore the catalog from a backup (admin; a job).
    pub fn restore_catalog(&self, req: &RestoreCatalog) -> Result<Job> {
        self.start_job(&format!("{V1}/catalog/restore"), req)
    }

    /// Forget what the store holds that the catalog does not know (admin).
    pub fn forget_orphans(&self, req: &ForgetOrphans) -> Result<Job> {
        self.start_job(&format!("{V1}/store/forget-orphans"), req)
    }

    // ---- jobs ------------------------------------------------------------

    pub fn jobs(&self, limit: u32) -> Result<Vec<Job>> {
        self.get(&format!("{V1}/jobs?limit={limit}"))
    }

    pub fn job(&self, id: &str) -> Result<Job> {
        self.get(&one("jobs", id))
    }

    /// Cancel a job that waits for its host; the job, Cancelled.
    pub fn cancel_job(&self, id: &str) -> Result<Job> {
        self.post(&format!("{}/cancel", one("jobs", id)), &json!({}))
    }

    /// The job once it ends, or after about `wait_ms` if it runs on.
    pub(crate) fn job_after(&self, id: &str, wait_ms: u32) -> Result<Job> {
        self.get(&format!("{}?wait_ms={wait_ms}", one("jobs", id)))
    }
}
