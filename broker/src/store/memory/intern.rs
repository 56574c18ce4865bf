//! Shared copies of the values many work sessions repeat (surfaces, projects, backend-session
//! fields): each distinct value is kept once, and a work session holds a pointer to it. A value
//! nothing else points to any more is let go at the next purge.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;

use crate::ids::{Project, Surface};

/// One kind of shared value.
#[derive(Debug)]
pub(super) struct Interner<T>(HashSet<Arc<T>>);

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Self(HashSet::new())
    }
}

impl<T: Hash + Eq + Clone> Interner<T> {
    /// The shared copy of `value` (made on its first use).
    pub(super) fn share(&mut self, value: &T) -> Arc<T> {
        if let Some(shared) = self.0.get(value) {
            return Arc::clone(shared);
        }
        let shared = Arc::new(value.clone());
        self.0.insert(Arc::clone(&shared));
        shared
    }

    /// Lets go of the values only this interner holds.
    pub(super) fn purge(&mut self) {
        self.0.retain(|shared| Arc::strong_count(shared) > 1);
        if self.0.capacity() > 4 * self.0.len() + 16 {
            self.0.shrink_to_fit();
        }
    }
}

/// Every kind the memory store shares.
#[derive(Debug, Default)]
pub(super) struct Names {
    pub(super) surfaces: Interner<Surface>,
    pub(super) projects: Interner<Project>,
    /// Backend-session field names (`b:<upstream>:<project>`).
    pub(super) fields: Interner<String>,
}

impl Names {
    pub(super) fn purge(&mut self) {
        self.surfaces.purge();
        self.projects.purge();
        self.fields.purge();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_copy_per_value_until_nothing_holds_it() {
        let mut projects = Interner::default();
        let a = Project::parse("alpha").expect("project");
        let first = projects.share(&a);
        let again = projects.share(&a.clone());
        assert!(Arc::ptr_eq(&first, &again));
        let other = projects.share(&Project::parse("beta").expect("project"));
        drop(other);
        projects.purge();
        assert_eq!(projects.0.len(), 1);
        drop((first, again));
        projects.purge();
        assert!(projects.0.is_empty());
    }
}
