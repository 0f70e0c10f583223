//! Dispatch: from a route and method to the [`Endpoint`] that serves them, the [`Operation`]
//! it performs, and the handler.
//!
//! Order, as clients see it: authorization (401/403), then the registry policy (read-only mode,
//! digest algorithms, deletion), checked once here for every endpoint before any handler runs,
//! then the handler, which validates names and digests. A path outside the API is a 404, a
//! method a path does not serve a 405 with `Allow`.

use http::{Method, Request};
use hyper::body::Incoming;
use std::sync::Arc;

use super::authz::authorize;
use super::context::Ctx;
use super::error::HttpError;
use super::handlers::{self, blobs, listing, manifests, uploads, HttpResult};
use super::query::Query;
use super::router::Route;
use super::settings::{Settings, State};
use crate::core::access::Identity;
use crate::core::policy::{Effect, Operation};
use crate::core::{Algorithm, Digest, ErrorCode, Reference};

/// What a request asks for: one variant per handler, plus the two ways of missing the API.
/// Names, digests, references and upload ids are still unvalidated path text.
#[derive(Debug, PartialEq, Eq)]
pub enum Endpoint<'r> {
    /// `GET`/`HEAD /v2/`
    ApiVersion,
    /// `GET /v2/_catalog`
    Catalog,
    /// `GET /v2/<name>/tags/list`
    Tags(&'r str),
    /// `GET /v2/<name>/referrers/<digest>`
    Referrers(&'r str, &'r str),
    /// `GET`/`HEAD /v2/<name>/blobs/<digest>`
    GetBlob(&'r str, &'r str),
    /// `DELETE /v2/<name>/blobs/<digest>`
    DeleteBlob(&'r str, &'r str),
    /// `POST /v2/<name>/blobs/uploads/`
    StartUpload(&'r str),
    /// `PATCH /v2/<name>/blobs/uploads/<id>`
    PatchUpload(&'r str, &'r str),
    /// `PUT /v2/<name>/blobs/uploads/<id>?digest=`
    FinishUpload(&'r str, &'r str),
    /// `GET /v2/<name>/blobs/uploads/<id>`
    UploadStatus(&'r str, &'r str),
    /// `DELETE /v2/<name>/blobs/uploads/<id>`
    CancelUpload(&'r str, &'r str),
    /// `GET`/`HEAD /v2/<name>/manifests/<reference>`
    GetManifest(&'r str, &'r str),
    /// `PUT /v2/<name>/manifests/<reference>`
    PutManifest(&'r str, &'r str),
    /// `DELETE /v2/<name>/manifests/<reference>`
    DeleteManifest(&'r str, &'r str),
    /// A path of the API with a method it does not serve; `allow` lists those it does.
    MethodNotAllowed { allow: &'static str },
    /// Not a path of the API.
    NotFound,
}

/// The endpoint serving `method` on `route`.
pub fn endpoint<'r>(route: Route<'r>, method: &Method) -> Endpoint<'r> {
    use Endpoint::*;
    let not_allowed = |allow| MethodNotAllowed { allow };
    match route {
        Route::Base => match *method {
            Method::GET | Method::HEAD => ApiVersion,
            _ => not_allowed("GET, HEAD"),
        },
        Route::Catalog => match *method {
            Method::GET => Catalog,
            _ => not_allowed("GET"),
        },
        Route::Tags(name) => match *method {
            Method::GET => Tags(name),
            _ => not_allowed("GET"),
        },
        Route::Referrers(name, digest) => match *method {
            Method::GET => Referrers(name, digest),
            _ => not_allowed("GET"),
        },
        Route::Blob(name, digest) => match *method {
            Method::GET | Method::HEAD => GetBlob(name, digest),
            Method::DELETE => DeleteBlob(name, digest),
            _ => not_allowed("GET, HEAD, DELETE"),
        },
        Route::UploadStart(name) => match *method {
            Method::POST => StartUpload(name),
            _ => not_allowed("POST"),
        },
        Route::Upload(name, id) => match *method {
            Method::GET => UploadStatus(name, id),
            Method::PATCH => PatchUpload(name, id),
            Method::PUT => FinishUpload(name, id),
            Method::DELETE => CancelUpload(name, id),
            _ => not_allowed("GET, PATCH, PUT, DELETE"),
        },
        Route::Manifest(name, reference) => match *method {
            Method::GET | Method::HEAD => GetManifest(name, reference),
            Method::PUT => PutManifest(name, reference),
            Method::DELETE => DeleteManifest(name, reference),
            _ => not_allowed("GET, HEAD, PUT, DELETE"),
        },
        Route::NotFound => NotFound,
    }
}

/// The algorithm of `text` if it is a valid digest (an invalid one is the handler's to report).
fn algorithm_of(text: &str) -> Option<Algorithm> {
    Digest::parse(text).ok().map(|d| d.algorithm())
}

/// The algorithm of a manifest reference that is a valid digest.
fn reference_algorithm(text: &str) -> Option<Algorithm> {
    match Reference::parse(text) {
        Ok(Reference::Digest(d)) => Some(d.algorithm()),
        Ok(Reference::Tag(_)) | Err(_) => None,
    }
}

impl Endpoint<'_> {
    /// What the request performs, as the registry policy sees it: its effect and every digest
    /// algorithm it names (path digest, `?digest=`, `?mount=`, `?digest-algorithm=`, manifest
    /// reference) or will hash with (sha256 when it names none).
    pub fn operation(&self, method: &Method, query: &Query) -> Operation {
        let with = |op: Operation, alg: Option<Algorithm>| match alg {
            Some(a) => op.naming(a),
            None => op,
        };
        let (read, write, delete) =
            (Operation::new(Effect::Read), Operation::new(Effect::Write), Operation::new(Effect::Delete));
        match *self {
            Endpoint::ApiVersion | Endpoint::Catalog | Endpoint::Tags(_) | Endpoint::UploadStatus(..) => read,
            Endpoint::Referrers(_, digest) | Endpoint::GetBlob(_, digest) => with(read, algorithm_of(digest)),
            Endpoint::DeleteBlob(_, digest) => with(delete, algorithm_of(digest)),
            Endpoint::StartUpload(_) => {
                // A mount names its digest; the upload that follows (or replaces) it hashes
                // with the algorithm of `digest`, else of `digest-algorithm`, else sha256.
                let mounted = with(write, query.get("mount").and_then(algorithm_of));
                let hashed = match (query.get("digest"), query.get("digest-algorithm")) {
                    (Some(digest), _) => algorithm_of(digest),
                    (None, Some(name)) => Algorithm::from_name(name).ok(),
                    (None, None) => Some(Algorithm::Sha256),
                };
                with(mounted, hashed)
            }
            // The session's algorithm was checked when it started.
            Endpoint::PatchUpload(..) | Endpoint::CancelUpload(..) => write,
            Endpoint::FinishUpload(..) => with(write, query.get("digest").and_then(algorithm_of)),
            Endpoint::GetManifest(_, reference) => with(read, reference_algorithm(reference)),
            Endpoint::PutManifest(_, reference) => match Reference::parse(reference) {
                Ok(Reference::Digest(d)) => write.naming(d.algorithm()),
                // Pushed by tag, a manifest is stored under its sha256 digest.
                Ok(Reference::Tag(_)) => write.naming(Algorithm::Sha256),
                Err(_) => write,
            },
            Endpoint::DeleteManifest(_, reference) => with(delete, reference_algorithm(reference)),
            Endpoint::MethodNotAllowed { .. } => match *method {
                // Asking to change something: refused as a write in read-only mode.
                Method::POST | Method::PUT | Method::PATCH | Method::DELETE => write,
                _ => read,
            },
            Endpoint::NotFound => read,
        }
    }
}

/// Serves a request for `route` by `identity`: authorization, the registry policy, the handler.
pub async fn dispatch(
    state: &State,
    settings: &Arc<Settings>,
    route: Route<'_>,
    req: Request<Incoming>,
    identity: Identity,
) -> HttpResult {
    let (parts, body) = req.into_parts();
    authorize(state, &settings.access, &route, &parts.method, &identity)?;
    let endpoint = endpoint(route, &parts.method);
    let query = Query::parse(parts.uri.query());
    settings.policy.check(&endpoint.operation(&parts.method, &query))?;
    let ctx = Ctx {
        state,
        settings: settings.clone(),
        identity,
        method: parts.method,
        headers: parts.headers,
        authority: parts.uri.authority().map(|a| a.to_string()),
        query,
    };
    serve(endpoint, &ctx, body).await
}

/// Runs the endpoint's handler.
async fn serve(endpoint: Endpoint<'_>, ctx: &Ctx<'_>, body: Incoming) -> HttpResult {
    match endpoint {
        Endpoint::ApiVersion => handlers::api_version(ctx),
        Endpoint::Catalog => listing::catalog(ctx).await,
        Endpoint::Tags(name) => listing::tags(ctx, name).await,
        Endpoint::Referrers(name, digest) => listing::referrers(ctx, name, digest).await,
        Endpoint::GetBlob(name, digest) => blobs::get(ctx, name, digest).await,
        Endpoint::DeleteBlob(name, digest) => blobs::delete(ctx, name, digest).await,
        Endpoint::StartUpload(name) => uploads::start(ctx, name, body).await,
        Endpoint::PatchUpload(name, id) => uploads::patch(ctx, name, id, body).await,
        Endpoint::FinishUpload(name, id) => uploads::put(ctx, name, id, body).await,
        Endpoint::UploadStatus(name, id) => uploads::status(ctx, name, id).await,
        Endpoint::CancelUpload(name, id) => uploads::cancel(ctx, name, id).await,
        Endpoint::GetManifest(name, reference) => manifests::get(ctx, name, reference).await,
        Endpoint::PutManifest(name, reference) => manifests::put(ctx, name, reference, body).await,
        Endpoint::DeleteManifest(name, reference) => manifests::delete(ctx, name, reference).await,
        Endpoint::MethodNotAllowed { allow } => {
            Err(HttpError::new(ErrorCode::Unsupported, format!("method {} is not allowed here", ctx.method))
                .header(http::header::ALLOW, allow))
        }
        Endpoint::NotFound => Err(not_found()),
    }
}

/// A path that is not part of the API: 404 with the spec's `UNSUPPORTED` code.
fn not_found() -> HttpError {
    HttpError::new(ErrorCode::Unsupported, "no such endpoint in the OCI distribution API").status(404)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA256: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const SHA512: &str = "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";
    const BLAKE3: &str = "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

    const METHODS: [Method; 7] =
        [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS];

    fn op(effect: Effect, algorithms: &[Algorithm]) -> Operation {
        Operation { effect, algorithms: algorithms.iter().copied().collect() }
    }

    /// Every route with every method: the endpoint, the `Allow` list of the others, and the
    /// operation without a query.
    #[test]
    fn every_route_and_method() {
        use Algorithm::*;
        use Effect::*;
        use Endpoint::*;
        type Served = Vec<(Method, Endpoint<'static>, Operation)>;
        let cases: Vec<(Route<'static>, Served)> = vec![
            (Route::Base, vec![(Method::GET, ApiVersion, op(Read, &[])), (Method::HEAD, ApiVersion, op(Read, &[]))]),
            (Route::Catalog, vec![(Method::GET, Catalog, op(Read, &[]))]),
            (Route::Tags("r"), vec![(Method::GET, Tags("r"), op(Read, &[]))]),
            (Route::Referrers("r", BLAKE3), vec![(Method::GET, Referrers("r", BLAKE3), op(Read, &[Blake3]))]),
            (
                Route::Blob("r", SHA512),
                vec![
                    (Method::GET, GetBlob("r", SHA512), op(Read, &[Sha512])),
                    (Method::HEAD, GetBlob("r", SHA512), op(Read, &[Sha512])),
                    (Method::DELETE, DeleteBlob("r", SHA512), op(Delete, &[Sha512])),
                ],
            ),
            // Without a query, an upload hashes with sha256.
            (Route::UploadStart("r"), vec![(Method::POST, StartUpload("r"), op(Write, &[Sha256]))]),
            (
                Route::Upload("r", "id"),
                vec![
                    (Method::GET, UploadStatus("r", "id"), op(Read, &[])),
                    (Method::PATCH, PatchUpload("r", "id"), op(Write, &[])),
                    // The missing `digest` is the handler's to report.
                    (Method::PUT, FinishUpload("r", "id"), op(Write, &[])),
                    (Method::DELETE, CancelUpload("r", "id"), op(Write, &[])),
                ],
            ),
            (
                Route::Manifest("r", BLAKE3),
                vec![
                    (Method::GET, GetManifest("r", BLAKE3), op(Read, &[Blake3])),
                    (Method::HEAD, GetManifest("r", BLAKE3), op(Read, &[Blake3])),
                    (Method::PUT, PutManifest("r", BLAKE3), op(Write, &[Blake3])),
                    (Method::DELETE, DeleteManifest("r", BLAKE3), op(Delete, &[Blake3])),
                ],
            ),
        ];
        let empty = Query::default();
        for (route, served) in &cases {
            let allow = served.iter().map(|(m, ..)| m.as_str()).collect::<Vec<_>>().join(", ");
            for method in &METHODS {
                let got = endpoint(*route, method);
                let got_op = got.operation(method, &empty);
                match served.iter().find(|(m, ..)| m == method) {
                    Some((_, want, want_op)) => {
                        assert_eq!(&got, want, "{method} {route:?}");
                        assert_eq!(got_op, *want_op, "{method} {route:?}");
                    }
                    None => {
                        assert_eq!(got, MethodNotAllowed { allow: leak(&allow) }, "{method} {route:?}");
                        let writes = [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(method);
                        assert_eq!(got_op, op(if writes { Write } else { Read }, &[]), "{method} {route:?}");
                    }
                }
            }
        }
        for method in &METHODS {
            let got = endpoint(Route::NotFound, method);
            assert_eq!(got, NotFound, "{method}");
            assert_eq!(got.operation(method, &empty), op(Read, &[]), "{method} outside the API");
        }
    }

    /// `MethodNotAllowed` holds a `&'static str`; comparing needs one.
    fn leak(s: &str) -> &'static str {
        Box::leak(s.to_string().into_boxed_str())
    }

    fn operation_of(route: Route<'_>, method: Method, query: &str) -> Operation {
        endpoint(route, &method).operation(&method, &Query::parse(Some(query)))
    }

    #[test]
    fn digests_named_by_paths() {
        use Algorithm::*;
        use Effect::*;
        for (digest, algs) in [(SHA256, &[Sha256][..]), (SHA512, &[Sha512]), (BLAKE3, &[Blake3])] {
            assert_eq!(operation_of(Route::Blob("r", digest), Method::GET, ""), op(Read, algs));
            assert_eq!(operation_of(Route::Blob("r", digest), Method::DELETE, ""), op(Delete, algs));
            assert_eq!(operation_of(Route::Referrers("r", digest), Method::GET, ""), op(Read, algs));
            // Manifests by digest name it too (a blake3 reference used to skip the check).
            assert_eq!(operation_of(Route::Manifest("r", digest), Method::GET, ""), op(Read, algs));
            assert_eq!(operation_of(Route::Manifest("r", digest), Method::HEAD, ""), op(Read, algs));
            assert_eq!(operation_of(Route::Manifest("r", digest), Method::PUT, ""), op(Write, algs));
            assert_eq!(operation_of(Route::Manifest("r", digest), Method::DELETE, ""), op(Delete, algs));
        }
        // By tag: reads and deletions name nothing; a push stores the manifest under sha256.
        assert_eq!(operation_of(Route::Manifest("r", "v1"), Method::GET, ""), op(Read, &[]));
        assert_eq!(operation_of(Route::Manifest("r", "v1"), Method::DELETE, ""), op(Delete, &[]));
        assert_eq!(operation_of(Route::Manifest("r", "v1"), Method::PUT, ""), op(Write, &[Sha256]));
        // Malformed digests and references name nothing: the handler refuses them.
        for bad in ["blake3:xyz", "md5:00", "sha256:", "bad tag!"] {
            assert_eq!(operation_of(Route::Blob("r", bad), Method::GET, ""), op(Read, &[]), "{bad}");
            assert_eq!(operation_of(Route::Manifest("r", bad), Method::PUT, ""), op(Write, &[]), "{bad}");
            assert_eq!(operation_of(Route::Manifest("r", bad), Method::DELETE, ""), op(Delete, &[]), "{bad}");
        }
    }

    #[test]
    fn digests_named_by_queries() {
        use Algorithm::*;
        use Effect::*;
        let start = |q: &str| operation_of(Route::UploadStart("r"), Method::POST, q);
        assert_eq!(start(""), op(Write, &[Sha256]));
        assert_eq!(start(&format!("digest={BLAKE3}")), op(Write, &[Blake3]));
        assert_eq!(start("digest-algorithm=blake3"), op(Write, &[Blake3]));
        assert_eq!(start("digest-algorithm=sha512"), op(Write, &[Sha512]));
        // `digest` decides the algorithm; `digest-algorithm` is then not used.
        assert_eq!(start(&format!("digest={SHA512}&digest-algorithm=blake3")), op(Write, &[Sha512]));
        assert_eq!(start(&format!("mount={BLAKE3}&from=other")), op(Write, &[Sha256, Blake3]));
        assert_eq!(start(&format!("mount={SHA512}&from=o&digest={BLAKE3}")), op(Write, &[Sha512, Blake3]));
        assert_eq!(start(&format!("mount={SHA256}&digest-algorithm=sha512")), op(Write, &[Sha256, Sha512]));
        // Invalid values are the handler's to refuse.
        assert_eq!(start("digest=blake3:zz"), op(Write, &[]));
        assert_eq!(start("digest-algorithm=md5"), op(Write, &[]));
        assert_eq!(start("mount=nope"), op(Write, &[Sha256]));
        let finish = |q: &str| operation_of(Route::Upload("r", "id"), Method::PUT, q);
        assert_eq!(finish(&format!("digest={BLAKE3}")), op(Write, &[Blake3]));
        assert_eq!(finish(&format!("digest={SHA512}")), op(Write, &[Sha512]));
        assert_eq!(finish(&format!("digest={}", BLAKE3.replace(':', "%3A"))), op(Write, &[Blake3]), "decoded first");
        // Other endpoints ignore these parameters.
        let q = format!("digest={BLAKE3}&mount={BLAKE3}&digest-algorithm=blake3");
        assert_eq!(operation_of(Route::Upload("r", "id"), Method::PATCH, &q), op(Write, &[]));
        assert_eq!(operation_of(Route::Upload("r", "id"), Method::GET, &q), op(Read, &[]));
        assert_eq!(operation_of(Route::Tags("r"), Method::GET, &q), op(Read, &[]));
        assert_eq!(operation_of(Route::Blob("r", SHA256), Method::GET, &q), op(Read, &[Sha256]));
    }
}
