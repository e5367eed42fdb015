//! Hotness forecasts from a shard's history, for splitting ahead of load (seed §4.4,
//! "Predictive Rebalancing").
//!
//! This module owns the predictors only; the decision engine ([`crate::decide`]) consumes
//! their forecasts through [`crate::decide::Forecasts`].
//!
//! - [`Predictor::Linear`]: the seed's baseline, a least-squares line over the last
//!   `window` points, extrapolated (fewer than 10 points: the last value).
//! - [`Predictor::Holt`]: Holt's double exponential smoothing (level + trend), which follows
//!   a curving series (diurnal load) where one straight line over a long window lags.
//!
//! Points are equally spaced (one per decision round); `steps` is how many rounds ahead.

/// A hotness forecaster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Predictor {
    /// Least squares over the last `window` points.
    Linear { window: usize },
    /// Holt's linear trend method: level smoothing `alpha`, trend smoothing `beta`.
    Holt { alpha: f64, beta: f64 },
}

impl Predictor {
    /// The seed's baseline: regression over the last 60 points.
    pub const LINEAR: Predictor = Predictor::Linear { window: 60 };
    /// Holt with the smoothing this crate was tuned with on the simulator's traces.
    pub const HOLT: Predictor = Predictor::Holt {
        alpha: 0.5,
        beta: 0.2,
    };

    /// Forecast `steps` points past the end of `history`; `None` for an empty history.
    pub fn forecast(&self, history: &[f64], steps: f64) -> Option<f64> {
        let last = *history.last()?;
        match *self {
            Predictor::Linear { window } => {
                if history.len() < 10 {
                    return Some(last);
                }
                let from = history.len().saturating_sub(window.max(2));
                let pts = &history[from..];
                let (a, b) = linear_regression(pts);
                Some(a + b * ((pts.len() - 1) as f64 + steps))
            }
            Predictor::Holt { alpha, beta } => {
                if history.len() < 2 {
                    return Some(last);
                }
                let (mut level, mut trend) = (history[0], history[1] - history[0]);
                for &x in &history[1..] {
                    let prev = level;
                    level = alpha * x + (1.0 - alpha) * (level + trend);
                    trend = beta * (level - prev) + (1.0 - beta) * trend;
                }
                Some(level + trend * steps)
            }
        }
    }
}

/// Least squares `y = a + b·i` over `y[i]`, `i = 0..n`.
pub fn linear_regression(y: &[f64]) -> (f64, f64) {
    let n = y.len() as f64;
    if y.is_empty() {
        return (0.0, 0.0);
    }
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, v) in y.iter().enumerate() {
        let dx = i as f64 - mean_x;
        sxy += dx * (v - mean_y);
        sxx += dx * dx;
    }
    let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (mean_y - b * mean_x, b)
}

/// Mean absolute error of `steps`-ahead forecasts over a series: at each point from
/// `warmup` on, forecast from the prefix and compare with the value `steps` later.
pub fn backtest(predictor: Predictor, series: &[f64], steps: usize, warmup: usize) -> f64 {
    let mut err = 0.0;
    let mut n = 0usize;
    for end in warmup.max(1)..series.len().saturating_sub(steps) {
        if let Some(f) = predictor.forecast(&series[..end], steps as f64) {
            err += (f - series[end - 1 + steps]).abs();
            n += 1;
        }
    }
    if n == 0 {
        0.0
    } else {
        err / n as f64
    }
}
