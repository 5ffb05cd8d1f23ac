//! Readers on every core send through the layer while a writer swaps the token: read
//! throughput with the writer against without it, for `BearerAuth` and for the naive
//! `Arc<RwLock<String>>` baseline, side by side.
//!
//! The layer's writer is its real refresher, running on a thread of its own, fetching real
//! tokens from a token endpoint (an `http_client` in memory) that answers at once. The
//! refresher is configured to refresh as soon as it has a token (`refresh_ratio` near 0, a
//! one-hour lifetime, so no token ever expires); the endpoint sets the pace by holding each
//! token request until the next swap is due: every millisecond (sleeping in between), or every
//! 10 microseconds (spinning in between: no OS timer wakes a thread every 10 µs). The naive
//! writer takes the write lock and stores a new string at the same pace.
//!
//! A writer that swaps every 10 µs is a busy thread, and this machine has only as many cores
//! as readers, so part of what it costs the readers is CPU time alone. The control row runs the
//! same busy thread without swapping anything; the swaps' own cost is the 10 µs row against the
//! control.
//!
//! Each round measures every case for a short window, in a rotating order; ratios are taken
//! within a round and the table gives their median over rounds.

mod common;

use std::{
    sync::{
        Arc, Condvar, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, header::CONTENT_TYPE};
use http_body_util::Full;
use tower::{Layer, Service, service_fn};
use tower_client_credentials::{BearerAuthLayer, ClientCredentials, TokenHandle};

use common::{
    NaiveBearer, Summary, Template, bench_mode, inner, machine, ratios, timed_batch, verdict,
};

/// Requests per timed batch in a reader.
const BATCH: usize = 256;

/// What a writer does.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Nothing: it waits.
    Off,
    /// A swap every period: sleeping between swaps for 1 ms and more, spinning below that.
    Every(Duration),
    /// Spins without swapping: the CPU cost of a busy writer, nothing else.
    Spin,
}

/// Paces a writer.
struct Pacer {
    state: Mutex<(Mode, Instant)>,
    changed: Condvar,
}

impl Pacer {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new((Mode::Off, Instant::now())),
            changed: Condvar::new(),
        })
    }

    fn set(&self, mode: Mode) {
        *self.state.lock().unwrap() = (mode, Instant::now());
        self.changed.notify_all();
    }

    fn mode(&self) -> Mode {
        self.state.lock().unwrap().0
    }

    /// Blocks until the next swap is due (not while the mode is `Off` or `Spin`).
    fn wait(&self) {
        let mut state = self.state.lock().unwrap();
        loop {
            match state.0 {
                Mode::Off | Mode::Spin => state = self.changed.wait(state).unwrap(),
                Mode::Every(period) => {
                    let now = Instant::now();
                    // A writer that fell behind swaps at once, but builds up no backlog.
                    let due = if state.1 + period < now { now } else { state.1 };
                    state.1 = due + period;
                    drop(state);
                    if period >= Duration::from_millis(1) {
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    } else {
                        while Instant::now() < due {
                            std::hint::spin_loop();
                        }
                    }
                    return;
                }
            }
        }
    }

    /// For the control thread: spins while the mode is `Spin`, waits otherwise.
    fn spin(&self) {
        loop {
            let mut state = self.state.lock().unwrap();
            while state.0 != Mode::Spin {
                state = self.changed.wait(state).unwrap();
            }
            drop(state);
            while self.mode() == Mode::Spin {
                for _ in 0..10_000 {
                    std::hint::spin_loop();
                }
            }
        }
    }
}

/// The layer's writer: a refresher on its own thread and runtime, whose token endpoint answers
/// at the pacer's pace. Returns the handle once it holds its first token.
fn layer_writer(pacer: Arc<Pacer>) -> TokenHandle {
    let issued = Arc::new(AtomicU64::new(0));
    let endpoint = service_fn(move |_request: Request<Full<Bytes>>| {
        let pacer = Arc::clone(&pacer);
        let n = issued.fetch_add(1, Ordering::Relaxed);
        async move {
            if n > 0 {
                pacer.wait();
            }
            let body = format!(
                r#"{{"access_token":"bench-token-{n:024}","token_type":"Bearer","expires_in":3600}}"#
            );
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .header(CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .expect("valid response"),
            )
        }
    });
    let (handle, refresher) =
        ClientCredentials::builder("http://127.0.0.1/oauth/token", "id", "secret")
            .http_client(endpoint)
            // Refresh as soon as a token arrives: the endpoint sets the pace.
            .refresh_ratio(1e-9)
            .refresh_before(Duration::from_secs(86_400))
            // A token request may be held for as long as the writer is off.
            .timeout(Duration::from_secs(86_400))
            .build()
            .expect("valid configuration")
            .into_parts();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(std::future::IntoFuture::into_future(refresher));
    });
    while handle.current().is_none() {
        std::thread::sleep(Duration::from_millis(1));
    }
    handle
}

/// The naive writer: stores a new token string under the write lock at the pacer's pace.
fn naive_writer(pacer: Arc<Pacer>, token: Arc<RwLock<String>>, swaps: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        loop {
            pacer.wait();
            let n = swaps.fetch_add(1, Ordering::Relaxed) + 1;
            let next = format!("bench-token-{n:024}");
            *token.write().unwrap() = next;
        }
    });
}

/// Runs `threads` readers through `service` for `window`. Returns requests per second, summed
/// over readers, each counting only the time spent in the layer (request building excluded).
fn read<S>(service: &S, threads: usize, window: Duration) -> f64
where
    S: Service<Request<Full<Bytes>>> + Clone + Send,
    S::Error: std::fmt::Debug,
{
    let template = Template::new();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..threads)
            .map(|_| {
                let mut service = service.clone();
                let (template, stop) = (&template, &stop);
                scope.spawn(move || {
                    let mut requests = Vec::with_capacity(BATCH);
                    let (mut count, mut busy) = (0_u64, Duration::ZERO);
                    loop {
                        requests.extend((0..BATCH).map(|_| template.request()));
                        busy += timed_batch(&mut service, &mut requests);
                        count += BATCH as u64;
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    count as f64 / busy.as_secs_f64()
                })
            })
            .collect();
        std::thread::sleep(window);
        stop.store(true, Ordering::Relaxed);
        readers
            .into_iter()
            .map(|reader| reader.join().expect("reader"))
            .sum()
    })
}

/// The services the readers send through.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    LayerRetryOff,
    LayerRetryOn,
    Naive,
}

impl Target {
    const ALL: [Self; 3] = [Self::LayerRetryOff, Self::LayerRetryOn, Self::Naive];

    fn name(self) -> &'static str {
        match self {
            Self::LayerRetryOff => "BearerAuth, retry off",
            Self::LayerRetryOn => "BearerAuth, retry on (default)",
            Self::Naive => "naive RwLock<String>",
        }
    }
}

/// What runs beside the readers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Writer {
    None,
    Every1ms,
    Every10us,
    Control,
}

impl Writer {
    const ALL: [Self; 4] = [Self::None, Self::Every1ms, Self::Every10us, Self::Control];

    fn name(self) -> &'static str {
        match self {
            Self::None => "no writer (baseline)",
            Self::Every1ms => "swap every 1 ms",
            Self::Every10us => "swap every 10 µs",
            Self::Control => "busy thread, no swaps (control)",
        }
    }
}

fn main() {
    let (rounds, window) = if bench_mode() {
        (31, Duration::from_millis(100))
    } else {
        (1, Duration::from_millis(10))
    };
    let readers = std::thread::available_parallelism().map_or(1, |n| n.get());

    let layer_pacer = Pacer::new();
    let handle = layer_writer(Arc::clone(&layer_pacer));
    let retry_off = BearerAuthLayer::new(handle.clone())
        .retry_unauthorized(false)
        .layer(inner());
    let retry_on = BearerAuthLayer::new(handle.clone()).layer(inner());

    let naive_pacer = Pacer::new();
    let naive_token = Arc::new(RwLock::new("bench-token-initial".to_owned()));
    let naive_swaps = Arc::new(AtomicU64::new(0));
    naive_writer(
        Arc::clone(&naive_pacer),
        Arc::clone(&naive_token),
        Arc::clone(&naive_swaps),
    );
    let naive = NaiveBearer::new(inner(), naive_token);

    let control = Pacer::new();
    {
        let control = Arc::clone(&control);
        std::thread::spawn(move || control.spin());
    }

    let swaps_so_far = |target: Target| match target {
        Target::Naive => naive_swaps.load(Ordering::Relaxed),
        _ => handle.current().expect("token").generation(),
    };
    let read_through = |target: Target, window: Duration| match target {
        Target::LayerRetryOff => read(&retry_off, readers, window),
        Target::LayerRetryOn => read(&retry_on, readers, window),
        Target::Naive => read(&naive, readers, window),
    };
    let cases: Vec<(Target, Writer)> = Target::ALL
        .iter()
        .flat_map(|&target| Writer::ALL.iter().map(move |&writer| (target, writer)))
        .collect();
    let mut throughput: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut swaps: Vec<u64> = vec![0; cases.len()];
    for target in Target::ALL {
        read_through(target, window); // warm-up
    }
    for round in 0..rounds {
        for i in 0..cases.len() {
            let case = (round + i) % cases.len();
            let (target, writer) = cases[case];
            let pacer = if target == Target::Naive {
                &naive_pacer
            } else {
                &layer_pacer
            };
            let (pacer, mode) = match writer {
                Writer::None => (None, Mode::Off),
                Writer::Every1ms => (Some(pacer), Mode::Every(Duration::from_millis(1))),
                Writer::Every10us => (Some(pacer), Mode::Every(Duration::from_micros(10))),
                Writer::Control => (Some(&control), Mode::Spin),
            };
            if let Some(pacer) = pacer {
                pacer.set(mode);
            }
            let before = swaps_so_far(target);
            throughput[case].push(read_through(target, window));
            if let Some(pacer) = pacer {
                pacer.set(Mode::Off);
            }
            // Let a swap in progress land, so that it is counted here.
            std::thread::sleep(Duration::from_millis(2));
            swaps[case] += swaps_so_far(target) - before;
        }
    }

    let seconds = window.as_secs_f64() * rounds as f64;
    println!();
    println!(
        "## contention: {readers} readers, {} ms windows, {rounds} rounds",
        window.as_millis()
    );
    println!("machine: {}", machine());
    println!();
    println!(
        "| readers send through | writer | swaps/s achieved | median Mreq/s [IQR] | with writer / without (median [IQR]) | target |"
    );
    println!(
        "|----------------------|--------|------------------|---------------------|--------------------------------------|--------|"
    );
    for (case, &(target, writer)) in cases.iter().enumerate() {
        let base = case - case % Writer::ALL.len();
        let control = base + 3;
        let within = |a: usize, b: usize| Summary::of(&ratios(&throughput[a], &throughput[b]));
        let mreq: Vec<f64> = throughput[case].iter().map(|t| t / 1e6).collect();
        let (ratio, goal) = match writer {
            Writer::None => ("1".to_owned(), String::new()),
            Writer::Control => (
                within(case, base).to_string(),
                "the CPU a busy writer takes".to_owned(),
            ),
            Writer::Every1ms | Writer::Every10us => {
                let ratio = within(case, base);
                let mut text = ratio.to_string();
                if writer == Writer::Every10us {
                    text.push_str(&format!("; {} x control", within(case, control)));
                }
                let goal = if target == Target::Naive {
                    "side by side".to_owned()
                } else {
                    format!(">= 0.9: {}", verdict(ratio.median >= 0.9))
                };
                (text, goal)
            }
        };
        println!(
            "| {} | {} | {:.0} | {} | {ratio} | {goal} |",
            target.name(),
            writer.name(),
            swaps[case] as f64 / seconds,
            Summary::of(&mreq),
        );
    }
    println!();
    for target in [Target::LayerRetryOff, Target::LayerRetryOn] {
        let layer = Target::ALL.iter().position(|&t| t == target).unwrap() * Writer::ALL.len();
        let naive = 2 * Writer::ALL.len();
        println!(
            "{} / naive, no writer: {} x",
            target.name(),
            Summary::of(&ratios(&throughput[layer], &throughput[naive]))
        );
    }
}
