//! The `JobQueue` contract.

use std::collections::HashSet;
use std::time::Duration;

use trace_core::ports::{JobQueue, QueueError};

const SHORT: Duration = Duration::from_secs(1);

async fn receive_one(q: &dyn JobQueue, visibility: Duration) -> Option<trace_core::ports::Delivery> {
    let mut got = q.receive(1, Duration::from_secs(2), visibility).await.expect("receive");
    assert!(got.len() <= 1);
    got.pop()
}

/// Send, receive, invisibility, release, delete, bad receipts, batches, long polling.
pub async fn run(q: &dyn JobQueue) {
    // Send and receive with attributes.
    let id = q.send(r#"{"job":"a"}"#, &[("job_id", "a"), ("shard", "0")]).await.expect("send");
    assert!(!id.is_empty());
    let d = receive_one(q, Duration::from_secs(30)).await.expect("message");
    assert_eq!(d.body, r#"{"job":"a"}"#);
    assert_eq!(d.message_id, id);
    assert_eq!(d.attributes.get("job_id").map(String::as_str), Some("a"));
    assert_eq!(d.attributes.get("shard").map(String::as_str), Some("0"));
    assert_eq!(d.receive_count, 1);

    // In flight: nobody else sees it.
    assert!(q.receive(10, SHORT, SHORT).await.expect("receive").is_empty());

    // Releasing (visibility 0) makes it visible again; the receive count goes up.
    q.extend_visibility(&d.receipt, Duration::ZERO).await.expect("release");
    let again = receive_one(q, Duration::from_secs(30)).await.expect("released message");
    assert_eq!(again.message_id, id);
    assert_eq!(again.receive_count, 2);

    // Extending keeps it hidden; deleting removes it.
    q.extend_visibility(&again.receipt, Duration::from_secs(60)).await.expect("extend");
    assert!(q.receive(10, SHORT, SHORT).await.expect("receive").is_empty());
    q.delete(&again.receipt).await.expect("delete");

    // A made-up receipt is refused as such.
    match q.delete("not-a-receipt").await {
        Err(QueueError::InvalidReceipt) => {}
        other => panic!("delete with a bogus receipt: expected InvalidReceipt, got {other:?}"),
    }

    // Batches: 15 messages come out as at most 10 per receive, each exactly once.
    for i in 0..15 {
        q.send(&format!("m{i}"), &[]).await.expect("send");
    }
    let mut bodies = HashSet::new();
    for _ in 0..20 {
        let got = q.receive(10, SHORT, Duration::from_secs(60)).await.expect("receive");
        assert!(got.len() <= 10);
        for d in got {
            assert!(bodies.insert(d.body.clone()), "{} delivered twice", d.body);
            q.delete(&d.receipt).await.expect("delete");
        }
        if bodies.len() == 15 {
            break;
        }
    }
    assert_eq!(bodies.len(), 15);
}

/// A long poll returns a message sent while it waits.
pub async fn long_poll(q: &dyn JobQueue) {
    let (got, _) = tokio::join!(q.receive(1, Duration::from_secs(10), Duration::from_secs(30)), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        q.send("late", &[]).await.expect("send")
    });
    let got = got.expect("receive");
    assert_eq!(got.len(), 1, "the long poll should return the message sent while it waited");
    assert_eq!(got[0].body, "late");
    q.delete(&got[0].receipt).await.expect("delete");
}

/// A received, undeleted message comes back after its visibility timeout; after `max_receive_count`
/// receives it moves to the dead-letter queue.
pub async fn redelivery_and_dead_letter(q: &dyn JobQueue, dlq: &dyn JobQueue, max_receive_count: u32) {
    let id = q.send("poison", &[("job_id", "p")]).await.expect("send");
    for n in 1..=max_receive_count {
        // Wait out the previous delivery's 1 s visibility timeout.
        let d = receive_one(q, SHORT).await.unwrap_or_else(|| panic!("delivery {n} did not come back"));
        assert_eq!(d.message_id, id);
        assert_eq!(d.receive_count, n, "ApproximateReceiveCount of delivery {n}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    // The next receive finds the message over its limit: it is moved, not delivered.
    let got = q.receive(1, Duration::from_secs(2), SHORT).await.expect("receive");
    assert!(got.is_empty(), "a message over maxReceiveCount was delivered again: {got:?}");
    let mut dead = Vec::new();
    for _ in 0..5 {
        dead = dlq.receive(1, Duration::from_secs(2), Duration::from_secs(30)).await.expect("receive dlq");
        if !dead.is_empty() {
            break;
        }
    }
    assert_eq!(dead.len(), 1, "message not in the dead-letter queue");
    assert_eq!(dead[0].body, "poison");
    assert_eq!(dead[0].attributes.get("job_id").map(String::as_str), Some("p"));
}
