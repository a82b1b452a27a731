//! The `BackfillMarkers` contract.

use std::sync::Arc;
use std::time::Duration;

use trace_core::ports::{BackfillMarkers, Claim};

/// Long enough not to expire during a test.
const LONG: Duration = Duration::from_secs(600);
/// The shortest TTL a marker has (whole seconds, at least one).
const SHORT: Duration = Duration::from_secs(1);

/// A window key no other test uses.
fn window() -> String {
    crate::unique("2025-01-01T00:00:00Z/2025-01-02T00:00:00Z")
}

fn pending() -> Claim {
    Claim::Taken { job_id: None }
}

/// The first claim wins; the next ones find the batch pending.
pub async fn a_claim_is_won_once(m: &dyn BackfillMarkers) {
    let w = window();
    assert_eq!(m.claim(&w, 0, LONG).await.expect("claim"), Claim::Won);
    assert_eq!(m.claim(&w, 0, LONG).await.expect("claim"), pending());
    assert_eq!(m.claim(&w, 0, LONG).await.expect("claim"), pending());
}

/// A confirmed batch names its job to later claims.
pub async fn a_confirmed_marker_names_its_job(m: &dyn BackfillMarkers) {
    let w = window();
    assert_eq!(m.claim(&w, 3, LONG).await.expect("claim"), Claim::Won);
    m.confirm(&w, 3, "job-3", LONG).await.expect("confirm");
    assert_eq!(m.claim(&w, 3, LONG).await.expect("claim"), Claim::Taken { job_id: Some("job-3".into()) });
}

/// A released batch can be claimed again.
pub async fn a_released_marker_can_be_claimed_again(m: &dyn BackfillMarkers) {
    let w = window();
    assert_eq!(m.claim(&w, 1, LONG).await.expect("claim"), Claim::Won);
    m.release(&w, 1).await.expect("release");
    assert_eq!(m.claim(&w, 1, LONG).await.expect("claim"), Claim::Won);
    // Releasing what is not marked is no error.
    m.release(&window(), 1).await.expect("release of nothing");
}

/// Markers are per (window, batch).
pub async fn markers_are_per_window_and_batch(m: &dyn BackfillMarkers) {
    let (w, other) = (window(), window());
    assert_eq!(m.claim(&w, 0, LONG).await.expect("claim"), Claim::Won);
    assert_eq!(m.claim(&w, 1, LONG).await.expect("claim"), Claim::Won);
    assert_eq!(m.claim(&other, 0, LONG).await.expect("claim"), Claim::Won);
    m.confirm(&w, 1, "job-1", LONG).await.expect("confirm");
    assert_eq!(m.claim(&w, 0, LONG).await.expect("claim"), pending());
}

/// A claim expires after its TTL (a run that died between claim and job), and so does a confirmed
/// marker.
pub async fn markers_expire_after_their_ttl(m: &dyn BackfillMarkers) {
    let w = window();
    assert_eq!(m.claim(&w, 0, SHORT).await.expect("claim"), Claim::Won);
    assert_eq!(m.claim(&w, 1, LONG).await.expect("claim"), Claim::Won);
    m.confirm(&w, 1, "job-1", SHORT).await.expect("confirm");
    assert_eq!(m.claim(&w, 2, LONG).await.expect("claim"), Claim::Won);
    tokio::time::sleep(SHORT * 2 + Duration::from_millis(100)).await;
    assert_eq!(m.claim(&w, 0, LONG).await.expect("claim"), Claim::Won, "the claim outlived its TTL");
    assert_eq!(m.claim(&w, 1, LONG).await.expect("claim"), Claim::Won, "the job's marker outlived its TTL");
    assert_eq!(m.claim(&w, 2, LONG).await.expect("claim"), pending(), "a long claim expired");
}

/// Of `contenders` concurrent claims of one batch, exactly one wins; repeated `rounds` times.
pub async fn exactly_one_claim_wins(m: Arc<dyn BackfillMarkers>, rounds: usize, contenders: usize) {
    for round in 0..rounds {
        let w = window();
        let tasks: Vec<_> = (0..contenders)
            .map(|_| {
                let (m, w) = (m.clone(), w.clone());
                tokio::spawn(async move { m.claim(&w, 0, LONG).await.expect("claim") })
            })
            .collect();
        let mut won = 0;
        for t in tasks {
            if t.await.expect("task") == Claim::Won {
                won += 1;
            }
        }
        assert_eq!(won, 1, "round {round}: {won} of {contenders} claims won");
    }
}
