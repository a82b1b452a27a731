//! The `JobQueue` contract against the in-process queue and SQS on the emulator.

use trace_integration::{contract::queue, memory_queue, sqs_queue};

#[tokio::test]
async fn memory_queue_contract() {
    let (q, _) = memory_queue(5);
    queue::run(&q).await;
    queue::long_poll(&q).await;
}

#[tokio::test]
async fn memory_queue_redelivery_and_dead_letter() {
    let (q, dlq) = memory_queue(2);
    queue::redelivery_and_dead_letter(&q, &dlq, 2).await;
}

#[tokio::test]
async fn sqs_queue_contract() {
    eprintln!("sqs on {}", trace_integration::emulator());
    let (q, _) = sqs_queue(5).await;
    queue::run(&q).await;
    queue::long_poll(&q).await;
}

#[tokio::test]
async fn sqs_queue_redelivery_and_dead_letter() {
    let (q, dlq) = sqs_queue(2).await;
    queue::redelivery_and_dead_letter(&q, &dlq, 2).await;
}
