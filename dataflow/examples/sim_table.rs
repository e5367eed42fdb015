//! Print the kinetic simulator's table (the same as `hektor sim kinetic`), for quick runs.
use hektor_dataflow::sim::{simulate, SimConfig, Strategy};

fn main() {
    let mut config = SimConfig::default();
    if let Some(q) = std::env::args().nth(1).and_then(|a| a.parse().ok()) {
        config.service_qps_per_thread = q;
    }
    for s in Strategy::ALL {
        let t = std::time::Instant::now();
        let r = simulate(&config, s);
        println!(
            "{:<20} p99 {:>7.1} ms nodes {:>5} rebalances {:>5} mean util {:.2} max {:.2} ({:.1?})",
            s.name(),
            r.p99_ms,
            r.nodes,
            r.rebalances_per_day,
            r.mean_utilisation,
            r.max_utilisation,
            t.elapsed()
        );
    }
    let (lin, holt) = hektor_dataflow::sim::predictor_errors(&config, 10);
    println!("predictor MAE (10 steps ahead): linear {lin:.1} holt {holt:.1}");
}
