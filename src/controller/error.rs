//! Errors as the API and the link report them: an HTTP status, a code and a message for humans.

use crate::link::ErrorBody;
use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// The setting a refused config names (`server_settings.max_players`), for forms.
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// A config value refused by the settings schema: 400, the field and its rule.
    pub fn refused(r: crate::config::Refusal) -> Self {
        ApiError {
            field: Some(r.field),
            ..Self::new(400, "invalid_config", r.message)
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "conflict", message)
    }

    /// A file operation failed: `507 disk_full` when the disk (or a size limit) is full,
    /// else `500 io` naming what was being done.
    pub fn io(context: impl std::fmt::Display, e: &std::io::Error) -> Self {
        if is_disk_full(e) {
            tracing::error!(error = %e, "{context}: disk full");
            return Self::disk_full(format!("{context}: {e}"));
        }
        Self::new(500, "io", format!("{context}: {e}"))
    }

    /// 507: what to do is free space on the controller's disk, then retry.
    pub fn disk_full(detail: impl std::fmt::Display) -> Self {
        Self::new(
            507,
            "disk_full",
            format!(
                "disk full on the controller: free space in its data directory and retry; nothing was changed ({detail})"
            ),
        )
    }

    pub fn to_body(&self) -> ErrorBody {
        ErrorBody::new(self.code, self.message.clone())
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut e = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(f) = &self.field {
            e["field"] = serde_json::json!(f);
        }
        serde_json::json!({ "error": e })
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ApiError::not_found(m),
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::Invalid(m) => ApiError::new(400, "invalid", m),
            StoreError::Forbidden(m) => ApiError::forbidden(m),
            StoreError::Refused(r) => ApiError::refused(r),
            StoreError::Full(m) => {
                tracing::error!(error = %m, "store write failed: disk full");
                ApiError::disk_full("the database could not grow")
            }
            StoreError::Db(m) => {
                tracing::error!(error = %m, "store error");
                ApiError::new(500, "internal", "internal error; see the controller log")
            }
        }
    }
}

/// ENOSPC (no space), EDQUOT (quota) and EFBIG (file size limit) all mean: the disk is full
/// as far as this process is concerned.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || e.kind() == std::io::ErrorKind::FileTooLarge
        || matches!(
            e.raw_os_error(),
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG)
        )
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}
