//! The #15 paths against sharp, Pixelport's side (scripts/bench-image-extras.sh runs it and
//! bench/sharp/extras.mjs, then compares). In-process, one thread, sources in memory:
//!
//! - `gif-webp`: the shared 8-frame GIF to an animated WebP at q80, full size
//!   (`pipeline::process` with `f:webp`, as the endpoint runs it);
//! - `gif-gif`: the same GIF through the pipeline back to GIF, the size it is compared with;
//! - `wm-base` / `wm`: rocket-640x427.jpg fitted into 720×720 as JPEG q80, without and with
//!   a watermark (a 200×100 half-transparent PNG, `wm:0.5:soea:10:10:0.2`): the difference is
//!   the watermark's cost per image (the sized watermark cached after the first run);
//! - `svg-png` / `svg-webp`: bench/svg/scene-400x300.svg (180 shapes, gradients, strokes,
//!   opacity) drawn at 1200 px wide (`w:1200`, 3× its intrinsic size) as PNG, and as WebP
//!   q80: sanitising, parsing, rasterising and encoding; `svg-draw` the drawing alone
//!   (`decode::decode` at 3×, raw RGBA out).
//!
//! Prints one JSON object: per case the median and p90 ms over the runs and the output size.
//!
//!   cargo bench --bench image_extras_bench -- [--images DIR] [--runs N]

use std::sync::Arc;
use std::time::Instant;

use pixelport::imaging::config::ImagesConfig;
use pixelport::imaging::decode;
use pixelport::imaging::options::{ImageFormat, ParseContext, parse};
use pixelport::imaging::pipeline::{self, Defaults, Job};
use pixelport::imaging::watermark::WatermarkImage;

fn main() {
    if let Err(e) = run() {
        eprintln!("image_extras_bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut images = format!("{}/../shared/images", env!("CARGO_MANIFEST_DIR"));
    let mut runs = 30usize;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--images" => images = it.next().ok_or("--images needs a value")?.clone(),
            "--runs" => {
                runs = it
                    .next()
                    .ok_or("--runs needs a value")?
                    .parse()
                    .map_err(|_| "--runs: not a number")?
            }
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let read =
        |name: &str| std::fs::read(format!("{images}/{name}")).map_err(|e| format!("{name}: {e}"));
    let gif = read("edge-animated-8frames-160x120.gif")?;
    let photo = read("rocket-640x427.jpg")?;
    let logo = logo_png()?;
    let svg = std::fs::read(format!(
        "{}/bench/svg/scene-400x300.svg",
        env!("CARGO_MANIFEST_DIR")
    ))
    .map_err(|e| format!("scene-400x300.svg: {e}"))?;
    let defaults = Defaults::from_config(&ImagesConfig::default()).map_err(|e| e.to_string())?;
    let watermark = Arc::new(WatermarkImage::load(&logo, 1.0).map_err(|e| e.to_string())?);
    let job = |path: &str, format: ImageFormat| -> Result<Job, String> {
        let segments: Vec<String> = path.split('/').map(str::to_owned).collect();
        let opts = parse(&segments, &ParseContext::default()).map_err(|e| e.to_string())?;
        Ok(Job::new(opts, format, &defaults))
    };
    let mut wm_job = job(
        "rs:fit:720:720/q:80/wm:0.5:soea:10:10:0.2",
        ImageFormat::Jpeg,
    )?;
    wm_job.watermark = Some(watermark);
    let cases: Vec<(&str, &[u8], Job)> = vec![
        ("gif-webp", &gif, job("q:80", ImageFormat::Webp)?),
        ("gif-gif", &gif, job("q:80", ImageFormat::Gif)?),
        (
            "wm-base",
            &photo,
            job("rs:fit:720:720/q:80", ImageFormat::Jpeg)?,
        ),
        ("wm", &photo, wm_job),
        ("svg-png", &svg, job("w:1200", ImageFormat::Png)?),
        ("svg-webp", &svg, job("w:1200/q:80", ImageFormat::Webp)?),
    ];
    let mut out = serde_json::Map::new();
    {
        let probe = decode::probe(&svg).map_err(|e| e.to_string())?;
        let opts = decode::DecodeOptions {
            shrink: 3.0,
            ..Default::default()
        };
        let (q, bytes) = timed(runs, || {
            decode::decode(&svg, &probe, &opts)
                .map(|d| d.picture.width() as usize * d.picture.height() as usize * 4)
                .map_err(|e| format!("svg-draw: {e}"))
        })?;
        out.insert(
            "svg-draw".into(),
            serde_json::json!({"median_ms": q.0, "p90_ms": q.1, "bytes": bytes, "input_bytes": svg.len()}),
        );
    }
    for (name, bytes, job) in cases {
        let probe = decode::probe(bytes).map_err(|e| e.to_string())?;
        let mut times = Vec::with_capacity(runs);
        let mut size = 0;
        for i in 0..runs + 2 {
            let t = Instant::now();
            let result =
                pipeline::process(bytes, &probe, &job).map_err(|e| format!("{name}: {e}"))?;
            if i >= 2 {
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            size = result.len();
        }
        times.sort_by(f64::total_cmp);
        let q = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
        out.insert(
            name.into(),
            serde_json::json!({"median_ms": q(0.5), "p90_ms": q(0.9), "bytes": size, "input_bytes": bytes.len()}),
        );
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}

/// Runs `f` twice to warm up, then `runs` times: (median, p90) ms and the last output size.
fn timed(
    runs: usize,
    mut f: impl FnMut() -> Result<usize, String>,
) -> Result<((f64, f64), usize), String> {
    let mut times = Vec::with_capacity(runs);
    let mut size = 0;
    for i in 0..runs + 2 {
        let t = Instant::now();
        size = f()?;
        if i >= 2 {
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    let q = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    Ok(((q(0.5), q(0.9)), size))
}

/// A 200×100 logo: a red disc at half opacity on transparency, as PNG.
fn logo_png() -> Result<Vec<u8>, String> {
    let img = image::RgbaImage::from_fn(200, 100, |x, y| {
        let (dx, dy) = (x as f64 - 100.0, y as f64 - 50.0);
        if dx * dx / 4.0 + dy * dy < 45.0 * 45.0 {
            image::Rgba([220, 30, 30, 128])
        } else {
            image::Rgba([0, 0, 0, 0])
        }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgba8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| e.to_string())?;
    Ok(out.into_inner())
}
