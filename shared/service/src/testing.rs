//! Helpers of the unit tests: an [`App`] over the embedded stand-ins.

use trace_adapters::runtime::{Backends, BackendsFromConfig};
use trace_core::Config;

use crate::App;

/// The configuration of `vars`, open authentication and the local store in `dir` unless `vars` say.
pub(crate) fn config(vars: &[(&str, &str)], dir: &str) -> Config {
    Config::from_lookup(|name| match vars.iter().find(|(k, _)| *k == name) {
        Some((_, v)) => Some(v.to_string()),
        None if name == "TRACE_AUTH" => Some("open".to_owned()),
        None if name == "TRACE_LOCAL_DIR" => Some(dir.to_owned()),
        None => None,
    })
    .unwrap()
}

/// An app over the embedded stand-ins (the reference dataset) with `vars`, its store in a new folder.
pub(crate) async fn app(vars: &[(&str, &str)]) -> App {
    let dir = std::env::temp_dir().join(format!("trace-service-test-{}", uuid::Uuid::new_v4().simple()));
    let config = config(vars, &dir.display().to_string());
    App::new(config.clone(), Backends::from_config(&config).await.unwrap())
}

/// The same app after its job store lost everything (a Redis flush): the object store, queues and
/// source are kept.
pub(crate) fn flushed(app: &App) -> App {
    let mut backends = app.backends.clone();
    backends.jobs = std::sync::Arc::new(trace_adapters::jobs::memory::MemoryJobStore::new());
    App::new((*app.config).clone(), backends)
}
