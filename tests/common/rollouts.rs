//! The rollout runner on a [`Sluice`] (built with
//! [`Builder::manual_ticks`](super::Builder::manual_ticks)): ticks, status, the data plane's
//! weight, rollout audit events and operator actions.
#![allow(dead_code)]

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;

use super::{Client, Reply, Sluice, get};

impl Sluice {
    /// One runner tick (one `analysis.interval`).
    pub fn tick(&self) {
        self.inst().rollouts.tick_now();
    }

    /// The rollout's status entry.
    pub fn rollout(&self, name: &str) -> Value {
        self.inst()
            .rollouts
            .status_json()
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no rollout {name} in status"))
    }

    /// The rollout's phase.
    pub fn phase(&self, name: &str) -> String {
        self.rollout(name)["phase"].as_str().unwrap().to_string()
    }

    /// The weight the data plane splits the first rollout by, in basis points.
    pub fn weight_bp(&self) -> u32 {
        self.inst().shared.snapshot.load_full().unwrap().rollouts[0].weight()
    }

    /// The rollout events of the audit log, in order.
    pub fn rollout_events(&self) -> Vec<Value> {
        self.audit()
            .into_iter()
            .filter(|e| e["event"].as_str().unwrap().starts_with("rollout."))
            .collect()
    }

    /// The names of [`Sluice::rollout_events`].
    pub fn event_names(&self) -> Vec<String> {
        self.rollout_events()
            .iter()
            .map(|e| e["event"].as_str().unwrap().to_string())
            .collect()
    }

    /// `GET /metrics` from the admin listener.
    pub async fn metrics(&self) -> String {
        get(self.admin(), "/metrics", &[]).await.text()
    }

    /// `POST /api/v1/rollouts/{name}/{action}` with the admin token and extra headers.
    pub async fn act(&self, name: &str, action: &str, headers: &[(&str, &str)]) -> Reply {
        let mut c = Client::connect(self.admin()).await;
        let mut b = Request::builder()
            .method("POST")
            .uri(format!("/api/v1/rollouts/{name}/{action}"))
            .header("host", "127.0.0.1")
            .header(
                "authorization",
                format!("Bearer {}", self.inst().admin_token),
            );
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        c.send(b.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap()
    }
}
