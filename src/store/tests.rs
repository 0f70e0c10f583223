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
//!   once the index writer has had its pass (`Store::flush_indexes`), no `index.json` is due
//!   and every one says what the metadata says;
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
use super::meta::{INDEX_DIRTY, MANIFESTS, MANIFEST_TAGS, REFERRERS, REPO_BLOBS, TAGS};
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

/// Opens the store and runs the consistency walk to its end, as `pier serve` does in the
/// background: after it, `check` must find nothing.
fn open(dir: &Path, plan: Option<Arc<FaultPlan>>) -> Result<Store> {
    let store = Store::open_on(dir, plan.map(Disk::with_faults).unwrap_or_default())?;
    store.sweep_unreferenced()?;
    Ok(store)
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

/// Findings that are more than garbage.
fn broken(problems: &[Problem]) -> Vec<&Problem> {
    problems.iter().filter(|p| p.is_broken()).collect()
}

/// Repositories whose `index.json` is due for a rewrite.
fn marked(store: &Store) -> Vec<String> {
    let txn = store.db.begin_read().unwrap();
    let marks = txn.open_table(INDEX_DIRTY).unwrap();
    marks.iter().unwrap().map(|e| e.unwrap().0.value().to_string()).collect()
}

/// What the index writer does after a change: one pass; then nothing is due and the store is
/// clean (every `index.json` unmarked, so `check` compares each with its metadata).
#[track_caller]
fn settle(store: &Store, what: &str) {
    store.flush_indexes().unwrap_or_else(|e| panic!("{what}: index flush: {e}"));
    assert_eq!(marked(store), Vec::<String>::new(), "{what}: index.json still due after a flush");
    assert_eq!(store.check(true).unwrap(), vec![], "{what}: after the index flush");
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
    settle(&store, name);
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
                    settle(&store, &format!("{what} ({step:?})"));
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
                    settle(&store, &format!("{what} ({step:?})"));
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

/// Two repositories with a tagged manifest each, both due for an `index.json` rewrite.
fn two_marked_repositories(s: &Store) {
    let (config, layer) = (data(80, 30), data(300, 31));
    let manifest = image_manifest(&config, &layer, None);
    for name in ["idx/a", "idx/b"] {
        let r = repo(name);
        push(s, &r, &config).unwrap();
        push(s, &r, &layer).unwrap();
        put_manifest(s, &r, &manifest, Some("v1")).unwrap();
    }
    assert_eq!(marked(s), ["idx/a", "idx/b"]);
}

/// The index writer's pass, every step x fault: whatever fails, no `index.json` is ever stale
/// without its mark, and the next pass (running store or reopened) finishes the job.
#[test]
fn index_flush_every_step() {
    let steps = {
        let dir = tempfile::tempdir().unwrap();
        let plan = Arc::new(FaultPlan::record());
        let store = open(dir.path(), Some(plan.clone())).unwrap();
        two_marked_repositories(&store);
        plan.arm();
        assert_eq!(store.flush_indexes().unwrap(), 2, "both index.json files rewritten");
        assert_durable_order("index flush", &plan.trace());
        assert_eq!(marked(&store), Vec::<String>::new());
        assert_eq!(store.check(true).unwrap(), vec![]);
        plan.steps()
    };
    assert!(steps >= 10, "{steps}");
    for n in 1..=steps {
        for fault in [Fault::Crash, Fault::Error(EIO), Fault::Error(ENOSPC)] {
            let what = format!("index flush: {fault:?} at step {n} of {steps}");
            let dir = tempfile::tempdir().unwrap();
            let plan = Arc::new(FaultPlan::new(n, fault));
            let store = open(dir.path(), Some(plan.clone())).unwrap();
            two_marked_repositories(&store);
            plan.arm();
            let result = store.flush_indexes();
            let step = plan.trace().get(n - 1).cloned();
            assert!(result.is_err(), "{what} ({step:?}): the failure was not reported");
            if fault != Fault::Crash {
                let live = store.check(true).unwrap();
                assert_eq!(broken(&live), Vec::<&Problem>::new(), "{what} ({step:?}): running store");
                settle(&store, &what);
            }
            drop(store);
            let store = open(dir.path(), None).unwrap();
            assert_eq!(store.check(true).unwrap(), vec![], "{what} ({step:?}): after reopening");
            settle(&store, &what);
        }
    }
}

/// `check` accepts a lagging `index.json` only while its repository is marked.
#[test]
fn check_tells_a_due_index_from_a_stale_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), None).unwrap();
    let (config, layer) = (data(90, 32), data(400, 33));
    let manifest = image_manifest(&config, &layer, None);
    let r = repo("app");
    push(&store, &r, &config).unwrap();
    let empty = std::fs::read(store.paths.index(&r)).unwrap();
    push(&store, &r, &layer).unwrap();
    put_manifest(&store, &r, &manifest, Some("v1")).unwrap();
    // The push answered before the file was rewritten: it lags, and that is fine while marked.
    assert_eq!(marked(&store), ["app"]);
    assert_eq!(std::fs::read(store.paths.index(&r)).unwrap(), empty);
    assert_eq!(store.check(true).unwrap(), vec![]);
    settle(&store, "after the push");
    let current = std::fs::read(store.paths.index(&r)).unwrap();
    assert!(String::from_utf8_lossy(&current).contains(r#""org.opencontainers.image.ref.name": "v1""#));
    // Stale without a mark: broken.
    std::fs::write(store.paths.index(&r), &empty).unwrap();
    let found = store.check(false).unwrap();
    assert_eq!(broken(&found).len(), 1, "{found:?}");
    std::fs::write(store.paths.index(&r), &current).unwrap();
    // Re-pointing a tag keeps MANIFEST_TAGS in step (check compares it with TAGS).
    let other = image_manifest(&config, &layer, Some((&sha256(&manifest), manifest.len())));
    put_manifest(&store, &r, &other, Some("v1")).unwrap();
    put_manifest(&store, &r, &manifest, Some("v1")).unwrap();
    settle(&store, "after re-pointing v1 twice");
    {
        let txn = store.db.begin_write().unwrap();
        txn.open_table(MANIFEST_TAGS).unwrap().insert(("app", sha256(&other).as_str(), "v1"), ()).unwrap();
        txn.commit().unwrap();
    }
    assert_eq!(broken(&store.check(false).unwrap()).len(), 1, "a MANIFEST_TAGS row without its tag");
    {
        let txn = store.db.begin_write().unwrap();
        txn.open_table(MANIFEST_TAGS).unwrap().remove(("app", sha256(&other).as_str(), "v1")).unwrap();
        txn.commit().unwrap();
    }
    store.delete_manifest(&r, &sha256(&other)).unwrap();
    settle(&store, "after deleting the untagged manifest");
    // A tag delete and a manifest delete mark the repository too.
    store.delete_tag(&r, &Tag::parse("v1").unwrap()).unwrap();
    assert_eq!(marked(&store), ["app"]);
    settle(&store, "after the tag delete");
    store.delete_manifest(&r, &sha256(&manifest)).unwrap();
    assert_eq!(marked(&store), ["app"]);
    settle(&store, "after the manifest delete");
    assert_eq!(std::fs::read(store.paths.index(&r)).unwrap(), empty);
}

/// A data directory written before `INDEX_DIRTY` existed may hold a stale `index.json` (the
/// old start-up rewrote them all): the first open marks every repository.
#[test]
fn a_data_directory_without_index_marks_gets_every_index_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let (config, layer) = (data(95, 34), data(450, 35));
    let manifest = image_manifest(&config, &layer, None);
    let r = repo("old");
    let stale = {
        let store = open(dir.path(), None).unwrap();
        push(&store, &r, &config).unwrap();
        let stale = std::fs::read(store.paths.index(&r)).unwrap();
        push(&store, &r, &layer).unwrap();
        put_manifest(&store, &r, &manifest, Some("v1")).unwrap();
        settle(&store, "before");
        stale
    };
    std::fs::write(dir.path().join("repositories/old/index.json"), &stale).unwrap();
    {
        let db = redb::Database::create(dir.path().join("meta.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        assert!(txn.delete_table(INDEX_DIRTY).unwrap());
        assert!(txn.delete_table(MANIFEST_TAGS).unwrap());
        txn.commit().unwrap();
    }
    let store = open(dir.path(), None).unwrap();
    assert_eq!(marked(&store), ["old"]);
    // check compares MANIFEST_TAGS with TAGS: rebuilt.
    assert_eq!(store.check(true).unwrap(), vec![]);
    settle(&store, "after the upgrade");
    assert_ne!(std::fs::read(store.paths.index(&r)).unwrap(), stale);
    // The rebuilt table finds the manifest's tag.
    store.delete_manifest(&r, &sha256(&manifest)).unwrap();
    assert!(store.resolve_tag(&r, &Tag::parse("v1").unwrap()).is_err());
    settle(&store, "after the delete");
}

/// The background writer rewrites a changed repository's `index.json` within a bound, and
/// stopping it writes what is still due.
#[test]
fn index_writer_catches_up_and_flushes_when_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path(), None).unwrap());
    let (config, layer) = (data(85, 36), data(350, 37));
    let manifest = image_manifest(&config, &layer, None);
    let r = repo("bg");
    push(&store, &r, &config).unwrap();
    push(&store, &r, &layer).unwrap();
    store.start_index_writer().unwrap();
    put_manifest(&store, &r, &manifest, Some("v1")).unwrap();
    let started = std::time::Instant::now();
    while !marked(&store).is_empty() {
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "index.json not written within 5 s");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(store.check(true).unwrap(), vec![]);
    // A burst of changes, then a stop right away: the stop writes what is due.
    for t in ["v2", "v3", "v4"] {
        put_manifest(&store, &r, &manifest, Some(t)).unwrap();
    }
    store.stop_index_writer().unwrap();
    assert_eq!(marked(&store), Vec::<String>::new());
    assert_eq!(store.check(true).unwrap(), vec![]);
    let index = String::from_utf8(std::fs::read(store.paths.index(&r)).unwrap()).unwrap();
    assert!(index.contains(r#""org.opencontainers.image.ref.name": "v4""#), "{index}");
}

/// Writes `bytes` into a registry:2 tree under `dir` (`docker/registry/v2/blobs/...`), as
/// Distribution stores every blob and manifest; returns its digest.
fn registry2_blob(dir: &Path, bytes: &[u8]) -> Digest {
    let d = sha256(bytes);
    let path = dir.join("docker/registry/v2/blobs/sha256").join(&d.hex()[..2]).join(d.hex());
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(path.join("data"), bytes).unwrap();
    d
}

/// Writes a registry:2 link file `<repository dir>/<rel>/link` naming `d`.
fn registry2_link(dir: &Path, repo: &str, rel: &str, d: &Digest) {
    let path = dir.join("docker/registry/v2/repositories").join(repo).join(rel);
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(path.join("link"), d.as_str()).unwrap();
}

/// Like [`every_step`], for an operation that is not atomic but resumable (a migration): after a
/// crash or an I/O error at any step, what is visible must be part of what the fault-free run
/// shows (nothing wrong, nothing partial: an item is wholly in or out), the store must be
/// consistent, and running the operation again must end exactly where the fault-free run did.
fn every_step_resumable<F>(name: &str, setup: impl Fn(&Store) -> F, op: impl Fn(&Store, &F) -> Result<()>) -> usize {
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
    assert_durable_order(name, &plan.trace());
    assert_eq!(store.check(true).unwrap(), vec![], "{name}: fault-free run");
    settle(&store, name);
    drop(store);
    eprintln!("{name}: {steps} steps x 3 faults");
    let part_of_after = |seen: &BTreeMap<String, String>, what: &str| {
        for (k, v) in seen {
            assert_eq!(after.get(k), Some(v), "{what}: {k} is visible but not what the fault-free run shows");
        }
    };
    for n in 1..=steps {
        for fault in [Fault::Crash, Fault::Error(EIO), Fault::Error(ENOSPC)] {
            let what = format!("{name}: {fault:?} at step {n} of {steps}");
            let dir = tempfile::tempdir().unwrap();
            let plan = Arc::new(FaultPlan::new(n, fault));
            let store = open(dir.path(), Some(plan.clone())).unwrap();
            let fixture = setup(&store);
            plan.arm();
            let result = op(&store, &fixture);
            let step = plan.trace().get(n - 1).cloned();
            let store = if fault == Fault::Crash {
                assert!(plan.crashed(), "{what}: the run took fewer steps than the reference");
                drop(store);
                open(dir.path(), None).unwrap_or_else(|e| panic!("{what} ({step:?}): reopen: {e}"))
            } else {
                store
            };
            let live = store.check(true).unwrap();
            assert_eq!(broken(&live), Vec::<&Problem>::new(), "{what} ({step:?}): {result:?}");
            part_of_after(&observe(&store), &format!("{what} ({step:?})"));
            op(&store, &fixture).unwrap_or_else(|e| panic!("{what} ({step:?}): run again: {e}"));
            assert_eq!(observe(&store), after, "{what} ({step:?}): not finished by running again");
            drop(store);
            let store = open(dir.path(), None).unwrap();
            assert_eq!(store.check(true).unwrap(), vec![], "{what} ({step:?}): after reopening");
            settle(&store, &format!("{what} ({step:?})"));
        }
    }
    steps
}

/// Importing a registry:2 tree (`store::migrate`): two repositories with the same image (the
/// second gets the blobs and the manifest the store has by then), a tag each. After a crash or
/// an I/O error at any step, running the migration again converges on the same store.
#[test]
fn migrate_a_registry2_tree() {
    let (config, layer) = (data(60, 11), data(3000, 12));
    let manifest = image_manifest(&config, &layer, None);
    every_step_resumable(
        "migrate",
        |_| {
            let tree = tempfile::tempdir().unwrap();
            let dir = tree.path();
            let (c, l, m) = (registry2_blob(dir, &config), registry2_blob(dir, &layer), registry2_blob(dir, &manifest));
            for (repo, tag) in [("app", "v1"), ("copy/of/app", "v2")] {
                registry2_link(dir, repo, &format!("_layers/sha256/{}", c.hex()), &c);
                registry2_link(dir, repo, &format!("_layers/sha256/{}", l.hex()), &l);
                registry2_link(dir, repo, &format!("_manifests/revisions/sha256/{}", m.hex()), &m);
                registry2_link(dir, repo, &format!("_manifests/tags/{tag}/current"), &m);
            }
            tree
        },
        |s, tree| match super::migrate::migrate(Some(s), tree.path(), false, &mut |_| {}) {
            Ok(report) => {
                assert!(report.skipped.is_empty(), "{report:?}");
                Ok(())
            }
            Err(super::migrate::MigrateError::Store(e)) => Err(e),
            Err(e) => panic!("migrate: {e}"),
        },
    );
}

/// Garbage collection (with untagged manifests) at every step x crash/EIO/ENOSPC: after any
/// fault what is visible is the state before or after, the store stays consistent, and running
/// the collection again finishes it.
#[test]
fn garbage_collection_every_step() {
    use super::gc::GcOptions;
    let (config, shared, only_a, orphan_layer) = (data(50, 30), data(700, 31), data(900, 32), data(400, 33));
    let a = image_manifest(&config, &only_a, None);
    let b = image_manifest(&config, &shared, None);
    let orphan = image_manifest(&config, &orphan_layer, None);
    let steps = every_step(
        "garbage collection",
        |s| {
            // A full collection first: the faulted one below is incremental (`GC_DUE`).
            s.collect_garbage(GcOptions { grace_secs: 0, untagged: true, dry_run: false, full: true }, |_| {}).unwrap();
            let r = repo("app");
            for blob in [&config, &shared, &only_a, &orphan_layer] {
                push(s, &r, blob).unwrap();
            }
            push(s, &repo("other"), &only_a).unwrap();
            let a = put_manifest(s, &r, &a, Some("a")).unwrap();
            put_manifest(s, &r, &b, Some("b")).unwrap();
            put_manifest(s, &r, &orphan, None).unwrap();
            s.delete_manifest(&r, &a).unwrap();
            s.delete_blob(&repo("other"), &sha256(&only_a)).unwrap();
        },
        |s, ()| {
            let options = GcOptions { grace_secs: 0, untagged: true, dry_run: false, full: false };
            s.collect_garbage(options, |_| {}).map(drop)
        },
        retry,
    );
    assert!(steps >= 5, "{steps} steps");
}

/// Incremental garbage collection (`GC_DUE`) visits only changed repositories and leaves
/// nothing a full collection would find: after every step of a random history of pushes,
/// tags, deletes and collections (tagged-only or untagged, with and without grace), a full
/// collection that follows an incremental one of the same kind collects nothing more.
#[test]
fn incremental_collection_leaves_nothing_for_a_full_one() {
    use super::gc::GcOptions;
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), None).unwrap();
    let repos = [repo("a"), repo("b"), repo("c/d")];
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let full_first =
        s.collect_garbage(GcOptions { grace_secs: 0, untagged: false, dry_run: false, full: false }, |_| {});
    assert!(full_first.unwrap().full, "a store without a full collection gets one first");
    let mut manifests: Vec<(RepoName, Digest)> = Vec::new();
    for round in 0..200u32 {
        let r = &repos[next(3) as usize];
        match next(6) {
            0 | 1 => {
                let (config, layer) =
                    (data(30 + next(5) as usize, next(4) as u8), data(100 + next(400) as usize, round as u8));
                push(&s, r, &config).unwrap();
                push(&s, r, &layer).unwrap();
                let tag = ["x", "y", "z"][next(3) as usize];
                let body = image_manifest(&config, &layer, None);
                let d = put_manifest(&s, r, &body, (next(3) > 0).then_some(tag)).unwrap();
                manifests.push((r.clone(), d));
            }
            2 => {
                push(&s, r, &data(64, round as u8)).unwrap();
            }
            3 if !manifests.is_empty() => {
                let (r, d) = manifests.swap_remove(next(manifests.len() as u64) as usize);
                let _ = s.delete_manifest(&r, &d);
            }
            4 => {
                let _ = s.delete_tag(r, &crate::core::Tag::parse(["x", "y", "z"][next(3) as usize]).unwrap());
            }
            _ => {
                let untagged = next(2) == 0;
                let grace_secs = [0, 3600][next(2) as usize];
                let base = GcOptions { grace_secs, untagged, dry_run: false, full: false };
                let dry = s.collect_garbage(GcOptions { dry_run: true, ..base }, |_| {}).unwrap();
                let incremental = s.collect_garbage(base, |_| {}).unwrap();
                assert!(!incremental.full);
                assert_eq!(
                    (dry.manifests, dry.links, dry.blobs_freed, dry.bytes_freed),
                    (incremental.manifests, incremental.links, incremental.blobs_freed, incremental.bytes_freed),
                    "round {round}: the dry run foretold {dry:?}, the run did {incremental:?}"
                );
                assert!(incremental.repositories <= 3);
                let full = s.collect_garbage(GcOptions { full: true, ..base }, |_| {}).unwrap();
                assert!(full.full);
                assert_eq!(
                    (full.manifests, full.links, full.blobs_freed),
                    (0, 0, 0),
                    "round {round}: a full collection after an incremental one ({base:?}) found more: {full:?}"
                );
                let again = s.collect_garbage(base, |_| {}).unwrap();
                assert_eq!((again.manifests, again.links), (0, 0), "round {round}: {again:?}");
                if grace_secs == 3600 {
                    assert_eq!(again.repositories, 0, "round {round}: links in grace are not due yet: {again:?}");
                }
            }
        }
    }
    let problems = s.check(true).unwrap();
    assert!(broken(&problems).is_empty(), "{problems:?}");
}

/// The changes that make a repository due (`GC_DUE`), one at a time: a manifest deleted, a blob
/// linked (due once its grace period ends), a tag moved (due for an untagged collection); an
/// unchanged store costs a collection no visit.
#[test]
fn incremental_collection_visits_what_changed() {
    use super::gc::{GcOptions, GcReport};
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), None).unwrap();
    let gc = |grace_secs: u64, untagged: bool| -> GcReport {
        s.collect_garbage(GcOptions { grace_secs, untagged, dry_run: false, full: false }, |_| {}).unwrap()
    };
    let (a, b) = (repo("a"), repo("b"));
    let (config, layer, layer2) = (data(40, 1), data(300, 2), data(310, 3));
    for blob in [&config, &layer, &layer2] {
        push(&s, &a, blob).unwrap();
    }
    let first = put_manifest(&s, &a, &image_manifest(&config, &layer, None), Some("t")).unwrap();
    push(&s, &b, &config).unwrap();
    put_manifest(&s, &b, &image_manifest(&config, &layer2, None), Some("t")).unwrap_err();
    assert!(gc(0, true).full, "the first collection of a store is a full one");
    let quiet = gc(0, true);
    assert_eq!((quiet.full, quiet.repositories), (false, 0), "nothing changed: {quiet:?}");

    // A deleted manifest: its layer goes.
    s.delete_manifest(&a, &first).unwrap();
    let r = gc(0, false);
    assert_eq!((r.repositories, r.links), (1, 2), "config and layer: {r:?}");
    let r = gc(0, true);
    assert_eq!((r.repositories, r.manifests, r.links), (1, 0, 0), "still due for an untagged one: {r:?}");
    assert_eq!(gc(0, true).repositories, 0);

    // A stray blob: not due during its grace period, collected after it.
    push(&s, &b, &data(64, 9)).unwrap();
    assert_eq!(gc(3600, false).repositories, 0, "in its grace period");
    let r = gc(0, false);
    assert_eq!((r.repositories, r.links), (1, 1), "{r:?}");

    // A moved tag: the old manifest is due for an untagged collection only.
    for blob in [&config, &layer, &layer2] {
        push(&s, &a, blob).unwrap();
    }
    let old = put_manifest(&s, &a, &image_manifest(&config, &layer, None), Some("t")).unwrap();
    let _ = gc(3600, false);
    let new = put_manifest(&s, &a, &image_manifest(&config, &layer2, None), Some("t")).unwrap();
    assert_ne!(old, new);
    assert_eq!(gc(0, false).manifests, 0, "a tagged-only collection keeps untagged manifests");
    let r = gc(0, true);
    assert_eq!((r.repositories, r.manifests, r.links), (1, 1, 1), "{r:?}");
    let full = s.collect_garbage(GcOptions { grace_secs: 0, untagged: true, dry_run: false, full: true }, |_| {});
    let full = full.unwrap();
    assert_eq!((full.manifests, full.links), (0, 0), "{full:?}");
}

/// `fsck --repair` rebuilds the tables that restate others (`BLOBS`, `REPO_BYTES`,
/// `MANIFEST_TAGS`, `REFERRERS`) from the primary ones, and a second run finds nothing.
#[test]
fn fsck_rebuilds_the_derived_tables() {
    use super::meta::{BLOBS, MANIFEST_TAGS, REFERRERS, REPO_BYTES};
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), None).unwrap();
    let r = repo("app");
    let (config, layer) = (data(40, 40), data(500, 41));
    let config_d = push(&s, &r, &config).unwrap();
    push(&s, &r, &layer).unwrap();
    let subject = put_manifest(&s, &r, &image_manifest(&config, &layer, None), Some("v1")).unwrap();
    put_manifest(&s, &r, &image_manifest(&config, &layer, Some((&subject, 0))), None).unwrap();
    s.flush_indexes().unwrap();
    assert!(s.fsck(false, |_| {}).unwrap().is_clean());
    {
        let txn = s.db.begin_write().unwrap();
        txn.open_table(BLOBS).unwrap().insert(config_d.as_str(), (40, 7)).unwrap();
        txn.open_table(REPO_BYTES).unwrap().insert("app", 1).unwrap();
        txn.open_table(MANIFEST_TAGS).unwrap().remove(("app", subject.as_str(), "v1")).unwrap();
        txn.open_table(REFERRERS).unwrap().retain(|_, _| false).unwrap();
        txn.open_table(REFERRERS).unwrap().insert(("app", "sha256:00", "sha256:11"), ()).unwrap();
        txn.commit().unwrap();
    }
    let found = s.fsck(false, |_| {}).unwrap();
    assert!(!found.is_clean() && found.problems.len() >= 4, "{found:?}");
    let repair = s.fsck(true, |_| {}).unwrap();
    assert!(repair.is_clean(), "{repair:?}");
    let repaired = repair.repaired.join("\n");
    for what in
        ["BLOBS[", "REPO_BYTES[app]", "MANIFEST_TAGS[app", "REFERRERS[app, sha256:00, sha256:11] removed", "] added"]
    {
        assert!(repaired.contains(what), "{what} not repaired:\n{repaired}");
    }
    let again = s.fsck(false, |_| {}).unwrap();
    assert!(again.problems.is_empty(), "{again:?}");
    let listed = s.referrers(&r, &subject, None, None, usize::MAX, |_| 1).unwrap();
    assert_eq!(listed.manifests.len(), 1, "the referrer edge is back");
}
