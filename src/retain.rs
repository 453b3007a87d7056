//! Retained messages: the last retained message per topic, found again by topic filter
//! when a client subscribes.

/// Retained values by topic name, stored level by level so that a wildcard filter visits
/// only the branches it can match.
pub struct RetainTree<V> {
    _v: std::marker::PhantomData<V>,
}

impl<V> Default for RetainTree<V> {
    fn default() -> Self {
        todo!()
    }
}

impl<V: Clone> RetainTree<V> {
    /// Stores `value` as the retained message of `topic`, replacing any previous one.
    pub fn set(&mut self, topic: &str, value: V) {
        todo!()
    }

    /// Clears the retained message of `topic` (a retained PUBLISH with empty payload).
    /// Prunes empty branches. Returns the removed value.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        todo!()
    }

    /// Every retained value whose topic matches `filter`, honouring the `$` rule.
    pub fn matching(&self, filter: &str) -> Vec<V> {
        todo!()
    }

    pub fn len(&self) -> usize {
        todo!()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
