//! In-process tests of the commit protocol, step by step.
//!
//! Each scenario is one store operation on a prepared data directory. It runs once with a
//! recording fault plan (see `disk::faults`) to learn its steps — every create, write, fsync,
//! directory fsync, rename, link, unlink, chmod, truncate and redb commit — and to check their
//! order for durability. Then, for every step N and every fault (a simulated crash, EIO,
//! ENOSPC), it runs again on a fresh copy with step N failing:
//! - after a crash the store is reopened (start-up sweep) and must be consistent and clean
//!   (`Store::check`), show the operation wholly done or not at all, keep everything that was
//!   acknowledged before, and (scenario by scenario) let the client finish what it started;
//! - after an I/O error the *running* store must show no broken invariant and the operation
//!   wholly done or not at all; the same operation retried must then succeed, and a reopened
//!   store must be clean.
//!
//! The real `kill -9` tests against the binary stay in the integration suite.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use redb::ReadableTable;

use super::disk::faults::{Fault, FaultPlan};
use super::disk::{Disk, Step};
use super::meta::{MANIFESTS, REFERRERS, REPO_BLOBS, TAGS};
use super::{Problem, Result, SessionClaim, Store, StoreError, UploadSession};
use crate::core::{Algorithm, Digest, Manifest, RepoName, Tag};

const EIO: i32 = 5;
const ENOSPC: i32 = 28;

fn repo(name: &str) -> RepoName {
    RepoName::parse(name).unwrap()
}

/// Deterministic bytes (`len` of them, varying with `seed`).
fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn sha256(bytes: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, bytes)
}

fn open(dir: &Path, plan: Option<Arc<FaultPlan>>) -> Result<Store> {
    Store::open_on(dir, plan.map(Disk::with_faults).unwrap_or_default())
}

fn claim(session: &UploadSession) -> SessionClaim {
    session.try_claim().expect("session is free")
}

/// Appends `bytes` as one chunk (`declared`: its Content-Range length, if any).
fn append(store: &Store, claim: SessionClaim, bytes: &[u8], declared: Option<u64>) -> (SessionClaim, Result<u64>) {
    let mut append = match store.begin_append(claim, None, declared, Some(bytes.len() as u64)) {
        Ok(append) => append,
        Err((claim, e)) => return (claim, Err(e)),
    };
    // Two batches, so that a chunk is more than one write.
    let (a, b) = bytes.split_at(bytes.len() / 2);
    append.write(vec![Bytes::copy_from_slice(a)]);
    append.write(vec![Bytes::copy_from_slice(b)]);
    append.finish()
}

/// A whole push: session, one chunk, commit.
fn push(store: &Store, to: &RepoName, bytes: &[u8]) -> Result<Digest> {
    let session = store.create_upload(to, Algorithm::Sha256)?;
    let (c, appended) = append(store, claim(&session), bytes, None);
    appended?;
    let digest = sha256(bytes);
    store.commit_upload(c, &digest)?;
    Ok(digest)
}

fn image_manifest(config: &[u8], layer: &[u8], subject: Option<(&Digest, usize)>) -> Vec<u8> {
    let subject = subject
        .map(|(d, size)| {
            format!(r#","subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":{size}}}"#)
        })
        .unwrap_or_default();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]{subject}}}"#,
        sha256(config),
        config.len(),
        sha256(layer),
        layer.len()
    )
    .into_bytes()
}

fn put_manifest(store: &Store, to: &RepoName, body: &[u8], tag: Option<&str>) -> Result<Digest> {
    let manifest = Manifest::parse(Some("application/vnd.oci.image.manifest.v1+json"), body).unwrap();
    let digest = sha256(body);
    let tags: Vec<Tag> = tag.into_iter().map(|t| Tag::parse(t).unwrap()).collect();
    store.put_manifest(to, &digest, body, &manifest, &tags)?;
    Ok(digest)
}

/// What clients can see: blobs (with a hash of the content read back), manifests, tags,
/// referrer edges. Upload sessions are checked by the scenarios that have them.
fn observe(store: &Store) -> BTreeMap<String, String> {
    let mut seen = BTreeMap::new();
    let txn = store.db.begin_read().unwrap();
    for e in txn.open_table(REPO_BLOBS).unwrap().iter().unwrap() {
        let (k, _) = e.unwrap();
        let (r, d) = k.value();
        let content = match store.open_blob(&repo(r), &Digest::parse(d).unwrap()) {
            Ok(blob) => {
                let mut bytes = vec![0u8; blob.size() as usize];
                let n = blob.read_at(&mut bytes, 0).unwrap();
                assert_eq!(n, bytes.len(), "a blob file holds its recorded size");
                sha256(&bytes).to_string()
            }
            Err(e) => format!("unreadable: {e}"),
        };
        seen.insert(format!("blob {r} {d}"), content);
    }
    for e in txn.open_table(MANIFESTS).unwrap().iter().unwrap() {
        let (k, _) = e.unwrap();
        let (r, d) = k.value();
        seen.insert(format!("manifest {r} {d}"), String::new());
    }
    for e in txn.open_table(TAGS).unwrap().iter().unwrap() {
        let (k, v) = e.unwrap();
        let (r, t) = k.value();
        seen.insert(format!("tag {r} {t}"), v.value().to_string());
    }
    for e in txn.open_table(REFERRERS).unwrap().iter().unwrap() {
        let (k, _) = e.unwrap();
        let (r, s, d) = k.value();
        seen.insert(format!("referrer {r} {s} {d}"), String::new());
    }
    seen
}

/// Findings that are more than garbage or a stale `index.json`.
fn broken(problems: &[Problem]) -> Vec<&Problem> {
    problems.iter().filter(|p| p.is_broken()).collect()
}

/// Durability order of a fault-free run: a file is fsynced before it is linked or renamed
/// into place, and the directory of every new name is fsynced before the next metadata commit
/// (or, if none follows, before the operation ends).
fn assert_durable_order(name: &str, trace: &[Step]) {
    let synced_dir_after = |i: usize, dir: &Path| {
        let until = trace[i..].iter().position(|s| *s == Step::Commit).map_or(trace.len(), |p| i + p);
        trace[i..until].iter().any(|s| matches!(s, Step::FsyncDir(d) if d == dir))
    };
    for (i, step) in trace.iter().enumerate() {
        let (src, dst) = match step {
            Step::Link(src, dst) | Step::Rename(src, dst) => (src, dst),
            _ => continue,
        };
        let created_here = trace[..i].iter().any(|s| matches!(s, Step::Create(p) if p == src));
        if created_here {
            assert!(
                trace[..i].iter().any(|s| matches!(s, Step::Fsync(p) if p == src)),
                "{name}: {step:?} before {src:?} was fsynced\n{trace:#?}"
            );
        }
        let dir = dst.parent().unwrap();
        assert!(synced_dir_after(i, dir), "{name}: {step:?} not followed by an fsync of {dir:?}\n{trace:#?}");
    }
}

/// Runs `op` after `setup` with every step failing in turn (see the module doc). `finish` is
/// called on a reopened store after a crash that left the operation undone, with the fixture,
/// and must complete what the client started (proving acknowledged data intact); it returns
/// whether it did anything (else the operation must be retried as a whole).
/// Returns the number of steps the operation has.
fn every_step<F>(
    name: &str,
    setup: impl Fn(&Store) -> F,
    op: impl Fn(&Store, &F) -> Result<()>,
    finish: impl Fn(&Store, &F) -> bool,
) -> usize {
    // Reference run.
    let dir = tempfile::tempdir().unwrap();
    let plan = Arc::new(FaultPlan::record());
    let store = open(dir.path(), Some(plan.clone())).unwrap();
    let fixture = setup(&store);
    let before = observe(&store);
    plan.arm();
    op(&store, &fixture).unwrap_or_else(|e| panic!("{name}: fault-free run failed: {e}"));
    let after = observe(&store);
    assert_ne!(before, after, "{name}: the operation changes nothing visible");
    let steps = plan.steps();
    assert!(steps > 0, "{name}: no step recorded");
    assert_durable_order(name, &plan.trace());
    assert_eq!(store.check(true).unwrap(), vec![], "{name}: fault-free run");
    drop(store);
    eprintln!("{name}: {steps} steps x 3 faults");

    for n in 1..=steps {
        for fault in [Fault::Crash, Fault::Error(EIO), Fault::Error(ENOSPC)] {
            let what = format!("{name}: {fault:?} at step {n} of {steps}");
            let dir = tempfile::tempdir().unwrap();
            let plan = Arc::new(FaultPlan::new(n, fault));
            let store = open(dir.path(), Some(plan.clone())).unwrap();
            let fixture = setup(&store);
            assert_eq!(observe(&store), before, "{what}: setup differs from the reference run");
            plan.arm();
            let result = op(&store, &fixture);
            let step = plan.trace().get(n - 1).cloned();
            match fault {
                Fault::Crash => {
                    assert!(plan.crashed(), "{what}: the run took fewer steps than the reference");
                    drop(store);
                    let store = open(dir.path(), None).unwrap_or_else(|e| panic!("{what} ({step:?}): reopen: {e}"));
                    assert_eq!(store.check(true).unwrap(), vec![], "{what} ({step:?}): after reopening");
                    let seen = observe(&store);
                    if result.is_ok() {
                        assert_eq!(seen, after, "{what} ({step:?}): acknowledged but not visible");
                    } else if seen != after {
                        assert_eq!(seen, before, "{what} ({step:?}): partly visible");
                        if !finish(&store, &fixture) {
                            op(&store, &fixture).unwrap_or_else(|e| panic!("{what} ({step:?}): retry: {e}"));
                        }
                        assert_eq!(observe(&store), after, "{what} ({step:?}): not finished after the crash");
                    }
                    assert_eq!(store.check(true).unwrap(), vec![], "{what} ({step:?}): at the end");
                }
                Fault::Error(_) => {
                    let live = store.check(true).unwrap();
                    assert_eq!(broken(&live), Vec::<&Problem>::new(), "{what} ({step:?}): running store ({result:?})");
                    let seen = observe(&store);
                    assert!(seen == before || seen == after, "{what} ({step:?}): partly visible: {seen:#?}");
                    if result.is_ok() {
                        assert_eq!(seen, after, "{what} ({step:?}): acknowledged but not visible");
                    } else {
                        // Heals without a restart: the client retries and the operation works now.
                        op(&store, &fixture).unwrap_or_else(|e| panic!("{what} ({step:?}): retry: {e}"));
                        assert_eq!(observe(&store), after, "{what} ({step:?}): retry");
                        let live = store.check(true).unwrap();
                        assert_eq!(broken(&live), Vec::<&Problem>::new(), "{what} ({step:?}): after the retry");
                    }
                    drop(store);
                    let store = open(dir.path(), None).unwrap();
                    assert_eq!(store.check(true).unwrap(), vec![], "{what} ({step:?}): after reopening");
                    assert_eq!(observe(&store), after, "{what} ({step:?}): after reopening");
                }
            }
        }
    }
    steps
}

/// Nothing to finish: the operation is retried as a whole.
fn retry(_: &Store, _: &impl Sized) -> bool {
    false
}

#[test]
fn monolithic_push_of_a_new_repository() {
    let steps = every_step("push", |_| (), |s, ()| push(s, &repo("a/b"), &data(5000, 1)).map(drop), retry);
    assert!(steps >= 20, "{steps} steps");
}

#[test]
fn push_of_a_blob_another_repository_has() {
    let bytes = data(3000, 2);
    every_step(
        "push (deduplicated)",
        |s| push(s, &repo("first"), &bytes).unwrap(),
        |s, _| push(s, &repo("second"), &bytes).map(drop),
        retry,
    );
}

/// A chunked upload: two chunks acknowledged before, the third and the commit under test. After
/// a crash the session must still hold the acknowledged bytes, so that the client can resume.
#[test]
fn chunked_upload_commit_keeps_acknowledged_chunks() {
    let bytes = data(9000, 3);
    let digest = sha256(&bytes);
    every_step(
        "chunked commit",
        |s| {
            let session = s.create_upload(&repo("r"), Algorithm::Sha256).unwrap();
            let (c, appended) = append(s, claim(&session), &bytes[..3000], Some(3000));
            appended.unwrap();
            let (c, appended) = append(s, c, &bytes[3000..6000], Some(3000));
            appended.unwrap();
            c.id().to_string()
        },
        |s, id| {
            let c = claim(&s.upload(&repo("r"), id)?);
            let offset = c.offset();
            let (c, appended) = append(s, c, &bytes[offset as usize..], None);
            appended?;
            s.commit_upload(c, &digest)
        },
        |s, id| {
            // The client asks where the upload stands, sends the rest, commits.
            let session = s.upload(&repo("r"), id).expect("the session survives the crash");
            let c = claim(&session);
            let offset = c.offset() as usize;
            assert!(offset >= 6000, "acknowledged chunks lost: offset {offset}");
            let (c, appended) = append(s, c, &bytes[offset..], None);
            appended.unwrap();
            s.commit_upload(c, &digest).unwrap();
            true
        },
    );
}

/// A chunk that arrives shorter than its Content-Range is cut back off, whatever fails.
#[test]
fn short_chunk_is_rolled_back() {
    let bytes = data(4000, 4);
    every_step(
        "short chunk",
        |s| {
            push(s, &repo("other"), &data(10, 9)).unwrap();
            let session = s.create_upload(&repo("r"), Algorithm::Sha256).unwrap();
            let (c, appended) = append(s, claim(&session), &bytes[..1000], Some(1000));
            appended.unwrap();
            c.id().to_string()
        },
        |s, id| {
            // As a client does: ask where the upload stands, send a chunk from there (it arrives
            // short), then the rest from where the upload stands after that.
            let c = claim(&s.upload(&repo("r"), id)?);
            let at = c.offset();
            let short = &bytes[at as usize..(at as usize + 1000).min(bytes.len())];
            let (c, appended) = append(s, c, short, Some(3000));
            match appended {
                Err(StoreError::ChunkLength { received, declared: 3000 }) => assert_eq!(received, short.len() as u64),
                Err(e) => return Err(e),
                Ok(n) => panic!("a short chunk was accepted: offset {n}"),
            }
            assert_eq!(c.offset(), at, "rolled back to the acknowledged length");
            let (c, appended) = append(s, c, &bytes[at as usize..], None);
            appended?;
            s.commit_upload(c, &sha256(&bytes))
        },
        |s, id| {
            let c = claim(&s.upload(&repo("r"), id).expect("the session survives"));
            let offset = c.offset() as usize;
            assert!(offset >= 1000, "acknowledged chunk lost: offset {offset}");
            // After a crash the file may hold any prefix of what was sent; resume from it.
            let (c, appended) = append(s, c, &bytes[offset..], None);
            appended.unwrap();
            s.commit_upload(c, &sha256(&bytes)).unwrap();
            true
        },
    );
}

#[test]
fn manifest_with_tag_and_subject() {
    let (config, layer) = (data(100, 5), data(2000, 6));
    let subject = image_manifest(&config, &layer, None);
    let referrer = image_manifest(&config, &layer, Some((&sha256(&subject), subject.len())));
    every_step(
        "manifest put",
        |s| {
            let r = repo("app");
            push(s, &r, &config).unwrap();
            push(s, &r, &layer).unwrap();
            put_manifest(s, &r, &subject, Some("v1")).unwrap();
        },
        |s, ()| put_manifest(s, &repo("app"), &referrer, Some("sbom")).map(drop),
        retry,
    );
}

#[test]
fn first_manifest_of_a_repository() {
    let (config, layer) = (data(50, 7), data(700, 8));
    let manifest = image_manifest(&config, &layer, None);
    every_step(
        "first manifest",
        |s| {
            push(s, &repo("x"), &config).unwrap();
            push(s, &repo("x"), &layer).unwrap();
        },
        |s, ()| put_manifest(s, &repo("x"), &manifest, Some("latest")).map(drop),
        retry,
    );
}

#[test]
fn mount_into_a_new_repository() {
    let bytes = data(1500, 10);
    every_step(
        "mount",
        |s| push(s, &repo("src"), &bytes).unwrap(),
        |s, d| match s.mount_blob(&repo("src"), &repo("dst/new"), d)? {
            true => Ok(()),
            false => panic!("mount found nothing to mount"),
        },
        retry,
    );
}

/// `Ok` also when a retry finds the object gone already.
fn gone_is_done(r: Result<()>) -> Result<()> {
    match r {
        Err(StoreError::BlobUnknown | StoreError::ManifestUnknown) => Ok(()),
        other => other,
    }
}

#[test]
fn delete_of_the_last_link_of_a_blob() {
    let bytes = data(800, 11);
    every_step(
        "blob delete (last link)",
        |s| {
            push(s, &repo("keep"), &data(10, 12)).unwrap();
            push(s, &repo("r"), &bytes).unwrap()
        },
        |s, d| gone_is_done(s.delete_blob(&repo("r"), d)),
        retry,
    );
}

#[test]
fn delete_of_a_blob_linked_elsewhere() {
    let bytes = data(800, 13);
    every_step(
        "blob delete (shared)",
        |s| {
            push(s, &repo("a"), &bytes).unwrap();
            push(s, &repo("b"), &bytes).unwrap()
        },
        |s, d| gone_is_done(s.delete_blob(&repo("b"), d)),
        retry,
    );
}

#[test]
fn delete_of_a_manifest_with_tags_and_referrer_edge() {
    let (config, layer) = (data(60, 14), data(600, 15));
    let subject = image_manifest(&config, &layer, None);
    let referrer = image_manifest(&config, &layer, Some((&sha256(&subject), subject.len())));
    every_step(
        "manifest delete",
        |s| {
            let r = repo("app");
            push(s, &r, &config).unwrap();
            push(s, &r, &layer).unwrap();
            put_manifest(s, &r, &subject, Some("v1")).unwrap();
            put_manifest(s, &r, &referrer, Some("sig")).unwrap()
        },
        |s, d| gone_is_done(s.delete_manifest(&repo("app"), d)),
        retry,
    );
}

#[test]
fn delete_of_a_tag() {
    let (config, layer) = (data(70, 16), data(900, 17));
    let manifest = image_manifest(&config, &layer, None);
    every_step(
        "tag delete",
        |s| {
            let r = repo("app");
            push(s, &r, &config).unwrap();
            push(s, &r, &layer).unwrap();
            put_manifest(s, &r, &manifest, Some("v1")).unwrap();
            put_manifest(s, &r, &manifest, Some("v2")).unwrap();
        },
        |s, ()| gone_is_done(s.delete_tag(&repo("app"), &Tag::parse("v1").unwrap())),
        retry,
    );
}

/// Cancelling changes nothing visible but the session; checked separately (every step, every
/// fault): the session is gone or wholly there, and a reopened store is clean.
#[test]
fn cancel_of_an_upload() {
    let steps = {
        let dir = tempfile::tempdir().unwrap();
        let plan = Arc::new(FaultPlan::record());
        let store = open(dir.path(), Some(plan.clone())).unwrap();
        let session = store.create_upload(&repo("r"), Algorithm::Sha256).unwrap();
        plan.arm();
        store.cancel_upload(claim(&session)).unwrap();
        plan.steps()
    };
    assert!(steps >= 2, "{steps}");
    for n in 1..=steps {
        for fault in [Fault::Crash, Fault::Error(EIO), Fault::Error(ENOSPC)] {
            let dir = tempfile::tempdir().unwrap();
            let plan = Arc::new(FaultPlan::new(n, fault));
            let store = open(dir.path(), Some(plan.clone())).unwrap();
            let session = store.create_upload(&repo("r"), Algorithm::Sha256).unwrap();
            let (c, appended) = append(&store, claim(&session), b"some bytes", None);
            appended.unwrap();
            let id = c.id().to_string();
            plan.arm();
            let _ = store.cancel_upload(c);
            drop(store);
            let store = open(dir.path(), None).unwrap();
            assert_eq!(store.check(true).unwrap(), vec![], "cancel: {fault:?} at step {n}");
            if let Ok(session) = store.upload(&repo("r"), &id) {
                assert_eq!(claim(&session).offset(), 10, "cancel: {fault:?} at step {n}: a live session is whole");
            }
        }
    }
}

/// The invariant checker itself finds what it must (else the tests above prove nothing).
#[test]
fn check_finds_broken_invariants_and_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), None).unwrap();
    let d = push(&store, &repo("r"), &data(100, 20)).unwrap();
    assert_eq!(store.check(true).unwrap(), vec![]);
    // A stray file is garbage; a missing link is broken; wrong content is broken.
    std::fs::write(store.paths.blob_dir(Algorithm::Sha256).join("0".repeat(64)), b"x").unwrap();
    let found = store.check(false).unwrap();
    assert!(found.iter().any(|p| matches!(p, Problem::Garbage(_))), "{found:?}");
    assert!(broken(&found).is_empty(), "{found:?}");
    std::fs::remove_file(store.paths.repo_blob(&repo("r"), &d)).unwrap();
    assert!(!broken(&store.check(false).unwrap()).is_empty());
    let global = store.paths.blob(&d);
    std::fs::hard_link(&global, store.paths.repo_blob(&repo("r"), &d)).unwrap();
    assert!(broken(&store.check(true).unwrap()).is_empty());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&global, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&global, data(100, 21)).unwrap();
    assert!(!broken(&store.check(true).unwrap()).is_empty(), "content no longer matches its digest");
    // The durability-order check itself rejects a link before the file's fsync.
    let f = std::path::PathBuf::from("/d/f");
    let bad = vec![Step::Create(f.clone()), Step::Link(f.clone(), "/e/g".into()), Step::Fsync(f.clone())];
    assert!(std::panic::catch_unwind(|| assert_durable_order("bad", &bad)).is_err());
}
