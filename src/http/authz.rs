//! Authorization: what each route requires of the caller, checked against the access rules.
//!
//! Refusals are 401 for anonymous callers (so that clients send credentials) and 403 (`DENIED`)
//! for authenticated ones. With authentication off everything is allowed.

use http::Method;

use super::authn::unauthorized;
use super::error::HttpError;
use super::router::Route;
use super::settings::State;
use crate::core::access::{AccessPolicy, Action, Identity};
use crate::core::ErrorCode;

/// What a route requires of the caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Requirement<'r> {
    /// Nothing: not about the registry's content.
    Nothing,
    /// Being authenticated (`/v2/`, which clients use to check their credentials).
    Authenticated,
    /// Being allowed to pull from some repository (the catalog lists only those).
    PullSomewhere,
    /// Being allowed to do the action to the named repository.
    Repository(Action, &'r str),
}

/// What `method` on `route` requires; methods a route does not serve require what writing
/// would (they are answered 405 only once the caller is known to be allowed).
pub fn requirement<'r>(route: &Route<'r>, method: &Method) -> Requirement<'r> {
    let reads = *method == Method::GET || *method == Method::HEAD;
    match *route {
        Route::Base => Requirement::Authenticated,
        Route::Catalog => Requirement::PullSomewhere,
        Route::Tags(n) | Route::Referrers(n, _) => Requirement::Repository(Action::Pull, n),
        Route::Blob(n, _) | Route::Manifest(n, _) if reads => Requirement::Repository(Action::Pull, n),
        Route::Blob(n, _) | Route::Manifest(n, _) if *method == Method::DELETE => {
            Requirement::Repository(Action::Delete, n)
        }
        Route::Blob(n, _) | Route::Manifest(n, _) => Requirement::Repository(Action::Push, n),
        Route::UploadStart(n) | Route::Upload(n, _) => Requirement::Repository(Action::Push, n),
        Route::NotFound => Requirement::Nothing,
    }
}

/// Checks that `identity` may send `method` to `route` under the access rules `access`.
pub fn authorize(
    state: &State,
    access: &AccessPolicy,
    route: &Route<'_>,
    method: &Method,
    identity: &Identity,
) -> Result<(), HttpError> {
    if state.auth.is_none() {
        return Ok(());
    }
    let deny = |what: &str| match identity {
        Identity::Anonymous => unauthorized(state, &format!("authentication required to {what}")),
        Identity::User(_) => HttpError::new(ErrorCode::Denied, format!("not allowed to {what}")),
    };
    match requirement(route, method) {
        Requirement::Nothing => Ok(()),
        Requirement::Authenticated => match identity {
            Identity::Anonymous => Err(unauthorized(state, "authentication required")),
            Identity::User(_) => Ok(()),
        },
        Requirement::PullSomewhere if access.may_pull_somewhere(identity) => Ok(()),
        Requirement::PullSomewhere => Err(deny("list repositories")),
        Requirement::Repository(action, name) if access.allows(identity, action, name) => Ok(()),
        Requirement::Repository(action, _) => {
            let verb = match action {
                Action::Pull => "pull from",
                Action::Push => "push to",
                Action::Delete => "delete from",
            };
            Err(deny(&format!("{verb} this repository")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_and_method() {
        use Requirement::*;
        let methods =
            [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS];
        let each = |route: Route<'static>, f: &dyn Fn(&Method) -> Requirement<'static>| {
            for m in &methods {
                assert_eq!(requirement(&route, m), f(m), "{m} {route:?}");
            }
        };
        let read_push_delete = |m: &Method| match *m {
            Method::GET | Method::HEAD => Repository(Action::Pull, "r"),
            Method::DELETE => Repository(Action::Delete, "r"),
            _ => Repository(Action::Push, "r"),
        };
        each(Route::Base, &|_| Authenticated);
        each(Route::Catalog, &|_| PullSomewhere);
        each(Route::Tags("r"), &|_| Repository(Action::Pull, "r"));
        each(Route::Referrers("r", "sha256:x"), &|_| Repository(Action::Pull, "r"));
        each(Route::Blob("r", "sha256:x"), &read_push_delete);
        each(Route::Manifest("r", "v1"), &read_push_delete);
        each(Route::UploadStart("r"), &|_| Repository(Action::Push, "r"));
        each(Route::Upload("r", "id"), &|_| Repository(Action::Push, "r"));
        each(Route::NotFound, &|_| Nothing);
    }
}
