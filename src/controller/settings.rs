//! Settings requests beyond an instance's config PATCH: revealing a secret (audited), the
//! controller's own `config-master.json`, and a host's `config-slave.json` (asked over the link;
//! the host masks its secrets itself, so they never leave it).

use super::Controller;
use super::error::ApiError;
use super::instances::host_error;
use super::requests::Ref;
use crate::config::{self, CONTROLLER_CONFIG_FILE, ControllerConfig, schema};
use crate::store;
use serde_json::{Value, json};
use std::time::Duration;

const HOST_CONFIG_TIMEOUT: Duration = Duration::from_secs(15);

impl Controller {
    /// One secret of an instance, in clear; the audit row names the field, never the value.
    pub async fn reveal_secret(
        &self,
        who: &str,
        instance: Ref,
        field: &str,
    ) -> Result<Value, ApiError> {
        let f = self
            .schemas
            .get()
            .instance
            .field(field)
            .filter(|f| f.secret)
            .ok_or_else(|| ApiError::bad_request(format!("{field} is not a secret setting")))?;
        let rec = self.record(&instance).await?;
        let value = schema::get_path(&self.schemas.get().instance.resolve(&rec.config), f.name)
            .cloned()
            .unwrap_or(Value::Null);
        let (w, name) = (who.to_string(), rec.name.clone());
        self.store
            .write(move |c| {
                store::audit::record(
                    c,
                    &w,
                    "instance.reveal_secret",
                    &name,
                    &json!({ "field": f.name }),
                )
            })
            .await?;
        Ok(json!({ "instance": rec.name, "field": f.name, "value": value }))
    }

    pub fn controller_config_view(&self) -> Value {
        let to_json = |c: &ControllerConfig| serde_json::to_value(c).unwrap_or(Value::Null);
        config::settings_view(
            &self.schemas.get().controller,
            &to_json(&self.loaded),
            &to_json(&self.settings()),
        )
    }

    /// Writes a merge patch into `config-master.json`; fields that allow it apply at once.
    pub async fn update_controller_config(
        &self,
        who: &str,
        patch: &Value,
    ) -> Result<Value, ApiError> {
        let schema = &self.schemas.get().controller;
        let file = self.data_dir.join(CONTROLLER_CONFIG_FILE);
        config::patch_file(&file, schema, patch)
            .map_err(|e| ApiError::new(500, "internal", format!("{e:#}")))?
            .map_err(ApiError::refused)?;
        let now = ControllerConfig::load(&self.data_dir)
            .map_err(|e| ApiError::new(500, "internal", format!("{e:#}")))?;
        if let Ok(mut s) = self.settings.lock() {
            *s = now;
        }
        let (w, detail) = (who.to_string(), schema.audit_view(patch));
        self.store
            .write(move |c| {
                store::audit::record(c, &w, "controller.update_config", "controller", &detail)
            })
            .await?;
        Ok(self.controller_config_view())
    }

    /// A host's settings view (`change`: a merge patch for it to apply first).
    pub async fn host_config(
        &self,
        host: Ref,
        change: Option<(&str, Value)>,
    ) -> Result<Value, ApiError> {
        let h = host.to_string();
        let rec = self.store.read(move |c| store::hosts::get(c, &h)).await?;
        if !self.hub.host_connected(rec.id) {
            return Err(ApiError::new(
                409,
                "host_disconnected",
                format!("host '{}' is not connected", rec.name),
            ));
        }
        let Some((who, patch)) = change else {
            return self
                .hub
                .request_host(rec.id, "config_get", json!({}), HOST_CONFIG_TIMEOUT)
                .await
                .map_err(host_error);
        };
        let schema = &self.schemas.get().host;
        schema.check_patch(&patch).map_err(ApiError::refused)?;
        let view = self
            .hub
            .request_host(
                rec.id,
                "config_update",
                json!({ "config": patch }),
                HOST_CONFIG_TIMEOUT,
            )
            .await
            .map_err(host_error)?;
        let (w, name, detail) = (who.to_string(), rec.name.clone(), schema.audit_view(&patch));
        self.store
            .write(move |c| store::audit::record(c, &w, "host.update_config", &name, &detail))
            .await?;
        Ok(view)
    }
}
