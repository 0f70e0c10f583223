//! Maps a request path (after `http.prefix`) to a [`Route`]. Repository names may contain `/`
//! and even components such as `blobs` or `manifests`, so routes are recognised from the end
//! of the path. Names and digests are validated by the handlers, not here.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(&'a str),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(&'a str, &'a str),
    /// `/v2/<name>/blobs/<digest>`
    Blob(&'a str, &'a str),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(&'a str),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(&'a str, &'a str),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(&'a str, &'a str),
    NotFound,
}

/// The route of a request path under `http.prefix` (`""` for none): `NotFound` outside it.
pub fn route_under<'p>(prefix: &str, path: &'p str) -> Route<'p> {
    match prefix {
        "" => route(path),
        p => match path.strip_prefix(p) {
            Some(rest) if rest.starts_with('/') => route(rest),
            _ => Route::NotFound,
        },
    }
}

pub fn route(path: &str) -> Route<'_> {
    let Some(rest) = path.strip_prefix("/v2") else { return Route::NotFound };
    if rest.is_empty() || rest == "/" {
        return Route::Base;
    }
    let Some(rest) = rest.strip_prefix('/') else { return Route::NotFound };
    if rest == "_catalog" {
        return Route::Catalog;
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Route::Tags(name);
    }
    if let Some(name) = rest.strip_suffix("/blobs/uploads/").or_else(|| rest.strip_suffix("/blobs/uploads")) {
        return Route::UploadStart(name);
    }
    let Some((head, last)) = rest.rsplit_once('/') else { return Route::NotFound };
    let Some((name, kind)) = head.rsplit_once('/') else { return Route::NotFound };
    match kind {
        "manifests" => Route::Manifest(name, last),
        // `<name>/blobs/uploads` was taken above, so anything else after `blobs/` is meant as a
        // digest (a malformed one is the handler's DIGEST_INVALID, not a missing endpoint).
        "blobs" => Route::Blob(name, last),
        "uploads" => match name.strip_suffix("/blobs") {
            Some(name) => Route::Upload(name, last),
            None => Route::NotFound,
        },
        "referrers" => Route::Referrers(name, last),
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/v2/"), Route::Base);
        assert_eq!(route("/v2"), Route::Base);
        assert_eq!(route("/v2/_catalog"), Route::Catalog);
        assert_eq!(route("/v2/a/b/tags/list"), Route::Tags("a/b"));
        assert_eq!(route("/v2/a/manifests/latest"), Route::Manifest("a", "latest"));
        assert_eq!(route("/v2/a/manifests/manifests/x"), Route::Manifest("a/manifests", "x"));
        assert_eq!(route("/v2/a/blobs/sha256:ab"), Route::Blob("a", "sha256:ab"));
        assert_eq!(route("/v2/a/blobs/uploads/"), Route::UploadStart("a"));
        assert_eq!(route("/v2/a/blobs/uploads"), Route::UploadStart("a"));
        assert_eq!(route("/v2/a/b/blobs/uploads/123e4567"), Route::Upload("a/b", "123e4567"));
        assert_eq!(route("/v2/a/referrers/sha256:ab"), Route::Referrers("a", "sha256:ab"));
        assert_eq!(route("/v2/a/blobs/uploads/blobs/sha256:ab"), Route::Blob("a/blobs/uploads", "sha256:ab"));
        assert_eq!(route("/v3/"), Route::NotFound);
        assert_eq!(route("/v2/a"), Route::NotFound);
        assert_eq!(route("/v2/a/foo/bar"), Route::NotFound);
        assert_eq!(route("/v2/a/blobs/sha256abc"), Route::Blob("a", "sha256abc"));
    }

    #[test]
    fn routes_under_a_prefix() {
        assert_eq!(route_under("", "/v2/a/tags/list"), Route::Tags("a"));
        assert_eq!(route_under("/reg", "/reg/v2/a/tags/list"), Route::Tags("a"));
        assert_eq!(route_under("/reg", "/reg/v2/"), Route::Base);
        assert_eq!(route_under("/reg", "/v2/a/tags/list"), Route::NotFound);
        assert_eq!(route_under("/reg", "/regv2/"), Route::NotFound);
        assert_eq!(route_under("/reg", "/reg"), Route::NotFound);
    }
}
