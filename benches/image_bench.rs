//! Image-processing benchmark: Pixelport's in-process pipeline on the test photographs,
//! the numbers that `scripts/bench-images.sh` sets beside sharp's (`bench/sharp/bench.mjs`,
//! same work, same JSON shape). Documented, not a timed test.
//!
//! Each operation is exactly what the image endpoint runs per request once the source is
//! in memory: `decode::probe`, `options::parse(["rs:fit:720:720"])`, a `pipeline::Job`
//! from the server's default `[images]` config with quality 80, and `pipeline::process`
//! (decode with shrink-on-load, auto-rotate, resize, encode to JPEG or WebP, metadata
//! stripped). Sources are read into memory once; neither file I/O nor HTTP is timed.
//!
//! ```text
//! cargo bench --bench image_bench -- --json target/bench-images/pixelport.json \
//!     [--images ../shared/images] [--formats jpeg,webp] [--only NAME,...] \
//!     [--warmup 2] [--min-iters 10] [--min-secs 2] [--max-iters 200] [--max-secs 10] \
//!     [--throughput-ops 110] [--throughput-secs 120] [--threads N] \
//!     [--quality 80] [--size 720] [--steps] [--out-dir DIR]
//! ```
//!
//! 1. Latency, one thread: per photo and format, `--warmup` untimed runs, then timed runs
//!    until both `--min-iters` and `--min-secs` are reached or either `--max-iters` or
//!    `--max-secs` is; median, p90, mean and min ms, output bytes and dimensions.
//! 2. Throughput, all cores: `--threads` (default `available_parallelism`) std threads
//!    share `--throughput-ops` operations per format, round-robin over the photos,
//!    bounded by `--throughput-secs`; images/s.
//! 3. Peak RSS: `VmHWM` from `/proc/self/status` after loading and after each phase.
//!
//! `--steps` adds a diagnostic breakdown per photo (one thread, median ms of decode,
//! transform and encode, called one by one as `process` calls them); it is not part of
//! the comparison. `--out-dir` keeps one output file per photo and format.
//!
//! With no argument but cargo's own (`--bench`), it prints this usage and exits 0, so
//! that `cargo bench` without options does no work. Nothing here is a test.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use pixelport::imaging::config::ImagesConfig;
use pixelport::imaging::decode::{self, DecodeOptions, Probe};
use pixelport::imaging::encode::{self, EncodeOptions};
use pixelport::imaging::geometry;
use pixelport::imaging::options::{self, ImageFormat, ParseContext};
use pixelport::imaging::pipeline::{self, Defaults, Job};
use pixelport::imaging::transform;
use serde_json::{Value, json};

const USAGE: &str = "\
usage: cargo bench --bench image_bench -- --json PATH [options]
  --images DIR           the photographs (default ../shared/images from the crate root)
  --json PATH            write the results as JSON (the shape bench/sharp/bench.mjs writes)
  --formats LIST         jpeg,webp (default both)
  --only NAMES           comma-separated substrings of photo names to keep
  --warmup N             untimed runs per photo and format (default 2)
  --min-iters N          timed runs at least (default 10) ...
  --min-secs S           ... and for at least S seconds (default 2)
  --max-iters N          timed runs at most (default 200) ...
  --max-secs S           ... or for at most S seconds (default 10)
  --throughput-ops N     operations per format in the throughput phase (default 110)
  --throughput-secs S    deadline of each throughput run (default 120)
  --threads N            throughput threads (default: available_parallelism)
  --quality Q            JPEG and WebP quality (default 80)
  --size PX              fit inside PX x PX (default 720)
  --steps                also time decode / transform / encode separately (diagnostic)
  --out-dir DIR          keep each output as DIR/NAME.pixelport.{jpg,webp}
Runs only when a benchmark option is given; without one it prints this and exits 0.";

/// The photographs of `shared/images/README.md` (not the edge cases).
const PHOTOS: [&str; 11] = [
    "wood-2560x1920.jpg",
    "storm-1920x1280.jpg",
    "freshflower-1600x1203-progressive.jpg",
    "elephants-5640x3172-progressive.jpg",
    "path-2560x1600.jpg",
    "bythewater-2560x1600.jpg",
    "astronaut-512.png",
    "coffee-600x400.png",
    "chelsea-451x300.png",
    "rocket-640x427.jpg",
    "retina-1411.jpg",
];

struct Config {
    images: PathBuf,
    json: Option<PathBuf>,
    formats: Vec<ImageFormat>,
    only: Vec<String>,
    warmup: u32,
    min_iters: usize,
    min_secs: f64,
    max_iters: usize,
    max_secs: f64,
    throughput_ops: usize,
    throughput_secs: f64,
    threads: usize,
    quality: u8,
    size: u32,
    steps: bool,
    out_dir: Option<PathBuf>,
}

fn parse_args(args: &[String]) -> Result<Option<Config>> {
    let mut cfg = Config {
        images: Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/images"),
        json: None,
        formats: vec![ImageFormat::Jpeg, ImageFormat::Webp],
        only: Vec::new(),
        warmup: 2,
        min_iters: 10,
        min_secs: 2.0,
        max_iters: 200,
        max_secs: 10.0,
        throughput_ops: 110,
        throughput_secs: 120.0,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        quality: 80,
        size: 720,
        steps: false,
        out_dir: None,
    };
    fn val<'a>(it: &mut std::slice::Iter<'a, String>, flag: &str) -> Result<&'a String> {
        it.next()
            .ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))
    }
    fn num<T: std::str::FromStr>(s: &str, flag: &str) -> Result<T> {
        s.parse().map_err(|_| anyhow!("{flag}: cannot parse {s:?}"))
    }
    let mut run = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let flag = a.as_str();
        match flag {
            // Passed by `cargo bench` / `cargo test`; nothing to do.
            "--bench" | "--quiet" | "-q" | "--nocapture" | "--test" => continue,
            "-h" | "--help" => return Ok(None),
            _ => run = true,
        }
        match flag {
            "--images" => cfg.images = PathBuf::from(val(&mut it, flag)?),
            "--json" => cfg.json = Some(PathBuf::from(val(&mut it, flag)?)),
            "--formats" => {
                cfg.formats = val(&mut it, flag)?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| match s {
                        "jpeg" | "jpg" => Ok(ImageFormat::Jpeg),
                        "webp" => Ok(ImageFormat::Webp),
                        other => Err(anyhow!("--formats: {other:?} is not jpeg or webp")),
                    })
                    .collect::<Result<_>>()?;
            }
            "--only" => {
                cfg.only = val(&mut it, flag)?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "--warmup" => cfg.warmup = num(val(&mut it, flag)?, flag)?,
            "--min-iters" => cfg.min_iters = num(val(&mut it, flag)?, flag)?,
            "--min-secs" => cfg.min_secs = num(val(&mut it, flag)?, flag)?,
            "--max-iters" => cfg.max_iters = num(val(&mut it, flag)?, flag)?,
            "--max-secs" => cfg.max_secs = num(val(&mut it, flag)?, flag)?,
            "--throughput-ops" => cfg.throughput_ops = num(val(&mut it, flag)?, flag)?,
            "--throughput-secs" => cfg.throughput_secs = num(val(&mut it, flag)?, flag)?,
            "--threads" => cfg.threads = num(val(&mut it, flag)?, flag)?,
            "--quality" => cfg.quality = num(val(&mut it, flag)?, flag)?,
            "--size" => cfg.size = num(val(&mut it, flag)?, flag)?,
            "--steps" => cfg.steps = true,
            "--out-dir" => cfg.out_dir = Some(PathBuf::from(val(&mut it, flag)?)),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if !run {
        return Ok(None);
    }
    if cfg.formats.is_empty() {
        bail!("--formats names no format");
    }
    if cfg.max_iters == 0 || cfg.threads == 0 || cfg.size == 0 {
        bail!("--max-iters, --threads and --size must be at least 1");
    }
    if !(1..=100).contains(&cfg.quality) {
        bail!("--quality must be 1..=100");
    }
    for (name, secs) in [
        ("--min-secs", cfg.min_secs),
        ("--max-secs", cfg.max_secs),
        ("--throughput-secs", cfg.throughput_secs),
    ] {
        if !(secs.is_finite() && (0.0..=3600.0).contains(&secs)) {
            bail!("{name} must be in [0, 3600]");
        }
    }
    Ok(Some(cfg))
}

/// One source photograph, read and probed once.
struct Photo {
    name: &'static str,
    bytes: Vec<u8>,
    probe: Probe,
}

/// The request's work for one output format, built once as the endpoint builds it.
struct Work {
    format: ImageFormat,
    job: Job,
}

fn format_name(f: ImageFormat) -> &'static str {
    f.as_str()
}

fn extension(f: ImageFormat) -> &'static str {
    if f == ImageFormat::Jpeg {
        "jpg"
    } else {
        "webp"
    }
}

fn build_work(cfg: &Config) -> Result<Vec<Work>> {
    let defaults = Defaults::from_config(&ImagesConfig::default())
        .map_err(|e| anyhow!("default [images] config: {e}"))?;
    let segments = vec![format!("rs:fit:{0}:{0}", cfg.size)];
    cfg.formats
        .iter()
        .map(|&format| {
            let opts = options::parse(&segments, &ParseContext::default())
                .map_err(|e| anyhow!("options {segments:?}: {e}"))?;
            let mut job = Job::new(opts, format, &defaults);
            job.quality = cfg.quality;
            Ok(Work { format, job })
        })
        .collect()
}

fn load_photos(cfg: &Config) -> Result<Vec<Photo>> {
    let mut photos = Vec::new();
    for name in PHOTOS {
        if !cfg.only.is_empty() && !cfg.only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        let path = cfg.images.join(name);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let probe = decode::probe(&bytes).map_err(|e| anyhow!("probing {name}: {e}"))?;
        photos.push(Photo { name, bytes, probe });
    }
    if photos.is_empty() {
        bail!("--only matched no photograph");
    }
    Ok(photos)
}

/// Peak resident set size of this process so far, in KiB (`VmHWM`).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Nearest-rank quantile of sorted values (the Node side computes the same).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs `f` `warmup` times untimed, then timed under the config's count and time bounds;
/// returns the sorted timings in ms.
fn timed<T>(cfg: &Config, mut f: impl FnMut() -> Result<T>) -> Result<(Vec<f64>, T)> {
    for _ in 0..cfg.warmup {
        f()?;
    }
    let mut times = Vec::new();
    let start = Instant::now();
    let last = loop {
        let t0 = Instant::now();
        let out = f()?;
        times.push(ms(t0.elapsed()));
        let elapsed = start.elapsed().as_secs_f64();
        let enough = times.len() >= cfg.min_iters && elapsed >= cfg.min_secs;
        if enough || times.len() >= cfg.max_iters || elapsed >= cfg.max_secs {
            break out;
        }
    };
    times.sort_by(f64::total_cmp);
    Ok((times, last))
}

fn latency(cfg: &Config, photos: &[Photo], work: &[Work]) -> Result<Vec<Value>> {
    let mut results = Vec::new();
    for w in work {
        for p in photos {
            let (times, out) = timed(cfg, || {
                pipeline::process(&p.bytes, &p.probe, &w.job)
                    .map_err(|e| anyhow!("{} to {}: {e}", p.name, format_name(w.format)))
            })?;
            let out_probe = decode::probe(&out)
                .map_err(|e| anyhow!("probing the output of {}: {e}", p.name))?;
            if let Some(dir) = &cfg.out_dir {
                let path = dir.join(format!("{}.pixelport.{}", p.name, extension(w.format)));
                std::fs::write(&path, &out).with_context(|| format!("{}", path.display()))?;
            }
            let r = json!({
                "image": p.name,
                "format": format_name(w.format),
                "source_width": p.probe.width,
                "source_height": p.probe.height,
                "width": out_probe.width,
                "height": out_probe.height,
                "iterations": times.len(),
                "median_ms": quantile(&times, 0.5),
                "p90_ms": quantile(&times, 0.9),
                "mean_ms": times.iter().sum::<f64>() / times.len() as f64,
                "min_ms": times[0],
                "bytes": out.len(),
            });
            println!(
                "pixelport latency {:<4} {:<40} median {:>8.2} ms  p90 {:>8.2} ms  {:>7} B  {}x{}  ({} runs)",
                format_name(w.format),
                p.name,
                quantile(&times, 0.5),
                quantile(&times, 0.9),
                out.len(),
                out_probe.width,
                out_probe.height,
                times.len(),
            );
            results.push(r);
        }
    }
    Ok(results)
}

fn throughput(cfg: &Config, photos: &[Photo], work: &[Work]) -> Result<Vec<Value>> {
    let mut results = Vec::new();
    for w in work {
        let next = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(cfg.throughput_secs);
        let errors: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..cfg.threads)
                .map(|_| {
                    s.spawn(|| -> Result<(), String> {
                        loop {
                            if Instant::now() >= deadline {
                                return Ok(());
                            }
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= cfg.throughput_ops {
                                return Ok(());
                            }
                            let p = &photos[i % photos.len()];
                            pipeline::process(&p.bytes, &p.probe, &w.job)
                                .map_err(|e| format!("{}: {e}", p.name))?;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| match h.join() {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some("a worker thread panicked".to_owned()),
                })
                .collect()
        });
        if let Some(e) = errors.first() {
            bail!("throughput {}: {e}", format_name(w.format));
        }
        let secs = start.elapsed().as_secs_f64();
        let done = done.into_inner();
        let timed_out = done < cfg.throughput_ops;
        let per_sec = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        println!(
            "pixelport throughput {:<4} {} threads: {per_sec:.2} images/s ({done} ops in {secs:.2} s{})",
            format_name(w.format),
            cfg.threads,
            if timed_out {
                ", stopped by --throughput-secs"
            } else {
                ""
            },
        );
        results.push(json!({
            "format": format_name(w.format),
            "workers": cfg.threads,
            "operations": done,
            "planned_operations": cfg.throughput_ops,
            "seconds": secs,
            "images_per_sec": per_sec,
            "timed_out": timed_out,
        }));
    }
    Ok(results)
}

/// Diagnostic: the steps of `pipeline::process` (non-trim path) called one by one.
fn steps(cfg: &Config, photos: &[Photo], work: &[Work]) -> Result<Vec<Value>> {
    let mut results = Vec::new();
    for w in work {
        let job = &w.job;
        for p in photos {
            let (ow, oh) = if job.auto_rotate {
                p.probe.oriented_size()
            } else {
                (p.probe.width, p.probe.height)
            };
            let plan = geometry::plan(&job.opts, ow, oh, &job.limits)
                .map_err(|e| anyhow!("plan {}: {e}", p.name))?;
            let shrink = if plan.decode_shrink > 1.0 {
                1.0 / plan.decode_shrink
            } else {
                1.0
            };
            let dopts = DecodeOptions {
                shrink,
                auto_rotate: job.auto_rotate,
                max_frames: job.frames_for(&p.probe),
                max_pixels: job.max_pixels,
            };
            let (t_dec, decoded) = timed(cfg, || {
                decode::decode(&p.bytes, &p.probe, &dopts).map_err(|e| anyhow!("decode: {e}"))
            })?;
            let (dw, dh, denom) = (
                decoded.picture.width(),
                decoded.picture.height(),
                decoded.scale_denom,
            );
            let alpha = pipeline::has_alpha_support(job.format);
            let (t_tr, resized) = timed(cfg, || {
                transform::apply(decoded.picture.clone(), &plan, &job.opts, alpha)
                    .map_err(|e| anyhow!("transform: {e}"))
            })?;
            // The clone of the decoded picture is timed with the transform: measure it
            // alone so that it can be subtracted.
            let (t_clone, _) = timed(cfg, || Ok(decoded.picture.clone()))?;
            let eopts = EncodeOptions {
                format: job.format,
                quality: job.quality,
                progressive: job.progressive,
                lossless: false,
                icc: None,
                exif: None,
                max_bytes: usize::try_from(job.opts.max_bytes).unwrap_or(usize::MAX),
                avif_speed: job.avif_speed,
            };
            let (t_enc, _) = timed(cfg, || {
                encode::encode(&resized, &eopts).map_err(|e| anyhow!("encode: {e}"))
            })?;
            let (dec, tr, cl, enc) = (
                quantile(&t_dec, 0.5),
                quantile(&t_tr, 0.5),
                quantile(&t_clone, 0.5),
                quantile(&t_enc, 0.5),
            );
            println!(
                "pixelport steps {:<4} {:<40} decode {dec:>7.2} ms (1/{denom} -> {dw}x{dh})  transform {:>7.2} ms  encode {enc:>7.2} ms",
                format_name(w.format),
                p.name,
                (tr - cl).max(0.0),
            );
            results.push(json!({
                "image": p.name,
                "format": format_name(w.format),
                "decode_ms": dec,
                "decode_scale_denom": denom,
                "decoded_width": dw,
                "decoded_height": dh,
                "transform_ms": (tr - cl).max(0.0),
                "encode_ms": enc,
            }));
        }
    }
    Ok(results)
}

fn run(cfg: &Config) -> Result<()> {
    if let Some(dir) = &cfg.out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }
    let work = build_work(cfg)?;
    let photos = load_photos(cfg)?;
    let after_load = peak_rss_kib();

    let lat = latency(cfg, &photos, &work)?;
    let after_latency = peak_rss_kib();
    let thr = throughput(cfg, &photos, &work)?;
    let after_throughput = peak_rss_kib();
    let mut line = String::from("pixelport peak RSS:");
    for (what, v) in [
        ("after latency", after_latency),
        ("after throughput", after_throughput),
    ] {
        match v {
            Some(kib) => write!(line, " {:.1} MiB {what},", kib as f64 / 1024.0)?,
            None => write!(line, " n/a {what},")?,
        }
    }
    println!("{}", line.trim_end_matches(','));
    let step_results = if cfg.steps {
        steps(cfg, &photos, &work)?
    } else {
        Vec::new()
    };

    let out = json!({
        "tool": "pixelport",
        "version": format!(
            "pixelport {} ({} build)",
            env!("CARGO_PKG_VERSION"),
            if cfg!(debug_assertions) { "debug" } else { "release" },
        ),
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "settings": {
            "size": cfg.size,
            "quality": cfg.quality,
            "warmup": cfg.warmup,
            "min_iters": cfg.min_iters,
            "min_secs": cfg.min_secs,
            "max_iters": cfg.max_iters,
            "max_secs": cfg.max_secs,
            "throughput_ops": cfg.throughput_ops,
            "throughput_secs": cfg.throughput_secs,
            "latency_concurrency": 1,
            "throughput_concurrency": cfg.threads,
        },
        "latency": lat,
        "throughput": thr,
        "peak_rss_kib": {
            "after_load_kib": after_load,
            "after_latency_kib": after_latency,
            "after_throughput_kib": after_throughput,
        },
        "steps": step_results,
    });
    if let Some(path) = &cfg.json {
        let text = serde_json::to_string_pretty(&out)? + "\n";
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse_args(&args) {
        Ok(Some(cfg)) => {
            if cfg!(debug_assertions) {
                eprintln!("image_bench: this is a debug build; use `cargo bench` for numbers");
            }
            if let Err(e) = run(&cfg) {
                eprintln!("image_bench: {e:#}");
                std::process::exit(1);
            }
        }
        Ok(None) => println!("{USAGE}"),
        Err(e) => {
            eprintln!("image_bench: {e:#}");
            std::process::exit(2);
        }
    }
}
