//! The subscription tree: topic filters stored level by level, so that matching a topic
//! costs in proportion to its depth and the branches it reaches, not to the number of
//! subscriptions.

/// Subscriptions keyed by topic filter and subscriber id `u64`, each with a value `V`
/// (the subscriber handle and its granted QoS, as the router chooses).
pub struct SubscriptionTrie<V> {
    _v: std::marker::PhantomData<V>,
}

impl<V> Default for SubscriptionTrie<V> {
    fn default() -> Self {
        todo!()
    }
}

impl<V> SubscriptionTrie<V> {
    /// Adds or replaces the subscription of `id` to `filter`. Returns true if it is new.
    pub fn insert(&mut self, filter: &str, id: u64, value: V) -> bool {
        todo!()
    }

    /// Removes the subscription of `id` to `filter`. Returns true if there was one.
    /// Empty branches are pruned so the tree does not grow with churn.
    pub fn remove(&mut self, filter: &str, id: u64) -> bool {
        todo!()
    }

    /// Calls `f(id, value)` for every subscription whose filter matches `topic`. A
    /// subscriber with several matching filters is visited once per filter.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(u64, &V)) {
        todo!()
    }

    /// Number of (filter, id) subscriptions stored.
    pub fn len(&self) -> usize {
        todo!()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
