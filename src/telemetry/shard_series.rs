//! Prometheus series that one shard writes and any thread reads at a scrape.
//!
//! The `prometheus` crate's counters and histograms are safe for many writers: every increment
//! is a locked read-modify-write (a histogram observation makes four). A shard's series have a
//! single writer, the shard's thread, so an update here is a plain load and store of an atomic
//! word (`Relaxed`: no lock prefix, no fence), and a scrape on another thread reads the words as
//! they are. The series are exported through [`Collector`], so they sit in a `Registry` beside
//! the crate's own types and `/metrics` merges them the same way.
//!
//! The single writer is a rule of use, not of the types (a handle is `Send`, as the shard's
//! metrics are built before its thread starts): a series' handles are used by the shard that
//! made them. Two writers would lose counts, never corrupt memory. A histogram's count is the
//! sum of its buckets when read, so `_count` and the `+Inf` bucket always agree; its `_sum` may
//! be read one observation apart from them.

// The one lock here guards a family's list of series: taken when a shard makes a series (once
// per label set) and by a scrape, never when a series is written.
#![allow(clippy::disallowed_types)]

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};

/// One series: its labels (sorted by name, as Prometheus prints them) and its words. A counter
/// or gauge has one word; a histogram one per bucket, one for values above every bound, and
/// one for the sum.
pub struct Cells {
    labels: Vec<LabelPair>,
    words: Box<[AtomicU64]>,
}

/// Adds to a word that only the calling thread writes.
#[inline(always)]
fn add(word: &AtomicU64, n: u64) {
    word.store(word.load(Relaxed).wrapping_add(n), Relaxed);
}

#[inline(always)]
fn add_f64(word: &AtomicU64, v: f64) {
    word.store((f64::from_bits(word.load(Relaxed)) + v).to_bits(), Relaxed);
}

/// A kind of series: how many words it has and how a scrape reads them.
pub trait Series: Sized {
    const TYPE: MetricType;

    fn words(bounds: &[f64]) -> usize {
        let _ = bounds;
        1
    }

    fn handle(cells: Arc<Cells>, bounds: &'static [f64]) -> Self;

    fn export(words: &[AtomicU64], bounds: &[f64], into: &mut proto::Metric);
}

/// A counter of whole numbers.
#[derive(Clone)]
pub struct IntCounter(Arc<Cells>);

impl IntCounter {
    #[inline]
    pub fn inc(&self) {
        self.inc_by(1);
    }

    #[inline]
    pub fn inc_by(&self, n: u64) {
        add(&self.0.words[0], n);
    }

    pub fn get(&self) -> u64 {
        self.0.words[0].load(Relaxed)
    }
}

impl Series for IntCounter {
    const TYPE: MetricType = MetricType::COUNTER;

    fn handle(cells: Arc<Cells>, _: &'static [f64]) -> Self {
        Self(cells)
    }

    fn export(words: &[AtomicU64], _: &[f64], into: &mut proto::Metric) {
        let mut c = proto::Counter::default();
        c.set_value(words[0].load(Relaxed) as f64);
        into.set_counter(c);
    }
}

/// A counter of amounts (USD).
#[derive(Clone)]
pub struct Counter(Arc<Cells>);

impl Counter {
    /// Adds `v`; negative or non-finite amounts are ignored (a counter only goes up).
    #[inline]
    pub fn inc_by(&self, v: f64) {
        if v >= 0.0 && v.is_finite() {
            add_f64(&self.0.words[0], v);
        }
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.words[0].load(Relaxed))
    }
}

impl Series for Counter {
    const TYPE: MetricType = MetricType::COUNTER;

    fn handle(cells: Arc<Cells>, _: &'static [f64]) -> Self {
        Self(cells)
    }

    fn export(words: &[AtomicU64], _: &[f64], into: &mut proto::Metric) {
        let mut c = proto::Counter::default();
        c.set_value(f64::from_bits(words[0].load(Relaxed)));
        into.set_counter(c);
    }
}

/// A gauge of whole numbers.
#[derive(Clone)]
pub struct IntGauge(Arc<Cells>);

impl IntGauge {
    #[inline]
    pub fn set(&self, v: i64) {
        self.0.words[0].store(v as u64, Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.words[0].load(Relaxed) as i64
    }
}

impl Series for IntGauge {
    const TYPE: MetricType = MetricType::GAUGE;

    fn handle(cells: Arc<Cells>, _: &'static [f64]) -> Self {
        Self(cells)
    }

    fn export(words: &[AtomicU64], _: &[f64], into: &mut proto::Metric) {
        let mut g = proto::Gauge::default();
        g.set_value(words[0].load(Relaxed) as i64 as f64);
        into.set_gauge(g);
    }
}

/// A histogram with fixed bucket bounds.
#[derive(Clone)]
pub struct Histogram {
    cells: Arc<Cells>,
    bounds: &'static [f64],
}

impl Histogram {
    #[inline]
    pub fn observe(&self, v: f64) {
        // Values above every bound (and NaN) count in the last bucket, `+Inf` only.
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        let words = &self.cells.words;
        add(&words[i], 1);
        add_f64(&words[self.bounds.len() + 1], v);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.cells.words[..=self.bounds.len()]
            .iter()
            .map(|w| w.load(Relaxed))
            .sum()
    }
}

impl Series for Histogram {
    const TYPE: MetricType = MetricType::HISTOGRAM;

    fn words(bounds: &[f64]) -> usize {
        bounds.len() + 2
    }

    fn handle(cells: Arc<Cells>, bounds: &'static [f64]) -> Self {
        Self { cells, bounds }
    }

    fn export(words: &[AtomicU64], bounds: &[f64], into: &mut proto::Metric) {
        let mut h = proto::Histogram::default();
        let mut cumulative = 0u64;
        let buckets = bounds
            .iter()
            .zip(words)
            .map(|(bound, w)| {
                cumulative += w.load(Relaxed);
                let mut b = proto::Bucket::default();
                b.set_upper_bound(*bound);
                b.set_cumulative_count(cumulative);
                b
            })
            .collect();
        cumulative += words[bounds.len()].load(Relaxed);
        h.set_bucket(buckets);
        h.set_sample_count(cumulative);
        h.set_sample_sum(f64::from_bits(words[bounds.len() + 1].load(Relaxed)));
        into.set_histogram(h);
    }
}

/// The series of one metric name, as a scrape sees them.
struct Family {
    desc: Desc,
    label_names: Vec<String>,
    bounds: &'static [f64],
    kind: MetricType,
    export: fn(&[AtomicU64], &[f64], &mut proto::Metric),
    series: Mutex<Vec<Arc<Cells>>>,
}

/// A metric name with labels: hands out its series' handles to the shard that owns it. Not
/// `Sync`, so one thread at a time makes and writes its series.
pub struct SeriesVec<S: Series> {
    family: Arc<Family>,
    _kind: PhantomData<(S, std::cell::Cell<()>)>,
}

impl<S: Series> SeriesVec<S> {
    pub fn new(name: &str, help: &str, label_names: &[&str]) -> prometheus::Result<Self> {
        Self::with_bounds(name, help, label_names, &[])
    }

    /// A histogram's family: `bounds` ascending.
    pub fn with_bounds(
        name: &str,
        help: &str,
        label_names: &[&str],
        bounds: &'static [f64],
    ) -> prometheus::Result<Self> {
        if bounds.windows(2).any(|w| w[0] >= w[1]) {
            return Err(prometheus::Error::Msg(format!(
                "{name}: histogram bounds must ascend"
            )));
        }
        let label_names: Vec<String> = label_names.iter().map(|l| (*l).to_owned()).collect();
        let desc = Desc::new(
            name.to_owned(),
            help.to_owned(),
            label_names.clone(),
            Default::default(),
        )?;
        Ok(Self {
            family: Arc::new(Family {
                desc,
                label_names,
                bounds,
                kind: S::TYPE,
                export: S::export,
                series: Mutex::new(Vec::new()),
            }),
            _kind: PhantomData,
        })
    }

    /// The series with these label values (in the order of the family's names), made the
    /// first time: exported from then on, at zero until written.
    pub fn with_label_values(&self, values: &[&str]) -> S {
        let f = &*self.family;
        // The callers name their labels in constants; a short list would export a series
        // missing a label.
        debug_assert_eq!(values.len(), f.label_names.len(), "{}", f.desc.fq_name);
        let mut series = f.series.lock().unwrap_or_else(PoisonError::into_inner);
        let same = |c: &&Arc<Cells>| {
            f.label_names.iter().zip(values).all(|(name, value)| {
                c.labels
                    .iter()
                    .any(|l| l.get_name() == name && l.get_value() == *value)
            })
        };
        if let Some(found) = series.iter().find(same) {
            return S::handle(found.clone(), f.bounds);
        }
        let mut labels: Vec<LabelPair> = f
            .label_names
            .iter()
            .zip(values)
            .map(|(name, value)| {
                let mut l = LabelPair::default();
                l.set_name(name.clone());
                l.set_value((*value).to_owned());
                l
            })
            .collect();
        labels.sort_by(|a, b| a.get_name().cmp(b.get_name()));
        let cells = Arc::new(Cells {
            labels,
            words: (0..S::words(f.bounds)).map(|_| AtomicU64::new(0)).collect(),
        });
        series.push(cells.clone());
        S::handle(cells, f.bounds)
    }

    /// What a registry collects: the family's series as they are at each scrape.
    pub fn collector(&self) -> Box<dyn Collector> {
        Box::new(FamilyCollector(self.family.clone()))
    }
}

struct FamilyCollector(Arc<Family>);

impl Collector for FamilyCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let f = &*self.0;
        let series = f.series.lock().unwrap_or_else(PoisonError::into_inner);
        let metrics = series
            .iter()
            .map(|c| {
                let mut m = proto::Metric::default();
                m.set_label(c.labels.clone());
                (f.export)(&c.words, f.bounds, &mut m);
                m
            })
            .collect();
        drop(series);
        let mut mf = MetricFamily::default();
        mf.set_name(f.desc.fq_name.clone());
        mf.set_help(f.desc.help.clone());
        mf.set_field_type(f.kind);
        mf.set_metric(metrics);
        vec![mf]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, Registry, TextEncoder};

    fn text(r: &Registry) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&r.gather(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// The same series through the `prometheus` crate's own types: the text must not change.
    #[test]
    fn exports_what_the_crates_own_types_export() {
        const BOUNDS: &[f64] = &[0.1, 1.0, 10.0];
        let ours = Registry::new();
        let theirs = Registry::new();
        let c: SeriesVec<IntCounter> =
            SeriesVec::new("c_total", "A counter.", &["z", "a"]).unwrap();
        let h: SeriesVec<Histogram> =
            SeriesVec::with_bounds("h_seconds", "A histogram.", &["g"], BOUNDS).unwrap();
        let s: SeriesVec<Counter> = SeriesVec::new("usd_total", "Spend.", &["g"]).unwrap();
        let g: SeriesVec<IntGauge> = SeriesVec::new("in_flight", "A gauge.", &[]).unwrap();
        for x in [c.collector(), h.collector(), s.collector(), g.collector()] {
            ours.register(x).unwrap();
        }
        let tc = prometheus::IntCounterVec::new(
            prometheus::Opts::new("c_total", "A counter."),
            &["z", "a"],
        )
        .unwrap();
        let th = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new("h_seconds", "A histogram.").buckets(BOUNDS.to_vec()),
            &["g"],
        )
        .unwrap();
        let ts = prometheus::CounterVec::new(prometheus::Opts::new("usd_total", "Spend."), &["g"])
            .unwrap();
        let tg = prometheus::IntGauge::new("in_flight", "A gauge.").unwrap();
        theirs.register(Box::new(tc.clone())).unwrap();
        theirs.register(Box::new(th.clone())).unwrap();
        theirs.register(Box::new(ts.clone())).unwrap();
        theirs.register(Box::new(tg.clone())).unwrap();

        c.with_label_values(&["1", "2"]).inc_by(3);
        c.with_label_values(&["1", "2"]).inc();
        c.with_label_values(&["0", "9"]);
        tc.with_label_values(&["1", "2"]).inc_by(3);
        tc.with_label_values(&["1", "2"]).inc();
        tc.with_label_values(&["0", "9"]);
        for v in [0.05, 0.1, 0.5, 3.0, 50.0, 0.0] {
            h.with_label_values(&["x"]).observe(v);
            th.with_label_values(&["x"]).observe(v);
        }
        h.with_label_values(&["y"]);
        th.with_label_values(&["y"]);
        s.with_label_values(&["x"]).inc_by(0.25);
        s.with_label_values(&["x"]).inc_by(1.5);
        ts.with_label_values(&["x"]).inc_by(0.25);
        ts.with_label_values(&["x"]).inc_by(1.5);
        let gauge = g.with_label_values(&[]);
        gauge.set(7);
        gauge.set(-2);
        tg.set(-2);

        assert_eq!(text(&ours), text(&theirs));
        assert_eq!(h.with_label_values(&["x"]).count(), 6);
        assert_eq!(c.with_label_values(&["1", "2"]).get(), 4);
        assert_eq!(gauge.get(), -2);
    }

    #[test]
    fn a_histogram_counts_what_is_above_every_bound_only_in_inf() {
        const BOUNDS: &[f64] = &[1.0];
        let r = Registry::new();
        let h: SeriesVec<Histogram> = SeriesVec::with_bounds("h", "h", &[], BOUNDS).unwrap();
        r.register(h.collector()).unwrap();
        let one = h.with_label_values(&[]);
        one.observe(2.0);
        one.observe(f64::NAN);
        one.observe(1.0);
        let t = text(&r);
        assert!(t.contains("h_bucket{le=\"1\"} 1\n"), "{t}");
        assert!(t.contains("h_bucket{le=\"+Inf\"} 3\n"), "{t}");
        assert!(t.contains("h_count 3\n"), "{t}");
    }

    #[test]
    fn bounds_must_ascend() {
        assert!(SeriesVec::<Histogram>::with_bounds("h", "h", &[], &[1.0, 1.0]).is_err());
    }

    /// Scrapes while the one writer records: every read is a value the series had (counts
    /// never go back, `_count` always equals the `+Inf` bucket), and the last read is exact.
    #[test]
    fn scrapes_during_writes_read_consistent_counts() {
        const BOUNDS: &[f64] = &[1.0, 2.0];
        const N: u64 = 20_000;
        let r = Registry::new();
        let h: SeriesVec<Histogram> = SeriesVec::with_bounds("h", "h", &[], BOUNDS).unwrap();
        let c: SeriesVec<IntCounter> = SeriesVec::new("c_total", "c", &[]).unwrap();
        r.register(h.collector()).unwrap();
        r.register(c.collector()).unwrap();
        let (hist, count) = (h.with_label_values(&[]), c.with_label_values(&[]));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer_done = done.clone();
        let writer = std::thread::spawn(move || {
            for i in 0..N {
                hist.observe((i % 3) as f64 + 0.5);
                count.inc();
            }
            writer_done.store(true, std::sync::atomic::Ordering::Release);
        });
        let read = |r: &Registry| {
            let families = r.gather();
            let h = families.iter().find(|f| f.get_name() == "h").unwrap();
            let h = h.get_metric()[0].get_histogram();
            let c = families.iter().find(|f| f.get_name() == "c_total").unwrap();
            let c = c.get_metric()[0].get_counter().get_value() as u64;
            let buckets: Vec<u64> = h
                .get_bucket()
                .iter()
                .map(|b| b.get_cumulative_count())
                .collect();
            (h.get_sample_count(), buckets, c)
        };
        let mut last = (0, vec![0, 0], 0);
        loop {
            let finished = done.load(std::sync::atomic::Ordering::Acquire);
            let now = read(&r);
            assert!(
                now.0 >= last.0 && now.2 >= last.2,
                "went back: {last:?} then {now:?}"
            );
            assert!(
                now.1.windows(2).all(|w| w[0] <= w[1]) && now.1[1] <= now.0,
                "{now:?}"
            );
            last = now;
            if finished {
                break;
            }
        }
        writer.join().unwrap();
        let end = read(&r);
        assert_eq!(end.0, N);
        assert_eq!(end.2, N);
        assert_eq!(end.1, vec![N.div_ceil(3), N.div_ceil(3) + (N + 1) / 3]);
    }

    #[test]
    fn a_scrape_on_another_thread_reads_the_writes() {
        let r = Registry::new();
        let c: SeriesVec<IntCounter> = SeriesVec::new("n_total", "n", &[]).unwrap();
        r.register(c.collector()).unwrap();
        let n = c.with_label_values(&[]);
        for _ in 0..1000 {
            n.inc();
        }
        let reader = std::thread::spawn(move || text(&r));
        let t = reader.join().unwrap();
        assert!(t.contains("n_total 1000\n"), "{t}");
    }
}
