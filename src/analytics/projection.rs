//! Projects daily AI cost for the coming days from the daily cost history.
//!
//! Everything here is integer arithmetic: money is nano-USD in `i64`, and the
//! model is solved exactly as fractions of `i128` numbers, rounded only when a
//! value is handed back. No input can make it panic: negative days count as 0,
//! the caps on history and horizon keep the fit's numbers far inside `i128`,
//! the band arithmetic saturates, and results saturate into `i64`.
//!
//! # Model (`Method::WeekdayTrend`, 14 days or more)
//!
//! Cost on day `t` (counted from the first day with any cost) is modelled as
//! `y_t = a + b·t + s_w + noise`, with `w` the weekday of day `t` and the seven
//! weekday effects `s_w` adding up to zero. The effects are additive, in
//! nano-USD, because a day's cost is roughly "usual level plus or minus what
//! that weekday adds", and an additive model stays exact when a weekday is
//! zero. It is fitted by ordinary least squares, solved in closed form: with a
//! separate level per weekday, the least-squares slope is the slope *within*
//! weekdays (each weekday's times and costs centred on that weekday's mean),
//! and each weekday's level is its mean cost minus the slope times its mean
//! time. `a` is the mean of the seven levels and `s_w` their deviations from
//! it. Projections below zero are shown as zero.
//!
//! # Band (about 80%)
//!
//! From the fit's own errors, taken relative to the fitted cost of their day,
//! because cost swings grow with cost: a day that costs twice as much also
//! swings about twice as much. (Each day's scale is its fitted cost, but at
//! least a tenth of the mean daily cost, so days fitted near zero do not turn
//! small misses into huge ratios.) The band runs from the 10th to the 90th
//! percentile of these relative residuals (the low one at most 0, the high
//! one at least 0), applied to the projected day's own scale.
//!
//! Residuals of a fitted model understate new errors, so both are widened by
//! the usual least-squares prediction factor
//! `sqrt(n/(n-8) · (1 + 1/n_w + (t-t̄_w)²/Sxx))`: `n/(n-8)` undoes the
//! shrinkage from fitting 8 numbers to `n` days, `1/n_w` is the uncertainty of
//! that weekday's level (`n_w` days of it), and the last term is the
//! uncertainty of the slope, which grows with the distance from the middle of
//! the history (`Sxx` is the spread of the days around their weekday's mean
//! day), so the band widens further out.
//!
//! The band of the total is not the sum of the daily bands, which would assume
//! every day misses in the same direction. It uses the same least-squares
//! variance for the *sum* of the projected days,
//! `H + Σ_w H_w²/n_w + (Σ_t (t-t̄_w))²/Sxx` for `H` days of which `H_w` fall
//! on weekday `w`, times `n/(n-8)`: its square root times the residual
//! percentiles times the mean scale of the projected days. This assumes days
//! miss independently of each other; when usage runs in multi-day bursts the
//! real spread of the total is wider than this band.
//!
//! # Short history (`Method::RecentMean`, 1 to 13 days)
//!
//! Too little to separate weekdays from trend: the flat mean of the days there
//! are, with a band from the cheapest to the dearest day seen, widened to at
//! least half to double the mean because a few days say little. Its totals are
//! the daily figures times the number of days: here the main doubt is the
//! level itself, which is shared by every day, so the daily bands do add up.
//!
//! # No history (`Method::None`)
//!
//! An empty history, or one with no day above zero, projects nothing: no days,
//! all totals 0. With no cost ever seen there is no level to project from.

use chrono::{Datelike, Days, NaiveDate};

/// Days of history needed for the weekday-and-trend model (two full weeks).
pub const MIN_SEASONAL_DAYS: usize = 14;

/// Most recent days of history the model uses: 13 whole weeks. Usage from
/// more than a quarter ago says little about next month, and whole weeks keep
/// the weekdays evenly represented.
pub const MAX_HISTORY_DAYS: usize = 91;

/// Longest horizon projected, about ten years; longer requests are cut to it.
/// Extending a fitted trend further is meaningless, and the cap keeps the
/// output small and every intermediate number far inside `i128`.
pub const MAX_HORIZON_DAYS: usize = 3660;

/// Most and fewest days the backtest holds out.
const BACKTEST_MAX_HOLDOUT: usize = 14;
const BACKTEST_MIN_HOLDOUT: usize = 7;

/// Numbers the weekday-and-trend model fits: seven weekday levels and a slope.
const FITTED_PARAMETERS: usize = 8;

/// Residual percentiles that bound the band: 10th to 90th, about 80%.
const LOW_PERCENTILE: i128 = 10;
const HIGH_PERCENTILE: i128 = 90;

/// Square roots are taken in millionths.
const SQRT_UNIT: i128 = 1_000_000;

/// Relative residuals are kept in millionths.
const PPM: i128 = 1_000_000;

/// Errors are measured relative to the fitted cost of their day, but never
/// relative to less than the mean daily cost divided by this, so days fitted
/// near zero do not turn small misses into huge ratios.
const SCALE_FLOOR_DIVISOR: i128 = 10;

/// Basis points in one whole.
const BASIS_POINTS: i128 = 10_000;

/// Which model produced a projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Linear trend plus an additive weekday effect in nano-USD, fitted by
    /// least squares.
    WeekdayTrend,
    /// Fewer than MIN_SEASONAL_DAYS days: the mean of the days there are, flat, with a wide band.
    RecentMean,
    /// No history at all: nothing projected.
    None,
}

impl Method {
    /// Stable name for reports and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::WeekdayTrend => "weekday_trend",
            Method::RecentMean => "recent_mean",
            Method::None => "none",
        }
    }
}

/// One projected day: the expected cost and its band, all in nano-USD,
/// with `0 <= low_nano_usd <= expected_nano_usd <= high_nano_usd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectedDay {
    pub day: NaiveDate,
    pub expected_nano_usd: i64,
    pub low_nano_usd: i64,
    pub high_nano_usd: i64,
}

/// How well the model would have projected the last days of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backtest {
    /// Days held out at the end of the history and projected from the days before them.
    pub holdout_days: usize,
    /// Weighted absolute percentage error over the holdout: sum|projected-actual| / sum actual, in basis points (1% = 100). None when the held-out actual sum is 0.
    pub wape_basis_points: Option<i64>,
    /// Sum of projected and of actual cost over the holdout.
    pub projected_nano_usd: i64,
    pub actual_nano_usd: i64,
}

/// A cost projection; see the module documentation for the model and band.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    pub method: Method,
    /// Days of history used (after the first day with any cost; leading zero
    /// days before the first cost are ignored; at most MAX_HISTORY_DAYS).
    pub history_days: usize,
    /// true when method != WeekdayTrend: the caller reports "too little history".
    pub insufficient_history: bool,
    /// One entry per projected day, starting the day after the last history
    /// day (empty for Method::None). Fewer than asked only when the horizon
    /// exceeds MAX_HORIZON_DAYS or runs past the last date chrono can hold.
    pub days: Vec<ProjectedDay>,
    /// Sum of the expected cost of `days`.
    pub total_nano_usd: i64,
    /// Band of the total; see the module documentation for how it is combined.
    pub total_low_nano_usd: i64,
    pub total_high_nano_usd: i64,
    /// Trend per day in nano-USD per day (slope), 0 for RecentMean/None.
    pub trend_nano_usd_per_day: i64,
    /// Additive weekday effects Monday..Sunday in nano-USD, summing to zero
    /// (up to rounding). All zero unless WeekdayTrend.
    pub weekday_effect_nano_usd: [i64; 7],
    /// Error of the same method on the last days of the history, when there
    /// is enough history to hold days out (see `backtest`).
    pub backtest: Option<Backtest>,
}

/// Projects daily cost for the `horizon_days` days after the history.
///
/// `history`: one entry per consecutive day, oldest first, ending with the last complete day (the caller zero-fills days without cost). The day of each entry is `first_day + index`.
pub fn project(first_day: NaiveDate, history: &[i64], horizon_days: usize) -> Projection {
    let Some(first_cost) = history.iter().position(|&cost| cost > 0) else {
        return Projection::nothing();
    };
    let start = first_cost.max(history.len().saturating_sub(MAX_HISTORY_DAYS));
    let used: Vec<i128> = history
        .get(start..)
        .unwrap_or(&[])
        .iter()
        .map(|&cost| i128::from(cost.max(0)))
        .collect();
    let start_weekday = (weekday_index(first_day) + start % 7) % 7;
    let dates = projected_dates(first_day, history.len(), horizon_days.min(MAX_HORIZON_DAYS));

    if used.len() >= MIN_SEASONAL_DAYS
        && let Some(fit) = Fit::new(&used, start_weekday)
    {
        return weekday_trend(&fit, &used, start_weekday, &dates);
    }
    recent_mean(&used, &dates)
}

/// The first projected day on which cumulative expected cost (starting from 0 at the first projected day) exceeds `remaining_nano_usd`; None if never within the projection. remaining <= 0 → the first projected day.
pub fn exhaustion_day(projection: &Projection, remaining_nano_usd: i64) -> Option<NaiveDate> {
    if remaining_nano_usd <= 0 {
        return projection.days.first().map(|day| day.day);
    }
    let remaining = i128::from(remaining_nano_usd);
    let mut spent: i128 = 0;
    for day in &projection.days {
        spent += i128::from(day.expected_nano_usd);
        if spent > remaining {
            return Some(day.day);
        }
    }
    None
}

impl Projection {
    /// The projection for a history without any cost.
    fn nothing() -> Projection {
        Projection {
            method: Method::None,
            history_days: 0,
            insufficient_history: true,
            days: Vec::new(),
            total_nano_usd: 0,
            total_low_nano_usd: 0,
            total_high_nano_usd: 0,
            trend_nano_usd_per_day: 0,
            weekday_effect_nano_usd: [0; 7],
            backtest: None,
        }
    }
}

/// Builds the weekday-and-trend projection from its fit.
fn weekday_trend(
    fit: &Fit,
    used: &[i128],
    start_weekday: usize,
    dates: &[NaiveDate],
) -> Projection {
    let n = used.len();
    let floor = (used.iter().sum::<i128>() / wide(n) / SCALE_FLOOR_DIVISOR).max(1);
    let scale = |t: usize| fit.fitted(t).max(floor);
    let mut relative: Vec<i128> = used
        .iter()
        .enumerate()
        .map(|(t, &cost)| div_round(fit.residual(t, cost).saturating_mul(PPM), scale(t)))
        .collect();
    relative.sort_unstable();
    let below = percentile(&relative, LOW_PERCENTILE).min(0);
    let above = percentile(&relative, HIGH_PERCENTILE).max(0);

    let mut days = Vec::with_capacity(dates.len());
    let mut total: i128 = 0;
    let mut scale_sum: i128 = 0;
    for (k, &day) in dates.iter().enumerate() {
        let t = n + k;
        let raw = fit.fitted(t);
        let (expected, low, high) = banded(raw, below, above, scale(t), fit.day_spread(t));
        total = total.saturating_add(expected);
        scale_sum = scale_sum.saturating_add(scale(t));
        days.push(ProjectedDay {
            day,
            expected_nano_usd: saturate(expected),
            low_nano_usd: saturate(low),
            high_nano_usd: saturate(high),
        });
    }
    let mean_scale = div_round(scale_sum, wide(dates.len()));
    let total_spread = fit.total_spread(n..n + dates.len());
    let (_, total_low, total_high) = banded(total, below, above, mean_scale, total_spread);

    Projection {
        method: Method::WeekdayTrend,
        history_days: n,
        insufficient_history: false,
        days,
        total_nano_usd: saturate(total),
        total_low_nano_usd: saturate(total_low),
        total_high_nano_usd: saturate(total_high),
        trend_nano_usd_per_day: saturate(fit.slope()),
        weekday_effect_nano_usd: fit.weekday_effects().map(saturate),
        backtest: backtest(used, start_weekday),
    }
}

/// Builds the flat projection for a short history (at least one day).
fn recent_mean(used: &[i128], dates: &[NaiveDate]) -> Projection {
    let sum: i128 = used.iter().sum();
    let mean = div_round(sum, wide(used.len()));
    let cheapest = used.iter().copied().min().unwrap_or(0);
    let dearest = used.iter().copied().max().unwrap_or(0);
    let low = cheapest.min(mean / 2);
    let high = dearest.max(mean * 2);

    let days: Vec<ProjectedDay> = dates
        .iter()
        .map(|&day| ProjectedDay {
            day,
            expected_nano_usd: saturate(mean),
            low_nano_usd: saturate(low),
            high_nano_usd: saturate(high),
        })
        .collect();
    let count = wide(days.len());

    Projection {
        method: Method::RecentMean,
        history_days: used.len(),
        insufficient_history: true,
        days,
        total_nano_usd: saturate(mean * count),
        total_low_nano_usd: saturate(low * count),
        total_high_nano_usd: saturate(high * count),
        trend_nano_usd_per_day: 0,
        weekday_effect_nano_usd: [0; 7],
        backtest: None,
    }
}

/// Refits on the history without its last days and scores the projection of
/// those days. With at least 2·MIN_SEASONAL_DAYS days it holds out a quarter
/// of them, between 7 and 14 days; with fewer it holds out 7 days when
/// MIN_SEASONAL_DAYS remain to fit on, and otherwise gives no backtest.
fn backtest(used: &[i128], start_weekday: usize) -> Option<Backtest> {
    let n = used.len();
    let holdout = if n >= 2 * MIN_SEASONAL_DAYS {
        (n / 4).clamp(BACKTEST_MIN_HOLDOUT, BACKTEST_MAX_HOLDOUT)
    } else {
        BACKTEST_MIN_HOLDOUT
    };
    let train_days = n.checked_sub(holdout)?;
    if train_days < MIN_SEASONAL_DAYS {
        return None;
    }
    let fit = Fit::new(used.get(..train_days)?, start_weekday)?;

    let mut projected: i128 = 0;
    let mut actual: i128 = 0;
    let mut absolute_error: i128 = 0;
    for (t, &cost) in used.iter().enumerate().skip(train_days) {
        let expected = fit.fitted(t).max(0);
        projected += expected;
        actual += cost;
        absolute_error += (expected - cost).abs();
    }
    let wape = (actual > 0).then(|| saturate(div_round(absolute_error * BASIS_POINTS, actual)));
    Some(Backtest {
        holdout_days: holdout,
        wape_basis_points: wape,
        projected_nano_usd: saturate(projected),
        actual_nano_usd: saturate(actual),
    })
}

/// Expected value and band for one projected amount: `raw` is the model's
/// value (possibly negative), `below <= 0 <= above` the relative residual
/// percentiles in millionths of `scale`, and `spread` their widening factor in
/// millionths. Returns clamped `(expected, low, high)` with
/// `0 <= low <= expected <= high`. Saturates instead of overflowing.
fn banded(raw: i128, below: i128, above: i128, scale: i128, spread: i128) -> (i128, i128, i128) {
    let offset = |relative: i128| {
        let amount = div_round(relative.saturating_mul(scale), PPM);
        div_round(amount.saturating_mul(spread), SQRT_UNIT)
    };
    let expected = raw.max(0);
    let low = raw.saturating_add(offset(below)).clamp(0, expected);
    let high = raw.saturating_add(offset(above)).max(expected);
    (expected, low, high)
}

/// The exact least-squares fit of `y_t = level_w + slope·t` (one level per
/// weekday, one common slope) to days `t = 0..n`.
///
/// Everything is kept as exact fractions. With `L` the least common multiple
/// of the weekday day counts (so every weekday mean has the denominator `L`):
/// `sxx_l = L·Σ(t-t̄_w)²`, `sxy_l = L·Σ(t-t̄_w)(y-ȳ_w)`, slope `= sxy_l/sxx_l`,
/// and level `w = level_num[w] / den` with `den = L·sxx_l`.
///
/// Size: at most 91 days of at most `i64::MAX` (< 10^19) each, a horizon of at
/// most 3660 days and `L <= 14·13` keep every product below about 10^32, far
/// under the `i128` limit of 1.7·10^38. No cost is ever squared.
struct Fit {
    /// Days fitted.
    days: usize,
    /// Weekday of day 0, Monday = 0.
    start_weekday: usize,
    /// Days on each weekday, Monday first.
    count: [i128; 7],
    /// Sum of `t` over each weekday's days.
    time_sum: [i128; 7],
    lcm: i128,
    sxx_l: i128,
    sxy_l: i128,
    level_num: [i128; 7],
    den: i128,
}

impl Fit {
    /// Fits `costs` (day 0 on weekday `start_weekday`). None when some
    /// weekday has fewer than two days, which cannot happen with 14 days.
    fn new(costs: &[i128], start_weekday: usize) -> Option<Fit> {
        let mut count = [0i128; 7];
        let mut time_sum = [0i128; 7];
        let mut time_square_sum = [0i128; 7];
        let mut cost_sum = [0i128; 7];
        let mut time_cost_sum = [0i128; 7];
        for (t, &cost) in costs.iter().enumerate() {
            let w = (start_weekday + t) % 7;
            let time = wide(t);
            count[w] += 1;
            time_sum[w] += time;
            time_square_sum[w] += time * time;
            cost_sum[w] += cost;
            time_cost_sum[w] += time * cost;
        }
        if count.iter().any(|&c| c < 2) {
            return None;
        }
        let lcm = count.iter().fold(1, |acc, &c| lcm(acc, c));

        let mut sxx_l = 0;
        let mut sxy_l = 0;
        for w in 0..7 {
            let share = lcm / count[w];
            sxx_l += share * (count[w] * time_square_sum[w] - time_sum[w] * time_sum[w]);
            sxy_l += share * (count[w] * time_cost_sum[w] - time_sum[w] * cost_sum[w]);
        }
        if sxx_l <= 0 {
            return None;
        }
        let level_num =
            std::array::from_fn(|w| (cost_sum[w] * sxx_l - sxy_l * time_sum[w]) * (lcm / count[w]));
        Some(Fit {
            days: costs.len(),
            start_weekday,
            count,
            time_sum,
            lcm,
            sxx_l,
            sxy_l,
            level_num,
            den: lcm * sxx_l,
        })
    }

    fn weekday(&self, t: usize) -> usize {
        (self.start_weekday + t) % 7
    }

    /// The model's value on day `t` times `den`, exact.
    fn fitted_num(&self, t: usize) -> i128 {
        self.level_num[self.weekday(t)] + self.sxy_l * self.lcm * wide(t)
    }

    /// The model's value on day `t`, rounded, not clamped at zero.
    fn fitted(&self, t: usize) -> i128 {
        div_round(self.fitted_num(t), self.den)
    }

    /// Actual minus fitted on day `t`, rounded.
    fn residual(&self, t: usize, cost: i128) -> i128 {
        div_round(cost * self.den - self.fitted_num(t), self.den)
    }

    fn slope(&self) -> i128 {
        div_round(self.sxy_l, self.sxx_l)
    }

    /// Weekday levels minus their mean, Monday first.
    fn weekday_effects(&self) -> [i128; 7] {
        let all: i128 = self.level_num.iter().sum();
        self.level_num
            .map(|level| div_round(7 * level - all, 7 * self.den))
    }

    /// `n/(n-8)`: how much larger new errors are than the fitted residuals.
    fn inflation(&self) -> (i128, i128) {
        let n = wide(self.days);
        (n, (n - wide(FITTED_PARAMETERS)).max(1))
    }

    /// Band scale for day `t`, in millionths:
    /// `sqrt(n/(n-8) · (1 + 1/n_w + (t-t̄_w)²/Sxx))`.
    fn day_spread(&self, t: usize) -> i128 {
        let w = self.weekday(t);
        let n_w = self.count[w];
        let offset = wide(t) * n_w - self.time_sum[w]; // (t - t̄_w)·n_w
        let num = n_w * n_w * self.sxx_l + n_w * self.sxx_l + offset * offset * self.lcm;
        let den = n_w * n_w * self.sxx_l;
        let (grow, shrink) = self.inflation();
        sqrt_ratio(num * grow, den * shrink)
    }

    /// Band scale for the sum over days `ts`, in millionths: the square root
    /// of `n/(n-8) · (H + Σ_w H_w²/n_w + (Σ_t (t-t̄_w))²/Sxx)`.
    fn total_spread(&self, ts: std::ops::Range<usize>) -> i128 {
        let mut per_weekday = [0i128; 7];
        let mut offset_sum = 0; // L · Σ (t - t̄_w)
        for t in ts.clone() {
            let w = self.weekday(t);
            per_weekday[w] += 1;
            offset_sum += (wide(t) * self.count[w] - self.time_sum[w]) * (self.lcm / self.count[w]);
        }
        let mut num = wide(ts.len()) * self.den + offset_sum * offset_sum;
        for (h_w, n_w) in per_weekday.iter().zip(self.count) {
            num += h_w * h_w * (self.lcm / n_w) * self.sxx_l;
        }
        let (grow, shrink) = self.inflation();
        sqrt_ratio(num * grow, self.den * shrink)
    }
}

/// `sqrt(num/den)` in millionths, rounded down; 0 for a non-positive ratio.
fn sqrt_ratio(num: i128, den: i128) -> i128 {
    if num <= 0 || den <= 0 {
        return 0;
    }
    let scaled = num.saturating_mul(SQRT_UNIT * SQRT_UNIT) / den;
    u128::try_from(scaled)
        .map(|s| wide_u(s.isqrt()))
        .unwrap_or(0)
}

/// The `pct`-th percentile of sorted values, interpolating between neighbours.
fn percentile(sorted: &[i128], pct: i128) -> i128 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0;
    };
    let position = pct * wide(last);
    let index = usize::try_from(position / 100).unwrap_or(last).min(last);
    let fraction = position % 100;
    let lower = sorted.get(index).copied().unwrap_or(0);
    let upper = sorted.get(index + 1).copied().unwrap_or(lower);
    lower + div_round((upper - lower) * fraction, 100)
}

/// Dates of the projected days: from the day after the history, `horizon`
/// days, stopping early at the last date chrono can represent.
fn projected_dates(first_day: NaiveDate, history_len: usize, horizon: usize) -> Vec<NaiveDate> {
    (0..horizon)
        .map_while(|k| {
            let offset = u64::try_from(history_len.checked_add(k)?).ok()?;
            first_day.checked_add_days(Days::new(offset))
        })
        .collect()
}

/// Monday = 0 .. Sunday = 6.
fn weekday_index(day: NaiveDate) -> usize {
    usize::try_from(day.weekday().num_days_from_monday()).unwrap_or(0)
}

/// `num/den` rounded to the nearest integer, halves upward; 0 if `den <= 0`.
fn div_round(num: i128, den: i128) -> i128 {
    if den <= 0 {
        return 0;
    }
    let quotient = num.div_euclid(den);
    if num.rem_euclid(den) * 2 >= den {
        quotient + 1
    } else {
        quotient
    }
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.abs()
}

fn lcm(a: i128, b: i128) -> i128 {
    let divisor = gcd(a, b);
    if divisor == 0 { 0 } else { a / divisor * b }
}

fn wide(value: usize) -> i128 {
    i128::try_from(value).unwrap_or(i128::MAX)
}

fn wide_u(value: u128) -> i128 {
    i128::try_from(value).unwrap_or(i128::MAX)
}

/// Clamps into `i64`.
fn saturate(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const USD: i64 = 1_000_000_000;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    /// A Wednesday.
    fn start() -> NaiveDate {
        date(2026, 9, 2)
    }

    /// Weekday effects Monday..Sunday: Monday +$3, Tuesday..Friday +$5.25,
    /// weekend -$12; they sum to zero.
    const EFFECT: [i64; 7] = [
        3 * USD,
        5_250_000_000,
        5_250_000_000,
        5_250_000_000,
        5_250_000_000,
        -12 * USD,
        -12 * USD,
    ];

    /// $20 + $0.50 per day since `start()` + the weekday effect.
    fn truth(t: i64) -> i64 {
        let day = start() + Days::new(u64::try_from(t).unwrap());
        20 * USD + t * (USD / 2) + EFFECT[weekday_index(day)]
    }

    /// Deterministic noise in basis points, uniform in -1000..=1000 (±10%).
    struct Lcg(u64);
    impl Lcg {
        fn next_bp(&mut self) -> i64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            i64::try_from((self.0 >> 33) % 2001).unwrap() - 1000
        }
    }

    fn noisy(value: i64, lcg: &mut Lcg) -> i64 {
        value + value / 10_000 * lcg.next_bp()
    }

    fn within_percent(actual: i64, expected: i64, percent: i64) -> bool {
        (i128::from(actual) - i128::from(expected)).abs() * 100
            <= i128::from(expected).abs() * i128::from(percent)
    }

    fn assert_band_order(p: &Projection) {
        for d in &p.days {
            assert!(0 <= d.low_nano_usd, "{d:?}");
            assert!(d.low_nano_usd <= d.expected_nano_usd, "{d:?}");
            assert!(d.expected_nano_usd <= d.high_nano_usd, "{d:?}");
        }
        assert!(0 <= p.total_low_nano_usd);
        assert!(p.total_low_nano_usd <= p.total_nano_usd);
        assert!(p.total_nano_usd <= p.total_high_nano_usd);
    }

    #[test]
    fn recovers_trend_and_weekdays_without_noise() {
        let history: Vec<i64> = (0..56).map(truth).collect();
        let p = project(start(), &history, 30);
        assert_eq!(p.method, Method::WeekdayTrend);
        assert_eq!(p.method.as_str(), "weekday_trend");
        assert!(!p.insufficient_history);
        assert_eq!(p.history_days, 56);
        assert_eq!(p.days.len(), 30);
        for (k, d) in p.days.iter().enumerate() {
            let want = truth(56 + i64::try_from(k).unwrap());
            assert!(
                (d.expected_nano_usd - want).abs() <= 10,
                "{k}: {d:?} vs {want}"
            );
            // No residuals, so no band.
            assert_eq!(d.low_nano_usd, d.expected_nano_usd);
            assert_eq!(d.high_nano_usd, d.expected_nano_usd);
        }
        assert!((p.trend_nano_usd_per_day - USD / 2).abs() <= 10);
        for (got, want) in p.weekday_effect_nano_usd.iter().zip(EFFECT) {
            assert!((got - want).abs() <= 10, "{got} vs {want}");
        }
        let true_total: i64 = (56..86).map(truth).sum();
        assert!((p.total_nano_usd - true_total).abs() <= 300);
        let bt = p.backtest.unwrap();
        assert_eq!(bt.holdout_days, 14);
        assert_eq!(bt.wape_basis_points, Some(0));
        assert_eq!(bt.projected_nano_usd, bt.actual_nano_usd);
    }

    #[test]
    fn flat_mean_would_fail_the_noise_free_test() {
        let history: Vec<i64> = (0..56).map(truth).collect();
        let mean = history.iter().sum::<i64>() / 56;
        let true_total: i64 = (56..86).map(truth).sum();
        assert!(!within_percent(mean * 30, true_total, 1));
        // Nor does the flat mean match day by day.
        let off = (56..86)
            .filter(|&t| !within_percent(mean, truth(t), 1))
            .count();
        assert!(off >= 25, "{off}");
    }

    #[test]
    fn noisy_series_total_band_and_backtest() {
        let mut lcg = Lcg(42);
        let history: Vec<i64> = (0..56).map(|t| noisy(truth(t), &mut lcg)).collect();
        let future: Vec<i64> = (56..86).map(|t| noisy(truth(t), &mut lcg)).collect();
        let p = project(start(), &history, 30);
        assert_eq!(p.method, Method::WeekdayTrend);
        assert_band_order(&p);

        let true_total: i64 = (56..86).map(truth).sum();
        assert!(
            within_percent(p.total_nano_usd, true_total, 5),
            "{} vs {true_total}",
            p.total_nano_usd
        );
        assert!(p.total_low_nano_usd < true_total && true_total < p.total_high_nano_usd);
        // The band widens with the horizon: relative to the expected cost,
        // day 29 (same weekday as day 1, four weeks on) has the wider band.
        let width = |d: &ProjectedDay| i128::from(d.high_nano_usd - d.low_nano_usd);
        let (near, far) = (&p.days[0], &p.days[28]);
        assert!(
            width(far) * i128::from(near.expected_nano_usd)
                > width(near) * i128::from(far.expected_nano_usd)
        );
        let actual_total: i64 = future.iter().sum();
        assert!(p.total_low_nano_usd < actual_total && actual_total < p.total_high_nano_usd);
        assert!(within_percent(p.trend_nano_usd_per_day, USD / 2, 20));

        let covers =
            |value: i64, d: &ProjectedDay| d.low_nano_usd <= value && value <= d.high_nano_usd;
        let truth_in = (56..86)
            .zip(&p.days)
            .filter(|&(t, d)| covers(truth(t), d))
            .count();
        let actual_in = future
            .iter()
            .zip(&p.days)
            .filter(|&(&v, d)| covers(v, d))
            .count();
        assert!(
            truth_in >= 27,
            "noise-free value inside the band on {truth_in}/30 days"
        );
        assert!(
            actual_in >= 21,
            "noisy actual inside the band on {actual_in}/30 days"
        );

        let bt = p.backtest.unwrap();
        assert_eq!(bt.holdout_days, 14);
        let wape = bt.wape_basis_points.unwrap();
        assert!((1..1500).contains(&wape), "{wape}");
    }

    #[test]
    fn short_and_empty_histories() {
        let history = [10 * USD, 12 * USD, 8 * USD, 11 * USD, 9 * USD];
        let p = project(start(), &history, 30);
        assert_eq!(p.method, Method::RecentMean);
        assert_eq!(p.method.as_str(), "recent_mean");
        assert!(p.insufficient_history);
        assert_eq!(p.history_days, 5);
        assert_eq!(p.days.len(), 30);
        assert!(p.backtest.is_none());
        assert_eq!(p.trend_nano_usd_per_day, 0);
        assert_eq!(p.weekday_effect_nano_usd, [0; 7]);
        for d in &p.days {
            assert_eq!(d.expected_nano_usd, 10 * USD);
            assert!(d.low_nano_usd < d.expected_nano_usd && d.expected_nano_usd < d.high_nano_usd);
        }
        assert_eq!(p.total_nano_usd, 300 * USD);
        assert_band_order(&p);

        // One day: the band is still wide.
        let p = project(start(), &[4 * USD], 3);
        assert_eq!(
            (p.days[0].low_nano_usd, p.days[0].high_nano_usd),
            (2 * USD, 8 * USD)
        );

        for history in [&[][..], &[0, 0, 0][..], &[-5, 0, -1][..]] {
            let p = project(start(), history, 30);
            assert_eq!(p.method, Method::None);
            assert_eq!(p.method.as_str(), "none");
            assert!(p.insufficient_history);
            assert!(p.days.is_empty());
            assert_eq!((p.total_nano_usd, p.history_days), (0, 0));
            assert_eq!(exhaustion_day(&p, 0), None);
        }
    }

    #[test]
    fn exhaustion_day_finds_the_crossing() {
        let p = project(start(), &[10 * USD; 5], 10);
        let first = p.days[0].day;
        // $10 a day: $35 is exceeded on the 4th day ($40), not at $30.
        assert_eq!(exhaustion_day(&p, 35 * USD), Some(first + Days::new(3)));
        // Reaching exactly the remainder is not exceeding it.
        assert_eq!(exhaustion_day(&p, 30 * USD), Some(first + Days::new(3)));
        assert_eq!(exhaustion_day(&p, 30 * USD - 1), Some(first + Days::new(2)));
        assert_eq!(exhaustion_day(&p, 100 * USD), None);
        assert_eq!(exhaustion_day(&p, 99 * USD), Some(first + Days::new(9)));
        assert_eq!(exhaustion_day(&p, 0), Some(first));
        assert_eq!(exhaustion_day(&p, -5), Some(first));
    }

    #[test]
    fn huge_zero_and_negative_values() {
        let huge = 1_000_000_000_000_000; // $1M a day
        let p = project(start(), &vec![huge; 91], 30);
        assert_eq!(p.method, Method::WeekdayTrend);
        assert!(p.days.iter().all(|d| d.expected_nano_usd == huge));
        assert_eq!(p.total_nano_usd, 30 * huge);
        assert_eq!(p.trend_nano_usd_per_day, 0);
        assert_eq!(p.backtest.unwrap().wape_basis_points, Some(0));

        // Extremes must not overflow: every length, the largest values, spiky
        // series and the longest horizon.
        let spiky: Vec<i64> = (0..120)
            .map(|t| if t % 3 == 0 { i64::MAX } else { 0 })
            .collect();
        let ramp: Vec<i64> = (0..120).map(|t| i64::MAX / 120 * (t + 1)).collect();
        let drop: Vec<i64> = (0..120)
            .map(|t| if t < 100 { i64::MAX } else { 1 })
            .collect();
        for series in [vec![i64::MAX; 120], spiky, ramp, drop] {
            for len in 1..=series.len() {
                let p = project(start(), &series[..len], usize::MAX);
                assert_eq!(p.days.len(), MAX_HORIZON_DAYS);
                assert_band_order(&p);
            }
        }

        // Zeros inside the history are real zero-cost days.
        let mut sparse = vec![0; 28];
        sparse[0] = 5 * USD;
        let p = project(start(), &sparse, 7);
        assert_eq!(p.method, Method::WeekdayTrend);
        assert_band_order(&p);
        assert_eq!(p.backtest.unwrap().wape_basis_points, None);

        // Negative days count as zero.
        let with_negatives: Vec<i64> = (0..30)
            .map(|t| if t % 4 == 1 { -7 * USD } else { truth(t) })
            .collect();
        let with_zeros: Vec<i64> = with_negatives.iter().map(|&v| v.max(0)).collect();
        assert_eq!(
            project(start(), &with_negatives, 14),
            project(start(), &with_zeros, 14)
        );
    }

    #[test]
    fn dates_and_weekdays_line_up() {
        use chrono::Weekday;
        assert_eq!(start().weekday(), Weekday::Wed);
        // $10 a day, $30 on Saturdays, after three leading zero days.
        let history: Vec<i64> = (0..38)
            .map(|t| {
                let day = start() + Days::new(t);
                match (t, day.weekday()) {
                    (0..3, _) => 0,
                    (_, Weekday::Sat) => 30 * USD,
                    _ => 10 * USD,
                }
            })
            .collect();
        let p = project(start(), &history, 14);
        assert_eq!(p.history_days, 35);
        assert_eq!(p.days[0].day, start() + Days::new(38));
        for pair in p.days.windows(2) {
            assert_eq!(pair[1].day, pair[0].day + Days::new(1));
        }
        // Saturday (index 5) is $30 - $10 above the others: +$120/7 vs -$20/7.
        let effects = p.weekday_effect_nano_usd;
        assert!((effects[5] - 120 * USD / 7).abs() <= 1, "{effects:?}");
        for (w, &effect) in effects.iter().enumerate().filter(|&(w, _)| w != 5) {
            assert!((effect + 20 * USD / 7).abs() <= 1, "{w}: {effects:?}");
        }
        for d in &p.days {
            let want = if d.day.weekday() == Weekday::Sat {
                30 * USD
            } else {
                10 * USD
            };
            assert!((d.expected_nano_usd - want).abs() <= 1, "{d:?}");
        }
    }

    #[test]
    fn uses_at_most_the_last_91_days() {
        // 50 expensive days long ago must not move a flat recent level.
        let mut history = vec![1000 * USD; 50];
        history.extend(vec![10 * USD; 91]);
        let p = project(start(), &history, 7);
        assert_eq!(p.history_days, MAX_HISTORY_DAYS);
        assert!(p.days.iter().all(|d| d.expected_nano_usd == 10 * USD));
        assert_eq!(p.days[0].day, start() + Days::new(141));
    }

    #[test]
    fn backtest_holdout_sizes() {
        let holdout = |n: i64| {
            let history: Vec<i64> = (0..n).map(truth).collect();
            project(start(), &history, 1)
                .backtest
                .map(|b| b.holdout_days)
        };
        assert_eq!(holdout(14), None);
        assert_eq!(holdout(20), None);
        assert_eq!(holdout(21), Some(7));
        assert_eq!(holdout(27), Some(7));
        assert_eq!(holdout(28), Some(7));
        assert_eq!(holdout(40), Some(10));
        assert_eq!(holdout(91), Some(14));
    }

    #[test]
    fn dates_near_the_end_of_the_calendar_stop_early() {
        let last = NaiveDate::MAX;
        let p = project(last - Days::new(20), &[USD; 14], 30);
        assert_eq!(p.days.len(), 7);
        assert_eq!(p.days.last().unwrap().day, last);
    }
}
