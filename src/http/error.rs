//! `HttpError`: the one place where failures of every layer become OCI error JSON
//! (`{"errors":[{"code","message","detail"}]}`) with the right HTTP status.

use http::{HeaderName, HeaderValue, Response, StatusCode};

use super::body::ResponseBody;
use crate::core::manifest::ManifestError;
use crate::core::policy::Refusal;
use crate::core::{DigestError, ErrorCode, NameError};
use crate::store::StoreError;

#[derive(Debug)]
pub struct HttpError {
    pub code: ErrorCode,
    pub status: u16,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    pub headers: Vec<(HeaderName, String)>,
}

impl HttpError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        HttpError { code, status: code.status(), message: message.into(), detail: None, headers: Vec::new() }
    }
    pub fn code(code: ErrorCode) -> Self {
        Self::new(code, code.message())
    }
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }
    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    pub fn internal(what: impl std::fmt::Display) -> Self {
        log::error!("internal error: {what}");
        Self::code(ErrorCode::InternalError)
    }

    pub fn into_response(self) -> Response<ResponseBody> {
        let mut err = serde_json::json!({"code": self.code.as_str(), "message": self.message});
        if let Some(d) = self.detail {
            err["detail"] = d;
        }
        let body = serde_json::to_vec(&serde_json::json!({ "errors": [err] })).unwrap_or_default();
        let mut resp = Response::new(ResponseBody::full(body));
        *resp.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = resp.headers_mut();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (k, v) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.append(k, v);
            }
        }
        resp
    }
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::NameUnknown => HttpError::code(ErrorCode::NameUnknown),
            StoreError::BlobUnknown => HttpError::code(ErrorCode::BlobUnknown),
            StoreError::ManifestUnknown => HttpError::code(ErrorCode::ManifestUnknown),
            StoreError::UploadUnknown => HttpError::code(ErrorCode::BlobUploadUnknown),
            StoreError::DigestMismatch { expected, actual } => {
                HttpError::new(ErrorCode::DigestInvalid, format!("content has digest {actual}, not {expected}"))
                    .detail(serde_json::json!({"expected": expected.as_str(), "actual": actual.as_str()}))
            }
            StoreError::ManifestBlobUnknown(d) => {
                HttpError::new(ErrorCode::ManifestBlobUnknown, format!("{d} is not in this repository"))
                    .detail(serde_json::json!({"digest": d.as_str()}))
            }
            StoreError::IsManifest => HttpError::new(
                ErrorCode::Unsupported,
                "this digest is a manifest of the repository: delete it with DELETE /v2/<name>/manifests/<digest>",
            ),
            e @ StoreError::QuotaExceeded { .. } => {
                log::warn!("push refused: {e}");
                HttpError::new(ErrorCode::Denied, e.to_string())
            }
            e @ StoreError::ChunkOutOfOrder { .. } => {
                HttpError::new(ErrorCode::BlobUploadInvalid, e.to_string()).status(416)
            }
            e @ StoreError::ChunkLength { .. } => HttpError::new(ErrorCode::SizeInvalid, e.to_string()).status(416),
            // Below the reserve, or the disk is full: 507, and the store left nothing partial
            // visible. Pulls go on; the client may push again once space is free.
            e @ StoreError::InsufficientSpace { .. } => {
                log::warn!("upload refused: {e}");
                HttpError::new(ErrorCode::InternalError, e.to_string()).status(507)
            }
            StoreError::Io { op, source, .. } if e.is_out_of_space() => {
                log::error!("storage full: {e}");
                let why = match source.kind() {
                    std::io::ErrorKind::QuotaExceeded => "disk quota exceeded",
                    _ => "no space left on device",
                };
                HttpError::new(ErrorCode::InternalError, format!("storage full: {op}: {why}")).status(507)
            }
            // The log gets the whole chain (operation, path, cause); the client the operation
            // and the kind of failure, not the server's paths.
            StoreError::Io { op, source, .. } => {
                let message = format!("storage failed: {op}: {}", source.kind());
                log::error!("internal error: {e}");
                HttpError::new(ErrorCode::InternalError, message)
            }
            e @ StoreError::Db(_) if e.is_out_of_space() => {
                log::error!("storage full: {e}");
                HttpError::new(ErrorCode::InternalError, "storage full: metadata: no space left on device").status(507)
            }
            e @ StoreError::Db(_) => HttpError::internal(e),
        }
    }
}

impl From<Refusal> for HttpError {
    fn from(r: Refusal) -> Self {
        let code = match r {
            Refusal::ReadOnly | Refusal::DeleteDisabled => ErrorCode::Unsupported,
            Refusal::Algorithm(_) => ErrorCode::DigestInvalid,
        };
        HttpError::new(code, r.to_string())
    }
}

impl From<NameError> for HttpError {
    fn from(e: NameError) -> Self {
        HttpError::new(ErrorCode::NameInvalid, e.to_string())
    }
}

impl From<DigestError> for HttpError {
    fn from(e: DigestError) -> Self {
        HttpError::new(ErrorCode::DigestInvalid, e.to_string())
    }
}

impl From<ManifestError> for HttpError {
    fn from(e: ManifestError) -> Self {
        HttpError::new(ErrorCode::ManifestInvalid, e.to_string())
    }
}
