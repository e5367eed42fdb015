//! hektor-dataflow: kinetic sharding — hotness tracking as a timely/differential dataflow,
//! the decision engine that turns hotness into shard-map changes, predictors of hotness,
//! and a simulator that compares sharding strategies with the decision engine itself.
//!
//! - [`hotness`]: the dataflow as a plain function from input collections to output
//!   collections (windows, histograms, per-shard / per-sub-range / per-node load).
//! - [`driver`]: runs it on timely workers (threads or processes), feeds events, and reads a
//!   [`driver::HotnessSnapshot`].
//! - [`busiest`]: the busiest tenant per shard as one specialised timely operator.
//! - [`decide`]: split / merge / migrate / stay, as pure functions of a snapshot, a config
//!   and the history of past actions; emits [`hektor_topics::record::PlanChange`]s.
//! - [`predict`]: hotness forecasts (linear regression, Holt's double exponential
//!   smoothing) for scheduling splits ahead of load.
//! - [`planner`]: the live loop inside `hektor serve` — follows the events topics, decides
//!   every interval and publishes (does not apply) plan changes.
//! - [`sim`]: the kinetic-sharding simulator behind `hektor sim kinetic`.
//! - [`tiering`]: tiers by hotness (seed §2.2) — which shards are hot, warm or cold, as
//!   a pure function of their query rates, the shard map and a per-node hot budget.
//! - [`tally`]: per-worker pre-aggregation of events into weighted tallies, so the
//!   dataflow sees one update per distinct key and second instead of one per event.
//!
//! This crate does not apply plan changes (moving data is the cluster's job). Only
//! [`planner`] reads the log; everything else is handed events through
//! [`driver::HotnessDriver::feed`].

pub mod busiest;
pub mod decide;
pub mod driver;
pub mod hotness;
pub mod planner;
pub mod predict;
pub mod sim;
pub mod tally;
pub mod tiering;

/// Errors of the dataflow crate.
#[derive(Debug, thiserror::Error)]
pub enum DataflowError {
    /// Timely could not start its workers or a worker failed.
    #[error("dataflow workers failed: {0} (check the worker count and cluster addresses)")]
    Timely(String),
    /// The driver's workers have stopped; start a new driver.
    #[error("the hotness dataflow has stopped")]
    Stopped,
    /// Bad input from the caller.
    #[error("invalid input: {0}")]
    Input(String),
    /// Reading or decoding the events topic failed.
    #[error("reading events: {0}")]
    Log(#[from] hektor_topics::Error),
}

/// The log's own errors are [`DataflowError::Log`] too, wrapped as the topics crate wraps them.
impl From<hektor_log::LogError> for DataflowError {
    fn from(err: hektor_log::LogError) -> Self {
        DataflowError::Log(err.into())
    }
}

pub type Result<T, E = DataflowError> = std::result::Result<T, E>;
