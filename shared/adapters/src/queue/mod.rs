//! Job queues: [`memory::MemoryQueue`] (in-process, for the local run and unit tests) and
//! [`sqs::SqsQueue`] (Amazon SQS or an emulator). Both implement [`trace_core::ports::JobQueue`].

pub mod memory;
pub mod sqs;
