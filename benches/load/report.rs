//! The report: one Markdown table row per figure, printed as it comes and written with `--out`.

use std::path::Path;

use anyhow::Context;

use crate::{options::Size, progress};

pub struct Report {
    lines: Vec<String>,
}

impl Report {
    pub fn new(size: &Size, url: Option<&str>) -> Report {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|line| line.starts_with("model name"))
                    .map(|line| line.split(':').nth(1).unwrap_or("").trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let load = load_average();
        let target = url.map_or_else(
            || "natter started by the benchmark".to_string(),
            |url| format!("natter at {url}"),
        );
        let lines = vec![
            format!(
                "natter load benchmark, {} size; {target}; {cores} cores ({cpu}), Linux {}; client and server share \
                 the machine; load average at the start {load} (other work on the machine shows up in every figure).",
                if size.large { "large" } else { "default" },
                kernel.trim()
            ),
            String::new(),
            "| Scenario | natter | Ceiling | × ceiling | Target | Reproduce |".into(),
            "| --- | --- | --- | --- | --- | --- |".into(),
        ];
        for line in &lines {
            println!("{line}");
        }
        Report { lines }
    }

    pub fn row(&mut self, cells: &[&str; 6]) {
        let line = format!("| {} |", cells.join(" | "));
        println!("{line}");
        self.lines.push(line);
    }

    pub fn finish(mut self, out: Option<&Path>) -> anyhow::Result<()> {
        let end = format!("\nLoad average at the end: {}.", load_average());
        println!("{end}");
        self.lines.push(end);
        let text = self.lines.join("\n") + "\n";
        progress("done; the table:");
        eprintln!("{text}");
        if let Some(out) = out {
            std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
        }
        Ok(())
    }
}

/// The 1-minute load average: how busy the machine was besides the benchmark.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// `natter / ceiling` as "how many times the ceiling's cost": 1.0x is as good as the layer beneath allows.
pub fn times(cost: f64, ceiling: f64) -> String {
    if ceiling > 0.0 && cost.is_finite() {
        format!("{:.1}x", cost / ceiling)
    } else {
        "–".into()
    }
}

pub fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

pub fn milliseconds(microseconds: u64) -> String {
    let ms = microseconds as f64 / 1000.0;
    if ms < 10.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.0}")
    }
}

pub fn megabytes(kib: u64) -> String {
    format!("{:.1} MB", kib as f64 * 1024.0 / 1_000_000.0)
}

pub fn thousands(value: f64) -> String {
    let whole = value.round() as u64;
    let text = whole.to_string();
    let mut grouped = String::new();
    for (index, digit) in text.chars().enumerate() {
        if index > 0 && (text.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}
