//! Unit tests of incoming QoS 2: duplicates are recognised until PUBREL.

use crate::config::QueueFull;
use crate::session::test_support::{limits, session};

#[test]
fn a_resent_publish_is_a_duplicate_until_pubrel() {
    let s = session(limits(10, 0, QueueFull::DropNew));
    let h = s.store_handle();
    let mut st = s.state.lock();
    assert!(!st.incoming_qos2_has(7));
    let (first, stored) = st.receive_qos2(7, h);
    assert!(first);
    assert!(!stored.failed);
    assert!(st.incoming_qos2_has(7));
    assert!(
        !st.receive_qos2(7, h).0,
        "the re-send is not delivered again"
    );
    assert!(st.release_qos2(7, h).0);
    assert!(!st.release_qos2(7, h).0, "a second PUBREL finds nothing");
    assert!(!st.incoming_qos2_has(7));
    // After PUBREL the id may carry a new message.
    assert!(st.incoming_qos2_insert(7));
    assert!(st.incoming_qos2_remove(7));
}
