//! The filters a session is subscribed to, with their options.
//!
//! The router's trie answers "who gets this topic"; this set answers "what does this
//! client hold", for UNSUBSCRIBE, the subscription limit and cleaning up a session. Most
//! devices hold one to a few subscriptions, so one is held inline and a few in a slice
//! sized to what is used (a hash map would allocate a table of four buckets for one
//! filter); past [`FEW`] the set moves to a hash map, so clients with thousands of filters
//! stay O(1).

use std::collections::HashMap;

use crate::codec::SubscriptionOptions;

/// One subscription as its session holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sub {
    /// Granted QoS, No Local, Retain As Published, Retain Handling.
    pub opts: SubscriptionOptions,
    /// MQTT 5.0 Subscription Identifier (never 0), delivered with every message it
    /// matches. `NonZeroU32` keeps the struct at 8 bytes; it is held once per
    /// subscription in the session and once in the router.
    pub id: Option<std::num::NonZeroU32>,
}

impl Sub {
    /// A 3.1.1-style subscription: QoS only.
    #[cfg(test)]
    pub fn qos(qos: crate::codec::QoS) -> Sub {
        Sub {
            opts: SubscriptionOptions::qos(qos),
            id: None,
        }
    }
}

/// Up to this many filters are kept in a slice and found by linear search.
const FEW: usize = 8;

#[derive(Debug, Default)]
pub enum Subscriptions {
    #[default]
    None,
    /// The common case (a device subscribed to its own commands): held inline, so an
    /// idle connection's session pays for no vector beside its one filter.
    One(Box<str>, Sub),
    /// An exact-size slice (re-made on each change, rare and at most [`FEW`] long): a
    /// vector's capacity word would make every session's set a third larger.
    Few(Box<[(Box<str>, Sub)]>),
    /// Boxed: the variant would otherwise make every session's set twice as large.
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<Box<str>, Sub>>),
}

impl Subscriptions {
    pub fn len(&self) -> usize {
        match self {
            Subscriptions::None => 0,
            Subscriptions::One(..) => 1,
            Subscriptions::Few(v) => v.len(),
            Subscriptions::Many(m) => m.len(),
        }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, filter: &str) -> Option<Sub> {
        match self {
            Subscriptions::None => None,
            Subscriptions::One(f, q) => (&**f == filter).then_some(*q),
            Subscriptions::Few(v) => v.iter().find(|(f, _)| &**f == filter).map(|(_, q)| *q),
            Subscriptions::Many(m) => m.get(filter).copied(),
        }
    }

    pub fn contains(&self, filter: &str) -> bool {
        self.get(filter).is_some()
    }

    /// Adds or replaces a filter. Returns true if it is new.
    pub fn insert(&mut self, filter: &str, qos: Sub) -> bool {
        match self {
            Subscriptions::None => {
                *self = Subscriptions::One(filter.into(), qos);
                true
            }
            Subscriptions::One(f, q) if &**f == filter => {
                *q = qos;
                false
            }
            Subscriptions::One(..) => {
                let Subscriptions::One(f, q) = std::mem::take(self) else {
                    return false; // unreachable: matched just above
                };
                *self = Subscriptions::Few(Box::new([(f, q), (filter.into(), qos)]));
                true
            }
            Subscriptions::Few(v) => {
                if let Some(entry) = v.iter_mut().find(|(f, _)| &**f == filter) {
                    entry.1 = qos;
                    return false;
                }
                let mut list = std::mem::take(v).into_vec();
                if list.len() < FEW {
                    list.push((filter.into(), qos));
                    *v = list.into_boxed_slice();
                } else {
                    let mut m: HashMap<Box<str>, Sub> = list.into_iter().collect();
                    m.insert(filter.into(), qos);
                    *self = Subscriptions::Many(Box::new(m));
                }
                true
            }
            Subscriptions::Many(m) => m.insert(filter.into(), qos).is_none(),
        }
    }

    /// Removes a filter (compared character by character). Returns it if it was held.
    pub fn remove(&mut self, filter: &str) -> Option<Sub> {
        match self {
            Subscriptions::None => None,
            Subscriptions::One(f, q) => {
                let q = *q;
                (&**f == filter).then(|| {
                    *self = Subscriptions::None;
                    q
                })
            }
            Subscriptions::Few(v) => {
                let i = v.iter().position(|(f, _)| &**f == filter)?;
                let mut list = std::mem::take(v).into_vec();
                let (_, qos) = list.swap_remove(i);
                if list.len() == 1 {
                    if let Some((f, q)) = list.pop() {
                        *self = Subscriptions::One(f, q);
                    }
                } else {
                    *v = list.into_boxed_slice();
                }
                Some(qos)
            }
            Subscriptions::Many(m) => m.remove(filter),
        }
    }

    /// Every filter held, in no particular order.
    pub fn filters(&self) -> Vec<String> {
        match self {
            Subscriptions::None => Vec::new(),
            Subscriptions::One(f, _) => vec![f.to_string()],
            Subscriptions::Few(v) => v.iter().map(|(f, _)| f.to_string()).collect(),
            Subscriptions::Many(m) => m.keys().map(|f| f.to_string()).collect(),
        }
    }

    pub fn clear(&mut self) {
        *self = Subscriptions::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::QoS;

    #[test]
    fn insert_replace_remove_across_the_switch_to_a_map() {
        let mut s = Subscriptions::default();
        for i in 0..20 {
            assert!(
                s.insert(&format!("f/{i}"), Sub::qos(QoS::AtMostOnce)),
                "f/{i} is new"
            );
        }
        assert!(matches!(s, Subscriptions::Many(_)));
        assert_eq!(s.len(), 20);
        assert!(
            !s.insert("f/3", Sub::qos(QoS::ExactlyOnce)),
            "replacing is not new"
        );
        assert_eq!(s.get("f/3"), Some(Sub::qos(QoS::ExactlyOnce)));
        assert_eq!(s.remove("f/3"), Some(Sub::qos(QoS::ExactlyOnce)));
        assert_eq!(s.remove("f/3"), None);
        assert!(!s.contains("f/3"));
        assert_eq!(s.filters().len(), 19);
        s.clear();
        assert!(s.is_empty());
    }

    #[test]
    fn one_filter_is_inline_and_replaced_in_place() {
        let mut s = Subscriptions::default();
        assert!(s.insert("dev/1/cmd", Sub::qos(QoS::AtLeastOnce)));
        assert!(matches!(s, Subscriptions::One(..)));
        assert!(!s.insert("dev/1/cmd", Sub::qos(QoS::ExactlyOnce)));
        assert_eq!(s.get("dev/1/cmd"), Some(Sub::qos(QoS::ExactlyOnce)));
        assert_eq!(s.get("dev/2/cmd"), None);
        assert_eq!((s.len(), s.filters()), (1, vec!["dev/1/cmd".to_string()]));
        assert_eq!(std::mem::size_of::<Subscriptions>(), 24);
    }

    #[test]
    fn few_filters_stay_in_an_exact_slice() {
        let mut s = Subscriptions::default();
        assert!(s.insert("a/+", Sub::qos(QoS::AtLeastOnce)));
        assert!(!s.insert("a/+", Sub::qos(QoS::AtMostOnce)));
        assert!(s.insert("a/#", Sub::qos(QoS::AtLeastOnce)));
        match &s {
            Subscriptions::Few(v) => assert_eq!(v.len(), 2),
            _ => panic!("two filters should be in the vector"),
        }
        assert_eq!(s.get("a/+"), Some(Sub::qos(QoS::AtMostOnce)));
        assert_eq!(s.remove("a/+"), Some(Sub::qos(QoS::AtMostOnce)));
        assert_eq!(s.filters(), vec!["a/#".to_string()]);
        // Back to one: inline again.
        assert!(matches!(s, Subscriptions::One(..)));
        assert_eq!(s.remove("a/+"), None);
        assert_eq!(s.remove("a/#"), Some(Sub::qos(QoS::AtLeastOnce)));
        assert!(matches!(s, Subscriptions::None));
        assert!(s.filters().is_empty());
    }
}
