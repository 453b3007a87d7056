//! Publishing: one entry for a client's message ([`Broker::publish`]) and one for a
//! message no client sent ([`Broker::publish_internal`]: wills and `$SYS` now; a bridge
//! and a cluster link later). Both route through the router to each subscriber's session
//! queue, and set or clear the topic's retained message.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{min_qos, Broker};
use crate::auth::is_sys;
use crate::codec::QoS;
use crate::message::SharedMessage;
use crate::router::Target;
use crate::session::{Delivery, Encoded, Session};
use crate::store::{StoreEvent, StoreOutcome};

/// What publishing one message came to (see [`Broker::publish`]).
#[derive(Default)]
pub struct Published {
    /// Some subscriber matched (a 5.0 publisher is told otherwise: 0x10).
    pub matched: bool,
    /// Sessions whose queue went over its limit under `queue_full = "backpressure"`: the
    /// publisher's acknowledgement waits until each has room again.
    pub over_limit: Vec<Arc<Session>>,
    /// What the durable store wrote for it (persistent subscribers, the retained store):
    /// the commit the acknowledgement waits for, or a failed write that forbids it.
    pub storage: StoreOutcome,
}

thread_local! {
    /// The subscribers a topic reaches, reused by every message published on this worker
    /// thread: no allocation per message, and no scratch buffer per connection.
    static TARGETS: RefCell<Vec<Target>> = const { RefCell::new(Vec::new()) };
    /// The message's QoS 0 frames, encoded once for all its subscribers (see
    /// `session::frames`); the buffers are reused by every message on this thread.
    static ENCODED: RefCell<Encoded> = RefCell::new(Encoded::default());
}

impl Broker {
    /// Publishes a client's message: routes it to every matching session, and stores or
    /// clears it as the topic's retained message when `msg.retain` is set. `publisher` is
    /// the sending client's session: No Local subscriptions of its own are skipped, and it
    /// is registered to be woken when the sessions over their limit have room.
    pub fn publish(&self, msg: &SharedMessage, publisher: &Arc<Session>) -> Published {
        self.fan_out(msg, Some(publisher))
    }

    /// Publishes a message no client sent: wills and `$SYS` now; a bridge and a cluster
    /// link later. It goes through the same routing, retained store and durable store as a
    /// client's (`$SYS` retained messages excepted: see `retain`), but there is no
    /// publisher to hold back or to exclude.
    pub fn publish_internal(&self, msg: &SharedMessage) -> Published {
        crate::metrics::add(crate::metrics::Counter::PublishInternal, 1);
        self.fan_out(msg, None)
    }

    /// Delivers `msg` to every session its topic reaches (see [`Broker::publish`]).
    fn fan_out(&self, msg: &SharedMessage, publisher: Option<&Arc<Session>>) -> Published {
        let mut published = Published::default();
        TARGETS.with_borrow_mut(|targets| {
            ENCODED.with_borrow_mut(|encoded| {
                self.deliver(msg, publisher, targets, encoded, &mut published);
            });
        });
        published
    }

    fn deliver(
        &self,
        msg: &SharedMessage,
        publisher: Option<&Arc<Session>>,
        targets: &mut Vec<Target>,
        encoded: &mut Encoded,
        published: &mut Published,
    ) {
        if msg.retain {
            self.retain(msg, &mut published.storage);
        }
        self.router
            .targets(&msg.topic, publisher.map(|p| p.id), targets);
        // Subscribers whose read access the ACL denies never get the message
        // (checked per message, so a reloaded ACL applies to existing subscriptions).
        let acl = self.auth.acl();
        published.matched = !targets.is_empty();
        encoded.start(msg);
        super::wakes::with_wakes(|wakes| {
            for sub in targets.drain(..) {
                let qos = min_qos(msg.qos, sub.qos);
                // RETAIN is 0 on live deliveries unless the subscription keeps it
                // [MQTT-3.3.1-12/13].
                let retain = sub.retain_as_published && msg.retain;
                let extra = sub.extra;
                // Drops are counted where they happen, by reason (see `crate::metrics`).
                // A QoS 0 delivery may go as the frame encoded once (`session::frames`,
                // whose `frame_for` says which may); the rest takes `offer`, compiled
                // without that branch.
                let delivery = if qos == QoS::AtMostOnce {
                    sub.session.offer_encoded(
                        msg,
                        qos,
                        retain,
                        extra,
                        publisher,
                        acl.as_deref(),
                        &mut published.storage,
                        Some(&mut *encoded),
                    )
                } else {
                    sub.session.offer(
                        msg,
                        qos,
                        retain,
                        extra,
                        publisher,
                        acl.as_deref(),
                        &mut published.storage,
                    )
                };
                if delivery == Delivery::OverLimit {
                    published.over_limit.push(sub.session.clone());
                }
                if delivery.wakes() {
                    wakes.wake(sub.session);
                }
            }
        });
    }

    /// Sets or clears the topic's retained message; stored under the retained store's
    /// lock, so the store keeps the same last one. `$SYS` topics (only the broker writes
    /// them) are not stored: they describe this process, and are published anew at start.
    fn retain(&self, msg: &SharedMessage, stored: &mut StoreOutcome) {
        let sys = is_sys(&msg.topic);
        let mut retained = self.retained.write();
        let message = if msg.payload.is_empty() {
            // A retained PUBLISH with no payload clears the topic [MQTT-3.3.1-10/11].
            if retained.remove(&msg.topic).is_some() && sys {
                self.sys_retained.fetch_sub(1, Ordering::Relaxed);
            }
            None
        } else {
            if retained.insert(&msg.topic, msg.clone()).is_none() && sys {
                self.sys_retained.fetch_add(1, Ordering::Relaxed);
            }
            Some(msg)
        };
        if self.store.is_durable() && !sys {
            stored.add(self.store.record(StoreEvent::Retained {
                topic: &msg.topic,
                message,
            }));
        }
    }
}
