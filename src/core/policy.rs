//! The registry's on/off policies (what this registry does at all, whoever asks) and the one
//! check that applies them to an operation.
//!
//! Access rules ([`crate::core::access`]) decide *who* may do something; a [`RegistryPolicy`]
//! decides whether the registry does it for anyone: writes (read-only mode), deletions
//! (`storage.delete.enabled`) and digest algorithms (`storage.digests.*`). Every request is
//! described as an [`Operation`] and checked once with [`RegistryPolicy::check`], so a new
//! switch is enforced everywhere by adding it here.
//!
//! Refusals come in a fixed order: read-only mode, then algorithms, then deletion.

use core::fmt;

use crate::core::digest::Algorithm;

/// A set of digest algorithms.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct AlgorithmSet(u8);

impl AlgorithmSet {
    /// Every algorithm, in the order sets are iterated.
    const ALL: [Algorithm; 3] = [Algorithm::Sha256, Algorithm::Sha512, Algorithm::Blake3];

    pub const fn empty() -> AlgorithmSet {
        AlgorithmSet(0)
    }

    const fn bit(alg: Algorithm) -> u8 {
        match alg {
            Algorithm::Sha256 => 1,
            Algorithm::Sha512 => 2,
            Algorithm::Blake3 => 4,
        }
    }

    /// This set with `alg` added.
    #[must_use]
    pub const fn with(self, alg: Algorithm) -> AlgorithmSet {
        AlgorithmSet(self.0 | Self::bit(alg))
    }

    pub fn insert(&mut self, alg: Algorithm) {
        *self = self.with(alg);
    }

    pub const fn contains(self, alg: Algorithm) -> bool {
        self.0 & Self::bit(alg) != 0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The members, in the order sha256, sha512, blake3.
    pub fn iter(self) -> impl Iterator<Item = Algorithm> {
        Self::ALL.into_iter().filter(move |a| self.contains(*a))
    }
}

impl FromIterator<Algorithm> for AlgorithmSet {
    fn from_iter<I: IntoIterator<Item = Algorithm>>(iter: I) -> AlgorithmSet {
        iter.into_iter().fold(AlgorithmSet::empty(), AlgorithmSet::with)
    }
}

impl fmt::Debug for AlgorithmSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Algorithm::name)).finish()
    }
}

/// What an operation does to the stored content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Reads, or changes nothing.
    Read,
    /// Adds content or changes an upload session.
    Write,
    /// Removes content: a blob, a manifest or a tag.
    Delete,
}

/// A request as the on/off policies see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operation {
    pub effect: Effect,
    /// The digest algorithms the request names (a digest in its path or query, an algorithm
    /// asked for), or the one it will hash with when it names none.
    pub algorithms: AlgorithmSet,
}

impl Operation {
    pub const fn new(effect: Effect) -> Operation {
        Operation { effect, algorithms: AlgorithmSet::empty() }
    }

    /// This operation, also naming `alg`.
    #[must_use]
    pub const fn naming(self, alg: Algorithm) -> Operation {
        Operation { effect: self.effect, algorithms: self.algorithms.with(alg) }
    }
}

/// Why the registry refuses an operation, whoever asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A write while the registry is read-only (`storage.maintenance.readonly`).
    ReadOnly,
    /// A digest algorithm the registry does not accept (`storage.digests.*`).
    Algorithm(Algorithm),
    /// A deletion while deletion is off (`storage.delete.enabled`).
    DeleteDisabled,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::ReadOnly => f.write_str("the registry is in read-only mode (storage.maintenance.readonly)"),
            // Only blake3 can be switched; sha256 and sha512 are always accepted.
            Refusal::Algorithm(Algorithm::Blake3) => {
                f.write_str("blake3 digests are not enabled on this registry (storage.digests.blake3)")
            }
            Refusal::Algorithm(alg) => write!(f, "{} digests are not enabled on this registry", alg.name()),
            Refusal::DeleteDisabled => f.write_str("deletion is disabled on this registry (storage.delete.enabled)"),
        }
    }
}

/// The registry's on/off policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistryPolicy {
    /// Whether blobs, manifests and tags may be deleted.
    pub delete: bool,
    /// Whether every write is refused.
    pub read_only: bool,
    /// The digest algorithms accepted.
    pub algorithms: AlgorithmSet,
}

impl RegistryPolicy {
    /// The algorithms every registry accepts; others are opt-ins.
    pub const DEFAULT_ALGORITHMS: AlgorithmSet = AlgorithmSet::empty().with(Algorithm::Sha256).with(Algorithm::Sha512);

    /// Whether the registry performs `op`; the first refusal in the module's order otherwise.
    pub fn check(&self, op: &Operation) -> Result<(), Refusal> {
        if self.read_only && op.effect != Effect::Read {
            return Err(Refusal::ReadOnly);
        }
        if let Some(alg) = op.algorithms.iter().find(|a| !self.algorithms.contains(*a)) {
            return Err(Refusal::Algorithm(alg));
        }
        if !self.delete && op.effect == Effect::Delete {
            return Err(Refusal::DeleteDisabled);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EFFECTS: [Effect; 3] = [Effect::Read, Effect::Write, Effect::Delete];

    /// Every subset of the algorithms.
    fn all_sets() -> impl Iterator<Item = AlgorithmSet> {
        (0u8..8).map(|bits| {
            AlgorithmSet::ALL.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, a)| *a).collect()
        })
    }

    #[test]
    fn algorithm_sets() {
        assert_eq!(all_sets().count(), 8);
        let sets: alloc::vec::Vec<_> = all_sets().collect();
        assert!(sets.iter().enumerate().all(|(i, s)| !sets[..i].contains(s)), "subsets are distinct: {sets:?}");
        let s = AlgorithmSet::empty().with(Algorithm::Blake3).with(Algorithm::Sha256);
        assert!(s.contains(Algorithm::Sha256) && s.contains(Algorithm::Blake3) && !s.contains(Algorithm::Sha512));
        assert_eq!(s.iter().collect::<alloc::vec::Vec<_>>(), [Algorithm::Sha256, Algorithm::Blake3]);
        assert!(AlgorithmSet::empty().is_empty() && !s.is_empty());
        let mut t = AlgorithmSet::empty();
        t.insert(Algorithm::Sha512);
        assert_eq!(t.iter().collect::<alloc::vec::Vec<_>>(), [Algorithm::Sha512]);
        assert_eq!(alloc::format!("{s:?}"), r#"{"sha256", "blake3"}"#);
        assert!(RegistryPolicy::DEFAULT_ALGORITHMS.contains(Algorithm::Sha256));
        assert!(RegistryPolicy::DEFAULT_ALGORITHMS.contains(Algorithm::Sha512));
        assert!(!RegistryPolicy::DEFAULT_ALGORITHMS.contains(Algorithm::Blake3));
    }

    /// Every operation (effect x named algorithms) against every setting of every switch.
    #[test]
    fn every_operation_against_every_switch() {
        let mut checked = 0;
        for read_only in [false, true] {
            for delete in [false, true] {
                for accepted in all_sets() {
                    let policy = RegistryPolicy { delete, read_only, algorithms: accepted };
                    for effect in EFFECTS {
                        for named in all_sets() {
                            let op = Operation { effect, algorithms: named };
                            let got = policy.check(&op);
                            let refused_alg = [Algorithm::Sha256, Algorithm::Sha512, Algorithm::Blake3]
                                .into_iter()
                                .find(|a| named.contains(*a) && !accepted.contains(*a));
                            let want = if read_only && matches!(effect, Effect::Write | Effect::Delete) {
                                Err(Refusal::ReadOnly)
                            } else if let Some(a) = refused_alg {
                                Err(Refusal::Algorithm(a))
                            } else if !delete && effect == Effect::Delete {
                                Err(Refusal::DeleteDisabled)
                            } else {
                                Ok(())
                            };
                            assert_eq!(got, want, "{policy:?} {op:?}");
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 2 * 2 * 8 * 3 * 8);
    }

    #[test]
    fn spot_checks() {
        let default =
            RegistryPolicy { delete: false, read_only: false, algorithms: RegistryPolicy::DEFAULT_ALGORITHMS };
        let read = Operation::new(Effect::Read);
        let write = Operation::new(Effect::Write);
        let delete = Operation::new(Effect::Delete);
        assert_eq!(default.check(&read), Ok(()));
        assert_eq!(default.check(&write.naming(Algorithm::Sha512)), Ok(()));
        assert_eq!(default.check(&delete), Err(Refusal::DeleteDisabled));
        assert_eq!(default.check(&read.naming(Algorithm::Blake3)), Err(Refusal::Algorithm(Algorithm::Blake3)));
        // An algorithm refusal comes before the deletion one, read-only mode before both.
        assert_eq!(default.check(&delete.naming(Algorithm::Blake3)), Err(Refusal::Algorithm(Algorithm::Blake3)));
        let frozen = RegistryPolicy { read_only: true, ..default };
        assert_eq!(frozen.check(&delete.naming(Algorithm::Blake3)), Err(Refusal::ReadOnly));
        assert_eq!(frozen.check(&read.naming(Algorithm::Sha256)), Ok(()));
        let open = RegistryPolicy {
            delete: true,
            read_only: false,
            algorithms: RegistryPolicy::DEFAULT_ALGORITHMS.with(Algorithm::Blake3),
        };
        assert_eq!(open.check(&delete.naming(Algorithm::Blake3)), Ok(()));
    }

    #[test]
    fn refusal_messages() {
        use alloc::string::ToString;
        assert_eq!(Refusal::ReadOnly.to_string(), "the registry is in read-only mode (storage.maintenance.readonly)");
        assert_eq!(
            Refusal::DeleteDisabled.to_string(),
            "deletion is disabled on this registry (storage.delete.enabled)"
        );
        assert_eq!(
            Refusal::Algorithm(Algorithm::Blake3).to_string(),
            "blake3 digests are not enabled on this registry (storage.digests.blake3)"
        );
        assert_eq!(
            Refusal::Algorithm(Algorithm::Sha512).to_string(),
            "sha512 digests are not enabled on this registry"
        );
    }
}
