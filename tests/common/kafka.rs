//! The Kafka broker a test binary starts for itself where none is given: one Apache Kafka
//! broker (KRaft, the `apache/kafka` image at the version `scripts/kafka.sh` and the
//! compose file run) in a container started through testcontainers on the first call,
//! shared by every test of the binary and removed when the binary exits. Needs a Docker
//! engine (`DOCKER_HOST`, or the local socket); without one it says why.
//! `HEKTOR_KAFKA_IMAGE_TAG` picks another `apache/kafka` tag.

use std::sync::{Mutex, OnceLock};

use testcontainers_modules::kafka::apache::{Kafka, KAFKA_PORT};
use testcontainers_modules::testcontainers::runners::SyncRunner;
use testcontainers_modules::testcontainers::{Container, ImageExt};

/// The `apache/kafka` tag (the compose file's) unless `HEKTOR_KAFKA_IMAGE_TAG` says.
pub const IMAGE_TAG: &str = "4.1.0";

/// The running broker container, taken and removed at exit.
static CONTAINER: Mutex<Option<Container<Kafka>>> = Mutex::new(None);
/// Its bootstrap address, or why it could not start (tried once per binary).
static STARTED: OnceLock<Result<String, String>> = OnceLock::new();

/// The bootstrap address of this binary's broker container, started on the first call
/// (the others wait for it); `Err` says why there is none (no Docker engine, most often).
pub fn container_brokers() -> Result<String, String> {
    STARTED.get_or_init(start).clone()
}

fn start() -> Result<String, String> {
    let tag = std::env::var("HEKTOR_KAFKA_IMAGE_TAG")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| IMAGE_TAG.to_string());
    eprintln!(
        "NOTE: HEKTOR_KAFKA_BROKERS is unset: starting apache/kafka:{tag} with testcontainers"
    );
    // The module's broker is single-node KRaft, advertised on 127.0.0.1 and the mapped
    // port; the settings below match scripts/kafka.sh's broker (one replica of every
    // internal topic, topics created by hektor only, no rebalance delay).
    let request = Kafka::default()
        .with_jvm_image()
        .with_tag(tag)
        .with_env_var("KAFKA_NODE_ID", "1")
        .with_env_var("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        .with_env_var("KAFKA_MIN_INSYNC_REPLICAS", "1")
        .with_env_var("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env_var("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env_var(
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
            "1",
        )
        .with_env_var("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0");
    let container = request
        .start()
        .map_err(|err| format!("no broker container (is a Docker engine reachable?): {err}"))?;
    let port = container
        .get_host_port_ipv4(KAFKA_PORT)
        .map_err(|err| format!("the broker container has no mapped port: {err}"))?;
    *CONTAINER.lock().unwrap_or_else(|e| e.into_inner()) = Some(container);
    // A static is never dropped: remove the container when the binary exits.
    // SAFETY: `atexit` is the C library's; `remove` is a plain `extern "C" fn` that
    // does not unwind (it catches panics).
    if unsafe { atexit(remove) } != 0 {
        eprintln!("WARNING: the Kafka test container will outlive this test binary");
    }
    let brokers = format!("127.0.0.1:{port}");
    eprintln!("NOTE: Kafka tests use the broker container at {brokers}");
    Ok(brokers)
}

extern "C" fn remove() {
    let container = CONTAINER.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(container) = container {
        let removed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| container.rm()));
        if !matches!(removed, Ok(Ok(()))) {
            eprintln!("WARNING: the Kafka test container could not be removed");
        }
    }
}

extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::os::raw::c_int;
}
